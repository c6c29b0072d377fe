"""How the panel sends its own mail (password reset, notifications): panel SMTP.

settings.EMAIL_BACKEND points at PanelEmailBackend, which reads ServerSettings at
send time, so a saved change applies to the next mail without a restart.

Off = the local MTA, reached over SMTP on settings.MAILPANEL_LOCAL_SMTP
(127.0.0.1:25 by default) rather than `/usr/sbin/sendmail -t`: one code path for
both modes (the test mail then reports the local Exim's own answer, e.g. a 550),
no setuid binary run from the web process, and the envelope sender stays the
From address (Exim rewrites -f for untrusted callers and adds a Sender: header).

On = the admin's host/port/security/username/password/From. TLS is verified
against the system store, or against settings.MAILPANEL_SMTP_CA_FILE when set
(a private CA; tests use a throw-away one).

The password never leaves this module in any text: every answer or error that
is shown or logged goes through _scrub first.
"""

import base64
import ssl
from dataclasses import dataclass, field

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import EmailMessage
from django.core.mail.backends.base import BaseEmailBackend
from django.db import transaction
from django.utils.translation import gettext as _

from ..checks import smtp
from ..models import PanelSmtpSecurity, ServerSettings
from ..secret_endpoint import Endpoint, retype_problem
from ..validation import normalize_address, normalize_hostname, validate_config_value, validate_port
from . import audit

SECURITIES = tuple(PanelSmtpSecurity.values)


@dataclass(frozen=True)
class SmtpTarget:
    """Where the panel's mail goes: plain data, read once per send."""

    host: str
    port: int
    security: str = PanelSmtpSecurity.NONE  # none | starttls | ssl
    username: str = ""
    password: str = field(default="", repr=False)
    from_email: str = ""
    local_mta: bool = False
    helo: str = "localhost"  # the server's host name: what it says in EHLO

    def describe(self) -> str:
        if self.local_mta:
            return _("the local mail server (%(host)s:%(port)s)") % {"host": self.host, "port": self.port}
        return f"{self.host}:{self.port} ({self.security})"


def local_mta_address() -> tuple[str, int]:
    value = getattr(settings, "MAILPANEL_LOCAL_SMTP", "") or "127.0.0.1:25"
    host, _sep, port = value.rpartition(":")
    return (host or "127.0.0.1").strip("[]"), int(port or 25)


def target_from_settings(server: ServerSettings) -> SmtpTarget:
    if not server.panel_smtp_enabled:
        host, port = local_mta_address()
        return SmtpTarget(
            host=host,
            port=port,
            from_email=server.panel_smtp_from or settings.DEFAULT_FROM_EMAIL,
            local_mta=True,
            helo=server.hostname or "localhost",
        )
    return SmtpTarget(
        host=server.panel_smtp_host,
        port=server.panel_smtp_port,
        security=server.panel_smtp_security,
        username=server.panel_smtp_username,
        password=server.panel_smtp_password,
        from_email=server.panel_smtp_from or settings.DEFAULT_FROM_EMAIL,
        helo=server.hostname or "localhost",
    )


def current_target() -> SmtpTarget:
    return target_from_settings(ServerSettings.load())


def tls_context() -> ssl.SSLContext:
    cafile = getattr(settings, "MAILPANEL_SMTP_CA_FILE", "") or None
    return ssl.create_default_context(cafile=cafile)


def timeout() -> float:
    return float(getattr(settings, "MAILPANEL_SMTP_TIMEOUT", 30))


def _scrub(text: str, target: SmtpTarget) -> str:
    """Remove the password (as typed and as it travels in AUTH) from any text."""
    secret = target.password
    if not secret:
        return text
    forms = {secret, base64.b64encode(secret.encode()).decode()}
    for user in {target.username, ""}:
        plain = f"\0{user}\0{secret}".encode()
        forms.add(base64.b64encode(plain).decode())
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, "••••")
    return text


class PanelEmailBackend(BaseEmailBackend):
    """settings.EMAIL_BACKEND: each message through the panel's SMTP client
    (checks.smtp) with the settings of the moment. Credentials go as UTF-8
    (RFC 4616), which smtplib would refuse."""

    def __init__(self, fail_silently=False, **kwargs):
        self.fail_silently = fail_silently
        kwargs.pop("alias", None)
        super().__init__(alias="panel_smtp", _ignore_unknown_kwargs=list(kwargs), **kwargs)

    def send_messages(self, email_messages):
        if not email_messages:
            return 0
        target = current_target()
        sent = 0
        for message in email_messages:
            # Mail built with the default sender goes out as the configured From:
            # a provider refuses any other sender for its account.
            if message.from_email in (None, "", settings.DEFAULT_FROM_EMAIL):
                message.from_email = target.from_email
            if not message.recipients():
                continue
            delivery = deliver(target, message.from_email, message.recipients(), message.message().as_bytes())
            if delivery.ok:
                sent += 1
            elif not self.fail_silently:
                # The server's answer, never the password (tracebacks get logged).
                raise PanelSmtpError(_scrub(delivery.summary, target))
        return sent


class PanelSmtpError(Exception):
    pass


