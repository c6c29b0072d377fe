"""Strict checks for every snapshot value that lands in a rendered file.

The forms validate first; these run again in the renderers (and in the helper,
on the parameters and data files it is given) so that a value that slipped
through can never change a config file's meaning. They raise ValueError with
the offending value's role (never a secret's content). Every pattern is
matched whole (fullmatch): "$" would also match before a trailing newline.
"""

from __future__ import annotations

import ipaddress
import re

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME_RE = re.compile(rf"(?=.{{1,253}}\Z){_LABEL}(?:\.{_LABEL})*")
# DNSBL zones may carry a DQS key label; keys are alphanumeric. Underscores
# appear in some private zones.
_ZONE_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_ZONE_RE = re.compile(rf"(?=.{{1,200}}\Z){_ZONE_LABEL}(?:\.{_ZONE_LABEL})+")
# Local parts we write as lsearch keys and Dovecot user names: no blanks, no
# colon, no quotes, nothing Exim's redirect parser would treat specially.
# RFC 5322 atext (what mailadmin.validation accepts) minus '/', '|', '!', '%'
# and '#': Exim's ACL refuses those (Debian's restricted-characters rule), '#'
# would start an lsearch comment, '/' would leave the Maildir root.
_ATEXT = r"a-z0-9&'*+=?^_`{}~$-"
_LOCAL_PART_RE = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*")
_TARGET_LOCAL_RE = re.compile(rf"[A-Z{_ATEXT}]+(?:\.[A-Z{_ATEXT}]+)*")
_PATH_RE = re.compile(r"/[A-Za-z0-9._+/-]*")
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}")
_HASH_RE = re.compile(r"\{[A-Z0-9.-]+\}[\x21-\x39\x3b-\x7e]+")  # no ':' no blanks
_PEM_RE = re.compile(
    r"-----BEGIN (RSA |EC |)PRIVATE KEY-----\n[A-Za-z0-9+/=\n]+"
    r"-----END (RSA |EC |)PRIVATE KEY-----\n?"
)
# What PHP's password_verify() accepts: bcrypt ($2y$/$2b$/$2a$) or argon2.
_PHP_PASSWORD_HASH_RE = re.compile(
    r"\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}|\$argon2(id|i)\$v=\d+\$[a-z0-9=,]+\$[A-Za-z0-9+/=$]+"
)
# The SnappyMail admin key ends up in the admin URL as /?<key>.
_ADMIN_KEY_RE = re.compile(r"[A-Za-z0-9._~-]{8,128}")
_ADMIN_LOGIN_RE = re.compile(r"[^\x00-\x1f\x7f]{1,64}")  # ini_quote escapes the rest


def hostname(value: str, what: str = "host name") -> str:
    v = value.strip().lower().rstrip(".")
    if not _HOSTNAME_RE.fullmatch(v):
        raise ValueError(f"invalid {what}: {value!r}")
    return v


def domain(value: str) -> str:
    v = hostname(value, "domain")
    if "." not in v:
        raise ValueError(f"invalid domain (needs a dot): {value!r}")
    return v


def zone(value: str) -> str:
    v = value.strip().lower().rstrip(".")
    if not _ZONE_RE.fullmatch(v):
        # Never echo a zone: it may contain a DQS key.
        raise ValueError("invalid DNSBL zone name")
    return v


def host_or_ip(value: str, what: str = "relay host") -> str:
    v = value.strip()
    if "%" in v:  # an IPv6 scope id ("fe80::1%eth0"): not a relay address
        raise ValueError(f"invalid {what}: {value!r}")
    try:
        return str(ipaddress.ip_address(v.strip("[]")))
    except ValueError:
        return hostname(v, what)


def ip(value: str, what: str = "listen address") -> str:
    if not isinstance(value, str) or "%" in value:
        raise ValueError(f"invalid {what}: {value!r}")
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"invalid {what}: {value!r}") from None


