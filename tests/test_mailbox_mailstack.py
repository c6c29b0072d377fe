"""Mailbox self-service against the real daemons (issue #15): the password a
mailbox owner sets in the panel logs in over IMAP (real Dovecot), and the
out-of-office reply saved in the panel goes through ManageSieve into real
Dovecot and is sent once per sender, through real Exim, to an aiosmtpd sink.

Dovecot hands the replies Sieve makes to the rendered `submission_host`:
this host's Exim over SMTP on loopback (here the test Exim's port), then the
global relay, the sink."""

import datetime
import shutil
import time

import pytest
from django.test import Client
from django.urls import reverse

from mailadmin import sieve_vacation
from mailadmin.models import MailboxVacation, MailDomain, RelaySettings
from mailadmin.services import accounts as account_service
from mailadmin.services import sieve
from mailadmin.services.apply import build_snapshot
from tests import mailstack
from tests.test_accounts_mailstack import FAILING_CLIENT, imap_login
from tests.test_sieve import ManageSieve

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(shutil.which("dovecot") is None, reason="dovecot is not installed"),
]

PW = "Mailb0x-pass-phrase"
NEW_PW = "Br4nd-new-passw0rd"
ADDRESS = "info@example.org"
FILTERS = b"""require ["fileinto", "mailbox"];
if header :contains "subject" "invoice" { fileinto :create "Invoices"; stop; }
"""


@pytest.fixture(autouse=True)
def _root():
    mailstack.require_root()


@pytest.fixture
def info(alice, admin_user):
    domain = MailDomain.objects.create(name="example.org", owner=alice, dkim_enabled=False)
    sieve.set_sieve(admin_user, enabled=True)
    return account_service.add_account(alice, domain, "info", PW).object


@pytest.fixture
def stack(mailstack_tree, smtp_sinks, settings):
    """Dovecot (with ManageSieve) and Exim from the database; mail leaving
    Exim goes to `stack.sink` through the global relay."""

    class Stack:
        def start(self):
            self.sink = smtp_sinks()
            RelaySettings.objects.create(domain=None, host="127.0.0.1", port=self.sink.port, tls="none")
            self.layout = mailstack_tree(build_snapshot())
            settings.MAILPANEL_MANAGESIEVE = f"127.0.0.1:{self.layout.sieve_port}"
            self._dovecot = mailstack.dovecot_daemon(self.layout)
            self.dovecot = self._dovecot.__enter__()
            self._exim = mailstack.exim_daemon(self.layout)
            self.exim = self._exim.__enter__()
            return self

        def rerender(self):
            time.sleep(1.01 - time.time() % 1)  # Dovecot's passwd-file cache: a fresh second
            mailstack_tree(build_snapshot(), layout=self.layout)

        def stop(self):
            for cm in ("_exim", "_dovecot"):
                if hasattr(self, cm):
                    getattr(self, cm).__exit__(None, None, None)

    s = Stack()
    yield s
    s.stop()


def signed_in(address=ADDRESS, password=PW) -> Client:
    client = Client()
    response = client.post(reverse("login"), {"username": address, "password": password})
    assert response.status_code == 302 and response["Location"] == reverse("mailadmin:mailbox_home")
    return client


def save_vacation(client, password=PW, **fields):
    data = {"enabled": "on", "subject": "Away until Monday", "body": "I am away.\n.Back on Monday.\n", "password": password}
    data.update(fields)
    return client.post(reverse("mailadmin:mailbox_vacation"), {k: v for k, v in data.items() if v is not None})


def send(stack, sender, subject="hello"):
    stack.exim.send(sender, [ADDRESS], mailstack.make_message(sender, ADDRESS, subject))


def sieve_scripts(stack, password=PW):
    client = ManageSieve(stack.layout.sieve_port)
    try:
        assert client.authenticate(ADDRESS, password)[-1].startswith(b"OK")
        return client.command("LISTSCRIPTS")
    finally:
        client.close()


def replies(stack, count, settle=1.5):
    """Wait for `count` messages at the sink, then a while longer: a second
    reply to the same sender would arrive in that time."""
    received = stack.sink.wait_for_messages(count, timeout=15)
    time.sleep(settle)
    return list(stack.sink.messages)


def test_the_new_password_set_in_the_panel_logs_in_over_imap(info, stack):
    s = stack.start()
    client = signed_in()
    response = client.post(reverse("mailadmin:mailbox_password"), {"password": PW, "new_password": NEW_PW})
    assert response.status_code == 302
    s.rerender()  # the apply job's work: the per-domain passwd file, no restart
    imap_login(s.layout, ADDRESS, NEW_PW).logout()
    with pytest.raises(Exception):
        imap_login(s.layout, ADDRESS, PW, next(FAILING_CLIENT))
    assert client.get(reverse("mailadmin:mailbox_home")).status_code == 200  # still signed in


