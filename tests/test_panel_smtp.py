"""Panel SMTP (SPEC 2.2): the panel's own mail — test mail and password reset —
reaches a real SMTP server (aiosmtpd on loopback) in plain, STARTTLS and
implicit-TLS mode with AUTH; failures show the server's answer, never the
password; reset links come from MAILPANEL_BASE_URL, never from the Host header."""

import email
import email.policy
import io
import re
import sys

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from mailadmin.passwords import hash_password
from mailadmin.models import AuditEntry, ServerSettings
from mailadmin.services import panel_smtp
from tests.mailstack import mail_pki, smtp_sink
from tests.taskqueue import run_queue

pytestmark = pytest.mark.django_db

USER = "panel@relay.test"
PASSWORD = "s3cr:et^pä ss\"'"
BASE_URL = "https://panel.example.net:8443"


@pytest.fixture(autouse=True)
def panel_mail(settings):
    # pytest-django swaps in the locmem backend; these tests use the real one.
    settings.EMAIL_BACKEND = "mailadmin.services.panel_smtp.PanelEmailBackend"
    settings.MAILPANEL_SMTP_CA_FILE = mail_pki().ca_cert
    settings.MAILPANEL_SMTP_TIMEOUT = 5
    settings.MAILPANEL_BASE_URL = BASE_URL
    return settings


def configure(port, security="none", username=USER, password=PASSWORD, host="127.0.0.1"):
    return panel_smtp.save_settings(
        None,
        host=host,
        port=port,
        security=security,
        username=username,
        password=password,
        from_email="noreply@panel.example.net",
    )


CREDENTIALS = {(USER.encode(), PASSWORD.encode())}
MODES = {
    "none": dict(),
    "starttls": dict(starttls=True),
    "ssl": dict(implicit_tls=True),
}


@pytest.mark.parametrize("security", ["none", "starttls", "ssl"])
def test_test_mail_arrives_with_auth_in_every_security_mode(security):
    with smtp_sink(credentials=CREDENTIALS, **MODES[security]) as sink:
        configure(sink.port, security)
        result = panel_smtp.send_test_mail("Admin@Example.org")
        assert result.ok, result.transcript
        assert result.summary.startswith("250")
        [msg] = sink.wait_for_messages(1)
    assert msg.recipients == ("admin@example.org",)
    assert msg.sender == "noreply@panel.example.net"
    assert msg.auth is not None and msg.auth.password == PASSWORD.encode()
    if security != "ssl":  # the sink records STARTTLS; implicit TLS is proven by the handshake
        assert msg.tls is (security == "starttls")
    assert b"mailpanel test mail" in msg.data
    assert PASSWORD not in "\n".join(result.transcript)


def test_wrong_password_shows_the_servers_535_and_not_the_password():
    with smtp_sink(credentials={(USER.encode(), b"the right one")}) as sink:
        configure(sink.port, "none")
        result = panel_smtp.send_test_mail("admin@example.org")
        assert sink.messages == []
    assert not result.ok
    assert result.summary.startswith("535"), result.summary
    everything = result.summary + "\n".join(result.transcript)
    assert PASSWORD not in everything


@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_untrusted_certificate_is_a_clear_failure_not_a_crash(security):
    with smtp_sink(credentials=CREDENTIALS, wrong_ca=True, **MODES[security]) as sink:
        configure(sink.port, security)
        result = panel_smtp.send_test_mail("admin@example.org")
    assert not result.ok
    assert "certificate" in result.summary.lower()


def test_refused_connection_is_reported():
    with smtp_sink() as sink:
        port = sink.port
    configure(port, "none", username="", password="")
    result = panel_smtp.send_test_mail("admin@example.org")
    assert not result.ok and "refused" in result.summary


