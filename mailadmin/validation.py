"""Validators shared by forms and the CLI. Pure functions: they raise
django.core.exceptions.ValidationError with a message a person can act on.

Patterns are matched whole (fullmatch): "$" would also match before a
trailing newline."""

import ipaddress
import re
import unicodedata

import idna
from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _

_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_TLD = re.compile(r"[a-z]{2,63}|xn--[a-z0-9-]{1,59}")
# What hosting panels allow before the @ (HestiaCP too): a subset of what the
# renderer accepts, so a valid form can never make an apply fail.
_LOCAL_PART = re.compile(r"[a-z0-9_+-]+(?:\.[a-z0-9_+-]+)*")
# Control characters (C0 with tab, CR, LF, NUL; DEL; C1 with NEL), line and
# paragraph separators, and invisible format characters that IDNA mapping
# would drop without a word (U+200B, U+00AD). ZWNJ/ZWJ are kept: IDNA 2008
# allows them in some scripts (CONTEXTJ).
_HIDDEN_CATEGORIES = {"Cc", "Cf", "Zl", "Zp"}
_JOINERS = {"\u200c", "\u200d"}


def _has_hidden_characters(value: str) -> bool:
    return any(
        unicodedata.category(c) in _HIDDEN_CATEGORIES and c not in _JOINERS for c in value
    )


def _strip_blanks(value) -> str:
    """Only blanks around a value are forgiven; any other whitespace is refused."""
    return (value or "").strip(" ")


def normalize_domain(value: str) -> str:
    """A domain as typed (Unicode or punycode) → its IDNA form, lower case.

    Refuses IPs, single labels (localhost), empty labels, leading/trailing hyphens,
    blanks, control and invisible characters, and names over 253 characters."""
    raw = _strip_blanks(value).rstrip(".")
    if not raw:
        raise ValidationError(_("Enter a domain name."))
    if _has_hidden_characters(raw):
        raise ValidationError(
            _("A domain name cannot contain line breaks, tabs or other invisible characters.")
        )
    if any(c.isspace() for c in raw):
        raise ValidationError(_("A domain name cannot contain spaces."))
    if _ip_address(raw.strip("[]")) is not None:
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
    if not all(_LABEL.fullmatch(label) for label in labels) or not _TLD.fullmatch(labels[-1]):
        raise ValidationError(_("“%(value)s” is not a valid domain name.") % {"value": raw})
    return ascii_name


def _ip_address(value: str):
    """The address `value` spells, or None. An IPv6 zone index (fe80::1%eth0),
    which Python's ipaddress accepts and keeps, is an error: it names one of
    this machine's interfaces, and anything may follow the %."""
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if getattr(address, "scope_id", None) is not None:
        raise ValidationError(
            _("An address cannot carry a zone index (“%(zone)s”): enter the address without it.")
            % {"zone": "%" + address.scope_id}
        )
    return address


def normalize_ip(value: str) -> str:
    """A plain IP address, canonical (what the server identity fields take)."""
    raw = _strip_blanks(value)
    if _has_hidden_characters(raw):
        raise ValidationError(
            _("An address cannot contain line breaks, tabs or other invisible characters.")
        )
    address = _ip_address(raw)
    if address is None:
        raise ValidationError(_("“%(value)s” is not an IP address.") % {"value": raw})
    return str(address)


def normalize_hostname(value: str) -> str:
    """A host for SMTP: a domain name, an IP address (IPv6 also in brackets)
    or localhost — nothing else: no zone index, no control characters."""
    raw = _strip_blanks(value)
    if not raw:
        raise ValidationError(_("Enter a host name or IP address."))
    if _has_hidden_characters(raw):
        raise ValidationError(
            _("A host name or address cannot contain line breaks, tabs or other invisible characters.")
        )
    bracketed = raw.startswith("[") and raw.endswith("]")
    address = _ip_address(raw[1:-1] if bracketed else raw)
    if address is not None:
        return str(address)
    if "[" in raw or "]" in raw:
        raise ValidationError(
            _("“%(value)s” is not a host name or IP address (brackets go only around an IP address).")
            % {"value": raw}
        )
    if raw.lower().rstrip(".") == "localhost":
        return "localhost"
    return normalize_domain(raw)


def validate_local_part(value: str) -> str:
    local = (value or "").strip().lower()
    if not local:
        raise ValidationError(_("Enter the part before the @."))
    if len(local) > 64 or not _LOCAL_PART.fullmatch(local):
        raise ValidationError(
            _("“%(value)s” cannot be used before the @ (letters, digits and . _ - + only).")
            % {"value": value}
        )
    return local


def normalize_address(value: str) -> str:
    """user@domain with the domain in IDNA form and the local part lower-cased."""
    raw = (value or "").strip()
    if raw.count("@") != 1 or any(ord(c) < 0x20 or ord(c) == 0x7F for c in raw):
        raise ValidationError(_("“%(value)s” is not an email address.") % {"value": raw})
    local, domain = raw.split("@")
    return f"{validate_local_part(local)}@{normalize_domain(domain)}"


_UNIX_USER = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")


def normalize_unix_users(value: str) -> str:
    """Unix user names separated by blanks or commas → "a b c" (sorted, once each)."""
    names = (value or "").replace(",", " ").split(" ")
    users = sorted({name for name in names if name})
    for name in users:
        if not _UNIX_USER.fullmatch(name):
            raise ValidationError(
                _("“%(value)s” is not a Unix user name (lower-case letters, digits, _ . -).")
                % {"value": name}
            )
    return " ".join(users)


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
