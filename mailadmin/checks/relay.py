"""The relay check ("Test relay"): one real SMTP conversation with a relay,
step by step, through the panel's one SMTP client (checks.smtp.Session):
connect → (implicit TLS) → greeting → EHLO → STARTTLS → EHLO → AUTH → QUIT,
all within one deadline, and an outcome a person can act on (switch to
PLAIN, wrong password, TLS refused…). What we send for AUTH is shown as a
placeholder in the transcript."""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import asdict, dataclass, field

from django.utils.translation import gettext as _

from mailconf.snapshot import Relay

from .smtp import Refused, Session, Step, secret_forms

OK = "ok"
AUTH_FAILED = "auth_failed"
MECHANISM_NOT_OFFERED = "mechanism_not_offered"
CONNECTION_REFUSED = "connection_refused"
TIMEOUT = "timeout"
TLS_FAILED = "tls_failed"
HOST_NOT_FOUND = "host_not_found"
UNREACHABLE = "unreachable"
REJECTED = "rejected"  # the server answered with an error we did not expect
TARGET_REFUSED = "target_refused"  # a customer named a non-public host (checks.targets)


@dataclass
class RelayTestResult:
    outcome: str
    message: str
    steps: list[Step] = field(default_factory=list)
    offered_mechanisms: tuple[str, ...] = ()
    suggested_auth: str = ""  # "plain"/"login" when switching would help
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return self.outcome == OK

    def as_dict(self) -> dict:
        data = asdict(self)
        data["ok"] = self.ok
        data["offered_mechanisms"] = list(self.offered_mechanisms)
        return data

    def transcript(self) -> str:
        lines = []
        for step in self.steps:
            mark = "ok " if step.ok else "ERR"
            lines.append(f"[{mark}] {step.action}: {step.sent}".rstrip(": "))
            for reply_line in step.reply.splitlines() or [""]:
                lines.append(f"      {reply_line}")
        return "\n".join(lines)


class _Stop(Exception):
    """Ends the conversation with an outcome."""

    def __init__(self, outcome: str, message: str):
        super().__init__(message)
        self.outcome = outcome
        self.message = message


def _converse(session: Session, relay: Relay, helo: str, cafile: str | None) -> tuple[str, str, tuple[str, ...], str]:
    target = f"{relay.host}:{relay.port}"
    try:
        session.connect()
    except socket.gaierror as exc:
        session.step("connect", target, str(exc), False)
        raise _Stop(HOST_NOT_FOUND, _("The host name %(host)s does not resolve.") % {"host": relay.host})
    except ConnectionRefusedError:
        session.step("connect", target, _("connection refused"), False)
        raise _Stop(
            CONNECTION_REFUSED,
            _("%(target)s refused the connection: nothing listens there, or a firewall rejects it.") % {"target": target},
        )
    context = ssl.create_default_context(cafile=cafile)
    if relay.tls == "ssl":
        _tls(session, context)
    code, _text = session.greeting()
    if code != 220:
        raise _Stop(REJECTED, _("The server did not greet us (it answered %(code)s).") % {"code": code})
    extensions = session.ehlo(helo)
    if relay.tls == "starttls":
        if "STARTTLS" not in extensions:
            session.quit()
            raise _Stop(
                TLS_FAILED,
                _("The server does not offer STARTTLS. Choose implicit TLS (usually port 465) or another port."),
            )
        code, _text = session.command("STARTTLS", "STARTTLS")
        if code != 220:
            raise _Stop(TLS_FAILED, _("The server refused STARTTLS (it answered %(code)s).") % {"code": code})
        _tls(session, context)
        extensions = session.ehlo(helo)
    offered = mechanisms(extensions)
    if not relay.username:
        session.quit()
        return OK, _("The relay accepts connections; no authentication is configured."), offered, ""
    wanted = relay.auth.upper()
    if wanted not in offered:
        session.quit()
        other = {"LOGIN": "PLAIN", "PLAIN": "LOGIN"}[wanted]
        if other in offered:
            return (
                MECHANISM_NOT_OFFERED,
                _("The server does not offer %(wanted)s; it offers %(offered)s. Switch the authentication to %(other)s.")
                % {"wanted": wanted, "offered": ", ".join(offered), "other": other},
                offered,
                other.lower(),
            )
        if offered:
            message = _("The server does not offer %(wanted)s; it offers only %(offered)s, which the mail server cannot use.") % {
                "wanted": wanted,
                "offered": ", ".join(offered),
            }
        else:
            message = _("The server offers no authentication on this connection (often it does only after STARTTLS).")
        return MECHANISM_NOT_OFFERED, message, offered, ""
    code, _text = session.authenticate(wanted, relay.username, relay.password)
    session.quit()
    if code == 235:
        return OK, _("The relay accepted the user name and password."), offered, ""
    if code == 535:
        return AUTH_FAILED, _("The relay rejected the user name or password (535)."), offered, ""
    if code == 504:
        return MECHANISM_NOT_OFFERED, _("The server refused the %(wanted)s mechanism (504).") % {"wanted": wanted}, offered, ""
    return AUTH_FAILED, _("Authentication failed: the server answered %(code)s.") % {"code": code}, offered, ""


