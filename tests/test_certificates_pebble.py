"""Certificates from a real ACME CA: Pebble on loopback (tests/pebble.py).

The whole path runs for real: the names are checked in a DNS server on
127.0.0.1 (which Pebble asks too), the helper makes the key as a separate
process and answers a CSR, the acme library runs the order, Pebble fetches
every HTTP-01 token from the webroot, the helper checks and swaps the chain.
Each installed chain is then presented by a TLS listener and verified with
Python's ssl against Pebble's root, hostname checking on."""

import io
import json
import re
import shutil
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.utils import timezone

from mailadmin.models import AcmeAccount, Certificate, MailDomain, ServerSettings
from mailadmin.services import certificates
from tests.dnsserver import DnsServer
from tests.pebble import PEBBLE, Pebble, serve_tls_once, verified_names
from tests.test_helper import CAN_CHOWN, HELPER

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(PEBBLE is None or shutil.which("openssl") is None, reason="pebble or openssl missing"),
]

HOSTNAME = "panel.example.test"
LEFT_OUT = "192.0.2.99"  # an address that is not this server's


@pytest.fixture
def acme(tmp_path, settings, alice):
    root = tmp_path / "root"
    (root / "etc/mailpanel").mkdir(parents=True)
    (root / "etc/mailpanel/layout.json").write_text(json.dumps(
        {"tls_certificate": "/etc/mailpanel/tls/fullchain.pem", "tls_privatekey": "/etc/mailpanel/tls/privkey.pem"}))
    reloads = tmp_path / "reloads.log"
    service = tmp_path / "service"
    service.write_text(f"#!/bin/sh\necho \"$*\" >> {reloads}\n")
    service.chmod(0o755)
    dns = DnsServer([
        f"{HOSTNAME}. 60 IN A 127.0.0.1",
        "mail.one.test. 60 IN A 127.0.0.1",
        "webmail.one.test. 60 IN A 127.0.0.1",
        f"autoconfig.one.test. 60 IN A {LEFT_OUT}",
        "mail.two.test. 60 IN A 127.0.0.1",
        "mta-sts.two.test. 60 IN A 127.0.0.1",
    ]).start()
    pebble = Pebble(tmp_path / "pebble", dns, tmp_path / "webroot").start()
    settings.MAILPANEL_RESOLVERS = [dns.address]
    settings.MAILPANEL_CHECK_TIMEOUT = 2.0
    settings.MAILPANEL_ACME_DIRECTORY = pebble.directory
    settings.MAILPANEL_ACME_CA_BUNDLE = pebble.ca_bundle
    settings.MAILPANEL_ACME_WEBROOT = str(pebble.webroot_dir)
    settings.MAILPANEL_ACME_TIMEOUT = 60
    settings.MAILPANEL_HELPER = (f"{sys.executable} {HELPER} --root {root} --service-command {service}"
                                 + ("" if CAN_CHOWN else " --no-chown"))
    server = ServerSettings.load()
    server.hostname, server.ipv4 = HOSTNAME, "127.0.0.1"
    server.save()
    one = MailDomain.objects.create(name="one.test", owner=alice)
    two = MailDomain.objects.create(name="two.test", owner=alice)
    yield type("Acme", (), dict(root=root, tls=root / "etc/mailpanel/tls", pebble=pebble, dns=dns, one=one, two=two,
                                reloads=reloads))
    pebble.stop()
    dns.stop()


def presented(acme, folder: Path, names) -> dict:
    port, stop = serve_tls_once(folder / "fullchain.pem", folder / "privkey.pem")
    try:
        return verified_names(port, names, acme.pebble.root_pem())
    finally:
        stop()


