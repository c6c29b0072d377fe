"""DMARC reports end to end with the real daemons: the panel makes the
reports mailbox (database → build_snapshot() → real Exim and Dovecot on
127.0.0.1), receivers' mails arrive over SMTP, the job logs in over IMAP with
the password only the panel knows, stores good reports, refuses hostile ones
with a clear line in the job log, and leaves the mailbox tidy; sources are
marked as this server, the relay (resolved through a real DNS server), or
other."""

import gzip
import imaplib
import shutil

import pytest

from mailadmin.models import DmarcReport, DmarcRow, JobState, MailAccount, RelaySettings, ServerSettings
from mailadmin.services import accounts as account_service
from mailadmin.services import dmarc_reports as svc
from mailadmin.services import domains as domain_service
from tests import mailstack
from tests.dnsserver import DnsServer
from tests.test_accounts_mailstack import stack  # noqa: F401 (a fixture: Exim and Dovecot from the database)
from tests.test_dmarc_reports import BILLION_LAUGHS, fixture, report_mail, zip_bomb, zipped  # noqa: F401

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(shutil.which("dovecot") is None, reason="dovecot is not installed"),
]


@pytest.fixture
def collecting(alice, settings):
    """alice's example.org collects reports at dmarc-reports@; the server is
    192.0.2.10, the global relay relay.test resolves (real DNS) to 198.51.100.25."""
    dns = DnsServer(["relay.test. 300 IN A 198.51.100.25"]).start()
    settings.MAILPANEL_RESOLVERS = [dns.address]
    settings.MAILPANEL_CHECK_TIMEOUT = 2.0
    server = ServerSettings.load()
    server.ipv4, server.ipv6 = "192.0.2.10", "2001:db8::10"
    server.save()
    RelaySettings.objects.create(domain=None, host="relay.test", port=2525, tls="none")
    domain = domain_service.add_domain(None, alice, "example.org")
    mailbox = svc.set_mailbox(alice, domain, "dmarc-reports").object
    yield domain, mailbox
    dns.stop()


def start(stack, settings):  # noqa: F811
    s = stack.start()
    settings.MAILPANEL_DMARC_IMAP = f"{mailstack.LOOPBACK}:{s.layout.imap_port}"
    return s


def deliver(s, *mails):
    s.exim.send_many([("noreply-dmarc-support@google.com", ["dmarc-reports@example.org"], mail) for mail in mails])
    s.dovecot.wait_for_messages("dmarc-reports@example.org", len(mails))


def imap_flags(s, password):
    imap = imaplib.IMAP4(mailstack.LOOPBACK, s.layout.imap_port, timeout=10)
    imap.login("dmarc-reports@example.org", password)
    imap.select("INBOX")
    _typ, data = imap.fetch("1:*", "(FLAGS)")
    imap.logout()
    return [d for d in data if d]


def test_the_panel_makes_the_mailbox_and_nobody_else_knows_its_password(collecting):
    domain, mailbox = collecting
    account = MailAccount.objects.get(domain=domain, local_part="dmarc-reports")
    assert mailbox.account == account and account.quota_mb == svc.QUOTA_MB
    assert len(mailbox.password) >= 40 and mailbox.password not in account.password_hash
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("select password from mailadmin_dmarcmailbox")
        (raw,) = cursor.fetchone()
    assert raw.startswith("gAAAA") and mailbox.password not in raw