def port(value: int, what: str = "port") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise ValueError(f"invalid {what}: {value!r}")
    return value


def local_part(value: str) -> str:
    if len(value) > 64 or not _LOCAL_PART_RE.fullmatch(value):
        raise ValueError(f"invalid local part: {value!r}")
    return value


def address(value: str, what: str = "address") -> str:
    """A forwarding / alias target: plain local@domain, nothing Exim's
    redirect parser could read as a pipe, file, include or group."""
    local, sep, dom = value.strip().rpartition("@")
    if not sep or len(local) > 64 or not _TARGET_LOCAL_RE.fullmatch(local):
        raise ValueError(f"invalid {what}: {value!r}")
    return f"{local}@{domain(dom)}"


def path(value: str, what: str = "path") -> str:
    if not _PATH_RE.fullmatch(value) or "/../" in value + "/" or "//" in value:
        raise ValueError(f"invalid {what}: {value!r}")
    return value


def name(value: str, what: str = "user/group name") -> str:
    if not _NAME_RE.fullmatch(value):
        raise ValueError(f"invalid {what}: {value!r}")
    return value


def password_hash(value: str) -> str:
    if not _HASH_RE.fullmatch(value):
        raise ValueError("invalid password hash (expected {SCHEME}hash without ':')")
    return value


def quota_mb(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"invalid quota: {value!r}")
    return value


def secret(value: str, what: str) -> str:
    """Relay user names and passwords: any character but NUL, CR and LF."""
    if any(c in value for c in "\x00\r\n"):
        raise ValueError(f"{what} must not contain NUL, CR or LF")
    return value


def pem(value: str) -> str:
    v = value.replace("\r\n", "\n").strip() + "\n"
    if not _PEM_RE.fullmatch(v):
        raise ValueError("invalid DKIM private key (expected a PEM private key)")
    return v


def choice(value: str, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise ValueError(f"invalid {what}: {value!r}")
    return value


def snappymail_credentials(sm) -> None:
    """SnappyMail's admin login, password hash and admin key (never echoed)."""
    if not _PHP_PASSWORD_HASH_RE.fullmatch(sm.admin_password_hash):
        raise ValueError("SnappyMail admin password hash is not a bcrypt/argon2 hash")
    if not _ADMIN_KEY_RE.fullmatch(sm.admin_key):
        raise ValueError("SnappyMail admin key must be 8-128 URL-safe characters")
    if not _ADMIN_LOGIN_RE.fullmatch(sm.admin_login):
        raise ValueError("SnappyMail admin login must be 1-64 characters without control characters")


# Spamhaus domain-based zones: queried with a domain, answer 127.0.1.x.
DOMAIN_ZONE_LABELS = frozenset({"dbl", "zrd"})
IP_ZONE_CODES = tuple(f"127.0.0.{i}" for i in range(2, 256))
DOMAIN_ZONE_CODES = tuple(f"127.0.1.{i}" for i in range(2, 255))


def relay_credentials_problem(username: str, password: str, auth: str) -> str | None:
    """Why Exim cannot send these relay credentials, or None. For the relay
    form (SPEC 3.5: what cannot be represented gets a form error).

    In ``client_send`` every single ``^`` is a NUL and ``^^`` a literal ``^``,
    so ``^^^`` reads as ``^`` + NUL: Exim (4.96, src/auths/get_data.c) has no
    way to send a ``^`` right after a NUL. PLAIN puts a NUL before the user
    name and before the password, so neither may start with ``^`` there.
    LOGIN sends them separately and can carry anything."""
    for value, what in ((username, "user name"), (password, "password")):
        if any(c in value for c in "\x00\r\n"):
            return f"the relay {what} cannot contain NUL, CR or LF"
    if auth == "plain" and username and (username.startswith("^") or password.startswith("^")):
        return "with PLAIN, the relay user name and password cannot start with ^ (use LOGIN)"
    return None
