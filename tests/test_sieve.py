"""ManageSieve end to end: the switch in the database → build_snapshot() →
rendered Dovecot config → a real Dovecot on 127.0.0.1 that speaks ManageSieve,
and a real Exim whose deliveries run the script an account uploaded.

ManageSieve (RFC 5804) is spoken over a plain socket: it is a small text
protocol and the test shows exactly what a mail client sends."""

import json
import shutil
import socket

import pytest
from django.core.management import call_command
from django.urls import reverse

from mailadmin.models import Job, AuditEntry, JobKind, MailDomain, ServerSettings
from mailconf.render import render_all
from mailconf.render.snappymail import default_domain_path
from mailadmin.services import accounts as account_service
from mailadmin.services import sieve
from mailadmin.services.apply import build_snapshot
from tests import mailstack
from tests.managesieve import ManageSieve as _ManageSieve

pytestmark = pytest.mark.django_db

needs_dovecot = pytest.mark.skipif(shutil.which("dovecot") is None, reason="dovecot is not installed")
PW = "Sieve-test-passw0rd"


@pytest.fixture
def mailbox(alice):
    domain = MailDomain.objects.create(name="example.org", owner=alice, dkim_enabled=False)
    account_service.add_account(alice, domain, "info", PW)
    return "info@example.org"


class ManageSieve(_ManageSieve):
    """The shared client (tests/managesieve.py) on this test's loopback."""

    def __init__(self, port: int):
        super().__init__(port, mailstack.LOOPBACK)


SCRIPT = b"""require ["fileinto", "mailbox"];
if header :contains "subject" "invoice" {
  fileinto :create "Invoices";
  stop;
}
"""


@needs_dovecot
def test_managesieve_script_uploaded_by_an_account_files_mail_delivered_by_exim(
    mailstack_tree, mailbox, admin_user
):
    sieve.set_sieve(admin_user, enabled=True)
    layout = mailstack_tree(build_snapshot())
    with mailstack.dovecot_daemon(layout) as dovecot, mailstack.exim_daemon(layout) as exim:
        client = ManageSieve(layout.sieve_port)
        try:
            greeting = b"\n".join(client.greeting)
            assert b'"IMPLEMENTATION" "Dovecot Pigeonhole"' in greeting
            assert b'"SASL" "PLAIN LOGIN"' in greeting
            assert client.authenticate(mailbox, "wrong password")[-1].startswith(b"NO")
            assert client.authenticate(mailbox, PW)[-1].startswith(b"OK")
            assert client.command('PUTSCRIPT "filters"', SCRIPT)[-1].startswith(b"OK")
            assert client.command('SETACTIVE "filters"')[-1].startswith(b"OK")
            listed = client.command("LISTSCRIPTS")
            assert b'"filters" ACTIVE' in listed
        finally:
            client.close()

        exim.send("s@else.example", [mailbox], mailstack.make_message("s@else.example", mailbox, "Your invoice 42"))
        exim.send("s@else.example", [mailbox], mailstack.make_message("s@else.example", mailbox, "hello"))
        filed = dovecot.wait_for_messages(mailbox, 1, folder="Invoices")
        inbox = dovecot.wait_for_messages(mailbox, 1)
    assert b"Subject: Your invoice 42" in filed[0]
    assert len(inbox) == 1 and b"Subject: hello" in inbox[0]
    assert list((dovecot.maildir(mailbox) / ".Invoices" / "new").iterdir())


@needs_dovecot
def test_managesieve_off_nothing_listens_and_delivery_still_works(mailstack_tree, mailbox, admin_user):
    sieve.set_sieve(admin_user, enabled=False)
    layout = mailstack_tree(build_snapshot())
    conf = open(mailstack.dovecot_conf(layout)).read()
    assert "service managesieve-login" not in conf
    assert "sieve" not in conf.split("protocols =")[1].splitlines()[0]
    with mailstack.dovecot_daemon(layout) as dovecot, mailstack.exim_daemon(layout) as exim:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((mailstack.LOOPBACK, layout.sieve_port), timeout=5).close()
        exim.send("s@else.example", [mailbox], mailstack.make_message("s@else.example", mailbox, "Your invoice 43"))
        inbox = dovecot.wait_for_messages(mailbox, 1)
    assert b"Subject: Your invoice 43" in inbox[0]
    assert not (dovecot.maildir(mailbox) / ".Invoices").exists()


# --- the switch -------------------------------------------------------------------


def test_external_access_needs_managesieve_itself(admin_user):
    sieve.set_sieve(admin_user, enabled=False, external=True)
    server = ServerSettings.load()
    assert (server.sieve_enabled, server.sieve_external) == (False, False)
    sieve.set_sieve(admin_user, enabled=True, external=True)
    server.refresh_from_db()
    assert (server.sieve_enabled, server.sieve_external) == (True, True)
    entry = AuditEntry.objects.filter(action="sieve.set").first()
    assert entry.fields == ["sieve_enabled", "sieve_external"]
    assert Job.objects.filter(kind=JobKind.APPLY, state="pending").count() == 1


def test_snappymail_default_domain_follows_the_sieve_switch(admin_user):
    server = ServerSettings.load()
    server.snappymail_installed = True
    server.snappymail_admin_login = "admin_0123abcd"
    server.snappymail_admin_password_hash = "$2y$04$" + "a" * 53
    server.snappymail_admin_key = "f" * 32
    server.save()
    layout = mailstack.Layout()
    sieve.set_sieve(admin_user, enabled=True)
    files = render_all(build_snapshot(), layout)
    block = json.loads(files[default_domain_path(layout)].content)["Sieve"]
    assert (block["enabled"], block["host"], block["port"], block["type"]) == (True, "localhost", 4190, 0)
    sieve.set_sieve(admin_user, enabled=False)
    files = render_all(build_snapshot(), layout)
    assert json.loads(files[default_domain_path(layout)].content)["Sieve"]["enabled"] is False


def test_admin_switches_managesieve_on_with_external_access(admin_client_):
    response = admin_client_.post(reverse("mailadmin:sieve_save"), {"enabled": "on", "external": "on"})
    assert response.status_code == 302
    server = ServerSettings.load()
    assert server.sieve_enabled and server.sieve_external
    page = admin_client_.get(reverse("mailadmin:server_webmail")).content.decode()
    assert "TCP port 4190 open" in page


def test_sieve_form_answers_htmx_with_its_section(admin_client_):
    response = admin_client_.post(reverse("mailadmin:sieve_save"), {"enabled": "on"}, HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert response.status_code == 200
    assert html.strip().startswith('<section class="card" id="sieve">')
    assert "port 4190 is closed to other hosts" in html
    assert ServerSettings.load().sieve_external is False


def test_customer_cannot_switch_managesieve(alice_client):
    response = alice_client.post(reverse("mailadmin:sieve_save"), {"enabled": "on", "external": "on"})
    assert response.status_code == 404
    server = ServerSettings.load()
    assert not server.sieve_enabled and not server.sieve_external
    assert not Job.objects.exists()


def test_cli_sieve_enable_external_and_disable(capsys):
    call_command("mail", "sieve", "enable", "--external")
    assert "ManageSieve on" in capsys.readouterr().out
    server = ServerSettings.load()
    assert server.sieve_enabled and server.sieve_external
    call_command("mail", "sieve", "enable")
    server.refresh_from_db()
    assert server.sieve_enabled and not server.sieve_external
    call_command("mail", "sieve", "disable")
    server.refresh_from_db()
    assert not server.sieve_enabled and not server.sieve_external
