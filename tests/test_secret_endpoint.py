"""A stored password is used only for the endpoint it was stored for (issue #12).

An admin stores a relay for alice's domain (or the global relay, or panel SMTP)
pointing at one aiosmtpd server on 127.0.0.1. Whoever then changes the host,
port, TLS mode, mechanism or user name and leaves the password field blank gets
"type the password again" — from "Test relay", from Save (htmx and plain POST)
and from the CLI — and the stored password never reaches a second server.
What they typed stays in the form; the password field is never filled in."""

import html as html_module
import re

import pytest
from django.core.exceptions import ValidationError
from django.core.management.base import CommandError
from django.urls import reverse

from mailadmin.models import Job, AuditEntry, JobKind, MailDomain, RelaySettings, ServerSettings
from mailadmin.services import panel_smtp
from mailadmin.services import relay as relay_service
from tests.test_accounts_cli import mail

pytestmark = pytest.mark.django_db

USER = "relay-user@example.net"
SECRET = "admin's st0red relay secret ^ü"
TYPED = "a password the customer typed"
RETYPE = "Type the password again: the server changed."
RETYPE_USER = "Type the password again: the user name changed."


@pytest.fixture
def panel_settings(settings):
    # Customers may test loopback relays here (tests only have 127.0.0.0/8): the
    # password rule must hold on its own, not because the target is refused.
    settings.MAILPANEL_CUSTOMER_TARGETS_ALLOW_LOOPBACK = True
    return settings


@pytest.fixture
def alice_domain(alice):
    return MailDomain.objects.create(name="alice.example", owner=alice)


@pytest.fixture
def stored(smtp_sinks):
    """The server the admin stored the password for, and where a second one
    listens for each kind of change (same port on 127.0.0.2 for the host)."""
    good = smtp_sinks(credentials={(USER.encode(), SECRET.encode())})
    evil_host = smtp_sinks(host="127.0.0.2", port=good.port)
    evil_port = smtp_sinks()
    return {"good": good, "host": evil_host, "port": evil_port}


def store_relay(admin, domain, sink):
    return relay_service.set_relay(
        admin, domain, host="127.0.0.1", port=sink.port, tls="none", username=USER, password=SECRET
    ).object


# Each change touches exactly one part of the endpoint; the form has the password blank.
CHANGES = {
    "host": lambda s: {"host": "127.0.0.2"},
    "port": lambda s: {"port": str(s["port"].port)},
    "tls": lambda s: {"tls": "starttls", "confirm_no_tls": ""},
    "auth": lambda s: {"auth": "plain"},
    "username": lambda s: {"username": "someone-else@example.net"},
}


def form_data(stored, change=None, **overrides):
    data = {
        "preset": "custom", "region": "", "host": "127.0.0.1", "port": str(stored["good"].port),
        "tls": "none", "confirm_no_tls": "on", "username": USER, "password": "", "auth": "login",
        "action": "test",
    }
    if change:
        data.update(CHANGES[change](stored))
    data.update(overrides)
    return data


def attempts(stored) -> list:
    return [a for sink in stored.values() for a in sink.auth_attempts]


def assert_no_secret(text: str, secret: str = SECRET):
    assert secret not in text and secret not in html_module.unescape(text)


def password_input(text: str) -> str:
    return re.search(r'<input[^>]*name="password"[^>]*>', text).group(0)


def assert_typed_values_kept(text: str, data: dict):
    for name in ("host", "port", "username"):
        assert re.search(rf'<input[^>]*name="{name}"[^>]*value="{re.escape(html_module.escape(data[name]))}"', text), name
    assert "value=" not in password_input(text)


def post(client, url, data, htmx):
    return client.post(url, data, headers={"HX-Request": "true"} if htmx else {})


def relay_urls(domain):
    if domain is None:
        return reverse("mailadmin:global_relay_test"), reverse("mailadmin:global_relay")
    return (
        reverse("mailadmin:domain_relay_test", args=[domain.pk]),
        reverse("mailadmin:domain_relay", args=[domain.pk]),
    )


def expected_message(change):
    return RETYPE_USER if change == "username" else RETYPE


# -- "Test relay" -------------------------------------------------------------------