def test_certificates_for_two_domains_and_the_server_name_verify_against_pebbles_root(acme):
    server = certificates.issue(None, None)
    one = certificates.issue(None, acme.one)
    two = certificates.issue(None, acme.two)
    assert (server.error, one.error, two.error) == ("", "", "")
    assert server.issued and one.issued and two.issued

    results = presented(acme, acme.tls, [HOSTNAME])
    assert all(v.startswith("Pebble Intermediate CA") for v in results.values()), results
    one_folder, two_folder = acme.tls / "domains/one.test", acme.tls / "domains/two.test"
    for folder, names in ((one_folder, ["mail.one.test", "webmail.one.test"]),
                          (two_folder, ["mail.two.test", "mta-sts.two.test"])):
        results = presented(acme, folder, names)
        assert all(v.startswith("Pebble Intermediate CA") for v in results.values()), results
    # hostname checking is on: another domain's name is refused on this chain
    assert presented(acme, one_folder, ["mail.two.test"])["mail.two.test"].startswith("error:")

    one_state = Certificate.objects.get(domain=acme.one)
    assert one_state.names == ["mail.one.test", "webmail.one.test"]
    assert one_state.issuer.startswith("CN=Pebble Intermediate CA")
    assert one_state.not_after > timezone.now() + timedelta(days=30)
    assert {e["name"]: e["reason"] for e in one_state.left_out} == {
        "autoconfig.one.test": f"points to {LEFT_OUT}, not here",
        "mta-sts.one.test": "not in DNS",
    }
    assert (acme.tls / "sni_names").read_text() == (
        "mail.one.test one.test\nmail.two.test two.test\nmta-sts.two.test two.test\nwebmail.one.test one.test\n")
    assert "reload exim4" in acme.reloads.read_text()
    # nothing pending, no token left in the webroot, the account key stored encrypted
    assert not list(acme.tls.rglob("*.pending.pem"))
    assert not list((acme.pebble.webroot_dir / ".well-known/acme-challenge").iterdir())
    account = AcmeAccount.objects.get()
    assert account.uri.startswith(acme.pebble.directory.rsplit("/", 1)[0])
    from django.db import connection
    with connection.cursor() as cursor:
        cursor.execute("SELECT key FROM mailadmin_acmeaccount")
        stored = cursor.fetchone()[0]
    assert '"d"' not in stored and "RSA" not in stored and json.loads(account.key)["kty"] == "RSA"


def test_a_renewal_replaces_the_certificate_in_place(acme):
    assert certificates.issue(None, acme.one).issued
    folder = acme.tls / "domains/one.test"
    first_chain, first_key = (folder / "fullchain.pem").read_bytes(), (folder / "privkey.pem").read_bytes()
    state = Certificate.objects.get(domain=acme.one)
    state.not_after = timezone.now() + timedelta(days=10)  # due: 30 days ahead
    state.save()
    counts = certificates.renew()
    # one.test renewed; the server's and two.test's had none yet: issued too
    assert counts == {"issued": 3, "failed": 0, "waiting": 0, "not_due": 0}, counts
    assert (folder / "fullchain.pem").read_bytes() != first_chain
    assert (folder / "privkey.pem").read_bytes() != first_key  # a new key for every order
    results = presented(acme, folder, ["mail.one.test", "webmail.one.test"])
    assert all(v.startswith("Pebble Intermediate CA") for v in results.values()), results
    state.refresh_from_db()
    assert state.not_after > timezone.now() + timedelta(days=30)
    # not due any more: the next run asks nothing
    assert certificates.renew() == {"issued": 0, "failed": 0, "waiting": 0, "not_due": 3}


def test_a_ca_that_cannot_reach_the_challenge_keeps_the_old_certificate_and_waits(acme):
    assert certificates.issue(None, acme.one).issued
    folder = acme.tls / "domains/one.test"
    chain, key = (folder / "fullchain.pem").read_bytes(), (folder / "privkey.pem").read_bytes()
    acme.pebble.webroot.stop()  # nothing answers on the HTTP-01 port now

    outcome = certificates.issue(None, acme.one, force=True)
    assert not outcome.issued
    assert "mail.one.test" in outcome.error and "connection refused" in outcome.error.lower(), outcome.error
    assert (folder / "fullchain.pem").read_bytes() == chain and (folder / "privkey.pem").read_bytes() == key
    state = Certificate.objects.get(domain=acme.one)
    assert state.last_error == outcome.error and state.attempts == 1
    assert timedelta(minutes=59) < state.next_attempt_at - timezone.now() <= timedelta(hours=1)
    assert state.names == ["mail.one.test", "webmail.one.test"]  # what is installed

    pending = (folder / "privkey.pending.pem").read_bytes()
    state.not_after = timezone.now() + timedelta(days=5)
    state.save()
    counts = certificates.renew()
    assert counts["waiting"] == 1 and counts["issued"] == 0, counts
    # no new key, so no new order: the CA was not asked again
    assert (folder / "privkey.pending.pem").read_bytes() == pending
    state.refresh_from_db()
    assert state.attempts == 1

    out = io.StringIO()
    call_command("mail", "cert", "list", "--json", stdout=out)
    listed = {row["name"]: row for row in json.loads(out.getvalue())}
    assert listed["one.test"]["last_error"] == outcome.error
    assert listed["one.test"]["names"] == ["mail.one.test", "webmail.one.test"]
    assert listed["one.test"]["issuer"].startswith("CN=Pebble")