def deliver(target: SmtpTarget, sender: str, recipients: list[str], message: bytes) -> smtp.Delivery:
    return smtp.send_message(
        target.host,
        target.port,
        security=target.security,
        username=target.username,
        password=target.password,
        sender=sender,
        recipients=recipients,
        message=message,
        context=tls_context(),
        timeout=timeout(),
        helo=target.helo,
    )


# --- the test mail ------------------------------------------------------------


@dataclass
class TestMailResult:
    ok: bool
    summary: str  # the server's final answer, or the exact failure
    transcript: list[str] = field(default_factory=list)  # what was said, password-free


def send_test_mail(to: str, target: SmtpTarget | None = None) -> TestMailResult:
    """Send one short mail through the panel's SMTP client (checks.smtp) and
    report every answer. Never raises for a network or SMTP failure: the
    failure is the result."""
    to = normalize_address(to)
    target = target or current_target()
    message = EmailMessage(
        subject=_("mailpanel test mail"),
        body=_("This test mail was sent by mailpanel through %(target)s.") % {"target": target.describe()},
        from_email=target.from_email,
        to=[to],
    ).message()
    sent = deliver(target, target.from_email, [to], message.as_bytes())
    return TestMailResult(sent.ok, _scrub(sent.summary, target), [_scrub(line, target) for line in sent.transcript])


# --- saving -------------------------------------------------------------------


def stored_endpoint(server: ServerSettings) -> Endpoint | None:
    """Where the stored password may be sent (None: no password stored).
    The client picks the mechanism itself (PLAIN, else LOGIN), so the
    endpoint has none."""
    if not server.panel_smtp_password:
        return None
    return Endpoint.of(
        server.panel_smtp_host, server.panel_smtp_port, server.panel_smtp_security, "", server.panel_smtp_username
    )


def validate_settings(
    *, host, port, security, username, password, from_email, stored: Endpoint | None = None
) -> dict:
    """The CLI and the form share this. Returns clean values; raises ValidationError
    with one message per field ({field: [messages]}). A blank password keeps the
    stored one only for the endpoint it was stored for (`stored`, see
    secret_endpoint); elsewhere it must be typed again."""
    errors, clean = {}, {}

    def check(name, func, *args):
        try:
            clean[name] = func(*args)
        except ValidationError as exc:
            errors.setdefault(name, []).extend(exc.messages)

    check("host", normalize_hostname, host)
    check("port", validate_port, port)
    if security not in SECURITIES:
        errors["security"] = [_("Choose none, STARTTLS or SSL/TLS.")]
    else:
        clean["security"] = security
    check("username", validate_config_value, (username or "").strip(), _("The user name"))
    check("password", validate_config_value, password or "", _("The password"))
    if username and not password:
        if stored is None:
            errors.setdefault("password", []).append(_("Enter the password for this user name."))
        elif not set(errors) & {"host", "port", "security", "username"}:
            typed = Endpoint.of(clean["host"], clean["port"], clean["security"], "", clean["username"])
            if problem := retype_problem(typed, stored):
                errors.setdefault("password", []).append(problem)
    if not from_email:
        errors["from_email"] = [_("Enter the address the panel's mail comes from.")]
    else:
        check("from_email", normalize_address, from_email)
    if errors:
        raise ValidationError(errors)
    return clean


def save_settings(actor, *, host, port, security, username, password, from_email) -> ServerSettings:
    """Turn panel SMTP on with these values. An empty password keeps the stored one
    for the same endpoint (the form never shows it back); a cleared user name
    drops the password too."""
    server = ServerSettings.load()
    clean = validate_settings(
        host=host,
        port=port,
        security=security,
        username=username,
        password=password,
        from_email=from_email,
        stored=stored_endpoint(server),
    )
    new = {
        "panel_smtp_enabled": True,
        "panel_smtp_host": clean["host"],
        "panel_smtp_port": clean["port"],
        "panel_smtp_security": clean["security"],
        "panel_smtp_username": clean["username"],
        "panel_smtp_from": clean["from_email"],
    }
    if not clean["username"]:
        new["panel_smtp_password"] = ""
    elif clean["password"]:
        new["panel_smtp_password"] = clean["password"]
    changed = [name for name, value in new.items() if getattr(server, name) != value]
    for name, value in new.items():
        setattr(server, name, value)
    with transaction.atomic():
        server.save()
        audit.record(actor, "server.panel_smtp", "server", changed)
    return server


def disable(actor) -> ServerSettings:
    """Back to the local MTA, the SMTP settings kept for a later switch back."""
    server = ServerSettings.load()
    if server.panel_smtp_enabled:
        server.panel_smtp_enabled = False
        with transaction.atomic():
            server.save(update_fields=["panel_smtp_enabled", "updated_at"])
            audit.record(actor, "server.panel_smtp", "server", ["panel_smtp_enabled"])
    return server


def clear_settings(actor) -> ServerSettings:
    """Back to the local MTA; the stored credentials are wiped."""
    server = ServerSettings.load()
    new = {
        "panel_smtp_enabled": False,
        "panel_smtp_host": "",
        "panel_smtp_username": "",
        "panel_smtp_password": "",
        "panel_smtp_from": "",
    }
    changed = [name for name, value in new.items() if getattr(server, name) != value]
    for name, value in new.items():
        setattr(server, name, value)
    with transaction.atomic():
        server.save()
        audit.record(actor, "server.panel_smtp.clear", "server", changed)
    return server
