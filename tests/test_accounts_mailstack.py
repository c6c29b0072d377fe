"""Mail accounts end to end with the real daemons: database → build_snapshot()
→ render into a temporary root → real Exim and real Dovecot on 127.0.0.1.

Delivery into Maildirs (account, alias, catch-all, forwards), refusal at RCPT,
IMAP logins with the stored hash, authenticated submission through Dovecot
auth, sender-domain enforcement, DKIM keyed to the sender's own domain, and
over-quota deferral without loss. Accounts change without a restart: the
tests re-render the per-domain files under running daemons."""

import imaplib
import shutil
import smtplib
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError

from mailadmin.models import MailAccount, MailDomain, RelaySettings
from mailadmin.services import accounts as svc
from mailadmin.services import domains as domain_service
from mailadmin.services.apply import build_snapshot
from tests import mailstack

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(shutil.which("dovecot") is None, reason="dovecot is not installed"),
]

PW = "Str0ng-enough-pass"
BOB_PW = "B0b-has-his-own-pass"


@pytest.fixture
def hosted(alice, bob):
    """alice: example.org with info (100 MB), other; bob: bob.example with box."""
    example = MailDomain.objects.create(name="example.org", owner=alice, dkim_enabled=False)
    bobs = MailDomain.objects.create(name="bob.example", owner=bob, dkim_enabled=False)
    info = svc.add_account(alice, example, "info", PW, quota_mb=100).object
    other = svc.add_account(alice, example, "other", PW).object
    box = svc.add_account(bob, bobs, "box", BOB_PW).object
    return {"example": example, "bobs": bobs, "info": info, "other": other, "box": box}


@pytest.fixture
def stack(mailstack_tree):
    """Render the database and start Dovecot and Exim; `stack.rerender()`
    writes the files again from the database under the running daemons."""

    class Stack:
        def __init__(self):
            self.layout = None
            self._cm = []

        def start(self, files=None, **overrides):
            """files: {production path: bytes} put into the tree before the start."""
            self.layout = mailstack_tree(build_snapshot(), **overrides)
            for production, content in (files or {}).items():
                path = Path(self.layout.path(production))
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(content)
                path.chmod(0o644)
            dovecot = mailstack.dovecot_daemon(self.layout)
            exim = mailstack.exim_daemon(self.layout)
            self.dovecot = dovecot.__enter__()
            self._cm.append(dovecot)
            self.exim = exim.__enter__()
            self._cm.append(exim)
            return self

        def rerender(self):
            # Dovecot's passwd-file cache compares whole-second mtime and size
            # and stats at most once a second: write in a fresh second so a
            # same-size change (a new password) is seen, as in production
            # where edits are seconds apart.
            time.sleep(1.01 - time.time() % 1)
            mailstack_tree(build_snapshot(), layout=self.layout)

        def stop(self):
            for cm in reversed(self._cm):
                cm.__exit__(None, None, None)

    s = Stack()
    yield s
    s.stop()


# Dovecot slows down every login from an address after a failure there (its
# brute-force penalty: 2 s, then doubling). Failing attempts come from their
# own loopback address so the next test step is not held up.
FAILING_CLIENT = iter(f"127.0.0.{n}" for n in range(20, 250))


class _IMAP4From(imaplib.IMAP4):
    def __init__(self, host, port, source, timeout):
        self._source = source
        super().__init__(host, port, timeout=timeout)

    def _create_socket(self, timeout):
        import socket

        return socket.create_connection((self.host, self.port), timeout, source_address=(self._source, 0))


def imap_login(layout, user, password, source=mailstack.LOOPBACK):
    imap = _IMAP4From(mailstack.LOOPBACK, layout.imap_port, source, timeout=10)
    try:
        imap.login(user, password)
    except imaplib.IMAP4.error:
        imap.logout()
        raise
    return imap