@pytest.mark.parametrize("htmx", [True, False], ids=["htmx", "plain"])
@pytest.mark.parametrize("change", sorted(CHANGES))
def test_customer_test_button_never_sends_the_stored_password_to_a_changed_endpoint(
    panel_settings, client, alice, admin_user, alice_domain, stored, change, htmx
):
    store_relay(admin_user, alice_domain, stored["good"])
    client.force_login(alice)
    data = form_data(stored, change)
    response = post(client, relay_urls(alice_domain)[0], data, htmx)
    text = response.content.decode()
    assert response.status_code == (200 if htmx else 400)
    assert expected_message(change) in text
    assert 'id="relay-test"' not in text  # no conversation took place, none queued
    assert not Job.objects.filter(kind=JobKind.DIAGNOSE).exists()
    assert attempts(stored) == []
    assert_typed_values_kept(text, data)
    assert_no_secret(text)


@pytest.mark.parametrize("htmx", [True, False], ids=["htmx", "plain"])
@pytest.mark.parametrize("scope", ["customer-domain", "global"])
def test_admin_test_button_never_sends_the_stored_password_to_another_host(
    panel_settings, admin_client_, admin_user, alice_domain, stored, scope, htmx
):
    domain = alice_domain if scope == "customer-domain" else None
    store_relay(admin_user, domain, stored["good"])
    data = form_data(stored, "host")
    response = post(admin_client_, relay_urls(domain)[0], data, htmx)
    text = response.content.decode()
    assert response.status_code == (200 if htmx else 400)
    assert RETYPE in text and attempts(stored) == []
    assert_typed_values_kept(text, data)


def talk_to(relay):
    from mailadmin.checks.relay import check_relay

    return check_relay(relay, timeout=2.0, helo="panel.test")


def test_the_stored_endpoint_gets_the_stored_password_and_a_new_one_only_what_was_typed(
    admin_user, alice_domain, stored
):
    """What "Test relay" hands to the checker (views and the CLI alike), run for real."""
    store_relay(admin_user, alice_domain, stored["good"])
    typed = {"host": "127.0.0.1", "port": stored["good"].port, "tls": "none", "username": USER,
             "password": "", "auth": "login"}
    assert talk_to(relay_service.relay_for_test(alice_domain, typed)).outcome == "ok"
    assert [(a.username, a.password) for a in stored["good"].auth_attempts] == [(USER.encode(), SECRET.encode())]
    talk_to(relay_service.relay_for_test(alice_domain, {**typed, "host": "127.0.0.2", "password": TYPED}))
    assert [a.password for a in stored["host"].auth_attempts] == [TYPED.encode()]
    assert stored["port"].auth_attempts == []


def test_service_refuses_to_pair_the_stored_password_with_another_endpoint(admin_user, alice_domain, stored):
    store_relay(admin_user, alice_domain, stored["good"])
    typed = {"host": "127.0.0.2", "port": stored["good"].port, "tls": "none", "username": USER,
             "password": "", "auth": "login"}
    with pytest.raises(ValidationError) as exc:
        relay_service.relay_for_test(alice_domain, typed)
    assert exc.value.message_dict == {"password": [RETYPE]}
    same = relay_service.relay_for_test(alice_domain, {**typed, "host": "127.0.0.1"})
    assert same.password == SECRET
    # The stored relay itself (the CLI's `mail relay test`) is its own endpoint.
    assert relay_service.relay_for_test(alice_domain).password == SECRET


# -- Save -------------------------------------------------------------------------------


@pytest.mark.parametrize("htmx", [True, False], ids=["htmx", "plain"])
@pytest.mark.parametrize("change", sorted(CHANGES))
def test_customer_save_of_a_changed_endpoint_needs_the_password_again(
    client, alice, admin_user, alice_domain, stored, change, htmx
):
    row = store_relay(admin_user, alice_domain, stored["good"])
    audits = AuditEntry.objects.count()
    client.force_login(alice)
    data = form_data(stored, change, action="save")
    response = post(client, relay_urls(alice_domain)[1], data, htmx)
    text = response.content.decode()
    assert response.status_code == (200 if htmx else 400)
    assert expected_message(change) in text
    assert_typed_values_kept(text, data)
    assert_no_secret(text)
    after = RelaySettings.objects.get(pk=row.pk)
    assert (after.host, after.port, after.tls, after.auth, after.username, after.password) == (
        "127.0.0.1", stored["good"].port, "none", "login", USER, SECRET
    )
    assert AuditEntry.objects.count() == audits


@pytest.mark.parametrize("htmx", [True, False], ids=["htmx", "plain"])
def test_admin_save_of_the_global_relay_with_another_host_needs_the_password_again(
    admin_client_, admin_user, stored, htmx
):
    store_relay(admin_user, None, stored["good"])
    data = form_data(stored, "host", action="save")
    text = post(admin_client_, relay_urls(None)[1], data, htmx).content.decode()
    assert RETYPE in text
    assert_typed_values_kept(text, data)
    assert RelaySettings.objects.get(domain__isnull=True).host == "127.0.0.1"


