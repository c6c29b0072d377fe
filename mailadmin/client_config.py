"""What a mail program is told about a hosted domain — one source of truth.

The RFC 6186 SRV records (dnsrecords.build_records), Thunderbird's autoconfig
file, Outlook's autodiscover answer, Apple's .mobileconfig profile and the
domain page's "Mail client settings" all read `SERVICES` and `ClientSettings`.
Clients connect to the name on the certificate they will get: mail.<domain>
once the domain has a certificate of its own (Exim and Dovecot choose it by
SNI), the server's host name before; the ports and TLS modes are what the
Layout really offers (``offered_services``).

Pure: no ORM, no I/O, no clock. Documents are built with ElementTree and
plistlib, which escape every value; nothing a request carries is written into
them except an autodiscover address the caller has already validated.
Requests are parsed with defusedxml with DTDs refused outright, so no entity
is ever expanded (billion laughs, external entities).
"""

from __future__ import annotations

import plistlib
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException


@dataclass(frozen=True)
class Service:
    """One way in, as RFC 6186 / RFC 8314 name it."""

    label: str  # the SRV service label: imaps, imap, submissions, submission
    protocol: str  # "imap" | "smtp"
    port: int
    tls: str  # "SSL" (implicit TLS) | "STARTTLS" | "plain" (no TLS) — Thunderbird's socketType words
    priority: int  # SRV priority: implicit TLS first (RFC 8314 §5.1)
    offered: bool = True  # False: the SRV record says "not here" (target ".")


# What Exim and Dovecot listen on (mailconf.snapshot.Layout defaults: 465 and
# 993 implicit TLS, 587 and 143 with STARTTLS; plain-text login is refused
# without TLS on every port). Preferred first within each protocol.
SERVICES = (
    Service("imaps", "imap", 993, "SSL", 0),
    Service("imap", "imap", 143, "STARTTLS", 10),
    Service("submissions", "smtp", 465, "SSL", 0),
    Service("submission", "smtp", 587, "STARTTLS", 10),
)
SSL, STARTTLS, PLAIN = "SSL", "STARTTLS", "plain"


def offered_services(layout) -> tuple[Service, ...]:
    """What Exim and Dovecot really offer with this Layout (mailconf's
    renderers): without a server certificate no TLS at all, so no 993 and no
    465, and 143 and 587 in plain text; with one, implicit TLS on Dovecot's
    IMAPS port and on Exim's smtps ports, STARTTLS on the others (25 is for
    servers, not for mail programs)."""
    tls = bool(layout.tls_certificate)
    smtps = sorted(set(layout.smtps_ports) & set(layout.smtp_ports))
    submission = sorted(p for p in layout.smtp_ports if p not in smtps and p != 25)
    return (
        Service("imaps", "imap", layout.imaps_port, SSL, 0, offered=tls),
        Service("imap", "imap", layout.imap_port, STARTTLS if tls else PLAIN, 10),
        Service("submissions", "smtp", smtps[0] if smtps else 465, SSL, 0, offered=tls and bool(smtps)),
        Service("submission", "smtp", submission[0] if submission else 587, STARTTLS if tls else PLAIN, 10,
                offered=bool(submission)),
    )


@dataclass(frozen=True)
class ClientSettings:
    domain: str  # IDNA, lower case
    display_name: str  # the domain as people read it (Unicode)
    host: str  # the name on the certificate clients get (mail.<domain> with its own, else the host name)
    services: tuple[Service, ...] = SERVICES

    @property
    def tls(self) -> bool:
        return any(s.offered and s.tls != PLAIN for s in self.services)

    def offered(self, protocol: str) -> list[Service]:
        return [s for s in self.services if s.protocol == protocol and s.offered]

    @property
    def imap(self) -> Service:
        return self.offered("imap")[0]

    @property
    def smtp(self) -> Service:
        return self.offered("smtp")[0]


