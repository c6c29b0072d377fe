"""Grammars of the data files: what the helper accepts from the panel.

Each check takes the file's bytes and returns nothing, or raises ValueError
saying which line broke which rule (never the line itself: a relay file holds
credentials). A data file is exactly what mailconf.render writes and nothing
more, so even a panel process in an attacker's hands can only hand root a
mailbox, an address or a key, never an instruction:

- no pipe (``|cmd``), file (``/path``), ``:include:`` or ``:fail:`` target in
  aliases and forwards, only plain addresses;
- passwd lines have exactly Dovecot's seven fields, a bcrypt hash and at most
  the one quota field we write (no ``userdb_mail=``, ``userdb_uid=``, …);
- a DKIM key is one PEM RSA private key, parsed down to its DER structure;
  its selector one DNS label (Exim reads it with ``${readfile}`` into
  ``dkim_selector``, a value, never expanded again).

Exim and Dovecot read these files through lookups whose results are never
expanded again (tests/test_helper_hostile.py shows it with real Exim).
"""

from __future__ import annotations

import base64
import binascii
import json
import re

from . import validate as v
from .validate import DOMAIN_ZONE_CODES, DOMAIN_ZONE_LABELS, IP_ZONE_CODES, relay_credentials_problem

MAX_DATA_FILE_BYTES = 64 * 1024 * 1024

_BCRYPT = r"\{BLF-CRYPT\}\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}"
_PASSWD_RE = re.compile(
    r"(?P<local>[^:\n]{1,64}):" + _BCRYPT + r"::::::(?:userdb_quota_rule=\*:storage=[1-9][0-9]{0,9}M)?"
)
_BASE64_RE = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
_PORT_RE = re.compile(r"[1-9][0-9]{0,4}")
_CREDENTIAL_VALUE_RE = re.compile(r"[\x21-\x7e]{1,256}")
# One DNS label (RFC 1035 letters, digits, hyphen; lower case as we write it).
DKIM_SELECTOR_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def check(grammar: str, content: bytes) -> None:
    """Raise ValueError unless content is a file of that grammar."""
    if len(content) > MAX_DATA_FILE_BYTES:
        raise ValueError(f"larger than {MAX_DATA_FILE_BYTES} bytes")
    GRAMMARS[grammar](content)


