"""Every host name / address input refuses what is not a plain name or
address (issue #12): IPv6 zone indexes (fe80::1%eth0 — Python's ipaddress
accepts them), line breaks, tabs, NUL and other control or invisible
characters. Through the validator, the views (htmx and plain POST) and the
CLI; the error is clear and the rest of what was typed is kept."""

import io
import sys

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from mailadmin.models import MailDomain, RelaySettings, ServerSettings
from mailadmin.services import server_mail
from mailadmin.validation import normalize_domain, normalize_hostname

pytestmark = pytest.mark.django_db

CONTROL = "cannot contain line breaks, tabs or other invisible characters"
ZONE = "cannot carry a zone index"
NOT_A_NAME = "is not a valid domain name"
BRACKETS = "brackets go only around an IP address"
NUL = "Null characters are not allowed."

# (typed value, what the error says)
HOSTILE_HOSTS = [
    ("fe80::1%x\nport: 25\ntls: none", CONTROL),  # the value from the issue
    ("fe80::1%eth0", ZONE),
    ("[fe80::1%eth0]", ZONE),
    ("2001:db8::1%1", ZONE),
    ("smtp.example.com\nport: 25", CONTROL),
    ("smtp.example.com\r", CONTROL),
    ("smtp.example.com\n", CONTROL),
    ("\tsmtp.example.com", CONTROL),
    ("smtp.example.com\x85", CONTROL),  # NEL, a C1 line break
    ("smtp.example.com\u2028", CONTROL),  # LINE SEPARATOR
    ("smtp\u200b.example.com", CONTROL),  # zero-width space: IDNA would drop it silently
    ("smtp\u00ad.example.com", CONTROL),  # soft hyphen: likewise
    ("192.0.2.1\n", CONTROL),
    ("[[192.0.2.1", BRACKETS),
    ("[smtp.example.com]", BRACKETS),
    ("smtp.example.com%eth0", NOT_A_NAME),
]
IDS = [repr(value)[1:-1][:28] for value, _message in HOSTILE_HOSTS]


@pytest.mark.parametrize("value, message", HOSTILE_HOSTS, ids=IDS)
def test_host_validator_refuses_anything_but_a_plain_name_or_address(value, message):
    with pytest.raises(ValidationError) as exc:
        normalize_hostname(value)
    assert message in " ".join(exc.value.messages)


def test_host_validator_refuses_nul():
    with pytest.raises(ValidationError) as exc:
        normalize_hostname("smtp.example.com\x00")
    assert CONTROL in " ".join(exc.value.messages)


