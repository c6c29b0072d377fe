"""MTA-STS (RFC 8461) and TLS-RPT (RFC 8460): the policy, its records in the
one record list (page, BIND export, live check against tests/dnsserver.py),
the policy served by Host like autoconfig, and the owner's enforce switch."""

import asyncio
import hashlib
from contextlib import closing

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from mailadmin import dkim, mta_sts
from mailadmin.checks import dns as dnscheck
from mailadmin.dnsrecords import build_records, mta_sts_policy
from mailadmin.models import Job, MailDomain, UserProfile
from mailadmin.services.dns_checks import domain_records
from mailadmin.zonefile import render_zone
from mailconf.snapshot import ServerIdentity
from tests.dnsserver import SERVER_V4, SERVER_V6, dns_world  # noqa: F401

SERVER = ServerIdentity(hostname="mail.panel.test", ipv4=SERVER_V4, ipv6=SERVER_V6)
POLICY = "/.well-known/mta-sts.txt"


def by_purpose(records):
    return {r.purpose: r for r in records}


# --- the policy and its id -------------------------------------------------------------------


def test_the_policy_is_rfc_8461_text_with_the_suggested_mx():
    assert mta_sts_policy("example.org", "testing") == (
        "version: STSv1\r\nmode: testing\r\nmx: mail.example.org\r\nmax_age: 604800\r\n"
    )
    assert "mode: enforce\r\n" in mta_sts_policy("example.org", "enforce")
    with pytest.raises(ValueError):
        mta_sts.policy_text("none; mx: evil.test", ("mail.example.org",))
    with pytest.raises(ValueError):
        mta_sts.policy_text("testing", ())


def test_the_id_changes_exactly_when_the_policy_text_changes():
    testing, enforce = (mta_sts_policy("example.org", mode) for mode in mta_sts.MODES)
    assert mta_sts.policy_id(testing) == mta_sts.policy_id(mta_sts_policy("example.org", "testing"))
    assert mta_sts.policy_id(testing) != mta_sts.policy_id(enforce)
    assert mta_sts.policy_id(testing) != mta_sts.policy_id(mta_sts_policy("example.net", "testing"))
    assert mta_sts.policy_id(testing) != mta_sts.policy_id(mta_sts.policy_text("testing", ("mail.example.org",), 86400))
    policy_id = mta_sts.policy_id(testing)
    assert policy_id == hashlib.sha256(testing.encode()).hexdigest()[:32]
    assert len(policy_id) == 32 and policy_id.isalnum()  # RFC 8461: 1*32(ALPHA / DIGIT)


# --- the records -------------------------------------------------------------------------------


def test_the_records_are_in_the_one_list():
    records = by_purpose(build_records("example.org", SERVER, "K", tlsrpt_rua="postmaster@example.org"))
    assert (records["mta_sts_a"].name, records["mta_sts_a"].value) == ("mta-sts.example.org", SERVER_V4)
    assert (records["mta_sts_aaaa"].name, records["mta_sts_aaaa"].value) == ("mta-sts.example.org", SERVER_V6)
    sts = records["mta_sts"]
    assert (sts.name, sts.type) == ("_mta-sts.example.org", "TXT")
    assert sts.value == "v=STSv1; id=" + mta_sts.policy_id(mta_sts_policy("example.org", "testing"))
    assert records["mx"].value == "10 mail.example.org."  # the mx the policy names
    tlsrpt = records["tlsrpt"]
    assert (tlsrpt.name, tlsrpt.value) == ("_smtp._tls.example.org", "v=TLSRPTv1; rua=mailto:postmaster@example.org")
    enforced = by_purpose(build_records("example.org", SERVER, "K", mta_sts_mode="enforce"))
    assert enforced["mta_sts"].value != sts.value and "tlsrpt" not in enforced  # no address, no report record


def test_a_send_only_domain_publishes_no_policy():
    records = by_purpose(build_records("example.org", SERVER, "K", receives_mail=False, tlsrpt_rua="a@example.org"))
    assert not {"mta_sts", "mta_sts_a", "tlsrpt"} & set(records)


def test_the_bind_export_carries_them():
    zone = render_zone("example.org", build_records("example.org", SERVER, "K", tlsrpt_rua="pm@example.org"))
    policy_id = mta_sts.policy_id(mta_sts_policy("example.org", "testing"))
    lines = zone.replace("\t", " ").splitlines()
    assert f'_mta-sts.example.org. 3600 IN TXT "v=STSv1; id={policy_id}"' in lines
    assert '_smtp._tls.example.org. 3600 IN TXT "v=TLSRPTv1; rua=mailto:pm@example.org"' in lines
    assert f"mta-sts.example.org. 3600 IN A {SERVER_V4}" in lines


def _check(resolver, domain, **kw):
    async def run():
        lookups = dnscheck.Lookups(dnscheck.make_resolver([resolver], 3.0), 3.0)
        with closing(lookups):
            return await dnscheck.check_records(
                lookups, [r for r in build_records(domain, SERVER, "", **kw) if r.purpose.startswith(("mta", "tls"))],
                server_ips=(SERVER_V4, SERVER_V6), sending_ips=(SERVER_V4, SERVER_V6), cf_networks=())

    return {v.purpose: v for v in asyncio.run(run())}


