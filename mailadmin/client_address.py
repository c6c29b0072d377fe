"""Who is on the other end of a request, for counting (login throttling).

X-Forwarded-For is only the client's word unless the direct peer is one of
settings.MAILPANEL_TRUSTED_PROXIES: then the hops are read from the right,
skipping our own proxies, and the first one that is not ours is the client.
Whatever the client put further left is ignored."""

import ipaddress
from functools import lru_cache

from django.conf import settings


@lru_cache(maxsize=8)
def _networks(trusted: tuple[str, ...]):
    return tuple(ipaddress.ip_network(net, strict=False) for net in trusted)


def _parse(value: str):
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return None
    if address.version == 6:
        if address.scope_id:  # "fe80::1%eth0" names an interface of the sender, not a client
            return None
        if address.ipv4_mapped:
            return address.ipv4_mapped
    return address


def _as_client(address) -> str:
    # One host on IPv6 usually owns a whole /64: count it as one client.
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False).network_address)
    return str(address)


def client_address(request) -> str | None:
    current = _parse(request.META.get("REMOTE_ADDR") or "")
    if current is None:
        return None
    trusted = _networks(tuple(settings.MAILPANEL_TRUSTED_PROXIES))
    hops = request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")
    for hop in reversed(hops):
        if not any(current in net for net in trusted):
            break
        previous = _parse(hop)
        if previous is None:  # not written by a proxy of ours: stop at the last one that was
            break
        current = previous
    return _as_client(current)
