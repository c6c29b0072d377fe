"""Mail programs that set themselves up (issue #15): Thunderbird's autoconfig
and Outlook's autodiscover, answered by Host, parsed and checked field by
field; hostile Hosts, addresses and XML bodies first."""

import time
import xml.etree.ElementTree as ET

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from mailadmin.client_config import MAX_REQUEST_BYTES, OUTLOOK_SCHEMA, REQUEST_NS, RESPONSE_NS
from mailadmin.models import MailDomain, ServerSettings, UserProfile

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _tls_offered(settings):
    """The server offers TLS, as install.sh's Layout says: the answers say
    SSL/STARTTLS (without a certificate they say plain: tests/test_tls_truth.py)."""
    settings.MAILPANEL_LAYOUT = {"tls_certificate": "/etc/mailpanel/tls/fullchain.pem",
                                 "tls_privatekey": "/etc/mailpanel/tls/privkey.pem"}

HOSTNAME = "mail.hoster.test"
THUNDERBIRD = "/mail/config-v1.1.xml"
WELL_KNOWN = "/.well-known/autoconfig/mail/config-v1.1.xml"
AUTODISCOVER = "/autodiscover/autodiscover.xml"
MOBILESYNC = "http://schemas.microsoft.com/exchange/autodiscover/mobilesync/responseschema/2006"
OUTLOOK_NS = "{" + OUTLOOK_SCHEMA + "}"


@pytest.fixture
def hosted(alice):
    server = ServerSettings.load()
    server.hostname = HOSTNAME
    server.save()
    return MailDomain.objects.create(name="example.org", owner=alice)


@pytest.fixture
def anonymous():
    # CSRF enforced as in production: the machine endpoints must not need a token.
    return Client(enforce_csrf_checks=True)


def thunderbird(client, host, path=THUNDERBIRD, **query):
    return client.get(path, query, HTTP_HOST=host)


def servers(response):
    root = ET.fromstring(response.content)
    provider = root.find("emailProvider")
    out = []
    for element in provider:
        if element.tag in ("incomingServer", "outgoingServer"):
            out.append(
                (element.tag, element.get("type"))
                + tuple(element.findtext(name) for name in ("hostname", "port", "socketType", "authentication", "username"))
            )
    return root, provider, out


EXPECTED_SERVERS = [
    ("incomingServer", "imap", HOSTNAME, "993", "SSL", "password-cleartext", "%EMAILADDRESS%"),
    ("incomingServer", "imap", HOSTNAME, "143", "STARTTLS", "password-cleartext", "%EMAILADDRESS%"),
    ("outgoingServer", "smtp", HOSTNAME, "465", "SSL", "password-cleartext", "%EMAILADDRESS%"),
    ("outgoingServer", "smtp", HOSTNAME, "587", "STARTTLS", "password-cleartext", "%EMAILADDRESS%"),
]


# --- Thunderbird ---------------------------------------------------------------------


def test_thunderbird_autoconfig_for_a_hosted_domain_field_by_field(anonymous, hosted):
    response = thunderbird(anonymous, "autoconfig.example.org", emailaddress="info@example.org")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/xml; charset=utf-8"
    assert not response.cookies
    root, provider, found = servers(response)
    assert (root.tag, root.get("version")) == ("clientConfig", "1.1")
    assert provider.get("id") == "example.org"
    assert [d.text for d in provider.findall("domain")] == ["example.org"]
    assert provider.findtext("displayName") == "example.org"
    assert found == EXPECTED_SERVERS


@pytest.mark.parametrize(
    "host, path",
    [
        ("autoconfig.example.org", WELL_KNOWN),
        ("example.org", WELL_KNOWN),
        ("AUTOCONFIG.Example.ORG:443", THUNDERBIRD),
        ("autoconfig.example.org.", THUNDERBIRD),
    ],
)
def test_thunderbird_also_asks_the_well_known_url_and_hosts_in_other_spellings(anonymous, hosted, host, path):
    response = thunderbird(anonymous, host, path)
    assert response.status_code == 200, host
    assert servers(response)[2] == EXPECTED_SERVERS


def test_an_idn_domain_is_answered_under_its_punycode_host(anonymous, alice):
    ServerSettings.objects.update_or_create(pk=1, defaults={"hostname": HOSTNAME})
    MailDomain.objects.create(name="xn--mnchen-3ya.example", owner=alice)
    response = thunderbird(anonymous, "autoconfig.xn--mnchen-3ya.example")
    root, provider, found = servers(response)
    assert provider.get("id") == "xn--mnchen-3ya.example"
    assert provider.findtext("displayName") == "münchen.example"
    assert found == EXPECTED_SERVERS


def _not_found(response):
    assert response.status_code == 404
    assert response.content == b"Not found\n"


