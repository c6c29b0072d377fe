"""One customer's DNS can never break another's check (issue #12).

Hostile SPF records get a permerror verdict for their own domain; a check
that crashes on one record turns only that record "unknown"; neither
"Check now" nor the all-domains job fails for the others. All against the
real DNS server on 127.0.0.1 (tests/dnsserver.py)."""

import asyncio
import logging
from contextlib import closing

import pytest

from mailadmin import tasks_dns
from mailadmin.checks import dns as dnscheck
from mailadmin.dnsrecords import Record, build_records
from mailadmin.models import Job, DnsCheckResult, JobKind, JobState, MailDomain, ServerSettings
from mailconf.snapshot import ServerIdentity
from tests.dnsserver import SERVER_HOSTNAME, SERVER_V4, SERVER_V6, dns_world, txt  # noqa: F401
from tests.test_dns_views import check_now  # noqa: F401 (fixture: Check now, then the checks queue)

SERVER = ServerIdentity(hostname=SERVER_HOSTNAME, ipv4=SERVER_V4, ipv6=SERVER_V6)
TIMEOUT = 2.0

# (label, SPF record): every one is broken; none may raise.
HOSTILE_SPF = [
    ("a-cidr-99", "v=spf1 a:host.test/99 -all"),  # the record from the issue
    ("ip4-cidr-33", "v=spf1 ip4:1.2.3.4/33 -all"),
    ("ip6-cidr-129", "v=spf1 ip6:::1/129 -all"),
    ("a-cidr-negative", "v=spf1 a/-1 -all"),
    ("mx-empty-cidr", "v=spf1 mx// -all"),
    ("mx-v6-cidr-200", "v=spf1 mx/24//200 -all"),
    ("a-both-cidrs-too-long", "v=spf1 a:host.test/33//129 -all"),
    ("a-cidr-leading-zero", "v=spf1 a:host.test/024 -all"),
    ("a-cidr-twice", "v=spf1 a:host.test/24/24 -all"),
    ("ip4-empty", "v=spf1 ip4: -all"),
    ("ip4-of-v6", "v=spf1 ip4:::1 -all"),
    ("ip6-of-v4", "v=spf1 ip6:192.0.2.10 -all"),
    ("ip6-scope-id", "v=spf1 ip6:fe80::1%eth0 -all"),
    ("a-empty-domain", "v=spf1 a: -all"),
    ("a-only-cidr-after-colon", "v=spf1 a:/24 -all"),
    ("exists-without-domain", "v=spf1 exists -all"),
    ("include-with-cidr", "v=spf1 include:good.test/24 -all"),
    ("all-with-argument", "v=spf1 all:host"),
    ("label-too-long", "v=spf1 a:" + "x" * 64 + ".test -all"),
    ("empty-label", "v=spf1 a:host..test -all"),
    ("macro-zero-digits", "v=spf1 a:%{d0}.test -all"),
    ("macro-unterminated", "v=spf1 a:%{d -all"),
    ("redirect-empty", "v=spf1 redirect="),
    ("two-redirects", "v=spf1 redirect=good.test redirect=good.test"),
    ("unknown-mechanism", "v=spf1 foo:bar -all"),
]


# A target name DNS cannot carry: RFC 7208 leaves it open (the openspf test
# suite's invalid-domain-long and -empty-label accept fail or permerror);
# pyspf treats the name as not found, so -all decides.
FAIL_OR_PERMERROR = {"label-too-long", "empty-label"}


@pytest.fixture(scope="module")
def hostile_zone(dns_world):
    """Served once per module: a second copy of a TXT would be "several SPF records"."""
    # "host.test" and every hostile domain resolve, so a CIDR is really applied to
    # an address (the crash needed an answer to apply /99 to).
    dns_world.server.add([f"host.test. 300 IN A {SERVER_V4}", f"host.test. 300 IN AAAA {SERVER_V6}"])
    for label, spf in HOSTILE_SPF:
        name = f"{label}.hostile.test"
        dns_world.server.add(
            [
                f"{name}. 300 IN TXT {txt(spf)}",
                f"{name}. 300 IN A {SERVER_V4}",
                f"{name}. 300 IN AAAA {SERVER_V6}",
                f"{name}. 300 IN MX 10 host.test.",
            ]
        )
    return dns_world


@pytest.fixture
def live_dns(settings, hostile_zone, db):
    settings.MAILPANEL_RESOLVERS = [hostile_zone.address]
    settings.MAILPANEL_CHECK_TIMEOUT = TIMEOUT
    server = ServerSettings.load()
    server.hostname, server.ipv4, server.ipv6 = SERVER_HOSTNAME, SERVER_V4, SERVER_V6
    server.save()
    return hostile_zone


def spf_verdict(resolver_address, domain):
    record = next(r for r in build_records(domain, SERVER, "") if r.purpose == "spf")

    async def run():
        lookups = dnscheck.Lookups(dnscheck.make_resolver([resolver_address], TIMEOUT), TIMEOUT)
        with closing(lookups):
            return await dnscheck.check_record(lookups, record, sending_ips=(SERVER_V4, SERVER_V6))

    return asyncio.run(run())


@pytest.mark.parametrize("label, spf", HOSTILE_SPF, ids=[label for label, _spf in HOSTILE_SPF])
def test_hostile_spf_record_is_a_permerror_verdict_not_an_exception(live_dns, label, spf):
    verdict = spf_verdict(live_dns.address, f"{label}.hostile.test")
    assert verdict.status == "different", verdict
    assert verdict.found == [spf]
    if label in FAIL_OR_PERMERROR and "gets fail" in verdict.detail:
        return
    assert verdict.detail.startswith("permerror: "), verdict
    assert "The SPF record is broken" in verdict.fix


