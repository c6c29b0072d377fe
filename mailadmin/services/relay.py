"""SMTP relays: the global one (domain=None) and each domain's own.

Saving changes the database only and asks for an apply; the renderer writes
/etc/exim4/smtp_relay.conf or /etc/exim4/domains/<d>/smtp_relay.conf from it.
Precedence at delivery time (render/exim.py): the sender domain's relay, else
the global relay, else direct delivery.
"""

import os
import re
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from mailconf import snapshot as snap
from ..models import MailDomain, RelayAuth, RelaySettings, RelayTls, ServerSettings, acts_as_admin
from mailconf.render.exim import relay_credentials_problem
from ..secret_endpoint import Endpoint, retype_problem
from . import audit, dns_checks, jobs
from .outcome import Change


@dataclass(frozen=True)
class Preset:
    key: str
    label: str
    host: str  # "{region}" is replaced by the region the user types
    port: int = 587
    auth: str = RelayAuth.LOGIN
    tls: str = RelayTls.STARTTLS
    needs_region: bool = False
    region_example: str = ""


PRESETS: dict[str, Preset] = {
    p.key: p
    for p in (
        Preset("custom", gettext_lazy("Custom"), ""),
        Preset(
            "amazon_ses",
            gettext_lazy("Amazon SES"),
            "email-smtp.{region}.amazonaws.com",
            needs_region=True,
            region_example="us-east-1",
        ),
        Preset("smtp2go", "SMTP2GO", "mail.smtp2go.com"),
        Preset("brevo", gettext_lazy("Brevo (ex-Sendinblue)"), "smtp-relay.brevo.com"),
        # Oracle Cloud's Email Delivery offers only AUTH PLAIN (FAQ "Oracle 云 + SMTP 中继").
        Preset(
            "oracle",
            gettext_lazy("Oracle Cloud (PLAIN)"),
            "smtp.email.{region}.oci.oraclecloud.com",
            auth=RelayAuth.PLAIN,
            needs_region=True,
            region_example="us-ashburn-1",
        ),
    )
}

# AWS (us-east-1, us-gov-west-1) and OCI (us-ashburn-1, ap-tokyo-1) region names.
_REGION = re.compile(r"^[a-z]{2}(?:-[a-z]+)+-\d{1,2}$")


def normalize_region(value: str) -> str:
    region = (value or "").strip().lower()
    if not _REGION.match(region):
        raise ValidationError(
            _("“%(value)s” is not a region name (for example us-east-1).") % {"value": value}
        )
    return region


def preset_values(key: str, region: str = "") -> dict:
    """host/port/auth/tls a preset fills in. Pure; raises ValidationError."""
    try:
        preset = PRESETS[key]
    except KeyError:
        raise ValidationError(_("Unknown provider preset “%(value)s”.") % {"value": key})
    if preset.key == "custom":
        return {}
    host = preset.host
    if preset.needs_region:
        if not (region or "").strip():
            raise ValidationError(
                _("%(provider)s needs a region (for example %(example)s).")
                % {"provider": preset.label, "example": preset.region_example}
            )
        host = host.format(region=normalize_region(region))
    return {"host": host, "port": preset.port, "auth": preset.auth, "tls": preset.tls}


def scope_name(domain: MailDomain | None) -> str:
    """The audit target: the domain, or "global"."""
    return domain.name if domain is not None else "global"


def get_relay(domain: MailDomain | None) -> RelaySettings | None:
    if domain is None:
        return RelaySettings.objects.filter(domain__isnull=True).first()
    return RelaySettings.objects.filter(domain=domain).first()


def relay_endpoint(values) -> Endpoint:
    """The endpoint of a RelaySettings row or of typed values (a dict)."""
    get = values.get if isinstance(values, dict) else lambda name: getattr(values, name)
    return Endpoint.of(get("host"), get("port"), get("tls"), get("auth"), get("username"))


def stored_endpoint(row: RelaySettings | None) -> Endpoint | None:
    """What the stored password may be sent to: None when none is stored."""
    return relay_endpoint(row) if row is not None and row.password else None


def resolve_password(row: RelaySettings | None, values: dict) -> str:
    """The password that goes with `values` (the typed ones): none without a
    user name; the typed one; else the stored one, but only for the endpoint
    it was stored for (secret_endpoint). ValidationError({"password": …})
    when it must be typed."""
    if not values.get("username"):
        return ""
    if values.get("password"):
        return values["password"]
    if row is None or not row.password:
        raise ValidationError({"password": _("Enter the password for the relay user.")})
    if problem := retype_problem(relay_endpoint(values), stored_endpoint(row)):
        raise ValidationError({"password": problem})
    return row.password


def check_credentials(username: str, password: str, auth: str) -> None:
    """What Exim cannot send gets an error here, not a failed apply later."""
    if username and relay_credentials_problem(username, password, auth):
        if any(c in username + password for c in "\x00\r\n"):
            raise ValidationError(_("The user name and password cannot contain line breaks or NUL."))
        raise ValidationError(
            {
                "auth": _(
                    "With PLAIN the mail server cannot send a user name or password that starts with ^. Choose LOGIN."
                )
            }
        )


