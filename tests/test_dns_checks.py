"""Live DNS verdicts against a real DNS server on 127.0.0.1 (SPEC §1.4, §1.5)."""

import asyncio
import time
from contextlib import closing

import pytest

from mailadmin.checks import dns as dnscheck
from mailadmin.dnsrecords import build_records
from mailconf.snapshot import ServerIdentity
from tests.dnsserver import (
    SERVER_HOSTNAME,
    SERVER_V4,
    SERVER_V6,
    SilentResolver,
    dns_world,  # noqa: F401 (fixture)
)

SERVER = ServerIdentity(hostname=SERVER_HOSTNAME, ipv4=SERVER_V4, ipv6=SERVER_V6)
TIMEOUT = 1.5


@pytest.fixture
def keys(dns_world):
    return dns_world.good_key, dns_world.other_key


@pytest.fixture
def dns_server(dns_world):
    return dns_world.server


def check(resolver_address, domain, key, timeout=TIMEOUT):
    records = build_records(domain, SERVER, key)

    async def run():
        lookups = dnscheck.Lookups(dnscheck.make_resolver([resolver_address], timeout), timeout)
        with closing(lookups):
            return await dnscheck.check_records(
                lookups,
                records,
                server_ips=(SERVER_V4, SERVER_V6),
                sending_ips=(SERVER_V4, SERVER_V6),
                cf_networks=dnscheck.load_cloudflare_networks(),
            )

    return {v.purpose: v for v in asyncio.run(run())}


def statuses(verdicts):
    return {purpose: v.status for purpose, v in verdicts.items()}


def test_every_record_of_a_correct_domain_is_ok(dns_server, keys):
    verdicts = check(dns_server.address, "good.test", keys[0])
    assert statuses(verdicts) == {
        "mail_a": "ok",
        "mail_aaaa": "ok",
        "webmail_a": "ok",
        "mx": "ok",
        "spf": "ok",
        "domainkeys_policy": "ok",
        "dkim": "ok",
        "dmarc": "ok",
        "autoconfig_a": "ok",
        "autoconfig_aaaa": "ok",
        "autodiscover_a": "ok",
        "autodiscover_aaaa": "ok",
        "srv_imaps": "ok",
        "srv_imap": "ok",
        "srv_submissions": "ok",
        "srv_submission": "ok",
        "srv_autodiscover": "ok",
        "mta_sts_a": "ok",
        "mta_sts_aaaa": "ok",
        "mta_sts": "ok",
    }
    assert dnscheck.summarize(verdicts.values()) == "ok"


def test_2048_bit_dkim_key_split_into_strings_is_joined_and_matches(dns_server, keys):
    verdict = check(dns_server.address, "good.test", keys[0])["dkim"]
    assert verdict.status == "ok"
    assert len(verdict.found[0]) > 255  # came back as several strings, joined
    assert keys[0] in verdict.found[0]


def test_records_that_do_not_exist_are_missing(dns_server, keys):
    verdicts = check(dns_server.address, "missing.test", keys[0])
    assert set(statuses(verdicts).values()) == {"missing"}
    assert all(v.fix.startswith("Add a") for v in verdicts.values())
    assert dnscheck.summarize(verdicts.values()) == "missing"


def test_records_with_other_values_are_different_and_show_what_dns_returned(dns_server, keys):
    verdicts = check(dns_server.address, "different.test", keys[0])
    assert statuses(verdicts) == {
        "mail_a": "different",
        "mail_aaaa": "different",
        "webmail_a": "different",
        "mx": "different",
        "spf": "different",
        "domainkeys_policy": "different",
        "dkim": "different",
        "dmarc": "different",
        "autoconfig_a": "different",
        "autoconfig_aaaa": "different",
        "autodiscover_a": "different",
        "autodiscover_aaaa": "different",
        "srv_imaps": "different",
        "srv_imap": "different",
        "srv_submissions": "different",
        "srv_submission": "different",
        "srv_autodiscover": "different",
        "mta_sts_a": "different",
        "mta_sts_aaaa": "different",
        "mta_sts": "different",
    }
    assert verdicts["mail_a"].found == ["198.51.100.7"]
    assert verdicts["mta_sts"].found == ["v=STSv1; id=20190429T010101"]
    assert verdicts["mx"].found == ["10 mx.elsewhere.test."]
    assert "fail" in verdicts["spf"].detail
    assert verdicts["dkim"].found == [f"v=DKIM1; k=rsa; p={keys[1]}"]
    assert "p=none" in verdicts["dmarc"].detail


def test_dkim_of_a_regenerated_key_is_different_until_published(dns_server, keys):
    new_key = keys[1]
    assert check(dns_server.address, "good.test", new_key)["dkim"].status == "different"


def test_spf_include_chain_authorises_the_server(dns_server, keys):
    verdict = check(dns_server.address, "include.test", keys[0])["spf"]
    assert verdict.status == "ok", verdict
    assert "2 DNS lookups" in verdict.detail


def test_spf_redirect_to_mx_authorises_the_server(dns_server, keys):
    verdict = check(dns_server.address, "redirect.test", keys[0])["spf"]
    assert verdict.status == "ok", verdict


def test_spf_with_eleven_lookups_is_a_permerror_not_ok(dns_server, keys):
    verdict = check(dns_server.address, "toomany.test", keys[0])["spf"]
    assert verdict.status == "different"
    assert "permerror" in verdict.detail
    assert "too many DNS lookups" in verdict.detail