def _tls(session: Session, context: ssl.SSLContext) -> None:
    try:
        session.start_tls(context)
    except ssl.SSLError as exc:
        reason = getattr(exc, "verify_message", "") or exc.reason or str(exc)
        session.step("TLS", "", str(reason), False)
        raise _Stop(
            TLS_FAILED,
            _("The TLS handshake failed: %(reason)s. Exim would refuse this relay too.") % {"reason": reason},
        )


def mechanisms(extensions: list[str]) -> tuple[str, ...]:
    """AUTH mechanisms from EHLO lines ("AUTH LOGIN PLAIN", old "AUTH=LOGIN")."""
    found: list[str] = []
    for ext in extensions:
        words = ext.replace("=", " ", 1).split()
        if words and words[0].upper() == "AUTH":
            for word in words[1:]:
                if word.upper() not in found:
                    found.append(word.upper())
    return tuple(found)


def check_relay(
    relay: Relay, *, timeout: float, cafile: str | None = None, helo: str = "localhost", addresses=None
) -> RelayTestResult:
    """Run the conversation; never raises for network trouble. `addresses`
    (checked by checks.targets) replaces the name lookup; TLS still verifies
    the certificate against relay.host."""
    started = time.monotonic()
    session = Session(
        relay.host, relay.port, timeout=timeout, addresses=addresses,
        secrets=secret_forms(relay.username, relay.password),
    )
    offered: tuple[str, ...] = ()
    suggested = ""
    try:
        outcome, message, offered, suggested = _converse(session, relay, helo, cafile)
    except _Stop as stop:
        outcome, message = stop.outcome, stop.message
    except Refused as exc:
        outcome, message = REJECTED, exc.message
    except (socket.timeout, TimeoutError):
        session.step(session.pending, "", _("no answer within %(seconds)s s") % {"seconds": f"{timeout:g}"}, False)
        outcome = TIMEOUT
        message = _("The relay did not answer within %(seconds)s seconds.") % {"seconds": f"{timeout:g}"}
    except ssl.SSLError as exc:
        session.step("TLS", "", str(exc), False)
        outcome, message = TLS_FAILED, _("TLS failed: %(reason)s") % {"reason": exc.reason or exc}
    except OSError as exc:
        session.step("network", "", exc.strerror or str(exc), False)
        outcome = UNREACHABLE
        message = _("The relay could not be reached: %(reason)s") % {"reason": exc.strerror or exc}
    finally:
        session.close()
    return RelayTestResult(
        outcome=outcome,
        message=session.redact(message),
        steps=session.steps,
        offered_mechanisms=offered,
        suggested_auth=suggested,
        elapsed=round(time.monotonic() - started, 3),
    )