def test_an_out_of_office_reply_is_sent_once_per_sender(info, stack):
    s = stack.start()
    client = signed_in()
    response = save_vacation(client)
    assert response.status_code == 302, response.content.decode()[-2000:]
    assert b'"mailpanel-vacation" ACTIVE' in b"\n".join(sieve_scripts(s))
    send(s, "anna@remote.example", "first")
    send(s, "anna@remote.example", "second")
    send(s, "ben@remote.example", "third")
    s.dovecot.wait_for_messages(ADDRESS, 3)  # every message is still delivered
    received = replies(s, 2)
    assert sorted(r.recipients for r in received) == [("anna@remote.example",), ("ben@remote.example",)]
    for reply in received:
        assert reply.sender == "<>"  # a null envelope sender: nobody answers an auto-reply
        assert b"Subject: Away until Monday" in reply.data
        assert b"Auto-Submitted: auto-replied" in reply.data
        assert b"I am away.\r\n.Back on Monday." in reply.data  # the dot-stuffed line as typed
    saved = MailboxVacation.objects.get(account=info)
    assert saved.enabled and saved.subject == "Away until Monday"


def test_a_reply_that_starts_tomorrow_is_not_sent_today(info, stack):
    s = stack.start()
    tomorrow = datetime.date.today() + datetime.timedelta(days=1)
    assert save_vacation(signed_in(), start=tomorrow.isoformat()).status_code == 302
    send(s, "anna@remote.example")
    s.dovecot.wait_for_messages(ADDRESS, 1)
    time.sleep(1.5)
    assert s.sink.messages == []


def test_the_reply_runs_beside_the_owners_own_filters_and_leaves_them_as_they_were(info, stack):
    s = stack.start()
    own = ManageSieve(s.layout.sieve_port)
    try:
        own.authenticate(ADDRESS, PW)
        assert own.command('PUTSCRIPT "filters"', FILTERS)[-1].startswith(b"OK")
        assert own.command('SETACTIVE "filters"')[-1].startswith(b"OK")
    finally:
        own.close()
    client = signed_in()
    assert save_vacation(client).status_code == 302
    listed = b"\n".join(sieve_scripts(s))
    assert b'"mailpanel" ACTIVE' in listed and b'"filters"' in listed and b'"mailpanel-vacation"' in listed
    send(s, "anna@remote.example", "your invoice 7")
    filed = s.dovecot.wait_for_messages(ADDRESS, 1, folder="Invoices")
    assert b"your invoice 7" in filed[0]
    assert [r.recipients for r in replies(s, 1)] == [("anna@remote.example",)]
    # switched off: the owner's filters run alone again, our scripts are gone
    assert save_vacation(client, enabled=None).status_code == 302
    listed = b"\n".join(sieve_scripts(s))
    assert b'"filters" ACTIVE' in listed and b"mailpanel" not in listed
    assert not MailboxVacation.objects.get(account=info).enabled


def test_a_wrong_password_leaves_the_mail_server_untouched(info, stack):
    s = stack.start()
    response = save_vacation(signed_in(), password="not-the-password")
    assert response.status_code == 400 and "not the mailbox" in response.content.decode()
    assert not [line for line in sieve_scripts(s) if line.startswith(b'"')]
    assert not MailboxVacation.objects.exists()


def test_the_script_text_is_what_pigeonhole_accepts_for_hostile_input(info, stack):
    """Quotes, backslashes, a lone dot line and CJK text survive as typed."""
    s = stack.start()
    subject = 'Away "really" \\ 不在办公室'
    body = "Line one\n.\n..two dots\n\\\"quoted\"\n不在\n"
    assert save_vacation(signed_in(), subject=subject, body=body).status_code == 302
    client = ManageSieve(s.layout.sieve_port)
    try:
        client.authenticate(ADDRESS, PW)
        script = b"\n".join(client.command(f'GETSCRIPT "{sieve_vacation.VACATION_SCRIPT}"'))
    finally:
        client.close()
    assert b'\\"really\\" \\\\' in script
    send(s, "anna@remote.example")
    (reply,) = replies(s, 1)
    import email
    import email.policy

    message = email.message_from_bytes(reply.data, policy=email.policy.default)
    assert message["Subject"] == subject
    # Pigeonhole ends the body with a line break of its own
    assert message.get_content().replace("\r\n", "\n").rstrip("\n") == body.rstrip("\n")
