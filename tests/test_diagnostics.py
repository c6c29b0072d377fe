"""Diagnostics (SPEC §4.2–4.5) against the real DNS server on 127.0.0.1:
receiving, blacklists, reverse DNS, sending readiness; jobs and who sees what."""

import json
import socket
import time

import pytest
from aiosmtpd.controller import Controller
from django.core.management import call_command
from django.urls import reverse

from mailadmin import tasks_dns
from mailadmin.models import Job, JobKind, JobState, MailDomain, ServerSettings
from mailadmin.services import dns_checks
from tests.dnsserver import (
    SERVER_HOSTNAME,
    SERVER_V4,
    SERVER_V6,
    SilentResolver,
    dns_world,  # noqa: F401 (fixture)
    reverse_v4,
)

DQS_KEY = "abcdefghijklmnopqrstuvwxyz"


@pytest.fixture
def live_dns(settings, dns_world, db):
    settings.MAILPANEL_RESOLVERS = [dns_world.address]
    settings.MAILPANEL_CHECK_TIMEOUT = 2.0
    server = ServerSettings.load()
    server.hostname, server.ipv4, server.ipv6 = SERVER_HOSTNAME, SERVER_V4, SERVER_V6
    server.dnsbl_zones = "dnsbl.test\nrefusing.test\nclean-bl.test"
    server.save()
    return dns_world


@pytest.fixture
def domains(alice, bob, live_dns):
    def make(name, owner, pem=""):
        return MailDomain.objects.create(name=name, owner=owner, dkim_private_key=pem)

    return {
        "good": make("good.test", alice, live_dns.good_pem),
        "different": make("different.test", alice, live_dns.good_pem),
        "cloudflare": make("cloudflare.test", alice),
        "missing": make("missing.test", alice),
        "bobs": make("include.test", bob, live_dns.good_pem),
    }


# --- blacklists --------------------------------------------------------------------


def rows_by(rows):
    return {(r["ip"], r["zone"]): r for r in rows}


def test_blacklist_listing_refusal_and_clean_answers_are_told_apart(live_dns):
    rows = rows_by(dns_checks.blacklists())
    listed = rows[(SERVER_V4, "dnsbl.test")]
    assert listed["status"] == "listed" and listed["codes"] == ["127.0.0.2"]
    assert "SBL" in listed["explanation"]
    assert "removal" in listed["fix"]
    refused = rows[(SERVER_V4, "refusing.test")]
    assert refused["status"] == "refused"  # 127.255.255.254 is never a listing
    assert refused["codes"] == ["127.255.255.254"]
    assert "open resolver" in refused["explanation"]
    assert rows[(SERVER_V6, "refusing.test")]["status"] == "refused"
    assert rows[(SERVER_V4, "clean-bl.test")]["status"] == "not_listed"
    assert rows[(SERVER_V6, "dnsbl.test")]["status"] == "not_listed"
    assert len(rows) == 6


def test_blacklist_uses_the_dqs_key_and_never_shows_it(live_dns, admin_client_):
    live_dns.server.add([f"{reverse_v4(SERVER_V4)}.{DQS_KEY}.zen.dq.spamhaus.net. 300 IN A 127.0.0.4"])
    server = ServerSettings.load()
    server.dqs_key, server.dnsbl_zones = DQS_KEY, "zen.spamhaus.org"
    server.save()
    job = Job.objects.create(kind=JobKind.DIAGNOSE)
    tasks_dns.run_diagnose_job(job.pk, "server")
    job.refresh_from_db()
    rows = rows_by(job.result["server"]["blacklist"])
    row = rows[(SERVER_V4, "<DQS key>.zen.dq.spamhaus.net")]
    assert row["status"] == "listed" and "XBL" in row["explanation"]
    page = admin_client_.get(reverse("mailadmin:diagnostics") + f"?job={job.pk}").content.decode()
    assert "&lt;DQS key&gt;.zen.dq.spamhaus.net" in page
    for text in (json.dumps(job.result), job.log, page):
        assert DQS_KEY not in text