def test_second_failure_doubles_the_wait(acme):
    acme.pebble.webroot.stop()
    first = certificates.issue(None, acme.two)
    second = certificates.issue(None, acme.two, force=True)
    assert first.error and second.error
    state = Certificate.objects.get(domain=acme.two)
    assert state.attempts == 2
    assert timedelta(minutes=119) < state.next_attempt_at - timezone.now() <= timedelta(hours=2)
    assert not (acme.tls / "domains/two.test/fullchain.pem").exists()


def test_cli_issues_the_server_certificate_and_a_domains(acme):
    out = io.StringIO()
    call_command("mail", "cert", "issue", "--server", stdout=out)
    call_command("mail", "cert", "issue", "two.test", stdout=out)
    assert "issued" in out.getvalue()
    results = presented(acme, acme.tls, [HOSTNAME])
    assert all(v.startswith("Pebble Intermediate CA") for v in results.values()), results
    assert Certificate.objects.get(server=True).names == [HOSTNAME]


def test_deleting_a_domain_takes_its_certificate_out_of_the_index_and_off_the_disk(acme):
    from mailadmin.services import domains as domain_service

    assert certificates.issue(None, acme.one).issued and certificates.issue(None, acme.two).issued
    domain_service.delete_domain(None, acme.one)
    assert not (acme.tls / "domains/one.test").exists()
    assert (acme.tls / "sni_names").read_text() == "mail.two.test two.test\nmta-sts.two.test two.test\n"
    assert (acme.tls / "domains/two.test/fullchain.pem").exists()
    assert not Certificate.objects.filter(domain__name="one.test").exists()


def test_a_removed_certificate_stays_on_disk_until_the_apply_renders_dovecot_without_it(acme):
    """The order Dovecot needs (it reads every file its configuration names
    at each restart): remove() takes the names out of the index at once; the
    files stay while the live dovecot.conf names them, so a restart in
    between still finds them; the apply remove() queued renders dovecot.conf
    without them and the helper deletes them then."""
    from tests import taskqueue

    assert certificates.issue(None, acme.one).issued and certificates.issue(None, acme.two).issued
    taskqueue.run_queue("default")  # the whole-server apply: local_name blocks for both
    conf = acme.root / "etc/dovecot/dovecot.conf"
    folder = acme.tls / "domains/one.test"
    assert f"{folder}/fullchain.pem" in conf.read_text()

    assert certificates.remove(None, "one.test") is True
    assert "one.test" not in (acme.tls / "sni_names").read_text()
    named = re.findall(r"^\s*ssl_(?:cert|key) = <(\S+)$", conf.read_text(), re.M)
    assert f"{folder}/privkey.pem" in named
    assert [path for path in named if "/domains/" in path and not Path(path).is_file()] == []

    assert taskqueue.run_queue("default")  # the apply remove() asked for
    assert "domains/one.test/" not in conf.read_text() and "domains/two.test/" in conf.read_text()
    assert not folder.exists()
    assert (acme.tls / "domains/two.test/fullchain.pem").exists()


def test_the_pages_order_button_issues_the_certificate(acme, alice, client, django_capture_on_commit_callbacks):
    """"Order certificate now" on the Overview tab: the job on the checks
    queue runs the whole order against Pebble; the section then shows the expiry."""
    from django.urls import reverse

    from mailadmin.models import Job, JobKind, JobState
    from tests import taskqueue

    client.force_login(alice)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("mailadmin:domain_certificate_order", args=[acme.one.pk]),
                               headers={"HX-Request": "true"})
    assert response.status_code == 200 and "Ordering the certificate" in response.content.decode()
    assert taskqueue.run_queue("checks") == ["mailadmin.tasks_dns.order_certificate"]
    job = Job.objects.get(kind=JobKind.CERTIFICATE_ORDER)
    assert job.state == JobState.DONE, job.log
    state = Certificate.objects.get(domain=acme.one)
    assert state.names == job.result["names"] == ["mail.one.test", "webmail.one.test"]
    assert state.not_after > timezone.now() + timedelta(days=30)
    results = presented(acme, acme.tls / "domains/one.test", ["mail.one.test", "webmail.one.test"])
    assert all(v.startswith("Pebble Intermediate CA") for v in results.values()), results
    section = client.get(reverse("mailadmin:domain_certificate", args=[acme.one.pk]),
                         headers={"HX-Request": "true"}).content.decode()
    assert f"issued the certificate: valid until {state.not_after:%Y-%m-%d %H:%M} (UTC)" in section
    assert "every 2s" not in section  # the job ended: no more polling