def test_the_live_check_finds_them_right_stale_or_missing(dns_world):  # noqa: F811
    good = _check(dns_world.address, "good.test", tlsrpt_rua="postmaster@good.test")
    assert {p: v.status for p, v in good.items()} == {
        "mta_sts_a": "ok", "mta_sts_aaaa": "ok", "mta_sts": "ok", "tlsrpt": "ok"}
    # switching to enforce changes the id: the published record is now stale
    assert _check(dns_world.address, "good.test", mta_sts_mode="enforce")["mta_sts"].status == "different"
    different = _check(dns_world.address, "different.test", tlsrpt_rua="postmaster@different.test")
    assert different["mta_sts"].status == "different" and different["tlsrpt"].status == "different"
    assert different["mta_sts"].found == ["v=STSv1; id=20190429T010101"]
    assert {v.status for v in _check(dns_world.address, "missing.test", tlsrpt_rua="a@missing.test").values()} == {
        "missing"}


@pytest.mark.django_db
def test_reports_go_to_the_role_address_else_the_owners_email(alice):
    domain = MailDomain.objects.create(name="example.org", owner=alice)
    assert "tlsrpt" not in by_purpose(domain_records(domain, SERVER))  # nobody to write to
    alice.email = "alice@owner.example"
    alice.save()
    domain.refresh_from_db()
    assert by_purpose(domain_records(domain, SERVER))["tlsrpt"].value == "v=TLSRPTv1; rua=mailto:alice@owner.example"
    domain.role_address = "postmaster-desk@example.org"
    assert "rua=mailto:postmaster-desk@example.org" in by_purpose(domain_records(domain, SERVER))["tlsrpt"].value


# --- served by Host ------------------------------------------------------------------------------


@pytest.fixture
def anonymous():
    return Client(enforce_csrf_checks=True)


@pytest.fixture
def hosted(alice):
    return MailDomain.objects.create(name="example.org", owner=alice)


@pytest.mark.django_db
def test_the_policy_is_served_for_a_hosted_domain_and_matches_its_record(anonymous, hosted):
    response = anonymous.get(POLICY, HTTP_HOST="mta-sts.example.org")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; charset=utf-8" and not response.cookies
    assert response.content.decode() == mta_sts_policy("example.org", "testing")
    record = by_purpose(domain_records(hosted, SERVER))["mta_sts"]
    assert record.value == "v=STSv1; id=" + hashlib.sha256(response.content).hexdigest()[:32]
    assert anonymous.get(POLICY, HTTP_HOST="MTA-STS.Example.Org:443").status_code == 200
    assert anonymous.head(POLICY, HTTP_HOST="mta-sts.example.org").status_code == 200
    assert anonymous.post(POLICY, HTTP_HOST="mta-sts.example.org").status_code == 405


@pytest.mark.django_db
@pytest.mark.parametrize("host", [
    "mta-sts.unknown.example",
    "mta-sts.pending.example",
    "mta-sts.suspended.example",
    "mta-sts.sendonly.example",
    "mta-sts.owner-suspended.example",
    "example.org",  # the policy lives on mta-sts.<domain> only
    "autoconfig.example.org",
    "mta-sts.",
    "mta-sts.example.org.evil.test",
    "mta-sts.exa mple.org",
    "",
])
def test_anything_else_gets_the_same_404(anonymous, hosted, bob, host):
    MailDomain.objects.create(name="pending.example", owner=bob, pending=True)
    MailDomain.objects.create(name="suspended.example", owner=bob, suspended=True)
    MailDomain.objects.create(name="sendonly.example", owner=bob, hosted_elsewhere=True)
    carol = get_user_model().objects.create_user("carol", password="carol-pass-123")
    UserProfile.objects.create(user=carol, suspended=True)
    MailDomain.objects.create(name="owner-suspended.example", owner=carol)
    response = anonymous.get(POLICY, HTTP_HOST=host)
    assert (response.status_code, response.content) == (404, b"Not found\n")


# --- the owner's switch ----------------------------------------------------------------------------


def _post_settings(client, domain, **data):
    base = {"dkim_enabled": "on", "subaddressing": "on", "role_address": ""}
    base.update(data)
    return client.post(reverse("mailadmin:domain_settings", args=[domain.pk]), base)


@pytest.mark.django_db
def test_the_owner_switches_to_enforce_and_the_policy_and_its_id_follow(alice_client, anonymous, hosted):
    # with a DKIM key already made, so that this change is the switch alone
    hosted.dkim_private_key = dkim.generate_private_pem()
    hosted.save()
    before = by_purpose(domain_records(hosted, SERVER))["mta_sts"].value
    jobs = Job.objects.count()
    assert _post_settings(alice_client, hosted, mta_sts_enforce="on").status_code == 302
    hosted.refresh_from_db()
    assert hosted.mta_sts_enforce
    assert Job.objects.count() == jobs  # DNS and the served policy only: nothing to apply
    assert "mode: enforce\r\n" in anonymous.get(POLICY, HTTP_HOST="mta-sts.example.org").content.decode()
    assert by_purpose(domain_records(hosted, SERVER))["mta_sts"].value != before
    page = alice_client.get(reverse("mailadmin:domain_settings", args=[hosted.pk])).content.decode()
    assert 'name="mta_sts_enforce" checked' in page
    _post_settings(alice_client, hosted)
    hosted.refresh_from_db()
    assert not hosted.mta_sts_enforce
    assert by_purpose(domain_records(hosted, SERVER))["mta_sts"].value == before


@pytest.mark.django_db
def test_another_customer_cannot_switch_it(client, bob, hosted):
    client.force_login(bob)
    assert _post_settings(client, hosted, mta_sts_enforce="on").status_code == 404
    hosted.refresh_from_db()
    assert not hosted.mta_sts_enforce