# --- reverse DNS -------------------------------------------------------------------


def test_reverse_dns_matching_and_forward_confirmed_or_not(live_dns):
    rows = {r["ip"]: r for r in dns_checks.reverse_dns()}
    v4, v6 = rows[SERVER_V4], rows[SERVER_V6]
    assert v4["status"] == "ok" and v4["ptr"] == [SERVER_HOSTNAME]
    assert v4["matches_hostname"] and v4["forward_confirmed"]
    assert v6["status"] == "different" and v6["ptr"] == ["host-10.provider.test"]
    assert not v6["matches_hostname"] and not v6["forward_confirmed"]
    assert any("hosting provider" in fix for fix in v6["fixes"])


def test_reverse_dns_missing_ptr(live_dns):
    server = ServerSettings.load()
    server.ipv4, server.ipv6 = "192.0.2.99", None
    server.save()
    [row] = dns_checks.reverse_dns()
    assert row["status"] == "missing" and row["fixes"]


# --- receiving and sending readiness -------------------------------------------------


def test_receiving_mx_points_here(domains):
    receive = dns_checks.diagnose_domain(domains["good"])["receiving"]
    assert receive["status"] == "ok"
    [host] = receive["hosts"]
    assert host["host"] == "mail.good.test" and host["points_here"]
    assert set(host["addresses"]) == {SERVER_V4, SERVER_V6}


def test_receiving_through_cloudflare_proxy_says_turn_it_off(domains):
    receive = dns_checks.diagnose_domain(domains["cloudflare"])["receiving"]
    assert receive["status"] == "different"
    assert receive["hosts"][0]["cloudflare"]
    assert any("orange cloud" in fix and "mail.cloudflare.test" in fix for fix in receive["fixes"])


def test_receiving_mx_elsewhere_and_mx_missing(domains):
    elsewhere = dns_checks.diagnose_domain(domains["different"])["receiving"]
    assert elsewhere["status"] == "different"
    assert not elsewhere["hosts"][0]["points_here"]
    assert dns_checks.diagnose_domain(domains["missing"])["receiving"]["status"] == "missing"


def test_send_only_domain_with_mx_elsewhere_is_fine(domains):
    domain = domains["different"]
    domain.hosted_elsewhere = True
    domain.save()
    receive = dns_checks.diagnose_domain(domain)["receiving"]
    assert receive["status"] == "ok" and "hosted elsewhere" in receive["detail"]


def test_receiving_can_connect_to_each_mx_address(domains, live_dns):
    class Sink:
        async def handle_DATA(self, server, session, envelope):
            return "250 OK"

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(Sink(), hostname="127.0.0.1", port=port, ident="loop-mx")
    controller.start()
    try:
        live_dns.server.add(["loop.test. 300 IN MX 10 mx.loop.test.", "mx.loop.test. 300 IN A 127.0.0.1"])
        domain = MailDomain.objects.create(name="loop.test", owner=domains["good"].owner)
        receive = dns_checks.diagnose_domain(domain, connect=True, connect_port=port)["receiving"]
    finally:
        controller.stop()
    [smtp] = receive["hosts"][0]["smtp"]
    assert smtp["status"] == "ok" and "loop-mx" in smtp["banner"]


def test_sending_readiness_ok_for_a_correct_domain(domains):
    sending = dns_checks.diagnose_domain(domains["good"])["sending"]
    assert sending["status"] == "ok"
    assert [c["purpose"] for c in sending["checks"]] == ["spf", "dkim", "dmarc"]


