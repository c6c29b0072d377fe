"""The admin's status page: each line says what the last check found, how old
it is and where to fix it — without running a check while the page loads."""

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from mailadmin.models import Job, JobKind, JobState, MailDomain, ServerSettings

pytestmark = pytest.mark.django_db

URL = "/status/"
CERT = "/etc/mailpanel/tls/fullchain.pem"


def line(html: str, key: str) -> str:
    start = html.index(f'id="status-{key}"')
    return html[start : html.index("</tr>", start)]


def identify_server():
    server = ServerSettings.load()
    server.hostname, server.ipv4 = "mail.example.net", "192.0.2.10"
    server.save()


def server_diagnostics(**result):
    return Job.objects.create(
        kind=JobKind.DIAGNOSE, state=JobState.DONE, finished_at=timezone.now() - datetime.timedelta(hours=3),
        result={"what": "server", "server": result},
    )


def test_customers_do_not_reach_it(alice_client):
    assert alice_client.get(URL).status_code == 404
    assert alice_client.get(reverse("mailadmin:server_status_queue")).status_code == 404


def test_before_any_check_each_check_line_says_never_and_links_to_the_checks(admin_client_):
    html = admin_client_.get(URL).content.decode()
    for key in ("port25", "blacklists", "rdns"):
        assert 'data-state="unknown"' in line(html, key) and "Never checked" in line(html, key)
        assert reverse("mailadmin:diagnostics") in line(html, key)
    assert 'data-state="bad"' in line(html, "identity")  # no host name, no address yet


def test_the_last_server_diagnostics_fill_the_lines_with_their_age_and_fixes(admin_client_):
    identify_server()
    job = server_diagnostics(
        port25={"status": "timeout", "detail": "no answer within 5 s", "fixes": ["Ask your hosting provider"]},
        blacklist=[
            {"ip": "192.0.2.10", "zone": "zen.spamhaus.org", "status": "listed"},
            {"ip": "192.0.2.10", "zone": "bl.spamcop.net", "status": "not_listed"},
        ],
        rdns=[{"ip": "192.0.2.10", "ptr": ["mail.example.net"], "status": "ok"}],
    )
    html = admin_client_.get(URL).content.decode()
    port25 = line(html, "port25")
    assert 'data-state="bad"' in port25 and "no answer within 5 s" in port25 and "3\xa0hours ago" in port25
    assert reverse("mailadmin:global_relay") in port25 and "Ask your hosting provider" in port25
    blacklists = line(html, "blacklists")
    assert 'data-state="bad"' in blacklists and "192.0.2.10 — zen.spamhaus.org" in blacklists
    assert "bl.spamcop.net" not in blacklists and f"?job={job.pk}" in blacklists
    assert 'data-state="ok"' in line(html, "rdns") and 'data-state="ok"' in line(html, "identity")


def test_domains_failing_their_dns_check_are_listed_with_a_link_to_their_dns_tab(admin_client_, alice):
    bad = MailDomain.objects.create(name="bad.example", owner=alice, dns_status="missing")
    MailDomain.objects.create(name="good.example", owner=alice, dns_status="ok")
    MailDomain.objects.create(name="new.example", owner=alice, pending=True, dns_status="ok")
    html = admin_client_.get(URL).content.decode()
    dns = line(html, "dns")
    assert 'data-state="bad"' in dns and "1 domain fails" in dns
    assert f'href="{reverse("mailadmin:domain_dns", args=[bad.pk])}"' in dns and "good.example" not in dns
    assert "1 domain is pending" in line(html, "pending")


def test_failed_jobs_of_the_last_week_link_to_their_logs(admin_client_):
    recent = Job.objects.create(kind=JobKind.APPLY, state=JobState.FAILED, finished_at=timezone.now())
    old = Job.objects.create(
        kind=JobKind.APPLY, state=JobState.FAILED, finished_at=timezone.now() - datetime.timedelta(days=8)
    )
    jobs = line(admin_client_.get(URL).content.decode(), "jobs")
    assert reverse("mailadmin:job_status", args=[recent.pk]) in jobs
    assert reverse("mailadmin:job_status", args=[old.pk]) not in jobs


def make_certificate(path, name, not_after):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(1).not_valid_before(not_after - datetime.timedelta(days=90)).not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


@pytest.mark.parametrize(
    "name, days, state, words",
    [
        ("mail.example.net", 60, "ok", "days left"),
        ("mail.example.net", 5, "warn", "renewal should have happened"),
        ("mail.example.net", -1, "bad", "Expired"),
        ("other.example.net", 60, "bad", "does not name mail.example.net"),
    ],
)
def test_the_tls_certificate_line_reads_the_certificate_exim_presents(
    admin_client_, settings, tmp_path, name, days, state, words
):
    identify_server()
    settings.MAILPANEL_ROOT = str(tmp_path)
    settings.MAILPANEL_LAYOUT = {"tls_certificate": CERT}
    make_certificate(tmp_path / CERT.lstrip("/"), name, datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=days))
    cert = line(admin_client_.get(URL).content.decode(), "certificate")
    assert f'data-state="{state}"' in cert and words in cert


def test_the_queue_loads_after_the_page_and_an_unanswering_helper_is_unknown_not_zero(admin_client_, settings):
    html = admin_client_.get(URL).content.decode()
    assert f'hx-get="{reverse("mailadmin:server_status_queue")}" hx-trigger="load"' in html
    settings.MAILPANEL_HELPER = "false"
    partial = admin_client_.get(reverse("mailadmin:server_status_queue"), headers={"HX-Request": "true"})
    text = partial.content.decode()
    assert "<html" not in text and 'id="queue-line"' in text and "unknown" in text and "0 messages" not in text


def test_the_page_runs_the_same_queries_for_1_and_200_failing_domains_and_20_failed_jobs(admin_client_, alice):
    MailDomain.objects.create(name="d-first.example", owner=alice, dns_status="missing")
    admin_client_.get(URL)
    with CaptureQueriesContext(connection) as one:
        admin_client_.get(URL)
    MailDomain.objects.bulk_create(
        [MailDomain(name=f"d{i:03}.example", owner=alice, dns_status="different") for i in range(200)]
    )
    Job.objects.bulk_create([Job(kind=JobKind.APPLY, state=JobState.FAILED, finished_at=timezone.now()) for _ in range(20)])
    with CaptureQueriesContext(connection) as many:
        admin_client_.get(URL)
    assert len(many) == len(one)
