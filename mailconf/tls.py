"""Where the certificates live and which name is served with which one.

The TLS folder is /etc/mailpanel/tls (install.sh; the server certificate
``Layout.tls_certificate`` is its fullchain.pem in
production; no server certificate set = no TLS = no SNI). Below it, one
certificate per mail domain and the SNI index (the contract between the ACME
side and the renderers: /work/agents/notes/tls-contract.md)::

    <tls>/fullchain.pem, <tls>/privkey.pem          the server's host name
    <tls>/domains/<domain>/fullchain.pem, privkey.pem  one per mail domain
    <tls>/sni_names                                 "<name> <domain>\\n" per name

The index is root's truth, written by the helper from the installed
certificates and never sent by the panel. Exim looks a client's SNI up in it
per connection (lsearch: the domain it returns is untainted, so the
certificate's path may be built from it); Dovecot's ``local_name`` blocks and
nginx's server blocks are rendered from the pairs ``parse_sni_index`` returns.

Pure and standard library only (the helper imports it as root).
"""

from __future__ import annotations

import re
from typing import NamedTuple

from .snapshot import Layout

# Production paths (the helper puts them under its --root; rendered files
# through layout.path()).
TLS_DIR = "/etc/mailpanel/tls"
SNI_INDEX_NAME = "sni_names"
SNI_INDEX = f"{TLS_DIR}/{SNI_INDEX_NAME}"
DOMAINS = "domains"
CERT_FILE = FULLCHAIN = "fullchain.pem"
KEY_FILE = PRIVKEY = "privkey.pem"
# 50,000 domains with four names each stay well below both.
MAX_SNI_INDEX_BYTES = 16 * 1024 * 1024
MAX_SNI_NAMES = 250_000

# Lower-case ASCII host names as we write them (IDNA already applied): no
# "*", "/", "..", blank, control character or upper case can match.
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_NAME_RE = re.compile(rf"(?=[a-z0-9.-]{{1,253}}\Z){_LABEL}(?:\.{_LABEL})+")


class SniName(NamedTuple):
    """A name a client may ask for (SNI) and the mail domain whose
    certificate answers it."""

    name: str
    domain: str


def offers_tls(layout: Layout) -> bool:
    """SNI only where TLS is offered at all (a server certificate is set)."""
    return bool(layout.tls_certificate)


def domain_folder(domain: str) -> str:
    return f"{TLS_DIR}/{DOMAINS}/{check_name(domain)}"


def domain_cert_paths(domain: str) -> tuple[str, str]:
    """(fullchain, private key) of a mail domain, production paths."""
    folder = domain_folder(domain)
    return f"{folder}/{FULLCHAIN}", f"{folder}/{PRIVKEY}"


def is_name(value: object) -> bool:
    return isinstance(value, str) and _NAME_RE.fullmatch(value) is not None


def name_in_domain(name: str, domain: str) -> bool:
    return name == domain or name.endswith("." + domain)


def check_name(value: str) -> str:
    if not is_name(value):
        raise ValueError(f"not a lower-case host name: {value!r}")
    return value


def check_pair(pair) -> SniName:
    name, domain = pair
    check_name(name)
    check_name(domain)
    if not name_in_domain(name, domain):
        raise ValueError(f"{name!r} is not a name of {domain!r}")
    return SniName(name, domain)


def parse_sni_index(content: bytes) -> tuple[SniName, ...]:
    """The index's pairs; ValueError (naming the line, never its text) for
    anything but sorted, unique ``<name> <domain>`` lines with the name in
    its domain. The whole file is refused on one bad line: it is written by
    root only, so a bad line means it was not."""
    if len(content) > MAX_SNI_INDEX_BYTES:
        raise ValueError(f"larger than {MAX_SNI_INDEX_BYTES} bytes")
    if content and not content.endswith(b"\n"):
        raise ValueError("the last line has no line break")
    try:
        text = content.decode("ascii")
    except UnicodeDecodeError:
        raise ValueError("not ASCII") from None
    lines = text.split("\n")[:-1] if text else []
    if len(lines) > MAX_SNI_NAMES:
        raise ValueError(f"more than {MAX_SNI_NAMES} names")
    pairs: list[SniName] = []
    previous = ""
    for number, line in enumerate(lines, 1):
        name, blank, domain = line.partition(" ")
        try:
            if not blank:
                raise ValueError("not '<name> <domain>'")
            pair = check_pair(SniName(name, domain))
        except ValueError:
            raise ValueError(f"line {number}: not '<name> <domain>' with the name in its domain") from None
        if name <= previous:
            raise ValueError(f"line {number}: not sorted or listed twice")
        previous = name
        pairs.append(pair)
    return tuple(pairs)


def render_sni_index(pairs) -> bytes:
    """The index for these pairs, exactly as parse_sni_index accepts it."""
    checked = sorted({check_pair(p) for p in pairs})
    names = [p.name for p in checked]
    if len(set(names)) != len(names):
        raise ValueError("a name belongs to two domains")
    return "".join(f"{p.name} {p.domain}\n" for p in checked).encode("ascii")


sni_index = render_sni_index


def sni_domains(pairs) -> dict[str, tuple[str, ...]]:
    """{domain: its names}, both sorted."""
    found: dict[str, list[str]] = {}
    for pair in sorted(pairs):
        found.setdefault(pair.domain, []).append(pair.name)
    return {domain: tuple(names) for domain, names in sorted(found.items())}