def _lines(content: bytes) -> list[str]:
    """The file's lines; every line ends in LF, no CR, NUL or other control
    characters anywhere (they would end or split a line for some reader)."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("not UTF-8") from None
    if text and not text.endswith("\n"):
        raise ValueError("the last line has no line break")
    lines = text.split("\n")[:-1] if text else []
    for number, line in enumerate(lines, 1):
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in line):
            raise ValueError(f"line {number}: control character")
    return lines


def _unique(key: str, seen: set, number: int) -> None:
    if key in seen:
        raise ValueError(f"line {number}: {key!r} listed twice")
    seen.add(key)


def passwd(content: bytes) -> None:
    seen: set[str] = set()
    for number, line in enumerate(_lines(content), 1):
        match = _PASSWD_RE.fullmatch(line)
        if not match:
            raise ValueError(f"line {number}: not 'local:{{BLF-CRYPT}}hash::::::[quota]'")
        local = _local_part(match["local"], number)
        _unique(local, seen, number)


def _local_part(value: str, number: int) -> str:
    try:
        return v.local_part(value)
    except ValueError:
        raise ValueError(f"line {number}: not a local part") from None


def _address_list(content: bytes, catchall: bool) -> None:
    seen: set[str] = set()
    for number, line in enumerate(_lines(content), 1):
        key, sep, targets = line.partition(": ")
        if not sep or not targets:
            raise ValueError(f"line {number}: not 'local: address, address'")
        if not (catchall and key == "*"):
            _local_part(key, number)
        _unique(key, seen, number)
        for target in targets.split(", "):
            try:
                ok = v.address(target) == target
            except ValueError:
                ok = False
            if not ok:
                raise ValueError(f"line {number}: a target is not a plain address")


def aliases(content: bytes) -> None:
    _address_list(content, catchall=True)


def forwards(content: bytes) -> None:
    _address_list(content, catchall=False)


RELAY_KEYS = ("auth", "host", "port", "tls")
RELAY_AUTH_KEYS = ("auth", "host", "pass", "port", "tls", "user")


def relay(content: bytes) -> None:
    lines = _lines(content)
    if not lines:
        return  # no relay
    pairs = []
    for number, line in enumerate(lines, 1):
        key, sep, value = line.partition(": ")
        if not sep:
            raise ValueError(f"line {number}: not 'key: value'")
        pairs.append((key, value))
    keys = tuple(key for key, _ in pairs)
    if keys not in (RELAY_KEYS, RELAY_AUTH_KEYS):
        raise ValueError("relay file keys must be exactly: " + ", ".join(RELAY_AUTH_KEYS))
    values = dict(pairs)
    if v.host_or_ip(values["host"]) != values["host"]:
        raise ValueError("host: not a plain host name or IP address")
    if not _PORT_RE.fullmatch(values["port"]) or int(values["port"]) > 65535:
        raise ValueError("port: not a port number")
    v.choice(values["auth"], ("login", "plain"), "relay auth")
    v.choice(values["tls"], ("starttls", "ssl", "none"), "relay tls")
    if "user" in values:
        user, password = _b64_text(values["user"], "user"), _b64_text(values["pass"], "pass")
        problem = relay_credentials_problem(user, password, values["auth"])
        if problem:
            raise ValueError(problem)


def moved_to(content: bytes) -> None:
    """``host: H`` and ``port: N``: where a moving domain's mail goes."""
    lines = _lines(content)
    keys = tuple(line.partition(": ")[0] for line in lines)
    if keys != ("host", "port") or not all(": " in line for line in lines):
        raise ValueError("moved_to keys must be exactly: host, port")
    host, port = (line.partition(": ")[2] for line in lines)
    try:
        plain = v.host_or_ip(host, "new node's host") == host
    except ValueError:
        plain = False  # its message would quote the line
    if not plain:
        raise ValueError("host: not a plain host name or IP address")
    if not _PORT_RE.fullmatch(port) or int(port) > 65535:
        raise ValueError("port: not a port number")


def _b64_text(value: str, what: str) -> str:
    if not value or not _BASE64_RE.fullmatch(value):
        raise ValueError(f"{what}: not base64")
    try:
        return base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise ValueError(f"{what}: not base64 of UTF-8 text") from None


def dnsbl(content: bytes) -> None:
    ip_codes, domain_codes = ",".join(IP_ZONE_CODES), ",".join(DOMAIN_ZONE_CODES)
    seen: set[str] = set()
    for number, line in enumerate(_lines(content), 1):
        zone, sep, codes = line.partition("=")
        try:
            ok = sep and v.zone(zone) == zone
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"line {number}: not a DNSBL zone name")
        domain_zone = bool(set(zone.split(".")) & DOMAIN_ZONE_LABELS)
        if codes != (domain_codes if domain_zone else ip_codes):
            raise ValueError(f"line {number}: not the zone's listing codes")
        _unique(zone, seen, number)


def domain_list(content: bytes) -> None:
    seen: set[str] = set()
    for number, line in enumerate(_lines(content), 1):
        name = line[:-1] if line.endswith(":") else ""
        try:
            ok = v.domain(name) == name
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"line {number}: not 'domain:'")
        _unique(name, seen, number)


def local_senders(content: bytes) -> None:
    seen: set[str] = set()
    for number, line in enumerate(_lines(content), 1):
        name = line[:-1] if line.endswith(":") else ""
        try:
            v.name(name, "Unix user")
        except ValueError:
            raise ValueError(f"line {number}: not 'unixuser:'") from None
        _unique(name, seen, number)