@pytest.mark.parametrize(
    "host",
    [
        "autoconfig.unknown.example",
        "autoconfig.pending.example",
        "autoconfig.suspended.example",
        "autoconfig.elsewhere.example",
        "autoconfig.owner-suspended.example",
        "autoconfig.example.org<x/>",
        'autoconfig.example.org"',
        "autoconfig.example.org/evil",
        "",
        "192.0.2.1",
        "autoconfig.",
    ],
)
def test_only_served_domains_are_answered_and_the_rest_alike(anonymous, hosted, bob, host):
    """Pending (a stranger may add any name), suspended, send-only and
    unknown domains get one and the same 404: no oracle of what is on the
    panel, and no Host text in any answer."""
    MailDomain.objects.create(name="pending.example", owner=bob, pending=True)
    MailDomain.objects.create(name="suspended.example", owner=bob, suspended=True)
    MailDomain.objects.create(name="elsewhere.example", owner=bob, hosted_elsewhere=True)
    carol = get_user_model().objects.create_user("carol", password="x")
    UserProfile.objects.create(user=carol, suspended=True)
    MailDomain.objects.create(name="owner-suspended.example", owner=carol)
    _not_found(thunderbird(anonymous, host))
    _not_found(anonymous.post(AUTODISCOVER, outlook_request("info@" + host.partition(".")[2]), content_type="text/xml", HTTP_HOST=host.replace("autoconfig.", "autodiscover.")))


def test_nothing_the_request_says_is_written_into_the_thunderbird_answer(anonymous, hosted):
    evil = '"><incomingServer type="pop3"><hostname>evil.example</hostname></incomingServer><x a="@example.org'
    response = thunderbird(anonymous, "autoconfig.example.org", emailaddress=evil)
    assert b"evil" not in response.content
    assert servers(response)[2] == EXPECTED_SERVERS


def test_on_the_panels_own_host_the_address_names_the_domain(anonymous, hosted, settings):
    """Plain-HTTP autoconfig is redirected by nginx to https://<hostname>/…
    with the query kept: there the address is all that names the domain."""
    settings.ALLOWED_HOSTS = [HOSTNAME]
    response = thunderbird(anonymous, HOSTNAME, emailaddress="Info@Example.org")
    assert servers(response)[1].get("id") == "example.org"
    _not_found(thunderbird(anonymous, HOSTNAME))
    _not_found(thunderbird(anonymous, HOSTNAME, emailaddress="info@unknown.example"))
    _not_found(thunderbird(anonymous, HOSTNAME, emailaddress="not an address"))


def test_thunderbird_autoconfig_is_read_only(anonymous, hosted):
    response = anonymous.post(THUNDERBIRD, {}, HTTP_HOST="autoconfig.example.org")
    assert response.status_code == 405


def test_other_paths_on_a_hosted_domains_host_are_still_refused(anonymous, hosted):
    """Only the three autoconfig paths are answered for these Hosts; the
    panel itself still refuses a Host it does not know."""
    response = anonymous.get("/", HTTP_HOST="autoconfig.example.org")
    assert response.status_code == 400
    response = anonymous.get("/login/", HTTP_HOST="example.org")
    assert response.status_code == 400


# --- Outlook autodiscover --------------------------------------------------------------


def outlook_request(address, schema=OUTLOOK_SCHEMA) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<Autodiscover xmlns="{REQUEST_NS}"><Request>'
        f"<EMailAddress>{address}</EMailAddress>"
        f"<AcceptableResponseSchema>{schema}</AcceptableResponseSchema>"
        "</Request></Autodiscover>"
    ).encode()


def autodiscover(client, body, host="autodiscover.example.org", **extra):
    return client.post(AUTODISCOVER, body, content_type="text/xml", HTTP_HOST=host, **extra)


def error_code(response) -> str:
    root = ET.fromstring(response.content)
    return root.findtext(f"{{{RESPONSE_NS}}}Response/{{{RESPONSE_NS}}}Error/{{{RESPONSE_NS}}}ErrorCode")


def test_outlook_autodiscover_field_by_field(anonymous, hosted):
    response = autodiscover(anonymous, outlook_request("Info@Example.org"))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/xml; charset=utf-8"
    assert not response.cookies
    root = ET.fromstring(response.content)
    assert root.tag == f"{{{RESPONSE_NS}}}Autodiscover"
    account = root.find(f"{OUTLOOK_NS}Response/{OUTLOOK_NS}Account")  # Response is in the outlook schema
    assert account.findtext(f"{OUTLOOK_NS}AccountType") == "email"
    assert account.findtext(f"{OUTLOOK_NS}Action") == "settings"
    protocols = [
        {child.tag.removeprefix(OUTLOOK_NS): child.text for child in protocol}
        for protocol in account.findall(f"{OUTLOOK_NS}Protocol")
    ]
    common = {"Server": HOSTNAME, "DomainRequired": "off", "LoginName": "info@example.org", "SPA": "off",
              "SSL": "on", "AuthRequired": "on"}
    assert protocols == [
        {"Type": "IMAP", "Port": "993", **common},
        {"Type": "SMTP", "Port": "465", **common, "UsePOPAuth": "on", "SMTPLast": "off"},
    ]