def test_test_mail_view_shows_the_server_answer(admin_client_):
    with smtp_sink(credentials={(USER.encode(), b"other")}) as sink:
        configure(sink.port, "none")
        response = admin_client_.post(
            reverse("mailadmin:panel_smtp_test"), {"to": "admin@example.org"}, HTTP_HX_REQUEST="true"
        )
    html = response.content.decode()
    assert response.status_code == 200
    assert 'id="panel-smtp"' in html and "<html" not in html  # the partial only
    assert "535" in html
    assert PASSWORD not in html


def test_test_mail_view_without_js_renders_the_page_with_the_result(admin_client_):
    with smtp_sink(credentials=CREDENTIALS) as sink:
        configure(sink.port, "none")
        response = admin_client_.post(reverse("mailadmin:panel_smtp_test"), {"to": "admin@example.org"})
        sink.wait_for_messages(1)
    html = response.content.decode()
    assert response.status_code == 200
    assert "<html" in html and "Sent. The server answered:" in html


@pytest.mark.parametrize("security", ["none", "starttls", "ssl"])
def test_password_reset_mail_arrives_with_links_from_the_base_url_despite_a_forged_host(
    client, settings, security, django_capture_on_commit_callbacks
):
    settings.ALLOWED_HOSTS = ["*"]  # a permissive deployment: the Host header is the attacker's
    user = get_user_model().objects.create_user("carol", email="carol@example.org", password="old-pass-123")
    with smtp_sink(credentials=CREDENTIALS, **MODES[security]) as sink:
        configure(sink.port, security)
        with django_capture_on_commit_callbacks(execute=True):
            response = client.post(
                reverse("password_reset"), {"email": "carol@example.org"}, HTTP_HOST="evil.example"
            )
        assert response.status_code == 302
        assert run_queue("default") == ["mailadmin.tasks.send_password_reset"]  # the worker sends
        [msg] = sink.wait_for_messages(1)
    assert msg.recipients == ("carol@example.org",)
    assert b"evil.example" not in msg.data
    body = email.message_from_bytes(msg.data, policy=email.policy.default).get_content()
    assert "evil.example" not in body
    links = re.findall(r"https?://\S+", body)
    assert len(links) == 1 and links[0].startswith(BASE_URL + "/password-reset/"), body
    # The link works: it lets carol set a new password.
    path = links[0][len(BASE_URL):]
    response = client.get(path, HTTP_HOST="evil.example")
    assert response.status_code == 302
    response = client.post(
        response["Location"],
        {"new_password1": "brand-new-pass-42", "new_password2": "brand-new-pass-42"},
        HTTP_HOST="evil.example",
    )
    assert response.status_code == 302
    user.refresh_from_db()
    assert user.check_password("brand-new-pass-42")


def test_login_page_links_to_password_reset(client):
    html = client.get(reverse("login")).content.decode()
    assert reverse("password_reset") in html
    assert client.get(reverse("password_reset")).status_code == 200


def test_panel_smtp_off_sends_through_the_local_mta(client, settings, django_capture_on_commit_callbacks):
    get_user_model().objects.create_user("dave", email="dave@example.org", password="old-pass-123")
    with smtp_sink() as local_mta:
        settings.MAILPANEL_LOCAL_SMTP = f"127.0.0.1:{local_mta.port}"
        assert not ServerSettings.load().panel_smtp_enabled
        with django_capture_on_commit_callbacks(execute=True):
            client.post(reverse("password_reset"), {"email": "dave@example.org"})
        run_queue("default")
        [msg] = local_mta.wait_for_messages(1)
    assert msg.auth is None and msg.recipients == ("dave@example.org",)


def test_settings_apply_at_send_time_without_restart():
    with smtp_sink(credentials=CREDENTIALS) as first, smtp_sink(credentials=CREDENTIALS) as second:
        configure(first.port)
        mail.send_mail("one", "body", None, ["x@example.org"])
        configure(second.port)
        mail.send_mail("two", "body", None, ["x@example.org"])
        assert b"Subject: one" in first.wait_for_messages(1)[0].data
        assert b"Subject: two" in second.wait_for_messages(1)[0].data
    assert len(first.messages) == 1
    # the default sender is replaced by the configured From (providers refuse others)
    assert first.messages[0].sender == "noreply@panel.example.net"


