"""Validators shared by forms and the CLI. Pure functions: they raise
django.core.exceptions.ValidationError with a message a person can act on."""

import ipaddress
import re

import idna
from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_TLD = re.compile(r"^(?:[a-z]{2,63}|xn--[a-z0-9-]{1,59})$")
# What hosting panels allow before the @ (HestiaCP too): a subset of what the
# renderer accepts, so a valid form can never make an apply fail.
_LOCAL_PART = re.compile(r"^[a-z0-9_+-]+(?:\.[a-z0-9_+-]+)*$")


def normalize_domain(value: str) -> str:
    """A domain as typed (Unicode or punycode) → its IDNA form, lower case.

    Refuses IPs, single labels (localhost), empty labels, leading/trailing hyphens,
    blanks and names over 253 characters."""
    raw = (value or "").strip().rstrip(".")
    if not raw:
        raise ValidationError(_("Enter a domain name."))
    if any(c.isspace() for c in raw):
        raise ValidationError(_("A domain name cannot contain spaces."))
    try:
        ipaddress.ip_address(raw.strip("[]"))
    except ValueError:
        pass
    else:
        raise ValidationError(_("Enter a domain name, not an IP address."))
    try:
        ascii_name = idna.encode(raw.lower(), uts46=True).decode("ascii")
    except idna.IDNAError:
        raise ValidationError(_("“%(value)s” is not a valid domain name.") % {"value": raw})
    labels = ascii_name.split(".")
    if len(labels) < 2:
        raise ValidationError(
            _("“%(value)s” is not a full domain name (example.com).") % {"value": raw}
        )
    if len(ascii_name) > 253:
        raise ValidationError(_("A domain name can be at most 253 characters long."))
    if not all(_LABEL.match(label) for label in labels) or not _TLD.match(labels[-1]):
        raise ValidationError(_("“%(value)s” is not a valid domain name.") % {"value": raw})
    return ascii_name


def normalize_hostname(value: str) -> str:
    """A host for SMTP: a domain name or an IP address."""
    raw = (value or "").strip()
    try:
        return str(ipaddress.ip_address(raw.strip("[]")))
    except ValueError:
        pass
    if raw.lower().rstrip(".") == "localhost":
        return "localhost"
    return normalize_domain(raw)


def validate_local_part(value: str) -> str:
    local = (value or "").strip().lower()
    if not local:
        raise ValidationError(_("Enter the part before the @."))
    if len(local) > 64 or not _LOCAL_PART.match(local):
        raise ValidationError(
            _("“%(value)s” cannot be used before the @ (letters, digits and . _ - + only).")
            % {"value": value}
        )
    return local


def normalize_address(value: str) -> str:
    """user@domain with the domain in IDNA form and the local part lower-cased."""
    raw = (value or "").strip()
    if raw.count("@") != 1:
        raise ValidationError(_("“%(value)s” is not an email address.") % {"value": raw})
    local, domain = raw.split("@")
    return f"{validate_local_part(local)}@{normalize_domain(domain)}"


def validate_port(value) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise ValidationError(_("A port is a number from 1 to 65535."))
    if not 1 <= port <= 65535:
        raise ValidationError(_("A port is a number from 1 to 65535."))
    return port


def validate_config_value(value: str, what: str) -> str:
    """Secrets and user names may hold any character a config file can carry
    byte-exactly; line breaks, NUL and other control characters cannot."""
    if any(ord(c) < 32 and c != "\t" or ord(c) == 127 for c in value):
        raise ValidationError(
            _("%(what)s cannot contain line breaks or control characters.") % {"what": what}
        )
    return value