def test_outlook_asks_the_bare_domain_first_and_the_path_in_any_case(anonymous, hosted):
    response = anonymous.post(
        "/Autodiscover/Autodiscover.xml", outlook_request("info@example.org"), content_type="text/xml",
        HTTP_HOST="example.org",
    )
    assert response.status_code == 200 and b"<LoginName>info@example.org</LoginName>" in response.content


@pytest.mark.parametrize(
    "address",
    [
        "info@other.example",  # not the Host's domain
        "info@example.org.evil.example",
        "<x>@example.org",
        "in fo@example.org",
        "info@@example.org",
        "info",
    ],
)
def test_an_address_outside_the_hosts_domain_gets_an_error_and_is_not_echoed(anonymous, hosted, alice, address):
    MailDomain.objects.create(name="other.example", owner=alice)
    from xml.sax.saxutils import escape

    response = autodiscover(anonymous, outlook_request(escape(address)))
    assert response.status_code == 200
    assert error_code(response) == "500"
    assert b"LoginName" not in response.content
    assert address.split("@")[0].encode() not in response.content.replace(b"Autodiscover", b"")


def test_activesync_is_not_offered(anonymous, hosted):
    response = autodiscover(anonymous, outlook_request("info@example.org", MOBILESYNC))
    assert (response.status_code, error_code(response)) == (200, "601")


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
<!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
<!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
<!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
<!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
<!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">]>
<Autodiscover xmlns="%s"><Request><EMailAddress>&lol9;@example.org</EMailAddress>
<AcceptableResponseSchema>%s</AcceptableResponseSchema></Request></Autodiscover>""" % (
    REQUEST_NS.encode(), OUTLOOK_SCHEMA.encode())

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE a [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<Autodiscover xmlns="%s"><Request><EMailAddress>&xxe;</EMailAddress>
<AcceptableResponseSchema>%s</AcceptableResponseSchema></Request></Autodiscover>""" % (
    REQUEST_NS.encode(), OUTLOOK_SCHEMA.encode())

PLAIN_DTD = b"""<?xml version="1.0"?><!DOCTYPE Autodiscover>
<Autodiscover xmlns="%s"><Request><EMailAddress>info@example.org</EMailAddress>
<AcceptableResponseSchema>%s</AcceptableResponseSchema></Request></Autodiscover>""" % (
    REQUEST_NS.encode(), OUTLOOK_SCHEMA.encode())


@pytest.mark.parametrize(
    "body",
    [
        BILLION_LAUGHS,
        EXTERNAL_ENTITY,
        PLAIN_DTD,
        b"",
        b"not xml",
        b"<Autodiscover><Request></Request></Autodiscover>",
        b"<Other><Request><EMailAddress>info@example.org</EMailAddress></Request></Other>",
        b"<Autodiscover><Request><EMailAddress>a@example.org</EMailAddress><EMailAddress>b@example.org</EMailAddress>"
        b"</Request></Autodiscover>",
        b"\xff\xfe<\x00A\x00",
    ],
    ids=["billion-laughs", "external-entity", "any-dtd", "empty", "not-xml", "no-address", "other-root",
         "two-addresses", "garbage"],
)
def test_hostile_bodies_are_refused_without_expanding_anything(anonymous, hosted, body):
    started = time.monotonic()
    response = autodiscover(anonymous, body)
    assert time.monotonic() - started < 2
    assert (response.status_code, error_code(response)) == (400, "600")
    assert b"root:" not in response.content and b"lol" not in response.content


def test_a_body_over_the_limit_is_not_read(anonymous, hosted):
    body = outlook_request("info@example.org") + b" " * MAX_REQUEST_BYTES
    response = autodiscover(anonymous, body)
    assert (response.status_code, error_code(response)) == (413, "600")


def test_a_lying_content_length_reads_no_more_than_the_limit(anonymous, hosted):
    """A client that claims a small body and sends a big one: only the limit
    (plus one byte) is read, and that is too much."""
    body = b"<Autodiscover>" + b"x" * (MAX_REQUEST_BYTES * 4) + b"</Autodiscover>"
    response = autodiscover(anonymous, body, CONTENT_LENGTH="100")
    assert response.status_code == 400


@pytest.mark.parametrize("content_length", ["-1", "abc", "99999999999999999999"])
def test_a_malformed_content_length_is_refused(anonymous, hosted, content_length):
    response = autodiscover(anonymous, outlook_request("info@example.org"), CONTENT_LENGTH=content_length)
    assert response.status_code in (400, 413)
    assert b"LoginName" not in response.content


def test_autodiscover_only_takes_post(anonymous, hosted):
    assert anonymous.get(AUTODISCOVER, HTTP_HOST="autodiscover.example.org").status_code == 405


def test_autodiscover_on_the_panels_host_needs_a_served_address(anonymous, hosted, settings):
    settings.ALLOWED_HOSTS = [HOSTNAME]
    ok = autodiscover(anonymous, outlook_request("info@example.org"), host=HOSTNAME)
    assert b"<LoginName>info@example.org</LoginName>" in ok.content
    assert error_code(autodiscover(anonymous, outlook_request("info@unknown.example"), host=HOSTNAME)) == "500"
