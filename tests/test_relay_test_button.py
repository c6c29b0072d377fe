""""Test relay": a real SMTP conversation with an aiosmtpd relay on 127.0.0.1.

Each outcome — ok, bad credentials (535), mechanism not offered, connection
refused, timeout, TLS failure — is reported distinctly and within the
configured timeout; the transcript never holds the password or its base64."""

import base64
import io
import json
import re
import socket
import sys
import threading
import time

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from mailadmin.checks.relay import check_relay
from mailadmin.models import MailDomain, RelaySettings
from mailconf.snapshot import Relay
from tests import mailstack, taskqueue

USER = "relay-user@example.net"
PASSWORD = ' p^ss: $x "q" \\ #ü 密码 '
TIMEOUT = 2.0
MARGIN = 0.5


def creds(user=USER, password=PASSWORD):
    return {(user.encode(), password.encode())}


def relay_for(sink, **overrides) -> Relay:
    values = dict(host="127.0.0.1", port=sink.port, username=USER, password=PASSWORD, auth="login", tls="none")
    values.update(overrides)
    return Relay(**values)


def run(relay, cafile=None, timeout=TIMEOUT):
    started = time.monotonic()
    result = check_relay(relay, timeout=timeout, cafile=cafile, helo="panel.test")
    elapsed = time.monotonic() - started
    assert elapsed < timeout + MARGIN, f"took {elapsed:.2f}s"
    return result


def assert_no_secret(result, password=PASSWORD, user=USER):
    dumped = json.dumps(result.as_dict(), ensure_ascii=False) + result.transcript()
    pw = password.encode()
    for form in (
        password,
        password.strip(),
        base64.b64encode(pw).decode(),
        base64.b64encode(b"\0" + user.encode() + b"\0" + pw).decode(),
    ):
        assert form not in dumped


@pytest.fixture
def ca(mail_pki):
    return mail_pki.ca_cert


# -- outcomes ----------------------------------------------------------------


@pytest.mark.parametrize("auth", ["login", "plain"])
def test_relay_test_succeeds_and_sends_the_exact_credentials(smtp_sinks, auth):
    sink = smtp_sinks(credentials=creds())
    result = run(relay_for(sink, auth=auth))
    assert result.outcome == "ok", result.transcript()
    assert [(a.mechanism, a.username, a.password) for a in sink.auth_attempts] == [
        (auth.upper(), USER.encode(), PASSWORD.encode())
    ]
    actions = [step.action for step in result.steps]
    assert actions[:3] == ["connect", "greeting", "EHLO"] and actions[-1] == "QUIT"
    assert any(step.reply.startswith("235") for step in result.steps)
    assert result.offered_mechanisms == ("LOGIN", "PLAIN")
    assert_no_secret(result)


def test_relay_test_over_starttls_verifies_the_certificate(smtp_sinks, ca):
    sink = smtp_sinks(credentials=creds(), starttls=True)
    result = run(relay_for(sink, tls="starttls", auth="plain"), cafile=ca)
    assert result.outcome == "ok", result.transcript()
    actions = [step.action for step in result.steps]
    assert actions[:6] == ["connect", "greeting", "EHLO", "STARTTLS", "TLS", "EHLO"]
    assert "certificate verified" in result.steps[4].reply
    assert_no_secret(result)


def test_relay_test_over_implicit_tls(smtp_sinks, ca):
    sink = smtp_sinks(credentials=creds(), implicit_tls=True)
    result = run(relay_for(sink, tls="ssl"), cafile=ca)
    assert result.outcome == "ok", result.transcript()
    assert [step.action for step in result.steps][:3] == ["connect", "TLS", "greeting"]


def test_relay_test_reports_bad_credentials_as_535(smtp_sinks):
    sink = smtp_sinks(credentials=creds(password="the right one"))
    result = run(relay_for(sink))
    assert result.outcome == "auth_failed"
    assert "535" in result.message and "535" in result.transcript()
    assert sink.auth_attempts[0].password == PASSWORD.encode()
    assert_no_secret(result)


def test_relay_test_says_which_mechanisms_are_offered_and_suggests_plain(smtp_sinks):
    sink = smtp_sinks(mechanisms=("PLAIN",), credentials=creds())
    result = run(relay_for(sink, auth="login"))
    assert result.outcome == "mechanism_not_offered"
    assert result.offered_mechanisms == ("PLAIN",)
    assert result.suggested_auth == "plain"
    assert "it offers PLAIN" in result.message and "Switch the authentication to PLAIN" in result.message
    assert sink.auth_attempts == []  # nothing was sent
    assert_no_secret(result)


def test_relay_test_reports_connection_refused():
    port = mailstack.free_port()  # nothing listens there
    result = run(Relay(host="127.0.0.1", port=port, username=USER, password=PASSWORD, tls="none"))
    assert result.outcome == "connection_refused"
    assert f"127.0.0.1:{port}" in result.message
    assert result.elapsed < 1.0