def test_sending_readiness_says_what_to_do_for_each_failure(domains):
    checks = {c["purpose"]: c for c in dns_checks.diagnose_domain(domains["different"])["sending"]["checks"]}
    assert checks["spf"]["status"] == "different" and "does not authorise" in checks["spf"]["fix"]
    assert checks["dkim"]["status"] == "different" and "mail._domainkey.different.test" in checks["dkim"]["fix"]
    assert checks["dmarc"]["status"] == "different" and "_dmarc.different.test" in checks["dmarc"]["fix"]


def test_sending_readiness_flags_dkim_off(domains):
    checks = {c["purpose"]: c for c in dns_checks.diagnose_domain(domains["missing"])["sending"]["checks"]}
    assert checks["dkim"]["status"] == "different" and "DKIM signing is off" in checks["dkim"]["fix"]


# --- a resolver that never answers ---------------------------------------------------


def test_silent_resolver_makes_every_diagnostic_unknown_within_the_timeout(domains, settings):
    with SilentResolver() as silent:
        settings.MAILPANEL_RESOLVERS = [silent.address]
        settings.MAILPANEL_CHECK_TIMEOUT = 1.0
        started = time.monotonic()
        blacklist = dns_checks.blacklists()
        rdns = dns_checks.reverse_dns()
        domain = dns_checks.diagnose_domain(domains["good"])
        records = dns_checks.check_domain(domains["good"])
        elapsed = time.monotonic() - started
    assert {r["status"] for r in blacklist} == {"unknown"}
    assert {r["status"] for r in rdns} == {"unknown"}
    assert domain["receiving"]["status"] == "unknown"
    assert {c["status"] for c in domain["sending"]["checks"]} == {"unknown"}
    assert {v["status"] for v in records.results} == {"unknown"}
    assert records.summary == "unknown"
    assert elapsed < 4 * (1.0 + 0.5)  # four checks in a row, each within its timeout


# --- jobs, pages and who sees what ---------------------------------------------------


def test_admin_runs_server_diagnostics_as_a_job_and_sees_the_results(admin_client_, live_dns, settings):
    settings.MAILPANEL_PORT25_TARGET = "127.0.0.1:1"  # nothing listens on port 1 here
    response = admin_client_.post(reverse("mailadmin:diagnostics_run"), {"action": "server"})
    job = Job.objects.get(kind=JobKind.DIAGNOSE)
    assert response["Location"] == reverse("mailadmin:diagnostics") + f"?job={job.pk}"
    tasks_dns.run_diagnose_job(job.pk, "server")
    job.refresh_from_db()
    assert job.state == JobState.DONE
    assert "blacklist: done" in job.log
    page = admin_client_.get(response["Location"]).content.decode()
    assert "blocked (connection refused)" in page
    assert reverse("mailadmin:global_relay") + "#relay-section" in page
    assert "query refused (not a listing)" in page
    assert SERVER_HOSTNAME in page


def test_job_results_partial_polls_until_done(admin_client_, live_dns):
    job = Job.objects.create(kind=JobKind.DIAGNOSE)
    url = reverse("mailadmin:diagnostics_job", args=[job.pk])
    pending = admin_client_.get(url, HTTP_HX_REQUEST="true").content.decode()
    assert 'hx-trigger="every 1s"' in pending
    tasks_dns.run_diagnose_job(job.pk, "server")
    done = admin_client_.get(url, HTTP_HX_REQUEST="true").content.decode()
    assert 'id="diag-blacklists"' in done
    assert f'hx-get="{url}"' not in done


def test_dns_check_job_stores_every_domains_status(domains, admin_user):
    job = Job.objects.create(kind=JobKind.DNS_CHECK, requested_by=admin_user)
    tasks_dns.run_dns_check_job(job.pk)
    job.refresh_from_db()
    assert job.state == JobState.DONE and job.result["checked"] == 5
    statuses = dict(MailDomain.objects.values_list("name", "dns_status"))
    assert statuses["good.test"] == "ok"
    assert statuses["missing.test"] == "missing"
    assert statuses["cloudflare.test"] in ("different", "missing")
    assert "good.test: ok" in job.log


