"""Certificates from the ACME CA, without a CA: who sees what (domain page,
status page, CLI), the backoff, the timer. The orders themselves run
against a real Pebble in tests/test_certificates_pebble.py."""

import io
import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse
from django.utils import timezone

from mailadmin import acme_client
from mailadmin.models import AcmeAccount, Certificate, MailDomain, ServerSettings
from mailadmin.services import certificates
from tests.test_deploy import assert_timer_units

pytestmark = pytest.mark.django_db

CA_ERROR = ('mail.example.org: 127.0.0.1: Fetching http://mail.example.org/.well-known/acme-challenge/x: '
            'Connection refused (connection)')


@pytest.fixture
def failing(alice):
    domain = MailDomain.objects.create(name="example.org", owner=alice)
    now = timezone.now()
    cert = Certificate.objects.create(
        domain=domain, names=["mail.example.org"], issuer="CN=Pebble Intermediate CA 1a2b",
        not_after=now + timedelta(days=50), last_error=CA_ERROR, attempts=2, last_attempt_at=now,
        next_attempt_at=now + timedelta(hours=2),
        left_out=[{"name": "webmail.example.org", "reason": "points to 192.0.2.99, not here"}],
    )
    return domain, cert


def test_backoff_doubles_from_an_hour_to_a_day():
    assert [certificates.backoff(n) for n in (0, 1, 2, 3, 5, 6, 40)] == [
        timedelta(0), timedelta(hours=1), timedelta(hours=2), timedelta(hours=4), timedelta(hours=16),
        timedelta(days=1), timedelta(days=1)]


def test_renewal_is_due_thirty_days_before_expiry():
    now = timezone.now()
    assert certificates.due(None, now)
    assert certificates.due(Certificate(not_after=now + timedelta(days=29)), now)
    assert not certificates.due(Certificate(not_after=now + timedelta(days=31)), now)


def test_the_timer_runs_mail_cert_renew_twice_a_day(tmp_path):
    assert_timer_units("mailpanel-certificates", "mail cert renew", tmp_path, interval="12h")


def test_the_domain_page_shows_the_cas_error_the_names_left_out_and_the_next_attempt(alice_client, failing):
    domain, cert = failing
    html = alice_client.get(reverse("mailadmin:domain_detail", args=[domain.pk])).content.decode()
    section = html[html.index('id="certificate"'):]
    assert "Connection refused (connection)" in section
    assert "webmail.example.org" in section and "points to 192.0.2.99, not here" in section
    assert "2 failures in a row" in section and "stays in use" in section
    partial = alice_client.get(reverse("mailadmin:domain_certificate", args=[domain.pk]), HTTP_HX_REQUEST="true")
    assert partial.status_code == 200 and partial.content.decode().lstrip().startswith('<section class="card" id="certificate"')


def test_another_customer_cannot_see_the_certificate_section(client, bob, failing):
    domain, _cert = failing
    client.force_login(bob)
    assert client.get(reverse("mailadmin:domain_certificate", args=[domain.pk])).status_code == 404


def test_the_account_key_is_never_in_a_page_or_the_cli(admin_client_, failing):
    domain, _cert = failing
    account = AcmeAccount.objects.create(directory="https://ca.example/dir", key=acme_client.new_account_key())
    private = json.loads(account.key)["d"]
    pages = [admin_client_.get(url).content.decode() for url in (
        reverse("mailadmin:domain_detail", args=[domain.pk]), "/status/")]
    out = io.StringIO()
    call_command("mail", "cert", "list", "--json", stdout=out)
    assert all(private not in text for text in [*pages, out.getvalue()])


def test_the_status_page_lists_a_failing_order_and_a_certificate_about_to_expire(admin_client_, failing):
    _domain, cert = failing
    html = admin_client_.get("/status/").content.decode()
    acme_line = html[html.index('id="status-acme"'):]
    acme_line = acme_line[:acme_line.index("</tr>")]
    assert "retried with a growing pause" in acme_line and "Connection refused" in acme_line
    cert.not_after = timezone.now() + timedelta(days=5)
    cert.save()
    html = admin_client_.get("/status/").content.decode()
    acme_line = html[html.index('id="status-acme"'):]
    assert "expires within 14 days" in acme_line[:acme_line.index("</tr>")]


def test_cli_lists_names_issuer_expiry_and_last_error(failing):
    out = io.StringIO()
    call_command("mail", "cert", "list", "--json", stdout=out)
    (row,) = json.loads(out.getvalue())
    assert row["name"] == "example.org" and row["names"] == ["mail.example.org"]
    assert row["issuer"].startswith("CN=Pebble") and row["last_error"] == CA_ERROR and row["not_after"]


def test_cli_issue_refuses_an_unknown_domain_and_waits_out_the_backoff(failing):
    with pytest.raises(CommandError, match="no mail domain"):
        call_command("mail", "cert", "issue", "nowhere.example")
    out = io.StringIO()
    with pytest.raises(CommandError):
        call_command("mail", "cert", "issue", "example.org", stdout=out)
    assert "waiting until" in out.getvalue() and "--force" in out.getvalue()
    assert Certificate.objects.get(domain=failing[0]).attempts == 2  # nothing was tried


def test_renew_leaves_a_placeholder_host_name_alone():
    server = ServerSettings.load()
    assert server.hostname == "localhost.localdomain"
    assert certificates.renew() == {"issued": 0, "failed": 0, "waiting": 0, "not_due": 0}
    assert not Certificate.objects.exists()