@pytest.fixture
def silent_listener():
    """Accepts connections and never says a word (a firewall-eaten relay)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                accepted.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()


@pytest.mark.parametrize("timeout", [0.5, 1.5])
def test_relay_test_times_out_within_the_configured_timeout(silent_listener, timeout):
    relay = Relay(host="127.0.0.1", port=silent_listener, username=USER, password=PASSWORD, tls="none")
    result = run(relay, timeout=timeout)
    assert result.outcome == "timeout"
    assert timeout - 0.05 <= result.elapsed < timeout + MARGIN
    assert result.steps[-1].action == "greeting" and not result.steps[-1].ok


def test_relay_test_refuses_a_certificate_from_another_ca(smtp_sinks, ca):
    sink = smtp_sinks(credentials=creds(), starttls=True, wrong_ca=True)
    result = run(relay_for(sink, tls="starttls"), cafile=ca)
    assert result.outcome == "tls_failed"
    assert "certificate" in result.message
    assert sink.auth_attempts == []


def test_relay_test_says_when_starttls_is_not_offered(smtp_sinks, ca):
    sink = smtp_sinks(credentials=creds())
    result = run(relay_for(sink, tls="starttls"), cafile=ca)
    assert result.outcome == "tls_failed"
    assert "does not offer STARTTLS" in result.message
    assert sink.auth_attempts == []


def test_every_outcome_is_distinct(smtp_sinks, silent_listener):
    good = smtp_sinks(credentials=creds())
    plain_only = smtp_sinks(mechanisms=("PLAIN",), credentials=creds())
    wrong = smtp_sinks(credentials=creds(password="other"))
    outcomes = [
        run(relay_for(good)).outcome,
        run(relay_for(wrong)).outcome,
        run(relay_for(plain_only)).outcome,
        run(Relay(host="127.0.0.1", port=mailstack.free_port(), tls="none")).outcome,
        run(Relay(host="127.0.0.1", port=silent_listener, tls="none"), timeout=0.5).outcome,
    ]
    assert outcomes == ["ok", "auth_failed", "mechanism_not_offered", "connection_refused", "timeout"]


def test_unauthenticated_relay_needs_no_auth(smtp_sinks):
    sink = smtp_sinks()
    result = run(Relay(host="127.0.0.1", port=sink.port, tls="none"))
    assert result.outcome == "ok" and "no authentication" in result.message
    assert sink.auth_attempts == []


# -- through the panel and the CLI ------------------------------------------------


@pytest.fixture
def panel_settings(settings, mail_pki):
    settings.MAILPANEL_CHECK_TIMEOUT = TIMEOUT
    settings.MAILPANEL_ROOT = "/"
    settings.MAILPANEL_LAYOUT = {"relay_ca_bundle": mail_pki.ca_cert}
    # The sinks listen on 127.0.0.1, which customers may not target: this lets
    # the customer's own path run (tests/test_customer_checks.py has the refusals).
    settings.MAILPANEL_CUSTOMER_TARGETS_ALLOW_LOOPBACK = True
    return settings


@pytest.fixture
def press_test(django_capture_on_commit_callbacks):
    """Press "Test relay": the request only starts a job (no connection yet);
    the checks worker runs it; the page's poll (htmx) or refresh link (no JS)
    shows the result, returned as HTML."""

    def press(client, url, data, htmx=True):
        headers = {"HX-Request": "true"} if htmx else {}
        with django_capture_on_commit_callbacks(execute=True):
            started = client.post(url, data, headers=headers)
        assert started.status_code == 200
        pending = started.content.decode()
        assert 'data-outcome="pending"' in pending
        poll_url = re.search(r'data-outcome="pending" hx-get="([^"]+)"', pending).group(1)
        assert taskqueue.run_queue("checks") == ["mailadmin.tasks_dns.relay_test"]
        return client.get(poll_url, headers=headers).content.decode()

    return press


@pytest.fixture
def alice_domain(db, alice):
    return MailDomain.objects.create(name="alice.example", owner=alice)


def button_data(sink, **overrides):
    data = {
        "preset": "custom", "host": "127.0.0.1", "port": str(sink.port), "tls": "starttls",
        "username": USER, "password": PASSWORD, "auth": "login", "action": "test",
    }
    data.update(overrides)
    return data


def test_test_button_shows_the_transcript_and_offers_to_switch_to_plain(
    panel_settings, alice_client, alice_domain, smtp_sinks, press_test
):
    sink = smtp_sinks(mechanisms=("PLAIN",), credentials=creds(), starttls=True)
    url = reverse("mailadmin:domain_relay_test", args=[alice_domain.pk])
    html = press_test(alice_client, url, button_data(sink))
    assert html.lstrip().startswith('<div class="relay-test" id="relay-test"')  # the poll swaps only the result
    assert 'data-outcome="mechanism_not_offered"' in html
    assert "it offers PLAIN" in html
    assert 'name="switch_auth" value="plain"' in html
    assert "250-AUTH PLAIN" in html or "AUTH PLAIN" in html
    assert_no_secret_html(html)
    assert not RelaySettings.objects.exists()  # testing saves nothing

    # "Switch to PLAIN" re-shows the form with PLAIN chosen and the typed values kept
    switched = alice_client.post(
        reverse("mailadmin:domain_relay", args=[alice_domain.pk]),
        {**button_data(sink), "switch_auth": "plain", "action": ""},
        headers={"HX-Request": "true"},
    ).content.decode()
    assert '<option value="plain" selected>' in switched
    assert f'value="{sink.port}"' in switched and "type the password once more" in switched
    assert not RelaySettings.objects.exists()

    ok = press_test(alice_client, url, button_data(sink, auth="plain"))
    assert 'data-outcome="ok"' in ok
    assert_no_secret_html(ok)
    assert sink.auth_attempts[-1].password == PASSWORD.encode()


def assert_no_secret_html(html):
    import html as html_module

    text = html_module.unescape(html)
    for form in (PASSWORD, PASSWORD.strip(), base64.b64encode(PASSWORD.encode()).decode()):
        assert form not in text


def test_test_button_without_js_renders_the_page_with_the_result(
    panel_settings, alice_client, alice_domain, smtp_sinks, press_test
):
    sink = smtp_sinks(credentials=creds(), starttls=True)
    url = reverse("mailadmin:domain_relay_test", args=[alice_domain.pk])
    html = press_test(alice_client, url, button_data(sink), htmx=False)
    assert "<html" in html
    assert 'data-outcome="ok"' in html and "The relay accepted the user name and password." in html
    assert_no_secret_html(html)


def test_test_button_with_blank_password_uses_the_stored_one(
    panel_settings, alice_client, alice_domain, smtp_sinks, press_test
):
    sink = smtp_sinks(credentials=creds(), starttls=True)
    # The stored password is used for the endpoint it was stored for only (test_secret_endpoint.py).
    RelaySettings.objects.create(
        domain=alice_domain, host="127.0.0.1", port=sink.port, username=USER, password=PASSWORD
    )
    url = reverse("mailadmin:domain_relay_test", args=[alice_domain.pk])
    html = press_test(alice_client, url, button_data(sink, password=""))
    assert 'data-outcome="ok"' in html
    assert sink.auth_attempts[-1].password == PASSWORD.encode()


def test_admin_tests_the_global_relay(panel_settings, admin_client_, smtp_sinks, press_test):
    panel_settings.MAILPANEL_CUSTOMER_TARGETS_ALLOW_LOOPBACK = False  # admins may test loopback anyway
    sink = smtp_sinks(credentials=creds(), implicit_tls=True)
    html = press_test(admin_client_, reverse("mailadmin:global_relay_test"), button_data(sink, tls="ssl"))
    assert 'data-outcome="ok"' in html


def mail(*args, stdin=""):
    out = io.StringIO()
    old, sys.stdin = sys.stdin, io.StringIO(stdin)
    try:
        call_command("mail", *args, stdout=out, stderr=io.StringIO())
    finally:
        sys.stdin = old
    return out.getvalue()


def test_cli_relay_test(panel_settings, alice_domain, smtp_sinks):
    sink = smtp_sinks(mechanisms=("PLAIN",), credentials=creds(), starttls=True)
    mail("relay", "set", "--domain", "alice.example", "--host", "127.0.0.1", "--port", str(sink.port),
         "--user", USER, "--password-stdin", "--auth", "plain", stdin=PASSWORD + "\n")
    data = json.loads(mail("relay", "test", "--domain", "alice.example", "--json"))
    assert data["outcome"] == "ok" and data["ok"] is True
    assert sink.auth_attempts[-1].password == PASSWORD.encode()
    text = mail("relay", "test", "--domain", "alice.example")
    assert "ok: The relay accepted the user name and password." in text
    assert PASSWORD not in text and PASSWORD.strip() not in text

    # another mechanism is another endpoint: the password is typed again
    mail("relay", "set", "--domain", "alice.example", "--auth", "login", "--password-stdin", stdin=PASSWORD + "\n")
    out = io.StringIO()
    with pytest.raises(CommandError, match="mechanism_not_offered"):
        old, sys.stdin = sys.stdin, io.StringIO("")
        try:
            call_command("mail", "relay", "test", "--domain", "alice.example", "--json", stdout=out)
        finally:
            sys.stdin = old
    failed = json.loads(out.getvalue())
    assert failed["offered_mechanisms"] == ["PLAIN"] and failed["suggested_auth"] == "plain"


def test_cli_relay_test_without_a_relay_is_an_error(panel_settings, db):
    with pytest.raises(CommandError, match="no relay for global"):
        mail("relay", "test")


def test_relay_test_by_host_name_checks_the_certificate_name(smtp_sinks, ca):
    sink = smtp_sinks(credentials=creds(), starttls=True)
    result = run(relay_for(sink, host="localhost", tls="starttls"), cafile=ca)
    assert result.outcome == "ok", result.transcript()
    assert "commonName=localhost" in result.transcript()