def test_customer_runs_diagnostics_for_own_domain(alice_client, domains, alice):
    response = alice_client.post(
        reverse("mailadmin:diagnostics_run"), {"action": "domain", "domain": domains["good"].pk}
    )
    job = Job.objects.get(kind=JobKind.DIAGNOSE)
    assert job.domain == domains["good"] and job.requested_by == alice
    tasks_dns.run_diagnose_job(job.pk, "domain", domains["good"].pk)
    page = alice_client.get(response["Location"]).content.decode()
    assert 'id="diag-receiving"' in page and 'id="diag-sending"' in page


def test_customer_cannot_diagnose_other_customers_domain(alice_client, domains):
    response = alice_client.post(
        reverse("mailadmin:diagnostics_run"), {"action": "domain", "domain": domains["bobs"].pk}
    )
    assert response.status_code == 404
    assert not Job.objects.exists()
    assert alice_client.get(reverse("mailadmin:diagnostics") + f"?domain={domains['bobs'].pk}").status_code == 404


def test_customer_cannot_run_or_see_server_diagnostics(alice_client, domains, admin_user, bob):
    assert alice_client.post(reverse("mailadmin:diagnostics_run"), {"action": "server"}).status_code == 404
    assert alice_client.post(reverse("mailadmin:diagnostics_run"), {"action": "dns_all"}).status_code == 404
    server_job = Job.objects.create(kind=JobKind.DIAGNOSE, requested_by=admin_user)
    bobs_job = Job.objects.create(kind=JobKind.DIAGNOSE, requested_by=bob, domain=domains["bobs"])
    for job in (server_job, bobs_job):
        assert alice_client.get(reverse("mailadmin:diagnostics") + f"?job={job.pk}").status_code == 404
        assert alice_client.get(reverse("mailadmin:diagnostics_job", args=[job.pk]), HTTP_HX_REQUEST="true").status_code == 404
    page = alice_client.get(reverse("mailadmin:diagnostics")).content.decode()
    assert "good.test" in page and "include.test" not in page
    assert 'value="server"' not in page


def test_diagnostics_start_enqueues_the_task(admin_client_, live_dns, settings, django_capture_on_commit_callbacks):
    settings.TASKS = {
        "default": {"BACKEND": "django.tasks.backends.immediate.ImmediateBackend", "QUEUES": ["default", "checks"]}
    }
    settings.MAILPANEL_PORT25_TARGET = "127.0.0.1:1"
    with django_capture_on_commit_callbacks(execute=True):
        admin_client_.post(reverse("mailadmin:diagnostics_run"), {"action": "server"})
    job = Job.objects.get(kind=JobKind.DIAGNOSE)
    assert job.state == JobState.DONE
    assert job.result["server"]["port25"]["status"] == "refused"


# --- CLI ---------------------------------------------------------------------------


def test_cli_dns_prints_records_zone_and_check(domains, capsys):
    call_command("mail", "dns", "good.test")
    assert "mail._domainkey.good.test" in capsys.readouterr().out
    call_command("mail", "dns", "good.test", "--zone")
    assert "$ORIGIN good.test." in capsys.readouterr().out
    call_command("mail", "dns", "good.test", "--check", "--json")
    data = json.loads(capsys.readouterr().out)
    assert data["check"]["summary"] == "ok"
    assert MailDomain.objects.get(name="good.test").dns_status == "ok"


def test_cli_diagnose_blacklist_rdns_and_domain(domains, capsys):
    call_command("mail", "diagnose", "blacklist", "--json")
    rows = json.loads(capsys.readouterr().out)
    assert {r["status"] for r in rows} == {"listed", "refused", "not_listed"}
    call_command("mail", "diagnose", "rdns")
    assert "forward-confirmed: yes" in capsys.readouterr().out
    call_command("mail", "diagnose", "domain", "different.test")
    out = capsys.readouterr().out
    assert "receiving: different" in out and "sending: different" in out