SEND_LIMIT_FIELDS = ("hour", "day", "rcpt")
_LIMIT_NUMBER_RE = re.compile(r"0|[1-9][0-9]{0,8}")


def _sender_key(key: str, number: int) -> None:
    """"*" (the domain, or the server default) or a mailbox's local part."""
    if key != "*":
        _local_part(key, number)


def send_limits(content: bytes) -> None:
    """``key: hour=N day=N rcpt=N`` (fields in that order, each optional,
    at least one); Exim reads a field with ${extract} and uses it only when
    it is a number."""
    seen: set[str] = set()
    for number, line in enumerate(_lines(content), 1):
        key, sep, values = line.partition(": ")
        if not sep or not values:
            raise ValueError(f"line {number}: not 'key: hour=N day=N rcpt=N'")
        _sender_key(key, number)
        _unique(key, seen, number)
        names = []
        for pair in values.split(" "):
            name, eq, value = pair.partition("=")
            if not eq or name not in SEND_LIMIT_FIELDS or not _LIMIT_NUMBER_RE.fullmatch(value):
                raise ValueError(f"line {number}: not 'hour=N', 'day=N' or 'rcpt=N'")
            names.append(name)
        if names != [n for n in SEND_LIMIT_FIELDS if n in names] or len(set(names)) != len(names):
            raise ValueError(f"line {number}: fields out of order or listed twice")


def held_senders(content: bytes) -> None:
    """``key:`` per line: a mailbox's local part, or "*" (the domain's local
    submissions)."""
    seen: set[str] = set()
    for number, line in enumerate(_lines(content), 1):
        key = line[:-1] if line.endswith(":") else ""
        if not key:
            raise ValueError(f"line {number}: not 'local_part:'")
        _sender_key(key, number)
        _unique(key, seen, number)


def dkim_key(content: bytes) -> None:
    """One PEM RSA private key (PKCS#1 or PKCS#8), nothing before or after."""
    lines = _lines(content)
    if len(lines) < 3:
        raise ValueError("not a PEM private key")
    header, body, footer = lines[0], lines[1:-1], lines[-1]
    kinds = {"-----BEGIN RSA PRIVATE KEY-----": "pkcs1", "-----BEGIN PRIVATE KEY-----": "pkcs8"}
    kind = kinds.get(header)
    if kind is None or footer != header.replace("BEGIN", "END"):
        raise ValueError("not a PEM RSA private key")
    if any(len(line) > 76 or not _BASE64_RE.fullmatch(line) for line in body):
        raise ValueError("the key's body is not base64")
    der = base64.b64decode("".join(body))
    if kind == "pkcs8":
        der = _pkcs8_rsa_key(der)
    _pkcs1_rsa_key(der)


def dkim_selector(content: bytes) -> None:
    """One DNS label and a line break: the selector Exim signs with."""
    lines = _lines(content)
    if len(lines) != 1 or not DKIM_SELECTOR_RE.fullmatch(lines[0]):
        raise ValueError("not one DNS label (a-z, 0-9, - inside) on one line")


RSA_ENCRYPTION_OID = bytes.fromhex("2a864886f70d010101")  # 1.2.840.113549.1.1.1


def _der(data: bytes, offset: int) -> tuple[int, bytes, int]:
    """(tag, value, next offset) of the DER element at offset."""
    if offset + 2 > len(data):
        raise ValueError("truncated DER")
    tag, length = data[offset], data[offset + 1]
    offset += 2
    if length & 0x80:
        count = length & 0x7F
        if not 1 <= count <= 4 or offset + count > len(data):
            raise ValueError("bad DER length")
        length = int.from_bytes(data[offset : offset + count], "big")
        offset += count
    if offset + length > len(data):
        raise ValueError("truncated DER")
    return tag, data[offset : offset + length], offset + length


def _items(body: bytes) -> list[tuple[int, bytes]]:
    items, offset = [], 0
    while offset < len(body):
        tag, value, offset = _der(body, offset)
        items.append((tag, value))
    return items


