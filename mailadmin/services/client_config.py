"""Client autoconfiguration: which domains get an answer, and what it says.

Only a domain this server receives mail for gets one: verified, not
suspended, its owner not suspended, not "mail hosted elsewhere". Anything
else — an unknown name, a pending domain a stranger added — gets the same
"not found" as a name nobody ever added, so these anonymous URLs tell no one
which names are on the panel beyond what its DNS already says.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError

from ..client_config import ClientSettings
from ..models import MailDomain, ServerSettings
from ..validation import normalize_address, normalize_domain


def served_domains():
    return MailDomain.objects.live().filter(suspended=False, hosted_elsewhere=False).select_related("node")


def hosted_domain(name: str) -> MailDomain | None:
    """The served domain called `name` (any spelling: Unicode, punycode,
    upper case), or None."""
    try:
        ascii_name = normalize_domain(name)
    except ValidationError:
        return None
    return served_domains().filter(name=ascii_name).first()


def address_in(address: str, domain: MailDomain | None = None) -> tuple[str, MailDomain] | None:
    """`address` normalised (local part lower case, domain IDNA) and its
    served domain, or None. With `domain`, the address must be in it."""
    try:
        normalized = normalize_address(address)
    except ValidationError:
        return None
    name = normalized.rpartition("@")[2]
    if domain is not None:
        return (normalized, domain) if name == domain.name else None
    found = served_domains().filter(name=name).first()
    return (normalized, found) if found is not None else None


def client_settings(domain: MailDomain, server: ServerSettings | None = None) -> ClientSettings:
    server = server or ServerSettings.load_public()
    # The host name of the node the domain lives on (its certificate's name).
    host = domain.node.identity(server).hostname
    return ClientSettings(domain=domain.name, display_name=domain.unicode_name, host=host)