def test_mail_to_account_alias_and_catchall_lands_in_the_right_maildir(alice, hosted, stack):
    example = hosted["example"]
    svc.add_alias(alice, example, "sales", "info@example.org")
    svc.set_catchall(alice, example, "other@example.org")
    s = stack.start()
    s.exim.send("someone@remote.example", ["info@example.org"], mailstack.make_message("someone@remote.example", "info@example.org", "direct"))
    s.exim.send("someone@remote.example", ["Sales@Example.org"], mailstack.make_message("someone@remote.example", "sales@example.org", "via alias"))
    s.exim.send("someone@remote.example", ["nobody-here@example.org"], mailstack.make_message("someone@remote.example", "nobody-here@example.org", "to catch-all"))
    info_msgs = s.dovecot.wait_for_messages("info@example.org", 2)
    other_msgs = s.dovecot.wait_for_messages("other@example.org", 1)
    subjects = sorted(m.split(b"Subject: ", 1)[1].split(b"\n", 1)[0].strip() for m in info_msgs)
    assert subjects == [b"direct", b"via alias"]
    assert b"Subject: to catch-all" in other_msgs[0]
    time.sleep(0.2)
    assert len(s.dovecot.messages("info@example.org")) == 2
    assert len(s.dovecot.messages("other@example.org")) == 1
    assert s.dovecot.messages("box@bob.example") == []


def test_unknown_address_without_catchall_is_rejected_at_rcpt(hosted, stack):
    s = stack.start()
    with s.exim.smtp() as smtp:
        smtp.ehlo("client.example")
        smtp.mail("someone@remote.example")
        code, reply = smtp.rcpt("nobody@example.org")
        assert code == 550 and b"Unknown user" in reply
        code, _reply = smtp.rcpt("info@example.org")
        assert code == 250


def test_catchall_added_later_takes_unknown_addresses_without_restart(alice, hosted, stack):
    s = stack.start()
    with s.exim.smtp() as smtp:
        smtp.ehlo("client.example")
        smtp.mail("someone@remote.example")
        assert smtp.rcpt("nobody@example.org")[0] == 550
    svc.set_catchall(alice, hosted["example"], "info@example.org")
    s.rerender()
    s.exim.send("someone@remote.example", ["nobody@example.org"], mailstack.make_message("someone@remote.example", "nobody@example.org", "late catch-all"))
    assert b"late catch-all" in s.dovecot.wait_for_messages("info@example.org", 1)[0]


def test_forward_without_local_copy_reaches_only_the_target(alice, hosted, stack):
    svc.add_forward(alice, hosted["info"], "box@bob.example", forward_only=True)
    svc.add_forward(alice, hosted["other"], "box@bob.example")  # keeps a copy
    s = stack.start()
    s.exim.send("someone@remote.example", ["info@example.org"], mailstack.make_message("someone@remote.example", "info@example.org", "forward only"))
    s.exim.send("someone@remote.example", ["other@example.org"], mailstack.make_message("someone@remote.example", "other@example.org", "forward and keep"))
    box = s.dovecot.wait_for_messages("box@bob.example", 2)
    assert sorted(b"forward only" in m for m in box) == [False, True]
    assert len(s.dovecot.wait_for_messages("other@example.org", 1)) == 1
    s.exim.wait_for_log(r"=> box <info@example\.org> R=local_mailbox")
    time.sleep(0.2)
    assert s.dovecot.messages("info@example.org") == []


def test_forward_to_an_outside_address_goes_out_through_the_relay(alice, hosted, stack, smtp_sinks):
    sink = smtp_sinks()
    RelaySettings.objects.create(domain=None, host="127.0.0.1", port=sink.port, tls="none")
    svc.add_forward(alice, hosted["info"], "boss@elsewhere.example", forward_only=True)
    s = stack.start()
    s.exim.send("someone@remote.example", ["info@example.org"], mailstack.make_message("someone@remote.example", "info@example.org", "outside"))
    (received,) = sink.wait_for_messages(1)
    assert received.recipients == ("boss@elsewhere.example",) and b"outside" in received.data
    time.sleep(0.2)
    assert s.dovecot.messages("info@example.org") == []


def test_imap_login_with_the_account_password_and_delivered_message_is_visible(alice, hosted, stack):
    s = stack.start()
    s.exim.send("someone@remote.example", ["info@example.org"], mailstack.make_message("someone@remote.example", "info@example.org", "over imap"))
    s.dovecot.wait_for_messages("info@example.org", 1)
    imap = imap_login(s.layout, "Info@Example.org", PW)
    try:
        status, data = imap.select("INBOX")
        assert status == "OK" and data == [b"1"]
        status, data = imap.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert b"Subject: over imap" in data[0][1]
        status, data = imap.getquotaroot("INBOX")
        assert status == "OK" and b"STORAGE" in data[1][0] and b"102400" in data[1][0]  # 100 MB in KiB
    finally:
        imap.logout()
    with pytest.raises(imaplib.IMAP4.error):
        imap_login(s.layout, "info@example.org", PW + "x", next(FAILING_CLIENT))