def test_backend_failure_does_not_carry_the_password():
    with smtp_sink(credentials={(USER.encode(), b"other")}) as sink:
        configure(sink.port)
        with pytest.raises(panel_smtp.PanelSmtpError) as exc:
            mail.send_mail("one", "body", None, ["x@example.org"])
    assert str(exc.value).startswith("535") and PASSWORD not in str(exc.value)


# --- the form -----------------------------------------------------------------------


def test_admin_saves_panel_smtp_and_the_password_is_never_shown(admin_client_):
    response = admin_client_.post(
        reverse("mailadmin:panel_smtp"),
        {
            "enabled": "on",
            "host": "SMTP.Example.NET",
            "port": "465",
            "security": "ssl",
            "username": USER,
            "password": PASSWORD,
            "from_email": "noreply@example.net",
        },
    )
    assert response.status_code == 302
    server = ServerSettings.load()
    assert server.panel_smtp_enabled and server.panel_smtp_host == "smtp.example.net"
    assert server.panel_smtp_password == PASSWORD
    html = admin_client_.get(reverse("mailadmin:panel_smtp")).content.decode()
    assert "smtp.example.net" in html and PASSWORD not in html
    assert "A password is stored" in html
    entry = AuditEntry.objects.get(action="server.panel_smtp")
    assert "panel_smtp_password" in entry.fields and PASSWORD not in str(entry.fields)


def test_blank_password_keeps_the_stored_one_for_the_same_endpoint(admin_client_):
    configure(2525)
    admin_client_.post(
        reverse("mailadmin:panel_smtp"),
        {"enabled": "on", "host": "127.0.0.1", "port": "2525", "security": "none",
         "username": USER, "password": "", "from_email": "other@example.net"},
    )
    server = ServerSettings.load()
    assert server.panel_smtp_from == "other@example.net" and server.panel_smtp_password == PASSWORD
    # Another port is another endpoint: the password must be typed again (test_secret_endpoint.py).
    response = admin_client_.post(
        reverse("mailadmin:panel_smtp"),
        {"enabled": "on", "host": "127.0.0.1", "port": "2526", "security": "none",
         "username": USER, "password": "", "from_email": "noreply@example.net"},
    )
    assert "Type the password again: the server changed." in response.content.decode()
    assert ServerSettings.load().panel_smtp_port == 2525


def test_invalid_input_gets_clear_errors_and_keeps_what_was_typed(admin_client_):
    response = admin_client_.post(
        reverse("mailadmin:panel_smtp"),
        {"enabled": "on", "host": "bad host!", "port": "70000", "security": "starttls",
         "username": "newuser", "password": "", "from_email": "not-an-address"},
        HTTP_HX_REQUEST="true",
    )
    html = response.content.decode()
    assert "A port is a number from 1 to 65535." in html
    assert "Enter the password for this user name." in html
    assert "is not an email address" in html
    assert 'value="newuser"' in html and 'value="not-an-address"' in html
    assert not ServerSettings.load().panel_smtp_enabled


def test_unticking_goes_back_to_the_local_mta_and_clear_wipes(admin_client_):
    configure(2525)
    admin_client_.post(reverse("mailadmin:panel_smtp"), {"security": "none"})
    server = ServerSettings.load()
    assert not server.panel_smtp_enabled and server.panel_smtp_password == PASSWORD
    admin_client_.post(reverse("mailadmin:panel_smtp"), {"action": "clear", "security": "none"})
    server = ServerSettings.load()
    assert server.panel_smtp_password == "" and server.panel_smtp_host == ""


def test_customer_cannot_change_or_use_panel_smtp(alice_client):
    for name in ("panel_smtp", "panel_smtp_test"):
        response = alice_client.post(reverse(f"mailadmin:{name}"), {"to": "a@example.org", "enabled": "on"})
        assert response.status_code == 404