def test_a_cidr_that_is_in_range_still_authorises(live_dns):
    live_dns.server.add([f"cidr-ok.hostile.test. 300 IN TXT {txt('v=spf1 a:host.test/24//64 -all')}"])
    verdict = spf_verdict(live_dns.address, "cidr-ok.hostile.test")
    assert verdict.status == "ok", verdict


def test_ten_kilobyte_spf_record_gets_a_verdict(live_dns):
    big = "v=spf1 " + " ".join(f"ip4:198.51.{i // 250}.{i % 250}" for i in range(700)) + " -all"
    assert len(big) > 10_000
    live_dns.server.add([f"big-spf.hostile.test. 300 IN TXT {txt(big)}"])
    verdict = spf_verdict(live_dns.address, "big-spf.hostile.test")
    assert verdict.status == "different"
    assert "gets fail" in verdict.detail
    assert verdict.found == [big]


def test_control_characters_in_dns_answers_are_stored_and_shown_escaped(live_dns, alice, alice_client, check_now):
    """A TXT with NUL and a line break: PostgreSQL's jsonb refuses \\u0000, and
    nothing from DNS may reach a page or a log raw."""
    from dnslib import QTYPE, RR, TXT

    # Built as an RR: zone-file \\DDD escapes are read as octal by dnslib.
    live_dns.server.records.by_name["nul.hostile.test"].append(
        RR("nul.hostile.test.", QTYPE.TXT, rdata=TXT([b"v=spf1 a:x\x00y.test\n -all"]), ttl=300)
    )
    domain = MailDomain.objects.create(name="nul.hostile.test", owner=alice)
    _started, response = check_now(alice_client, domain)
    assert response.status_code == 200
    body = response.content.decode()
    assert "\x00" not in body and "y.test\n" not in body
    assert "v=spf1 a:x\\000y.test\\010 -all" in body
    spf = next(v for v in DnsCheckResult.objects.get(domain=domain).results if v["purpose"] == "spf")
    assert spf["found"] == ["v=spf1 a:x\\000y.test\\010 -all"]


# --- one domain's broken record never breaks another's check ----------------------------


@pytest.fixture
def two_customers(alice, bob, live_dns):
    hostile = MailDomain.objects.create(name="a-cidr-99.hostile.test", owner=alice)
    good = MailDomain.objects.create(name="good.test", owner=bob, dkim_private_key=live_dns.good_pem)
    return hostile, good


@pytest.mark.parametrize("htmx", [True, False], ids=["htmx", "plain"])
def test_check_now_with_the_issue_record_shows_permerror_to_its_owner(alice_client, two_customers, check_now, htmx):
    hostile, _good = two_customers
    started, response = check_now(alice_client, hostile, htmx=htmx)
    assert started.status_code == (200 if htmx else 302) and response.status_code == 200
    page = response.content.decode()
    assert "permerror: malformed term a:host.test/99" in page
    assert "The SPF record is broken" in page
    assert "Traceback" not in page


def test_all_domains_check_job_finishes_for_everyone_else(admin_user, two_customers):
    hostile, good = two_customers
    job = Job.objects.create(kind=JobKind.DNS_CHECK, requested_by=admin_user)
    tasks_dns.run_dns_check_job(job.pk)
    job.refresh_from_db()
    assert job.state == JobState.DONE, job.log
    assert job.result["checked"] == 2
    good.refresh_from_db()
    assert good.dns_status == "ok"
    results = DnsCheckResult.objects.get(domain=hostile).results
    spf = next(v for v in results if v["purpose"] == "spf")
    assert spf["status"] == "different" and spf["detail"] == "permerror: malformed term a:host.test/99"


def test_a_crashing_record_check_is_unknown_for_that_domain_only(live_dns, caplog):
    """A check that raises (here: an expected DKIM record without p=, which
    the DKIM check cannot parse) turns that one record unknown, logged; the
    same domain's other records and the other domain keep their verdicts."""
    good = build_records("good.test", SERVER, live_dns.good_key)
    broken = [
        Record(r.name, r.type, "v=DKIM1; k=rsa", r.purpose, r.level, r.explanation) if r.purpose == "dkim" else r
        for r in build_records("good.test", SERVER, live_dns.good_key)
    ]

    async def run():
        lookups = dnscheck.Lookups(dnscheck.make_resolver([live_dns.address], TIMEOUT), TIMEOUT)
        with closing(lookups):
            return await dnscheck.check_many(
                lookups, [("broken", broken), ("good", good)], (SERVER_V4, SERVER_V6), (SERVER_V4, SERVER_V6)
            )

    with caplog.at_level(logging.ERROR, logger="mailadmin.checks.dns"):
        out = asyncio.run(run())
    assert {v.purpose: v.status for v in out["good"]}["dkim"] == "ok"
    assert dnscheck.summarize(out["good"]) == "ok"
    by_purpose = {v.purpose: v for v in out["broken"]}
    assert by_purpose["dkim"].status == "unknown"
    assert by_purpose["dkim"].fix == (
        "The check failed unexpectedly; the error was logged for the administrator. Check again later."
    )
    assert by_purpose["dkim"].detail == "" and by_purpose["dkim"].found == []
    assert {p: v.status for p, v in by_purpose.items() if p != "dkim"} == {
        p: "ok" for p in by_purpose if p != "dkim"
    }
    [entry] = [r for r in caplog.records if r.name == "mailadmin.checks.dns"]
    assert "mail._domainkey.good.test" in entry.getMessage() and entry.exc_info

