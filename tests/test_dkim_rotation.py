"""DKIM selectors and rotation (issue #17).

Hostile input first (page, CLI, service), then who may press what, then the
flow against a real DNS server on 127.0.0.1 (tests/dnsserver.py) with a clock
the test sets, and last real Exim signing mail before and after the switch,
each message verified by dkimpy against the records the DNS server publishes
at that step."""

import io
import json
from datetime import timedelta

import dns.resolver
import pytest
from cryptography.hazmat.primitives import serialization
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse
from django.utils import timezone

from mailadmin import dkim
from mailadmin.checks import dns as dnscheck
from mailadmin.models import Job, AuditEntry, MailDomain, ServerSettings
from mailadmin.services import dkim_rotation as rotation
from mailadmin.services import dns_checks
from mailadmin.services import domains as domain_service
from tests.dnsserver import DnsServer, txt

pytestmark = pytest.mark.django_db

T0 = timezone.now().replace(microsecond=0)


@pytest.fixture
def dns_server(settings):
    server = DnsServer().start()
    settings.MAILPANEL_RESOLVERS = [server.address]
    settings.MAILPANEL_CHECK_TIMEOUT = 2.0
    yield server
    server.stop()


@pytest.fixture
def domain(alice):
    """alice's example.org, live (an admin added it), signing with selector mail."""
    return domain_service.add_domain(None, alice, "example.org")


def dns_tab(domain):
    """The domain page's DNS tab holds the DKIM section."""
    return reverse("mailadmin:domain_dns", args=[domain.pk])


def publish(server, domain_name, selector, public_key):
    server.add([f"{selector}._domainkey.{domain_name}. 300 IN TXT {txt(dkim.public_dns_value(public_key))}"])


def reload(domain) -> MailDomain:
    return MailDomain.objects.get(pk=domain.pk)


# --- hostile input first ----------------------------------------------------------------

BAD_SELECTORS = [
    "a.b", "-a", "a-", "a_b", "x" * 64, "sel ector", "s\u00e9l", "a\nb", "mail\r\nx", "${run{/bin/id}}",
    "a:b", "a/b", "../x", "a\x00", "<script>", "'; drop",
]