def test_imap_login_fails_for_a_deleted_account_and_a_changed_password(alice, hosted, stack):
    s = stack.start()
    imap_login(s.layout, "other@example.org", PW).logout()
    svc.set_password(alice, hosted["info"], "Br4nd-new-password")
    svc.delete_account(alice, MailAccount.objects.get(local_part="other"))
    s.rerender()  # no restart: Dovecot rereads the passwd file
    with pytest.raises(imaplib.IMAP4.error):
        imap_login(s.layout, "other@example.org", PW, next(FAILING_CLIENT))
    with pytest.raises(imaplib.IMAP4.error):
        imap_login(s.layout, "info@example.org", PW, next(FAILING_CLIENT))
    imap_login(s.layout, "info@example.org", "Br4nd-new-password").logout()


def test_authenticated_submission_right_password_accepted_wrong_refused(hosted, stack, smtp_sinks):
    sink = smtp_sinks()
    RelaySettings.objects.create(domain=None, host="127.0.0.1", port=sink.port, tls="none")
    s = stack.start()
    with s.exim.smtp(source_address=(next(FAILING_CLIENT), 0)) as smtp:
        smtp.ehlo("client.example")
        with pytest.raises(smtplib.SMTPAuthenticationError) as exc:
            smtp.user, smtp.password = "info@example.org", "wrong-password"
            smtp.auth("PLAIN", smtp.auth_plain)
        assert exc.value.smtp_code == 535
    with s.exim.smtp() as smtp:
        smtp.ehlo("client.example")
        smtp.login("info@example.org", PW)
        smtp.sendmail("info@example.org", ["friend@elsewhere.example"], mailstack.make_message("info@example.org", "friend@elsewhere.example", "submitted"))
    (received,) = sink.wait_for_messages(1)
    assert received.sender == "info@example.org" and b"submitted" in received.data


def test_authenticated_user_cannot_send_as_another_customers_domain(hosted, stack):
    s = stack.start()
    with s.exim.smtp() as smtp:
        smtp.ehlo("client.example")
        smtp.login("info@example.org", PW)
        smtp.mail("box@bob.example")
        code, reply = smtp.rcpt("friend@elsewhere.example")
        assert code == 550 and b"own domain" in reply
    # the envelope is ours but the From: header is bob's: refused at DATA
    with s.exim.smtp() as smtp:
        smtp.ehlo("client.example")
        smtp.login("info@example.org", PW)
        with pytest.raises(smtplib.SMTPDataError) as exc:
            smtp.sendmail("info@example.org", ["friend@elsewhere.example"], mailstack.make_message("box@bob.example", "friend@elsewhere.example", "forged"))
        assert exc.value.smtp_code == 550


def test_signed_message_carries_the_senders_own_dkim_domain(alice, bob, stack, smtp_sinks):
    sink = smtp_sinks()
    RelaySettings.objects.create(domain=None, host="127.0.0.1", port=sink.port, tls="none")
    example = domain_service.add_domain(None, alice, "example.org")
    bobs = domain_service.add_domain(None, bob, "bob.example")
    svc.add_account(alice, example, "info", PW)
    svc.add_account(bob, bobs, "box", BOB_PW)
    s = stack.start()
    s.exim.send("info@example.org", ["a@elsewhere.example"], mailstack.make_message("info@example.org", "a@elsewhere.example", "from alice"), login=("info@example.org", PW))
    s.exim.send("box@bob.example", ["b@elsewhere.example"], mailstack.make_message("box@bob.example", "b@elsewhere.example", "from bob"), login=("box@bob.example", BOB_PW))
    messages = {m.sender: m for m in sink.wait_for_messages(2)}
    alice_tags = mailstack.dkim_verify(messages["info@example.org"].data, mailstack.dkim_public_key_der(example.dkim_private_key))
    assert alice_tags["d"] == "example.org" and alice_tags["s"] == "mail"
    bob_tags = mailstack.dkim_verify(messages["box@bob.example"].data, mailstack.dkim_public_key_der(bobs.dkim_private_key))
    assert bob_tags["d"] == "bob.example"
    with pytest.raises(AssertionError):  # alice's mail does not verify with bob's key
        mailstack.dkim_verify(messages["info@example.org"].data, mailstack.dkim_public_key_der(bobs.dkim_private_key))