def test_good_reports_are_read_hostile_ones_refused_and_the_mailbox_left_tidy(collecting, stack, settings, zip_bomb):  # noqa: F811
    domain, mailbox = collecting
    s = start(stack, settings)
    other_domain = fixture("google.xml").replace(b"<domain>example.org</domain>\n    <adkim>", b"<domain>victim.example</domain>\n    <adkim>")
    deliver(
        s,
        report_mail(("google.com!example.org!1767225600!1767311999.zip", zipped(fixture("google.xml")), "application/zip")),
        report_mail(("outlook.xml.gz", gzip.compress(fixture("outlook.xml")), "application/gzip")),
        report_mail(("lol.xml", BILLION_LAUGHS, "application/xml"), subject="laughs"),
        report_mail(("page.xml", b"<html><body>not a report</body></html>", "text/xml"), subject="wrong schema"),
        report_mail(("victim.xml", other_domain, "text/xml"), subject="about another domain"),
        report_mail(subject="no attachment"),
        report_mail(("bomb.zip", zip_bomb, "application/zip"), subject="a zip bomb"),
    )
    lines = []
    job = svc.read_reports(None, echo=lines.append)
    assert job.state == JobState.DONE
    assert job.result == {"mailboxes": 1, "mails": 7, "reports": 2, "duplicates": 0, "refused": 5, "errors": 0}
    log = job.log
    assert "dmarc-reports@example.org: report google.com 13283714906346237861: 3 rows" in log
    assert "refused: lol.xml: the XML declares a DTD or entities (refused: they can expand without bound)" in log
    assert "refused: page.xml: the XML is not a DMARC aggregate report (no <feedback>)" in log
    assert "refused: the report is about victim.example, not example.org" in log
    assert "refused: the mail has no report attached (zip, gzip or XML)" in log
    assert "refused: bomb.zip: the report is larger than 16 MB when unpacked" in log
    assert lines == log.splitlines() and mailbox.password not in log
    assert DmarcReport.objects.filter(domain=domain).count() == 2
    sources = dict(DmarcRow.objects.filter(domain=domain).values_list("source_ip", "source"))
    assert sources == {"192.0.2.10": "server", "2001:db8::10": "server", "198.51.100.25": "relay", "203.0.113.77": "other"}
    # read mails are gone, refused ones stay flagged for a person to look at
    flags = imap_flags(s, mailbox.password)
    assert len(flags) == 5 and all(b"\\Flagged" in f and b"\\Seen" in f for f in flags)
    mailbox.refresh_from_db()
    assert mailbox.read_at is not None and mailbox.problem.startswith("5 reports could not be read")

    # the same report again: counted once
    deliver(s, report_mail(("again.zip", zipped(fixture("google.xml")), "application/zip")))
    job = svc.read_reports(None)
    assert job.result["duplicates"] == 1 and job.result["reports"] == 0
    assert DmarcReport.objects.filter(domain=domain).count() == 2
    # nothing new: nothing read
    assert svc.read_reports(None).result["mails"] == 0


def test_a_mail_over_the_size_limit_is_never_fetched(collecting, stack, settings):  # noqa: F811
    domain, mailbox = collecting
    s = start(stack, settings)
    big = report_mail(("big.xml", b"<feedback>" + b" " * (6 * 1024 * 1024) + b"</feedback>", "application/xml"))
    deliver(s, big)
    job = svc.read_reports(None)
    assert "refused: the mail is larger than 5 MB" in job.log
    assert job.result["refused"] == 1 and not DmarcReport.objects.exists()


def test_a_changed_password_is_a_clear_problem_and_choosing_the_mailbox_again_fixes_it(collecting, stack, settings, alice):  # noqa: F811
    domain, mailbox = collecting
    account_service.set_password(alice, mailbox.account, "Somebody-else-set-this-1")
    s = start(stack, settings)
    deliver(s, report_mail(("r.zip", zipped(fixture("google.xml")), "application/zip")))
    job = svc.read_reports(None)
    assert job.state == JobState.DONE and job.result["errors"] == 1
    assert "IMAP login as dmarc-reports@example.org failed (was its password changed?)" in job.log
    mailbox.refresh_from_db()
    assert "could not be read" in mailbox.problem and "password" in mailbox.problem
    svc.set_mailbox(alice, domain, "dmarc-reports")  # the page's button, again
    stack.rerender()
    job = svc.read_reports(None)
    assert job.result["reports"] == 1 and job.result["errors"] == 0
