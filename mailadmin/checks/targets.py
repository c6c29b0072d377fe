"""Which hosts a customer may make the server connect to. No ORM.

A customer's "Test relay" makes this server open a connection to a host the
customer typed. Without a rule that is a port scanner and banner grabber for
the server's own loopback services and its private network. So a customer's
target must be on the public internet: every address its name resolves to is
checked (one bad address refuses the name), the name is resolved through the
panel's own DNS client (the one "Check now" uses, so tests can point it at
127.0.0.1, and /etc/hosts is not consulted), and the caller connects to the
addresses checked here rather than resolving the name again, so a DNS answer
that changes between the check and the connection (DNS rebinding) cannot
slip a private address in. Admins are not restricted.
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass, field

from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

# The first matching class names the refusal; order matters (127.0.0.1 is also "private").
_CLASSES = (
    ("is_unspecified", gettext_lazy("unspecified")),
    ("is_loopback", gettext_lazy("loopback")),
    ("is_link_local", gettext_lazy("link-local")),
    ("is_multicast", gettext_lazy("multicast")),
    ("is_private", gettext_lazy("private")),
    ("is_reserved", gettext_lazy("reserved")),
)


def _plain(address: ipaddress.IPv4Address | ipaddress.IPv6Address):
    """An IPv4 address hidden in IPv6 (::ffff:127.0.0.1, 6to4, Teredo) is judged as IPv4."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address.teredo is not None:
            return address.teredo[1]
    return address


def refusal(text: str, allow_loopback: bool = False) -> str:
    """Why a customer may not target this address ("" = allowed).

    allow_loopback lets tests, which may only use 127.0.0.0/8 and ::1, run the
    customer's path end to end; it never opens private or link-local ranges."""
    try:
        address = _plain(ipaddress.ip_address(text))
    except ValueError:
        return str(_("not an address"))
    if allow_loopback and address.is_loopback:
        return ""
    for attribute, label in _CLASSES:
        if getattr(address, attribute):
            return str(label)
    if not address.is_global:  # shared address space (100.64/10), documentation ranges…
        return str(_("not publicly routable"))
    return ""


@dataclass
class Resolution:
    """The addresses a target name has now, or why it has none we may use."""

    host: str
    addresses: list[str] = field(default_factory=list)
    outcome: str = "ok"  # "ok" | "not_found" | "unknown" | "refused"
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


async def resolve_public(lookups, host: str, allow_loopback: bool = False) -> Resolution:
    """Every A and AAAA address of `host` (or the address itself), each one
    checked with refusal(); `lookups` is a checks.dns.Lookups."""
    try:
        addresses = [str(ipaddress.ip_address(host.strip("[]")))]
    except ValueError:
        lookups = lookups.for_one_check()
        a, aaaa = await asyncio.gather(lookups.query(host, "A"), lookups.query(host, "AAAA"))
        addresses = sorted(set(a.values + aaaa.values), key=lambda ip: (":" in ip, ip))
        if not addresses:
            if a.failed or aaaa.failed:
                return Resolution(
                    host,
                    outcome="unknown",
                    message=_("The name %(host)s could not be looked up: %(why)s")
                    % {"host": host, "why": a.error or aaaa.error},
                )
            return Resolution(
                host, outcome="not_found", message=_("The host name %(host)s does not resolve.") % {"host": host}
            )
    for address in addresses:
        why = refusal(address, allow_loopback)
        if why:
            if address == host.strip("[]"):
                message = _(
                    "%(address)s is not allowed (%(kind)s address): only hosts on the public internet can be tested."
                ) % {"address": address, "kind": why}
            else:
                message = _(
                    "%(host)s resolves to %(address)s (%(kind)s address): only hosts on the public internet can be tested."
                ) % {"host": host, "address": address, "kind": why}
            return Resolution(host, outcome="refused", message=message)
    return Resolution(host, addresses=addresses)