# --- Thunderbird autoconfig (https://wiki.mozilla.org/Thunderbird:Autoconfiguration) --

USERNAME_PLACEHOLDER = "%EMAILADDRESS%"  # Thunderbird fills in the address typed


def _text(parent, tag: str, value) -> ET.Element:
    element = ET.SubElement(parent, tag)
    element.text = str(value)
    return element


def _xml(root: ET.Element) -> bytes:
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def thunderbird_config(settings: ClientSettings) -> bytes:
    """config-v1.1.xml: the same answer for every address of the domain (the
    user name is Thunderbird's placeholder, not anything the request said)."""
    root = ET.Element("clientConfig", version="1.1")
    provider = ET.SubElement(root, "emailProvider", id=settings.domain)
    _text(provider, "domain", settings.domain)
    _text(provider, "displayName", settings.display_name)
    _text(provider, "displayShortName", settings.display_name)
    for service in settings.offered("imap") + settings.offered("smtp"):
        tag = "incomingServer" if service.protocol == "imap" else "outgoingServer"
        server = ET.SubElement(provider, tag, type=service.protocol)
        _text(server, "hostname", settings.host)
        _text(server, "port", service.port)
        _text(server, "socketType", service.tls)
        _text(server, "authentication", "password-cleartext")
        _text(server, "username", USERNAME_PLACEHOLDER)
    return _xml(root)


# --- Outlook autodiscover (POX, [MS-OXDSCLI]) ------------------------------------------

REQUEST_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
RESPONSE_NS = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
OUTLOOK_SCHEMA = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
MAX_REQUEST_BYTES = 4096  # Outlook's request is ~350 bytes
MAX_ADDRESS_LENGTH = 254

# Error codes Exchange answers with.
ADDRESS_NOT_FOUND = 500
INVALID_REQUEST = 600
SCHEMA_NOT_AVAILABLE = 601


class AutodiscoverRequestError(ValueError):
    """The body is not an autodiscover request we read: not XML, a DTD,
    another root, no address."""


@dataclass(frozen=True)
class AutodiscoverRequest:
    address: str  # as sent (stripped); the caller validates it
    schema: str


def _local_name(tag) -> str:
    return tag.rpartition("}")[2] if isinstance(tag, str) else ""


def _child(element, name: str):
    """The one child called `name` (any namespace: some clients send none)."""
    found = [c for c in element if _local_name(c.tag) == name]
    return found[0] if len(found) == 1 else None


def parse_autodiscover_request(body: bytes) -> AutodiscoverRequest:
    if len(body) > MAX_REQUEST_BYTES:
        raise AutodiscoverRequestError("request too large")
    try:
        root = SafeET.fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except (ET.ParseError, DefusedXmlException, ValueError) as exc:
        raise AutodiscoverRequestError(type(exc).__name__) from None
    request = _child(root, "Request") if _local_name(root.tag) == "Autodiscover" else None
    if request is None:
        raise AutodiscoverRequestError("not an autodiscover request")
    address, schema = _child(request, "EMailAddress"), _child(request, "AcceptableResponseSchema")
    address_text = (address.text or "").strip() if address is not None else ""
    if not address_text or len(address_text) > MAX_ADDRESS_LENGTH:
        raise AutodiscoverRequestError("no address")
    schema_text = (schema.text or "").strip() if schema is not None else ""
    return AutodiscoverRequest(address_text, schema_text)