def test_save_on_the_same_endpoint_keeps_the_stored_password_and_a_typed_one_replaces_it(
    alice_client, admin_user, alice_domain, stored, panel_settings
):
    store_relay(admin_user, alice_domain, stored["good"])
    url = relay_urls(alice_domain)[1]
    response = alice_client.post(url, form_data(stored, action="save", preset="brevo"))
    assert response.status_code == 302  # only the preset label changed: same endpoint
    assert RelaySettings.objects.get(domain=alice_domain).password == SECRET
    response = alice_client.post(url, form_data(stored, "host", action="save", password=TYPED))
    assert response.status_code == 302
    row = RelaySettings.objects.get(domain=alice_domain)
    assert (row.host, row.password) == ("127.0.0.2", TYPED)


def test_the_switch_to_plain_button_asks_for_the_password(alice_client, admin_user, alice_domain, stored):
    store_relay(admin_user, alice_domain, stored["good"])
    data = {**form_data(stored, action=""), "switch_auth": "plain"}
    text = post(alice_client, relay_urls(alice_domain)[1], data, True).content.decode()
    assert '<option value="plain" selected>' in text
    assert "leave it empty to keep the stored one" not in text


def test_service_refuses_to_keep_the_password_for_another_endpoint(
    admin_user, alice, alice_domain, stored, panel_settings
):
    store_relay(admin_user, alice_domain, stored["good"])
    for change in ({"host": "127.0.0.2"}, {"port": 2525}, {"tls": "ssl"}, {"auth": "plain"}):
        values = {"host": "127.0.0.1", "port": stored["good"].port, "tls": "none", "username": USER,
                  "auth": "login", **change}
        with pytest.raises(ValidationError) as exc:
            relay_service.set_relay(alice, alice_domain, password=None, **values)
        assert exc.value.message_dict == {"password": [RETYPE]}
    assert RelaySettings.objects.get(domain=alice_domain).host == "127.0.0.1"


# -- the other customer ------------------------------------------------------------------


@pytest.mark.parametrize("htmx", [True, False], ids=["htmx", "plain"])
@pytest.mark.parametrize("which", [0, 1], ids=["test", "save"])
def test_other_customer_gets_404_and_no_server_hears_anything(
    panel_settings, client, bob, admin_user, alice_domain, stored, which, htmx
):
    store_relay(admin_user, alice_domain, stored["good"])
    client.force_login(bob)
    response = post(client, relay_urls(alice_domain)[which], form_data(stored, "host"), htmx)
    assert response.status_code == 404
    assert attempts(stored) == []
    assert RelaySettings.objects.get(domain=alice_domain).host == "127.0.0.1"


# -- the CLI -------------------------------------------------------------------------------


@pytest.mark.parametrize("scope", [["--domain", "alice.example"], []], ids=["domain", "global"])
@pytest.mark.parametrize(
    "args", [["--host", "127.0.0.2"], ["--port", "2525"], ["--tls", "starttls"], ["--auth", "plain"]],
    ids=["host", "port", "tls", "auth"],
)
def test_cli_relay_set_of_a_changed_endpoint_needs_the_password_again(
    panel_settings, admin_user, alice_domain, stored, scope, args
):
    domain = alice_domain if scope else None
    store_relay(admin_user, domain, stored["good"])
    with pytest.raises(CommandError, match=re.escape("password: " + RETYPE)):
        mail("relay", "set", *scope, *args)
    row = relay_service.get_relay(domain)
    assert (row.host, row.port, row.tls, row.auth) == ("127.0.0.1", stored["good"].port, "none", "login")
    # `mail relay test` talks to the stored endpoint only.
    assert '"outcome": "ok"' in mail("relay", "test", *scope, "--json")
    assert [a.password for a in attempts(stored)] == [SECRET.encode()]
    assert attempts(stored) == stored["good"].auth_attempts


def test_cli_relay_set_with_the_password_typed_again_changes_the_endpoint(admin_user, alice_domain, stored):
    store_relay(admin_user, alice_domain, stored["good"])
    mail("relay", "set", "--domain", "alice.example", "--host", "127.0.0.2", "--password-stdin", stdin=TYPED + "\n")
    row = RelaySettings.objects.get(domain=alice_domain)
    assert (row.host, row.password) == ("127.0.0.2", TYPED)


# -- panel SMTP ------------------------------------------------------------------------------


@pytest.fixture
def panel_mail(settings, mail_pki):
    settings.EMAIL_BACKEND = "mailadmin.services.panel_smtp.PanelEmailBackend"
    settings.MAILPANEL_SMTP_CA_FILE = mail_pki.ca_cert
    settings.MAILPANEL_SMTP_TIMEOUT = 5
    return settings