def _sequence(data: bytes) -> list[tuple[int, bytes]]:
    tag, body, end = _der(data, 0)
    if tag != 0x30 or end != len(data):
        raise ValueError("not one DER SEQUENCE")
    return _items(body)


def _pkcs8_rsa_key(der: bytes) -> bytes:
    items = _sequence(der)
    if len(items) != 3 or items[0] != (0x02, b"\x00") or items[1][0] != 0x30 or items[2][0] != 0x04:
        raise ValueError("not a PKCS#8 private key")
    algorithm = _items(items[1][1])
    if not algorithm or algorithm[0] != (0x06, RSA_ENCRYPTION_OID):
        raise ValueError("not an RSA key")
    return items[2][1]


def _pkcs1_rsa_key(der: bytes) -> None:
    items = _sequence(der)
    if len(items) != 9 or items[0] != (0x02, b"\x00") or any(tag != 0x02 for tag, _ in items):
        raise ValueError("not a PKCS#1 RSA private key")
    if len(items[1][1]) < 128:  # modulus under 1024 bits
        raise ValueError("RSA key shorter than 1024 bits")


SNAPPYMAIL_DOMAIN_BLOCKS = ("IMAP", "SMTP", "Sieve")
# MailSo\Net\Enumerations\ConnectionSecurityType: none, SSL, STARTTLS, auto
SNAPPYMAIL_SECURITY_TYPES = (0, 1, 2, 9)


def snappymail_domain(content: bytes) -> None:
    """SnappyMail's domains/default.json and domains/<domain>.json: the
    connect blocks we write, no more."""
    try:
        data = json.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ValueError("not JSON") from None
    if not isinstance(data, dict) or set(data) != {*SNAPPYMAIL_DOMAIN_BLOCKS, "whiteList"}:
        raise ValueError("not a SnappyMail domain object")
    if not isinstance(data["whiteList"], str):
        raise ValueError("whiteList: not a string")
    for name in SNAPPYMAIL_DOMAIN_BLOCKS:
        block = data[name]
        if not isinstance(block, dict) or not all(_json_scalar_or_flat(x) for x in block.values()):
            raise ValueError(f"{name}: not a connection block")
        if v.host_or_ip(str(block.get("host", "")), f"{name} host") != block.get("host"):
            raise ValueError(f"{name}: host is not a plain name")
        port = block.get("port")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"{name}: port is not a port number")
        security = block.get("type")
        if isinstance(security, bool) or security not in SNAPPYMAIL_SECURITY_TYPES:
            raise ValueError(f"{name}: type is not a connection security")


def _json_scalar_or_flat(value: object) -> bool:
    scalar = (str, int, float, bool, type(None))
    if isinstance(value, list):
        return all(isinstance(x, scalar) for x in value)
    if isinstance(value, dict):
        return all(isinstance(x, scalar) for x in value.values())
    return isinstance(value, scalar)


def snappymail_credentials(content: bytes) -> None:
    """/root/.snappymail in the FAQ's three lines."""
    lines = _lines(content)
    names = tuple(line.partition(": ")[0] for line in lines)
    if names != ("Username", "Password", "Secret key"):
        raise ValueError("not the Username/Password/Secret key lines")
    for line in lines:
        if not _CREDENTIAL_VALUE_RE.fullmatch(line.partition(": ")[2]):
            raise ValueError("a credential is not printable ASCII without blanks")


GRAMMARS = {
    "passwd": passwd,
    "aliases": aliases,
    "forwards": forwards,
    "relay": relay,
    "dnsbl": dnsbl,
    "domain_list": domain_list,
    "local_senders": local_senders,
    "send_limits": send_limits,
    "held_senders": held_senders,
    "moved_to": moved_to,
    "dkim_key": dkim_key,
    "dkim_selector": dkim_selector,
    "snappymail_domain": snappymail_domain,
    "snappymail_credentials": snappymail_credentials,
}