@pytest.mark.parametrize(
    "value, expected",
    [
        ("192.0.2.1", "192.0.2.1"),
        ("[192.0.2.1]", "192.0.2.1"),
        ("2001:DB8::1", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("fe80::1", "fe80::1"),
        (" SMTP.Example.COM. ", "smtp.example.com"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("localhost", "localhost"),
    ],
)
def test_host_validator_accepts_plain_names_and_addresses(value, expected):
    assert normalize_hostname(value) == expected


@pytest.mark.parametrize("value", ["bl.example.net\nzen.spamhaus.org", "\tbl.example.net", "bl.example.net\r\n"])
def test_domain_validator_refuses_control_characters(value):
    with pytest.raises(ValidationError) as exc:
        normalize_domain(value)
    assert "A domain name cannot contain line breaks, tabs or other invisible characters." in exc.value.messages


# --- relay: domain page (customer), server settings (admin), CLI ------------------------


def _page(response) -> str:
    return response.content.decode().replace("&#x27;", "'").replace("&quot;", '"')


def relay_data(host):
    return {
        "preset": "custom",
        "region": "",
        "host": host,
        "port": "2525",
        "tls": "starttls",
        "username": "kept-user",
        "password": "relay-pass",
        "auth": "login",
        "action": "save",
    }


@pytest.fixture
def alice_domain(alice):
    return MailDomain.objects.create(name="alice.example", owner=alice)


@pytest.mark.parametrize("htmx", [True, False], ids=["htmx", "plain"])
@pytest.mark.parametrize("value, message", HOSTILE_HOSTS, ids=IDS)
def test_relay_save_refuses_hostile_host_and_keeps_the_rest(alice_client, alice_domain, htmx, value, message):
    headers = {"HX-Request": "true"} if htmx else {}
    response = alice_client.post(
        reverse("mailadmin:domain_relay", args=[alice_domain.pk]), relay_data(value), headers=headers
    )
    html = _page(response)
    assert response.status_code == (200 if htmx else 400)
    assert message in html
    assert 'id="relay-host_error"' in html or 'aria-describedby="relay-host_error' in html
    assert 'value="kept-user"' in html and 'value="2525"' in html
    assert not RelaySettings.objects.exists()


@pytest.mark.parametrize("htmx", [True, False], ids=["htmx", "plain"])
def test_relay_save_refuses_nul_in_the_host(alice_client, alice_domain, htmx):
    headers = {"HX-Request": "true"} if htmx else {}
    response = alice_client.post(
        reverse("mailadmin:domain_relay", args=[alice_domain.pk]),
        relay_data("smtp.example.com\x00"),
        headers=headers,
    )
    assert CONTROL in _page(response)
    assert not RelaySettings.objects.exists()


def test_relay_test_refuses_the_issue_host_before_connecting(alice_client, alice_domain):
    response = alice_client.post(
        reverse("mailadmin:domain_relay_test", args=[alice_domain.pk]),
        relay_data("fe80::1%x\nport: 25\ntls: none"),
        HTTP_HX_REQUEST="true",
    )
    html = _page(response)
    assert CONTROL in html
    assert "relay-test" not in html or "EHLO" not in html  # no transcript: nothing was dialled
    assert not RelaySettings.objects.exists()


def test_global_relay_refuses_a_zone_index(admin_client_):
    response = admin_client_.post(reverse("mailadmin:global_relay"), relay_data("fe80::1%eth0"))
    assert response.status_code == 400
    assert ZONE in _page(response) and 'value="kept-user"' in _page(response)
    assert not RelaySettings.objects.exists()


def mail(*args, stdin=""):
    old = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        call_command("mail", *args, stdout=io.StringIO(), stderr=io.StringIO())
    finally:
        sys.stdin = old


@pytest.mark.parametrize(
    "value, message",
    [("fe80::1%x\nport: 25\ntls: none", CONTROL), ("fe80::1%eth0", ZONE), ("smtp.example.com\n", CONTROL)],
)
def test_cli_relay_set_refuses_hostile_host(value, message):
    with pytest.raises(CommandError) as exc:
        mail("relay", "set", "--host", value)
    assert "host: " in str(exc.value) and message in str(exc.value)
    assert not RelaySettings.objects.exists()


# --- panel SMTP ------------------------------------------------------------------------------


def panel_smtp_data(host):
    return {
        "enabled": "on",
        "host": host,
        "port": "2525",
        "security": "starttls",
        "username": "kept-user",
        "password": "smtp-pass",
        "from_email": "noreply@example.net",
    }


@pytest.mark.parametrize("htmx", [True, False], ids=["htmx", "plain"])
@pytest.mark.parametrize(
    "value, message",
    [("fe80::1%x\nport: 25\ntls: none", CONTROL), ("fe80::1%eth0", ZONE), ("smtp.example.net\r", CONTROL)],
)
def test_panel_smtp_refuses_hostile_host_and_keeps_the_rest(admin_client_, htmx, value, message):
    headers = {"HX-Request": "true"} if htmx else {}
    response = admin_client_.post(reverse("mailadmin:panel_smtp"), panel_smtp_data(value), headers=headers)
    html = _page(response)
    assert response.status_code == (200 if htmx else 400)
    assert message in html
    assert 'value="kept-user"' in html and 'value="noreply@example.net"' in html
    assert not ServerSettings.load().panel_smtp_enabled


def test_cli_panel_smtp_refuses_a_zone_index():
    with pytest.raises(CommandError) as exc:
        mail("panel-smtp", "set", "--host", "fe80::1%eth0", "--from", "noreply@example.net")
    assert "host: " in str(exc.value) and ZONE in str(exc.value)
    assert not ServerSettings.load().panel_smtp_enabled


# --- server identity -------------------------------------------------------------------------


def identity(**overrides):
    return {"hostname": "mail.example.net", "ipv4": "192.0.2.10", "ipv6": "2001:db8::10", "nat_ipv4": "", **overrides}


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("hostname", "mail.example.net\nprimary_hostname = evil", CONTROL),
        ("hostname", "fe80::1%eth0", ZONE),
        ("ipv6", "fe80::1%eth0", ZONE),  # Django's own field would drop the zone silently
        ("ipv6", "2001:db8::10\n", CONTROL),
        ("ipv4", "192.0.2.10\n", CONTROL),
        ("ipv4", "\t192.0.2.10", CONTROL),
        ("nat_ipv4", "10.0.0.5\r", CONTROL),
    ],
)
def test_server_identity_refuses_hostile_values_and_keeps_the_rest(admin_client_, field, value, message):
    before = ServerSettings.load()
    response = admin_client_.post(reverse("mailadmin:server_settings"), identity(**{field: value}))
    html = _page(response)
    assert response.status_code == 400
    assert message in html
    kept = {k: v for k, v in identity().items() if k != field and v}
    assert all(f'value="{v}"' in html for v in kept.values()), kept
    after = ServerSettings.load()
    assert (after.hostname, after.ipv4, after.ipv6) == (before.hostname, before.ipv4, before.ipv6)