@transaction.atomic
def set_relay(
    actor,
    domain: MailDomain | None,
    *,
    host: str,
    port: int = 587,
    tls: str = RelayTls.STARTTLS,
    username: str = "",
    password: str | None = None,
    auth: str = RelayAuth.LOGIN,
    preset: str = "custom",
) -> Change[RelaySettings]:
    """Create or change the relay of a domain (None = the global relay).

    The values come parsed by RelayForm (the panel and the CLI bind it); this
    decides what the form cannot: a customer's host must be public, a blank
    password keeps the stored one only for the endpoint it was stored for
    (secret_endpoint), an empty user name makes the relay unauthenticated and
    forgets the password, and Exim must be able to send the credentials."""
    values = {"host": host, "port": port, "tls": tls, "username": username or "", "auth": auth}
    row = (
        RelaySettings.objects.select_for_update().filter(domain=domain).first()
        if domain is not None
        else RelaySettings.objects.select_for_update().filter(domain__isnull=True).first()
    )
    errors = {}  # every decision's error at once, as a form shows them
    for decide in (
        lambda: None if acts_as_admin(actor) else _refuse_non_public_host(values["host"]),
        lambda: values.update(password=resolve_password(row, {**values, "password": password})),
    ):
        try:
            decide()
        except ValidationError as exc:
            errors.update(exc.message_dict)
    if errors:
        raise ValidationError(errors)
    created = row is None
    if created:
        row = RelaySettings(domain=domain)
    values["preset"] = preset if preset in PRESETS else "custom"
    check_credentials(values["username"], values["password"], values["auth"])

    changed = [name for name, value in values.items() if created or getattr(row, name) != value]
    if not changed:
        return Change(row)
    for name, value in values.items():
        setattr(row, name, value)
    row.save()
    audit.record(actor, "relay.set", scope_name(domain), changed)
    job = jobs.request_apply(actor, domain=domain)
    return Change(row, job, tuple(changed))


def _refuse_non_public_host(host: str) -> None:
    """A customer's relay is where Exim will connect with the domain's mail:
    like "Test relay", it must be a host on the public internet, not this
    server's loopback services or its private network (checks.targets). A
    name that does not resolve yet is the customer's business."""
    resolution = dns_checks.resolve_target(host, settings.MAILPANEL_CUSTOMER_TARGETS_ALLOW_LOOPBACK)
    if resolution.outcome == "refused":
        raise ValidationError(
            {"host": _("%(host)s is not on the public internet (a loopback, private or link-local address): "
                       "a relay must be a mail server other networks can reach.") % {"host": host}}
        )


@transaction.atomic
def clear_relay(actor, domain: MailDomain | None) -> Change[None]:
    """Remove the relay; mail then falls back to the global relay (for a
    domain) or direct delivery. Nothing changed when there was none."""
    row = get_relay(domain)
    if row is None:
        return Change(None)
    row.delete()
    fields = ("host", "port", "username", "password")
    audit.record(actor, "relay.clear", scope_name(domain), list(fields))
    return Change(None, jobs.request_apply(actor, domain=domain), fields)


def relay_for_test(domain: MailDomain | None, values: dict | None = None) -> snap.Relay | None:
    """What "Test relay" talks to: the typed values, or the stored relay when
    values is None. A blank password means the stored one, and only for the
    endpoint it was stored for: ValidationError({"password": …}) otherwise."""
    row = get_relay(domain)
    if values is None:
        if row is None:
            return None
        values = {
            "host": row.host,
            "port": row.port,
            "tls": row.tls,
            "username": row.username,
            "password": None,
            "auth": row.auth,
        }
    password = resolve_password(row, values)
    check_credentials(values.get("username") or "", password, values["auth"])
    return snap.Relay(
        host=values["host"],
        port=values["port"],
        username=values.get("username") or "",
        password=password,
        auth=values["auth"],
        tls=values["tls"],
    )


def check_options() -> dict:
    """Timeout, CA bundle and EHLO name for checks.relay.check_relay:
    the same CA bundle the rendered Exim config trusts."""
    from .apply import layout_from_settings

    layout = layout_from_settings()
    # The rendered exim4.conf names layout.path(relay_ca_bundle) (MP_RELAY_CA).
    cafile = layout.path(layout.relay_ca_bundle) if layout.relay_ca_bundle else ""
    if not os.path.isfile(cafile):
        cafile = None  # a development root without a bundle: the system's CAs
    return {
        "timeout": settings.MAILPANEL_CHECK_TIMEOUT,
        "cafile": cafile,
        "helo": ServerSettings.load().hostname or "localhost",
    }


def describe(row: RelaySettings | None, domain: MailDomain | None) -> dict:
    """For `mail relay show`: never the password, only whether one is set."""
    if row is None:
        return {"scope": scope_name(domain), "configured": False}
    return {
        "scope": scope_name(domain),
        "configured": True,
        "preset": row.preset or "custom",
        "host": row.host,
        "port": row.port,
        "tls": row.tls,
        "auth": row.auth,
        "username": row.username,
        "password": "set" if row.password else "unset",
    }