@pytest.mark.parametrize("selector", BAD_SELECTORS)
def test_a_selector_that_is_not_one_dns_label_is_refused_by_the_page(alice_client, domain, selector):
    url = reverse("mailadmin:domain_dkim", args=[domain.pk])
    response = alice_client.post(url, {"action": "rotate", "selector": selector, "bits": "2048"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert 'id="dkim-error"' in response.content.decode()
    fresh = reload(domain)
    assert not fresh.dkim_pending_private_key and not fresh.dkim_pending_selector
    assert not AuditEntry.objects.filter(action="dkim.rotate").exists()


@pytest.mark.parametrize("selector", BAD_SELECTORS)
def test_a_selector_that_is_not_one_dns_label_is_refused_by_the_cli_and_the_service(domain, selector):
    with pytest.raises(CommandError, match="selector"):
        call_command("mail", "dkim", "rotate", "example.org", "--selector", selector, stdout=io.StringIO())
    with pytest.raises(Exception, match="DNS label"):
        rotation.start_rotation(None, domain, selector=selector)
    assert not reload(domain).dkim_pending_private_key


@pytest.mark.parametrize("bits", ["512", "1023", "8192", "abc", "", "2048.0", "-2048"])
def test_a_key_size_other_than_1024_2048_4096_is_refused(alice_client, domain, bits):
    url = reverse("mailadmin:domain_dkim", args=[domain.pk])
    alice_client.post(url, {"action": "rotate", "selector": "next", "bits": bits})
    assert not reload(domain).dkim_pending_private_key
    with pytest.raises(Exception):
        rotation.start_rotation(None, domain, "next", bits=int(bits) if bits.lstrip("-").isdigit() else 0)


def test_the_signing_or_the_previous_selector_cannot_be_used_again(domain, dns_server):
    with pytest.raises(Exception, match="in use"):
        rotation.start_rotation(None, domain, "mail")
    rotation.start_rotation(None, domain, "two", now=T0)
    publish(dns_server, "example.org", "two", dkim.public_key_b64(domain.dkim_pending_private_key))
    assert rotation.advance(None, domain, now=T0).switched
    # the grace is running: no second rotation until it is over
    with pytest.raises(Exception, match="still published"):
        rotation.start_rotation(None, domain, "three", now=T0 + timedelta(days=1))
    rotation.advance(None, domain, now=T0 + timedelta(days=8))
    with pytest.raises(Exception, match="in use"):
        rotation.start_rotation(None, domain, "mail", now=T0 + timedelta(days=8))


@pytest.mark.parametrize(
    "grace,months",
    [("0", "12"), ("-1", "12"), ("366", "12"), ("x", "12"), ("7", "-1"), ("7", "121"), ("7", ""), ("1e3", "1")],
)
def test_the_admins_policy_refuses_values_out_of_range(admin_client_, grace, months):
    response = admin_client_.post(
        reverse("mailadmin:dkim_policy_save"), {"dkim_grace_days": grace, "dkim_max_age_months": months}
    )
    assert response.status_code == 400
    server = ServerSettings.load()
    assert (server.dkim_grace_days, server.dkim_max_age_months) == (7, 12)


def test_the_admins_policy_is_saved_from_the_page_and_the_cli(admin_client_):
    admin_client_.post(reverse("mailadmin:dkim_policy_save"), {"dkim_grace_days": "3", "dkim_max_age_months": "6"})
    assert (ServerSettings.load().dkim_grace_days, ServerSettings.load().dkim_max_age_months) == (3, 6)
    call_command("mail", "dkim", "policy", "--grace-days", "10", "--max-age-months", "0", stdout=io.StringIO())
    assert (ServerSettings.load().dkim_grace_days, ServerSettings.load().dkim_max_age_months) == (10, 0)
    with pytest.raises(CommandError, match="Between 1"):
        call_command("mail", "dkim", "policy", "--grace-days", "0", "--max-age-months", "1", stdout=io.StringIO())


# --- who may press what -------------------------------------------------------------------


@pytest.mark.parametrize("role", ["alice", "bob", "admin", "anonymous"])
@pytest.mark.parametrize("htmx", [False, True])
def test_dkim_rotation_for_every_role(client, alice, bob, admin_user, domain, role, htmx):
    users = {"alice": alice, "bob": bob, "admin": admin_user}
    if role in users:
        client.force_login(users[role])
    headers = {"HX-Request": "true"} if htmx else {}
    url = reverse("mailadmin:domain_dkim", args=[domain.pk])
    assert client.get(url, headers=headers).status_code in ({302} if role == "anonymous" else {405})
    response = client.post(url, {"action": "rotate", "selector": "next", "bits": "1024"}, headers=headers)
    may = role in ("alice", "admin")
    want = {302} if role == "anonymous" else ({200} if htmx else {302}) if may else {404}
    assert response.status_code in want
    assert bool(reload(domain).dkim_pending_private_key) is may
    page = client.get(domain.get_absolute_url())
    assert page.status_code == (200 if may else 404 if role == "bob" else 302)


@pytest.mark.parametrize("role", ["alice", "bob", "anonymous"])
def test_only_an_admin_sets_the_dkim_policy(client, alice, bob, role):
    if role != "anonymous":
        client.force_login({"alice": alice, "bob": bob}[role])
    response = client.post(reverse("mailadmin:dkim_policy_save"), {"dkim_grace_days": "1", "dkim_max_age_months": "1"})
    assert response.status_code == (302 if role == "anonymous" else 404)
    assert ServerSettings.load().dkim_grace_days == 7


# --- the flow, against a real DNS server, with a clock the test sets -----------------------


def test_rotation_switches_only_when_the_new_record_is_visible_then_retires_the_old_key(domain, dns_server):
    first_key = dkim.public_key_b64(domain.dkim_private_key)
    publish(dns_server, "example.org", "mail", first_key)
    status = rotation.start_rotation(None, domain, "", bits=1024, now=T0)
    selector = status.next_selector
    assert selector == f"s{T0:%Y%m%d}" and status.state == rotation.WAITING_DNS and status.next_bits == 1024
    next_key = dkim.public_key_b64(domain.dkim_pending_private_key)
    purposes = [r.purpose for r in dns_checks.domain_records(reload(domain), dns_checks.server_identity(ServerSettings.load()))]
    assert "dkim" in purposes and "dkim_next" in purposes
    applies_before = Job.objects.filter(kind="apply").count()

    # not published yet: nothing switches, however often it is asked
    for hours in (0, 1, 24, 24 * 30):
        outcome = rotation.advance(None, reload(domain), now=T0 + timedelta(hours=hours))
        assert not outcome.switched and outcome.verdict.status == dnscheck.MISSING
    publish(dns_server, "example.org", selector, "MIIBwrongkey")
    outcome = rotation.advance(None, reload(domain), now=T0)
    assert not outcome.switched and outcome.verdict.status == dnscheck.DIFFERENT
    fresh = reload(domain)
    assert fresh.dkim_selector == "mail" and dkim.public_key_b64(fresh.dkim_private_key) == first_key
    assert Job.objects.filter(kind="apply").count() == applies_before

    dns_server.remove(f"{selector}._domainkey.example.org")
    publish(dns_server, "example.org", selector, next_key)
    switch_at = T0 + timedelta(hours=2)
    outcome = rotation.advance(None, reload(domain), now=switch_at)
    assert outcome.switched and outcome.status.state == rotation.GRACE
    fresh = reload(domain)
    assert fresh.dkim_selector == selector and dkim.public_key_b64(fresh.dkim_private_key) == next_key
    assert fresh.dkim_created_at == T0  # the key's age counts from when it was made
    assert fresh.dkim_old_selector == "mail" and fresh.dkim_old_public_key == first_key
    assert fresh.dkim_old_until == switch_at + timedelta(days=7)
    job = Job.objects.filter(kind="apply").order_by("-id").first()
    assert job.scope == ["example.org"]  # only its folder: dkim.pem and dkim_selector
    records = {r.purpose: r for r in dns_checks.domain_records(fresh, dns_checks.server_identity(ServerSettings.load()))}
    assert records["dkim"].name == f"{selector}._domainkey.example.org"
    assert records["dkim_old"].name == "mail._domainkey.example.org" and first_key in records["dkim_old"].value
    assert "dkim_next" not in records
    # a second run at the same moment (the timer and the button) does not switch twice
    assert not rotation.advance(None, reload(domain), now=switch_at).switched

    # the grace: the old key stays until its end, to the second
    almost = rotation.advance(None, reload(domain), now=switch_at + timedelta(days=7, seconds=-1))
    assert not almost.retired and reload(domain).dkim_old_public_key == first_key
    done = rotation.advance(None, reload(domain), now=switch_at + timedelta(days=7))
    assert done.retired and done.status.state == rotation.SIGNING
    fresh = reload(domain)
    assert fresh.dkim_old_public_key == "" and done.status.retired_record == "mail._domainkey.example.org"
    purposes = [r.purpose for r in dns_checks.domain_records(fresh, dns_checks.server_identity(ServerSettings.load()))]
    assert "dkim_old" not in purposes and "dkim_next" not in purposes
    assert list(AuditEntry.objects.filter(action__startswith="dkim.").order_by("id").values_list("action", flat=True)) == [
        "dkim.rotate", "dkim.switch", "dkim.retire",
    ]
    rotation.dismiss_retired(None, fresh)
    assert rotation.status(reload(domain)).retired_record == ""


def test_the_page_guides_each_step_and_says_which_record_to_delete(alice_client, domain, dns_server, settings):
    url = reverse("mailadmin:domain_dkim", args=[domain.pk])
    alice_client.post(url, {"action": "rotate", "selector": "k2", "bits": "2048"})
    page = alice_client.get(dns_tab(domain)).content.decode()
    assert 'id="dkim-next"' in page and "k2._domainkey.example.org" in page
    response = alice_client.post(url, {"action": "advance"}, HTTP_HX_REQUEST="true")
    body = response.content.decode()
    assert "not visible in DNS yet" in body and 'id="dkim-verdict"' in body
    assert reload(domain).dkim_selector == "mail"
    publish(dns_server, "example.org", "k2", dkim.public_key_b64(reload(domain).dkim_pending_private_key))
    body = alice_client.post(url, {"action": "advance"}, HTTP_HX_REQUEST="true").content.decode()
    assert "now signs with the new key" in body and 'id="dkim-grace"' in body
    assert "mail._domainkey.example.org" in body
    # the grace passes (the periodic job, with the clock moved on)
    assert rotation.advance_all(None, now=timezone.now() + timedelta(days=7, minutes=1))["retired"] == 1
    page = alice_client.get(dns_tab(domain)).content.decode()
    assert 'id="dkim-retired"' in page and "Delete the TXT record at <code>mail._domainkey.example.org</code>" in page
    records = page[page.index('id="dns-records"') : page.index('id="dkim"')]
    assert "mail._domainkey.example.org" not in records and "k2._domainkey.example.org" in records
    alice_client.post(url, {"action": "dismiss"})
    assert 'id="dkim-retired"' not in alice_client.get(dns_tab(domain)).content.decode()


def test_the_periodic_job_switches_only_domains_whose_record_is_published(alice, dns_server):
    domains = [domain_service.add_domain(None, alice, f"d{i}.example") for i in range(3)]
    for d in domains:
        rotation.start_rotation(None, d, "next", bits=1024, now=T0)
    published = reload(domains[1])
    publish(dns_server, "d1.example", "next", dkim.public_key_b64(published.dkim_pending_private_key))
    counts = rotation.advance_all(None, now=T0)
    assert counts == {"in_rotation": 3, "switched": 1, "retired": 0}
    assert [reload(d).dkim_selector for d in domains] == ["mail", "next", "mail"]
    out = io.StringIO()
    call_command("mail", "dkim", "advance", "--json", stdout=out)
    assert json.loads(out.getvalue())["in_rotation"] == 2


def test_cli_rotate_and_status_json(domain, dns_server):
    out = io.StringIO()
    call_command("mail", "dkim", "rotate", "example.org", "--selector", "Cli2", "--bits", "4096", stdout=out)
    assert "cli2._domainkey.example.org" in out.getvalue()
    fresh = reload(domain)
    key = serialization.load_pem_private_key(fresh.dkim_pending_private_key.encode(), password=None)
    assert key.key_size == 4096 and fresh.dkim_pending_selector == "cli2"
    out = io.StringIO()
    call_command("mail", "dkim", "status", "example.org", "--json", stdout=out)
    data = json.loads(out.getvalue())
    assert data["state"] == "waiting_dns" and data["selector"] == "mail" and data["bits"] == 2048
    assert data["next_selector"] == "cli2" and data["next_bits"] == 4096 and data["age_days"] == 0
    assert [r["purpose"] for r in data["records"]] == ["dkim", "dkim_next"]
    assert "PRIVATE" not in out.getvalue()
    with pytest.raises(CommandError, match="under way"):
        call_command("mail", "dkim", "rotate", "example.org", stdout=io.StringIO())
    out = io.StringIO()
    call_command("mail", "dkim", "advance", "example.org", stdout=out)
    assert "missing" in out.getvalue() and reload(domain).dkim_selector == "mail"
    publish(dns_server, "example.org", "cli2", dkim.public_key_b64(fresh.dkim_pending_private_key))
    out = io.StringIO()
    call_command("mail", "dkim", "advance", "example.org", stdout=out)
    assert "signing switched" in out.getvalue() and reload(domain).dkim_selector == "cli2"


def test_key_age_on_the_page_and_a_warning_past_the_admins_limit(alice_client, domain, dns_server, settings):
    MailDomain.objects.filter(pk=domain.pk).update(dkim_created_at=timezone.now() - timedelta(days=400))
    page = alice_client.get(dns_tab(domain)).content.decode()
    assert "400 days old" in page and "older than 12 months" in page
    server = ServerSettings.load()
    server.dkim_max_age_months = 14
    server.save()
    page = alice_client.get(dns_tab(domain)).content.decode()
    assert "400 days old" in page and "older than" not in page
    server.dkim_max_age_months = 12
    server.save()
    result = dns_checks.diagnose_domain(reload(domain))
    (row,) = [c for c in result["sending"]["checks"] if c["purpose"] == "dkim_age"]
    assert row["status"] == "old" and "400 days" in row["detail"]
    MailDomain.objects.filter(pk=domain.pk).update(dkim_created_at=timezone.now() - timedelta(days=300))
    result = dns_checks.diagnose_domain(reload(domain))
    assert not [c for c in result["sending"]["checks"] if c["purpose"] == "dkim_age"]


def test_too_old_counts_calendar_months():
    when = timezone.datetime(2025, 1, 31, 12, tzinfo=timezone.UTC)
    assert not rotation.too_old(when, 1, timezone.datetime(2025, 2, 27, 12, tzinfo=timezone.UTC))
    assert rotation.too_old(when, 1, timezone.datetime(2025, 2, 28, 12, tzinfo=timezone.UTC))
    assert rotation.too_old(when, 12, timezone.datetime(2026, 1, 31, 12, tzinfo=timezone.UTC))
    assert not rotation.too_old(when, 0, timezone.datetime(2099, 1, 1, tzinfo=timezone.UTC))


# --- real Exim signs; dkimpy verifies against the DNS server at each step ---------------------


def dkimpy_verifies(message: bytes, server: DnsServer) -> bool:
    """dkimpy looks the selector's key up in the DNS server, as a receiver would."""
    import dkim as dkimpy

    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers, resolver.port = ["127.0.0.1"], server.port

    def dnsfunc(name, timeout=5):
        try:
            answer = resolver.resolve(name.decode().rstrip("."), "TXT", lifetime=timeout)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        return b"".join(b"".join(rr.strings) for rr in answer)

    return dkimpy.verify(message, dnsfunc=dnsfunc)


def test_mail_signed_before_and_after_the_switch_verifies_against_what_dns_publishes(
    domain, dns_server, mailstack_tree, smtp_sinks
):
    from mailadmin.models import RelaySettings
    from mailadmin.services.apply import build_snapshot
    from tests.mailstack import exim_submit, make_message

    sink = smtp_sinks()
    RelaySettings.objects.create(domain=None, host="127.0.0.1", port=sink.port, tls="none")
    domain_service.update_domain(None, domain, local_senders="root")  # exim_submit runs as root
    publish(dns_server, "example.org", "mail", dkim.public_key_b64(domain.dkim_private_key))
    layout = mailstack_tree(build_snapshot())
    sent = []

    def send(subject):
        message = make_message("web@example.org", "bob@remote.example", subject=subject)
        proc = exim_submit(layout, "web@example.org", ["bob@remote.example"], message)
        assert proc.returncode == 0, proc.stderr
        (received,) = sink.wait_for_messages(len(sent) + 1)[len(sent):]
        sent.append(received.data)
        return received.data

    def selector_of(message):
        header = message.split(b"DKIM-Signature:", 1)[1].split(b"\n\n", 1)[0].split(b"\r\n\r\n", 1)[0]
        return [t.strip()[2:].decode() for t in header.replace(b"\r\n", b"").split(b";") if t.strip().startswith(b"s=")][0]

    before = send("before")
    assert selector_of(before) == "mail" and dkimpy_verifies(before, dns_server)

    rotation.start_rotation(None, reload(domain), "r2", now=T0)
    assert not rotation.advance(None, reload(domain), now=T0).switched
    mailstack_tree(build_snapshot(), layout=layout)  # an apply while waiting changes nothing
    waiting = send("waiting")
    assert selector_of(waiting) == "mail" and dkimpy_verifies(waiting, dns_server)

    publish(dns_server, "example.org", "r2", dkim.public_key_b64(reload(domain).dkim_pending_private_key))
    assert rotation.advance(None, reload(domain), now=T0).switched
    mailstack_tree(build_snapshot(), layout=layout)  # the apply the switch asked for
    after = send("after")
    assert selector_of(after) == "r2" and dkimpy_verifies(after, dns_server)
    # during the grace both records are published: mail signed before still verifies
    assert dkimpy_verifies(before, dns_server) and dkimpy_verifies(waiting, dns_server)

    assert rotation.advance(None, reload(domain), now=T0 + timedelta(days=7)).retired
    assert rotation.status(reload(domain)).retired_record == "mail._domainkey.example.org"
    dns_server.remove("mail._domainkey.example.org")  # the owner follows the page
    later = send("later")
    assert selector_of(later) == "r2" and dkimpy_verifies(later, dns_server)
    assert dkimpy_verifies(after, dns_server)
    assert not dkimpy_verifies(before, dns_server)  # its key is gone, as retired keys should be


# --- the periodic job's systemd units ------------------------------------------------------


def test_the_rotation_timer_runs_mail_dkim_advance(tmp_path):
    from tests.test_deploy import assert_timer_units

    assert_timer_units("mailpanel-dkim-rotation", "mail dkim advance", tmp_path)
