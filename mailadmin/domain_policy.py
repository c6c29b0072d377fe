"""Which names a customer may claim as a mail domain. Pure: the service
passes in the names the server reserves; no ORM, no I/O.

A mail domain here is local to Exim: whoever holds `corp.test`, the server's
hostname or `gmail.com` receives (or bounces) everyone's mail to it from this
server. So customers may not claim a public suffix, nor any name equal to,
under or above a reserved name (the hostname, the panel's host, the admins'
mail domains). Ownership of what is left is proved later by a TXT record.

The public suffix list is publicsuffixlist's bundled copy (updated with each
release of the package, no download at run time). tldextract was the other
candidate: by default it fetches the list over the network on first use and
caches it on disk, which a server that must work offline does not want."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import cache
from urllib.parse import urlsplit

from django.utils.translation import gettext as _
from publicsuffixlist import PublicSuffixList


@cache
def _suffixes() -> PublicSuffixList:
    return PublicSuffixList()  # the bundled list, private section included (github.io …)


def is_public_suffix(name: str) -> bool:
    return _suffixes().is_public(name.lower().rstrip("."))


def ancestors(name: str) -> list[str]:
    """'a.b.example.org' → ['b.example.org', 'example.org', 'org']."""
    labels = name.split(".")
    return [".".join(labels[i:]) for i in range(1, len(labels))]


def related(name: str, other: str) -> bool:
    """The same name, or one is under the other."""
    return name == other or name.endswith("." + other) or other.endswith("." + name)


def host_of_url(url: str) -> str:
    """The host of MAILPANEL_BASE_URL, '' when it is an address or missing."""
    host = (urlsplit(url or "").hostname or "").lower().rstrip(".")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host
    return ""


def domain_of_address(address: str) -> str:
    return (address or "").rpartition("@")[2].strip().lower().rstrip(".")


def reserved_problem(name: str, reserved: Iterable[str]) -> str | None:
    """Why a customer may not claim `name` (IDNA, lower case), or None."""
    if is_public_suffix(name):
        return _(
            "%(name)s is a public suffix (like com or co.uk): add the domain you "
            "registered under it instead."
        ) % {"name": name}
    for other in reserved:
        if other and "." in other and related(name, other):
            return _(
                "%(name)s is reserved for this server and its administrators: "
                "customers cannot add it, nor a name under or above it."
            ) % {"name": name}
    return None