def store_panel_smtp(sink):
    return panel_smtp.save_settings(
        None, host="127.0.0.1", port=sink.port, security="none", username=USER, password=SECRET,
        from_email="noreply@panel.example",
    )


PANEL_CHANGES = {
    "host": lambda s: {"host": "127.0.0.2"},
    "port": lambda s: {"port": str(s["port"].port)},
    "security": lambda s: {"security": "starttls"},
    "username": lambda s: {"username": "someone-else@example.net"},
}


def panel_form(stored, change=None, **overrides):
    data = {"enabled": "on", "host": "127.0.0.1", "port": str(stored["good"].port), "security": "none",
            "username": USER, "password": "", "from_email": "noreply@panel.example"}
    if change:
        data.update(PANEL_CHANGES[change](stored))
    data.update(overrides)
    return data


@pytest.mark.parametrize("htmx", [True, False], ids=["htmx", "plain"])
@pytest.mark.parametrize("change", sorted(PANEL_CHANGES))
def test_panel_smtp_save_of_a_changed_endpoint_needs_the_password_again_and_mail_stays_put(
    panel_mail, admin_client_, stored, change, htmx
):
    store_panel_smtp(stored["good"])
    data = panel_form(stored, change)
    response = post(admin_client_, reverse("mailadmin:panel_smtp"), data, htmx)
    text = response.content.decode()
    assert response.status_code == (200 if htmx else 400)
    assert expected_message(change) in text
    assert_typed_values_kept(text, data)
    assert_no_secret(text)
    server = ServerSettings.load()
    assert (server.panel_smtp_host, server.panel_smtp_port, server.panel_smtp_security,
            server.panel_smtp_username, server.panel_smtp_password) == (
        "127.0.0.1", stored["good"].port, "none", USER, SECRET)
    # The test mail still goes to the stored server, with the stored password.
    response = post(admin_client_, reverse("mailadmin:panel_smtp_test"), {"to": "a@example.org"}, htmx)
    assert "250" in response.content.decode()
    assert [a.password for a in attempts(stored)] == [SECRET.encode()]
    assert attempts(stored) == stored["good"].auth_attempts


def test_panel_smtp_on_the_same_endpoint_keeps_the_password_and_a_typed_one_goes_to_the_new_server(
    panel_mail, admin_client_, stored
):
    store_panel_smtp(stored["good"])
    url = reverse("mailadmin:panel_smtp")
    response = admin_client_.post(url, panel_form(stored, from_email="other@panel.example"))
    assert response.status_code == 302
    assert ServerSettings.load().panel_smtp_password == SECRET
    response = admin_client_.post(url, panel_form(stored, "host", password=TYPED))
    assert response.status_code == 302
    assert panel_smtp.send_test_mail("a@example.org").ok  # the sink on 127.0.0.2 takes any login
    assert [a.password for a in stored["host"].auth_attempts] == [TYPED.encode()]
    assert stored["good"].auth_attempts == []


def test_panel_smtp_service_refuses_to_keep_the_password_for_another_endpoint(stored):
    store_panel_smtp(stored["good"])
    with pytest.raises(ValidationError) as exc:
        panel_smtp.save_settings(None, host="127.0.0.2", port=stored["good"].port, security="none",
                                 username=USER, password="", from_email="noreply@panel.example")
    assert exc.value.message_dict == {"password": [RETYPE]}
    assert ServerSettings.load().panel_smtp_host == "127.0.0.1"


@pytest.mark.parametrize(
    "args", [["--host", "127.0.0.2"], ["--security", "starttls"]], ids=["host", "security"]
)
def test_cli_panel_smtp_set_of_a_changed_endpoint_needs_the_password_again(panel_mail, stored, args):
    store_panel_smtp(stored["good"])
    base = {"--host": "127.0.0.1", "--port": str(stored["good"].port), "--security": "none"}
    base.update(dict(zip(args[::2], args[1::2])))
    flat = [x for pair in base.items() for x in pair]
    with pytest.raises(CommandError, match=re.escape("password: " + RETYPE)):
        mail("panel-smtp", "set", *flat, "--user", USER, "--from", "noreply@panel.example")
    assert ServerSettings.load().panel_smtp_host == "127.0.0.1"
    assert "sent: 250" in mail("panel-smtp", "test", "--to", "a@example.org")
    assert [a.password for a in attempts(stored)] == [SECRET.encode()]
    assert attempts(stored) == stored["good"].auth_attempts