def test_cloudflare_proxied_mail_name_says_turn_the_proxy_off(dns_server, keys):
    verdicts = check(dns_server.address, "cloudflare.test", keys[0])
    mail_a = verdicts["mail_a"]
    assert mail_a.status == "different" and mail_a.cloudflare
    assert "mail.cloudflare.test" in mail_a.fix and "orange cloud" in mail_a.fix
    assert verdicts["webmail_a"].cloudflare


def test_servfail_is_unknown_never_missing(dns_server, keys):
    verdicts = check(dns_server.address, "broken.test", keys[0])
    for purpose in ("mail_a", "mx", "spf", "dmarc"):
        assert verdicts[purpose].status == "unknown", purpose


def test_resolver_that_never_answers_gives_unknown_within_the_timeout(keys):
    with SilentResolver() as silent:
        started = time.monotonic()
        verdicts = check(silent.address, "good.test", keys[0], timeout=1.0)
        elapsed = time.monotonic() - started
    assert set(statuses(verdicts).values()) == {"unknown"}
    assert elapsed < 1.0 + 0.5
    assert dnscheck.summarize(verdicts.values()) == "unknown"


@pytest.mark.parametrize(
    "entry, expected",
    [("127.0.0.1:5353", ("127.0.0.1", 5353)), ("127.0.0.1", ("127.0.0.1", 53)), ("[::1]:53", ("::1", 53)), ("::1", ("::1", 53))],
)
def test_resolver_setting_is_ip_with_optional_port(entry, expected):
    assert dnscheck.parse_resolver(entry) == expected


def test_resolver_setting_rejects_host_names():
    with pytest.raises(ValueError):
        dnscheck.parse_resolver("dns.google:53")


def test_cloudflare_ranges_cover_v4_and_v6():
    nets = dnscheck.load_cloudflare_networks()
    assert dnscheck.in_networks("104.16.1.1", nets)
    assert dnscheck.in_networks("2606:4700::1", nets)
    assert not dnscheck.in_networks(SERVER_V4, nets)


def test_answer_too_big_for_udp_is_fetched_over_tcp(dns_server):
    big = "v=spf1 " + " ".join(f"ip4:198.51.{i // 250}.{i % 250}" for i in range(120)) + " -all"
    dns_server.add([f'big.test. 300 IN TXT {" ".join(chr(34) + big[i:i + 255] + chr(34) for i in range(0, len(big), 255))}'])

    async def run():
        lookups = dnscheck.Lookups(dnscheck.make_resolver([dns_server.address], TIMEOUT), TIMEOUT)
        with closing(lookups):
            return await lookups.query("big.test", "TXT")

    answer = asyncio.run(run())
    assert len(big) > 1232
    assert answer.kind == "ok" and answer.values == [big]


def test_cname_is_followed_inside_the_answer(dns_server):
    dns_server.add(["alias.good.test. 300 IN CNAME mail.good.test."])

    async def run():
        lookups = dnscheck.Lookups(dnscheck.make_resolver([dns_server.address], TIMEOUT), TIMEOUT)
        with closing(lookups):
            return await lookups.query("alias.good.test", "A")

    assert asyncio.run(run()).values == [SERVER_V4]


# --- RFC 6186 SRV records -------------------------------------------------------------


def test_srv_records_must_name_the_certificates_host_and_port(dns_server, keys):
    verdicts = check(dns_server.address, "different.test", keys[0])
    assert verdicts["srv_imaps"].found == ["0 1 993 mail.different.test."]
    assert "another host or port" in verdicts["srv_imaps"].detail
    assert "mail.panel.test port 993" in verdicts["srv_imaps"].detail
    assert verdicts["srv_submissions"].found == ["0 1 4650 mail.panel.test."]
    assert verdicts["srv_submission"].found == ["0 0 0 ."]
    assert "not offered" in verdicts["srv_submission"].detail
    assert verdicts["srv_submission"].fix == "Change the SRV record at _submission._tcp.different.test to: 10 1 587 mail.panel.test."


def test_srv_with_its_own_priority_and_weight_is_ok(dns_server, keys):
    verdict = check(dns_server.address, "good.test", keys[0])["srv_submission"]
    assert (verdict.status, verdict.found) == ("ok", ["5 2 587 mail.panel.test."])


def test_srv_for_a_service_not_offered_wants_the_root_target_alone(dns_server, keys):
    from dataclasses import replace

    from mailadmin.client_config import SERVICES

    dns_server.add([
        "_imap._tcp.root-target.test. 300 IN SRV 0 0 0 .",
        "_imap._tcp.root-and-host.test. 300 IN SRV 0 0 0 .",
        f"_imap._tcp.root-and-host.test. 300 IN SRV 10 1 143 {SERVER_HOSTNAME}.",
    ])
    services = tuple(replace(s, offered=False) if s.label == "imap" else s for s in SERVICES)

    def imap_verdict(domain):
        records = [r for r in build_records(domain, SERVER, "", services=services) if r.purpose == "srv_imap"]

        async def run():
            lookups = dnscheck.Lookups(dnscheck.make_resolver([dns_server.address], TIMEOUT), TIMEOUT)
            with closing(lookups):
                return await dnscheck.check_records(lookups, records)

        return asyncio.run(run())[0]

    assert imap_verdict("root-target.test").status == "ok"
    both = imap_verdict("root-and-host.test")
    assert both.status == "different" and "does not offer" in both.detail
    assert imap_verdict("good.test").status == "different"  # publishes 143, which is not offered
    assert imap_verdict("missing.test").status == "missing"