def test_over_quota_is_a_temporary_failure_and_nothing_is_lost(alice, hosted, stack):
    info = hosted["info"]
    svc.update_account(alice, info, quota_mb=1)
    s = stack.start()
    big = mailstack.make_message("someone@remote.example", "info@example.org", "too big", body="x" * 76 + "\n")
    big = big + (("y" * 76 + "\n") * 20000).encode()  # ≈ 1.5 MB
    s.exim.send("someone@remote.example", ["info@example.org"], big)
    log = s.exim.wait_for_log(r"== info@example\.org")
    assert "452" in log.split("== info@example.org", 1)[1].split("\n", 1)[0]
    assert s.dovecot.messages("info@example.org") == []
    queue = subprocess.run([mailstack.EXIM, "-C", mailstack.exim_conf(s.layout), "-bpc"], capture_output=True, text=True)
    assert queue.stdout.strip() == "1"  # still queued, not bounced
    assert "**" not in s.exim.mainlog()
    # the owner raises the quota: the queued message is delivered
    svc.update_account(alice, info, quota_mb=10)
    s.rerender()
    mailstack.exim_queue_run(s.layout)
    (delivered,) = s.dovecot.wait_for_messages("info@example.org", 1)
    assert b"Subject: too big" in delivered


def test_submission_with_starttls_and_implicit_tls_uses_the_same_passwords(hosted, stack, mail_pki):
    pem = Path(mail_pki.server_cert).read_bytes() + Path(mail_pki.server_key).read_bytes()
    submission, smtps = mailstack.free_port(), mailstack.free_port()
    s = stack.start(
        files={"/etc/ssl/mailpanel/mail.pem": pem},
        smtp_ports=(submission, smtps),
        smtps_ports=(smtps,),
        tls_certificate="/etc/ssl/mailpanel/mail.pem",
        tls_privatekey="/etc/ssl/mailpanel/mail.pem",
    )
    ctx = ssl.create_default_context(cafile=mail_pki.ca_cert)
    with smtplib.SMTP(mailstack.LOOPBACK, submission, timeout=10) as smtp:
        smtp.ehlo("client.example")
        assert not smtp.has_extn("auth")  # no AUTH before TLS
        smtp.starttls(context=ctx)
        smtp.ehlo("client.example")
        smtp.login("info@example.org", PW)
    with smtplib.SMTP_SSL(mailstack.LOOPBACK, smtps, timeout=10, context=ctx, source_address=(next(FAILING_CLIENT), 0)) as smtp:
        smtp.ehlo("client.example")
        smtp.user, smtp.password = "info@example.org", "not-the-password"
        with pytest.raises(smtplib.SMTPAuthenticationError):
            smtp.auth("LOGIN", smtp.auth_login)
    with smtplib.SMTP_SSL(mailstack.LOOPBACK, smtps, timeout=10, context=ctx) as smtp:
        smtp.login("box@bob.example", BOB_PW)


def test_account_added_in_the_panel_logs_in_and_receives_without_restart(alice_client, hosted, stack):
    from django.urls import reverse

    s = stack.start()
    example = hosted["example"]
    response = alice_client.post(
        reverse("mailadmin:account_add", args=[example.pk]),
        {"local_part": "newbie", "password": "Fr3sh-from-the-panel", "quota_mb": "50"},
    )
    assert response.status_code == 302
    with s.exim.smtp() as smtp:  # not rendered yet: unknown
        smtp.ehlo("client.example")
        smtp.mail("someone@remote.example")
        assert smtp.rcpt("newbie@example.org")[0] == 550
    s.rerender()  # what the apply job does through the helper
    s.exim.send("someone@remote.example", ["newbie@example.org"], mailstack.make_message("someone@remote.example", "newbie@example.org", "welcome"))
    s.dovecot.wait_for_messages("newbie@example.org", 1)
    imap = imap_login(s.layout, "newbie@example.org", "Fr3sh-from-the-panel")
    try:
        assert imap.select("INBOX") == ("OK", [b"1"])
    finally:
        imap.logout()