def autodiscover_response(settings: ClientSettings, address: str) -> bytes:
    """The IMAP and SMTP settings for `address` (validated by the caller: it
    is written into LoginName)."""
    root = ET.Element("Autodiscover", xmlns=RESPONSE_NS)
    response = ET.SubElement(root, "Response", xmlns=OUTLOOK_SCHEMA)
    account = ET.SubElement(response, "Account")
    _text(account, "AccountType", "email")
    _text(account, "Action", "settings")
    for service in (settings.imap, settings.smtp):
        protocol = ET.SubElement(account, "Protocol")
        _text(protocol, "Type", service.protocol.upper())
        _text(protocol, "Server", settings.host)
        _text(protocol, "Port", service.port)
        _text(protocol, "DomainRequired", "off")
        _text(protocol, "LoginName", address)
        _text(protocol, "SPA", "off")
        if service.tls == SSL:
            _text(protocol, "SSL", "on")
        elif service.tls == STARTTLS:
            _text(protocol, "Encryption", "TLS")
        else:
            _text(protocol, "SSL", "off")
        _text(protocol, "AuthRequired", "on")
        if service.protocol == "smtp":
            _text(protocol, "UsePOPAuth", "on")  # the same user name and password as IMAP
            _text(protocol, "SMTPLast", "off")
    return _xml(root)


ERROR_MESSAGES = {
    ADDRESS_NOT_FOUND: "The e-mail address cannot be found.",
    INVALID_REQUEST: "Invalid Request",
    SCHEMA_NOT_AVAILABLE: "The requested schema is not available.",
}


def autodiscover_error(code: int) -> bytes:
    """An Exchange-style error: a fixed text per code, nothing from the request."""
    root = ET.Element("Autodiscover", xmlns=RESPONSE_NS)
    error = ET.SubElement(ET.SubElement(root, "Response"), "Error")
    _text(error, "ErrorCode", code)
    _text(error, "Message", ERROR_MESSAGES[code])
    ET.SubElement(error, "DebugData")
    return _xml(root)


# --- Apple configuration profile ----------------------------------------------------

MOBILECONFIG_CONTENT_TYPE = "application/x-apple-aspen-config"
_PROFILE_NAMESPACE = uuid.UUID("3c1b8d0e-4f53-4a4e-9d0b-6d61696c706e")  # fixed: same address, same profile


def _reverse_dns(host: str) -> str:
    return ".".join(reversed(host.split(".")))


def mobileconfig(settings: ClientSettings, address: str) -> bytes:
    """An unsigned profile with one IMAP account for `address`. No password:
    the device asks for it when the profile is installed. The UUIDs come from
    the host and the address, so installing a newer download replaces the
    older profile instead of adding a second account."""
    profile_uuid = uuid.uuid5(_PROFILE_NAMESPACE, f"{settings.host}/{address}")
    account_uuid = uuid.uuid5(profile_uuid, "mail")
    identifier = f"{_reverse_dns(settings.host)}.mailpanel.{profile_uuid}"
    imap, smtp = settings.imap, settings.smtp
    account = {
        "PayloadType": "com.apple.mail.managed",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{identifier}.mail",
        "PayloadUUID": str(account_uuid).upper(),
        "PayloadDisplayName": address,
        "PayloadDescription": address,
        "EmailAccountDescription": address,
        "EmailAccountType": "EmailTypeIMAP",
        "EmailAddress": address,
        "IncomingMailServerHostName": settings.host,
        "IncomingMailServerPortNumber": imap.port,
        "IncomingMailServerUseSSL": imap.tls != PLAIN,
        "IncomingMailServerAuthentication": "EmailAuthPassword",
        "IncomingMailServerUsername": address,
        "OutgoingMailServerHostName": settings.host,
        "OutgoingMailServerPortNumber": smtp.port,
        "OutgoingMailServerUseSSL": smtp.tls != PLAIN,
        "OutgoingMailServerAuthentication": "EmailAuthPassword",
        "OutgoingMailServerUsername": address,
        "OutgoingPasswordSameAsIncomingPassword": True,
    }
    profile = {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": identifier,
        "PayloadUUID": str(profile_uuid).upper(),
        "PayloadDisplayName": address,
        "PayloadDescription": address,
        "PayloadOrganization": settings.display_name,
        "PayloadRemovalDisallowed": False,
        "PayloadContent": [account],
    }
    return plistlib.dumps(profile, fmt=plistlib.FMT_XML, sort_keys=True)