# --- the CLI ------------------------------------------------------------------------


def test_cli_set_test_clear(monkeypatch):
    with smtp_sink(credentials=CREDENTIALS, starttls=True) as sink:
        monkeypatch.setattr(sys, "stdin", io.StringIO(PASSWORD + "\n"))
        out = io.StringIO()
        call_command(
            "mail", "panel-smtp", "set", "--host", "127.0.0.1", "--port", str(sink.port),
            "--security", "starttls", "--user", USER, "--password-stdin",
            "--from", "noreply@panel.example.net", stdout=out,
        )
        assert ServerSettings.load().panel_smtp_password == PASSWORD
        out = io.StringIO()
        call_command("mail", "panel-smtp", "test", "--to", "admin@example.org", stdout=out)
        assert "sent: 250" in out.getvalue() and PASSWORD not in out.getvalue()
        sink.wait_for_messages(1)
    call_command("mail", "panel-smtp", "clear", stdout=io.StringIO())
    server = ServerSettings.load()
    assert not server.panel_smtp_enabled and server.panel_smtp_password == ""


def test_cli_test_failure_exits_nonzero_with_the_servers_answer():
    with smtp_sink(credentials={(USER.encode(), b"nope")}) as sink:
        configure(sink.port)
        with pytest.raises(CommandError) as exc:
            call_command("mail", "panel-smtp", "test", "--to", "admin@example.org", stdout=io.StringIO())
    assert "535" in str(exc.value) and PASSWORD not in str(exc.value)


def test_cli_rejects_bad_values_with_field_names():
    with pytest.raises(CommandError) as exc:
        call_command("mail", "panel-smtp", "set", "--host", "127.0.0.1", "--port", "0",
                     "--from", "x@example.org", stdout=io.StringIO())
    assert "port:" in str(exc.value)


def test_panel_smtp_off_test_mail_is_accepted_by_the_real_local_exim(settings, alice, tmp_path):
    """Off = the local MTA: the rendered Exim on loopback takes the panel's
    mail over SMTP from 127.0.0.1 without AUTH."""
    from mailadmin.models import MailAccount
    from mailadmin.services import apply
    from mailadmin.services import domains as domain_service
    from tests.mailstack import exim_daemon, render_tree, require_root

    require_root()
    domain = domain_service.add_domain(None, alice, "hosted.test", dkim_enabled=False)
    MailAccount.objects.create(domain=domain, local_part="alice", password_hash=hash_password("secret-password"))
    layout = render_tree(apply.build_snapshot(), tmp_path)
    with exim_daemon(layout) as exim:
        settings.MAILPANEL_LOCAL_SMTP = f"127.0.0.1:{exim.port}"
        result = panel_smtp.send_test_mail("alice@hosted.test")
        assert result.ok, result.transcript
        assert re.match(r"250 OK id=\S+", result.summary), result.summary
        log = exim.wait_for_log(r"<= mailpanel@localhost H=.*\[127\.0\.0\.1\]")
    assert "A=" not in log.split("<= mailpanel@localhost", 1)[1].splitlines()[0]  # no AUTH


def test_password_reset_mails_are_rate_limited_per_address_without_saying_so(
    client, django_capture_on_commit_callbacks
):
    get_user_model().objects.create_user("dave", email="dave@example.org", password="old-pass-123")
    with smtp_sink(credentials=CREDENTIALS) as sink:
        configure(sink.port, "none")
        with django_capture_on_commit_callbacks(execute=True):
            answers = [
                client.post(reverse("password_reset"), {"email": "dave@example.org"})
                for _ in range(5)
            ]
        assert len(run_queue("default")) == 3  # the worker sends each mail before it returns
        assert len(sink.messages) == 3
    # Every answer is the same redirect: the page does not tell a limited request apart.
    assert {(r.status_code, r["Location"]) for r in answers} == {(302, reverse("password_reset_done"))}
