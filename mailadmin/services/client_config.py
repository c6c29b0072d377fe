"""Client autoconfiguration: which domains get an answer, and what it says.

Only a domain this server receives mail for gets one: verified, not
suspended, its owner not suspended, not "mail hosted elsewhere". Anything
else — an unknown name, a pending domain a stranger added — gets the same
"not found" as a name nobody ever added, so these anonymous URLs tell no one
which names are on the panel beyond what its DNS already says.
"""

from __future__ import annotations

import dataclasses

from django.core.exceptions import ValidationError
from django.utils import timezone

from ..checks import certificate
from ..client_config import ClientSettings, offered_services
from ..dnsrecords import mx_host
from ..models import Certificate, MailDomain, ServerSettings
from ..validation import normalize_address, normalize_domain
from .apply import layout_from_settings
from .jobs import multi_node


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
    """What mail programs are told: the ports and TLS modes the Layout
    really offers, and the name on the certificate they will get —
    mail.<domain> once the domain's own certificate names it (Exim and
    Dovecot serve it by SNI), else the host name of the domain's node."""
    server = server or ServerSettings.load_public()
    settings = ClientSettings(
        domain=domain.name,
        display_name=domain.unicode_name,
        host=domain.node.identity(server).hostname,
        services=offered_services(layout_from_settings()),
    )
    if settings.tls and mx_host(domain.name) in domain_certificate_names(domain):
        settings = dataclasses.replace(settings, host=mx_host(domain.name))
    return settings


def domain_certificate_names(domain: MailDomain) -> tuple[str, ...]:
    """The names on the domain's own certificate while it is valid (what
    the helper installed: services.certificates), () without one."""
    names = (
        Certificate.objects.filter(domain=domain, server=False, not_after__gt=timezone.now())
        .values_list("names", flat=True)
        .first()
    )
    return tuple(names or ())


def certificate_names(domain: MailDomain, settings: ClientSettings) -> tuple[str, ...]:
    """The names on the certificate a client connecting to settings.host
    gets: the domain's own, else the server's (its ACME record, else the
    certificate file itself, the public half); () without TLS."""
    if not settings.tls:
        return ()
    own = domain_certificate_names(domain)
    if settings.host in own:
        return own
    rows = Certificate.objects.filter(server=True)
    if multi_node():  # each node has its own host name's certificate
        rows = rows.filter(node_id=domain.node_id)
    server_names = rows.values_list("names", flat=True).first()
    if server_names:
        return tuple(server_names)
    layout = layout_from_settings()
    return certificate.certificate_status(layout.path(layout.tls_certificate), settings.host).names