def test_server_identity_still_saves_plain_values(admin_client_):
    response = admin_client_.post(reverse("mailadmin:server_settings"), identity(ipv6="2001:DB8::10"))
    assert response.status_code == 302
    server = ServerSettings.load()
    assert (server.hostname, server.ipv4, server.ipv6) == ("mail.example.net", "192.0.2.10", "2001:db8::10")


@pytest.mark.parametrize("option, value, message", [("--ipv6", "fe80::1%eth0", ZONE), ("--hostname", "a.example\nb", CONTROL)])
def test_cli_server_set_refuses_hostile_values(option, value, message):
    args = {"--hostname": "mail.example.net", "--ipv4": "192.0.2.10", "--ipv6": "", option: value}
    with pytest.raises(CommandError) as exc:
        mail("server", "set", *[item for pair in args.items() for item in pair])
    assert message in str(exc.value)
    assert ServerSettings.load().hostname != "mail.example.net"


# --- DNSBL zones -------------------------------------------------------------------------------


@pytest.mark.parametrize("htmx", [True, False], ids=["htmx", "plain"])
@pytest.mark.parametrize("value", ["bl.example.net\nzen.spamhaus.org", "\tbl.example.net", "bl.example.net\x85"])
def test_dnsbl_zone_refuses_control_characters_and_keeps_what_was_typed(admin_client_, htmx, value):
    headers = {"HX-Request": "true"} if htmx else {}
    before = ServerSettings.load().dnsbl_zones
    response = admin_client_.post(reverse("mailadmin:dnsbl_save"), {"action": "add", "zone": value}, headers=headers)
    html = _page(response)
    assert response.status_code == (200 if htmx else 400)
    assert "A domain name cannot contain line breaks, tabs or other invisible characters." in html
    assert "bl.example.net" in html  # what was typed is in the field again
    assert ServerSettings.load().dnsbl_zones == before


def test_cli_dnsbl_add_refuses_a_line_break():
    before = server_mail.zone_list(ServerSettings.load())
    with pytest.raises(CommandError) as exc:
        mail("dnsbl", "add", "bl.example.net\nzen.spamhaus.org")
    assert "cannot contain line breaks" in str(exc.value)
    assert server_mail.zone_list(ServerSettings.load()) == before