def test_mailbox_usage_shown_to_the_owner_comes_from_dovecot_through_the_helper(
    alice, hosted, stack, client, settings
):
    import sys

    s = stack.start()
    body = "z" * 70 + "\n"
    message = mailstack.make_message("someone@remote.example", "info@example.org", "usage", body=body * 3000)
    s.exim.send("someone@remote.example", ["info@example.org"], message)
    (delivered,) = s.dovecot.wait_for_messages("info@example.org", 1)
    helper = Path(__file__).resolve().parent.parent / "deploy" / "mailpanel_helper.py"
    settings.MAILPANEL_HELPER = f"{sys.executable} {helper} --root {s.layout.root} --mail-root {s.layout.mail_root}"
    client.force_login(alice)
    url = f"/domains/{hosted['example'].pk}/accounts/usage/"
    html = client.get(url, HTTP_HX_REQUEST="true").content.decode()
    row = html.split("info@example.org", 1)[1].split("</tr>", 1)[0]
    used_mb = len(delivered) / (1024 * 1024)
    assert f"{used_mb:.1f} MB" in row and "100 MB" in row
    assert "<td>1</td>" in row  # one message
    # bob's domain is not alice's to look at
    assert client.get(f"/domains/{hosted['bobs'].pk}/accounts/usage/").status_code == 404


# -- what every hosted domain owes the Internet (issue 17) --------------------------


def test_postmaster_and_abuse_reach_the_owners_address_and_a_catchall_does_not_take_them(
    alice, bob, hosted, stack
):
    alice.email = "box@bob.example"  # the owner's address: any mailbox will do
    alice.save()
    svc.set_catchall(alice, hosted["example"], "other@example.org")
    s = stack.start()
    for role in ("postmaster", "abuse"):
        s.exim.send("blocklist@remote.example", [f"{role}@example.org"],
                    mailstack.make_message("blocklist@remote.example", f"{role}@example.org", role))
    box = s.dovecot.wait_for_messages("box@bob.example", 2)
    assert sorted(m.split(b"Subject: ")[1].split(b"\n")[0] for m in box) == [b"abuse", b"postmaster"]
    # bob.example's owner has no address: unroutable, refused at RCPT, not caught
    with s.exim.smtp() as smtp:
        smtp.ehlo("client.example")
        smtp.mail("someone@remote.example")
        assert smtp.rcpt("postmaster@bob.example")[0] == 550
    # an explicit alias of that name wins
    svc.add_alias(alice, hosted["example"], "abuse", "info@example.org")
    s.rerender()
    s.exim.send("x@remote.example", ["abuse@example.org"],
                mailstack.make_message("x@remote.example", "abuse@example.org", "to the alias"))
    assert b"to the alias" in s.dovecot.wait_for_messages("info@example.org", 1)[0]
    time.sleep(0.2)
    assert s.dovecot.messages("other@example.org") == []  # the catch-all took nothing


def test_user_plus_tag_lands_in_users_inbox_and_an_alias_with_a_plus_still_wins(alice, hosted, stack):
    svc.add_alias(alice, hosted["example"], "info+sales", "other@example.org")
    with pytest.raises(ValidationError, match="cannot contain"):
        svc.add_account(alice, hosted["example"], "a+b", PW)
    s = stack.start()
    s.exim.send("x@remote.example", ["info+newsletters@example.org"],
                mailstack.make_message("x@remote.example", "info+newsletters@example.org", "tagged"))
    (message,) = s.dovecot.wait_for_messages("info@example.org", 1)
    assert b"tagged" in message
    s.exim.wait_for_log(r"=> info\+newsletters <info\+newsletters@example\.org> R=local_mailbox_subaddress")
    s.exim.send("x@remote.example", ["info+sales@example.org"],
                mailstack.make_message("x@remote.example", "info+sales@example.org", "plus in the name"))
    assert b"plus in the name" in s.dovecot.wait_for_messages("other@example.org", 1)[0]
    with s.exim.smtp() as smtp:
        smtp.ehlo("client.example")
        smtp.mail("someone@remote.example")
        assert smtp.rcpt("nobody+tag@example.org")[0] == 550
