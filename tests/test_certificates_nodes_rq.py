"""Certificates with several mail nodes (issue 18, MAILPANEL_TASK_BACKEND=rq):
a domain's ACME order runs in its node's worker, so the HTTP-01 token goes
into that node's webroot and the key and chain into that node's helper root.

Two loopback nodes with their own worker processes and helper roots
(tests/test_nodes_rq.py's NodeProcess, real Redis db 13, PostgreSQL), a real
Pebble (tests/pebble.py) whose DNS server (tests/dnsserver.py) resolves the
names to 127.0.0.1. Pebble fetches every token from ONE webroot: node nb's.
Node na's worker has a webroot of its own that Pebble never reads, so an
order run anywhere but on nb fails: an issued certificate proves the order
ran in nb's worker. PostgreSQL only (tests/conftest.py collect_ignore)."""

import io
import json
import shutil
import time
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from mailadmin.models import Certificate, Job, JobState, MailDomain, MailNode, ServerSettings
from mailadmin.services import certificates
from tests.dnsserver import DnsServer
from tests.pebble import PEBBLE, Pebble, serve_tls_once, verified_names
from tests.test_nodes_rq import NodeProcess, redis_db, rq_panel, wait_done  # noqa: F401 (fixtures)

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(PEBBLE is None or shutil.which("openssl") is None, reason="pebble or openssl missing"),
]

LAYOUT = {"tls_certificate": "/etc/mailpanel/tls/fullchain.pem", "tls_privatekey": "/etc/mailpanel/tls/privkey.pem"}


class AcmeNode(NodeProcess):
    """A node whose worker orders certificates: the CA's settings and its
    own webroot."""

    def __init__(self, name, base, acme_env: dict):
        super().__init__(name, base)
        (self.root / "etc/mailpanel").mkdir(parents=True)
        (self.root / "etc/mailpanel/layout.json").write_text(json.dumps(LAYOUT))
        self.acme_env = acme_env

    def env(self) -> dict:
        return {**super().env(), **self.acme_env}


@pytest.fixture
def two_nodes(transactional_db, rq_panel, tmp_path, settings, alice):  # noqa: F811
    dns = DnsServer([
        "nb.example.test. 60 IN A 127.0.0.1",
        "mail.b.test. 60 IN A 127.0.0.1",
        "webmail.b.test. 60 IN A 127.0.0.1",
        "mail.c.test. 60 IN A 127.0.0.1",
    ]).start()
    pebble = Pebble(tmp_path / "pebble", dns, tmp_path / "nb-webroot").start()
    common = {
        "MAILPANEL_RESOLVERS": dns.address,
        "MAILPANEL_CHECK_TIMEOUT": "2",
        "MAILPANEL_ACME_DIRECTORY": pebble.directory,
        "MAILPANEL_ACME_CA_BUNDLE": pebble.ca_bundle,
        "MAILPANEL_ACME_TIMEOUT": "60",
    }
    na_webroot = tmp_path / "na-webroot"
    na_webroot.mkdir()
    server = ServerSettings.load()
    server.hostname, server.ipv4 = "panel.example.test", "127.0.0.1"
    server.save()
    MailNode.objects.all().delete()
    # na's host name is not one a CA could validate: no order for it here.
    na = MailNode.objects.create(name="na", hostname="na.localdomain", ipv4="127.0.0.1")
    nb = MailNode.objects.create(name="nb", hostname="nb.example.test", ipv4="127.0.0.1")
    made = {
        "na": AcmeNode("na", tmp_path, {**common, "MAILPANEL_ACME_WEBROOT": str(na_webroot)}),
        "nb": AcmeNode("nb", tmp_path, {**common, "MAILPANEL_ACME_WEBROOT": str(pebble.webroot_dir)}),
    }
    b = MailDomain.objects.create(name="b.test", owner=alice, node=nb)
    c = MailDomain.objects.create(name="c.test", owner=alice, node=nb)
    try:
        yield type("Cluster", (), dict(nodes=made, na=na, nb=nb, b=b, c=c, pebble=pebble, na_webroot=na_webroot))
    finally:
        for node in made.values():
            node.stop()
        pebble.stop()
        dns.stop()


def cli(*args) -> str:
    out = io.StringIO()
    call_command("mail", "cert", *args, stdout=out)
    return out.getvalue()


def wait_for_order(rows, since, timeout=120.0) -> list[Certificate]:
    """Until every row has an attempt after `since` (issued or failed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [rows_q.first() for rows_q in rows]
        if all(c is not None and c.last_attempt_at and c.last_attempt_at >= since for c in found):
            return found
        time.sleep(0.2)
    raise AssertionError(f"no order outcome within {timeout} s: {[r.first() for r in rows]}")


def presented(folder, names, root_pem) -> dict:
    port, stop = serve_tls_once(folder / "fullchain.pem", folder / "privkey.pem")
    try:
        return verified_names(port, names, root_pem)
    finally:
        stop()


def test_hostile_targets_are_refused_before_anything_is_queued(two_nodes, redis_db, settings):  # noqa: F811
    with pytest.raises(CommandError, match="no mail node 'nope'"):
        cli("issue", "--server", "--node", "nope")
    settings.MAILPANEL_NODE = "gone"  # a node's env naming a node the panel does not know
    with pytest.raises(CommandError, match="no mail node 'gone'"):
        cli("issue", "--server")
    settings.MAILPANEL_NODE = ""
    with pytest.raises(CommandError, match="--node goes with --server"):
        cli("issue", "b.test", "--node", "na")  # a domain's order is never sent to another node
    with pytest.raises(CommandError):
        cli("issue", "nosuch.test")
    assert redis_db.keys("rq:queue:*") == []  # nothing was queued
    # A task that names a node the domain is not on (forged, or the domain
    # moved since) orders nothing: no row, no helper call.
    assert certificates.issue_on_node("na", "b.test") == {"skipped": "not a domain of this node"}
    assert certificates.issue_on_node("ghost", "b.test") == {"skipped": "no such node"}
    assert certificates.issue_on_node("nb", "../../etc") == {"skipped": "not a domain of this node"}
    assert not Certificate.objects.exists()


def test_a_domains_certificate_on_node_b_is_issued_by_bs_worker_into_bs_root_only(two_nodes):
    na, nb = two_nodes.nodes["na"], two_nodes.nodes["nb"]
    before_na = na.files()
    since = timezone.now()
    out = cli("issue", "b.test") + cli("issue", "--server", "--node", "nb")
    assert "b.test: queued on node-nb" in out and "nb.example.test: queued on node-nb" in out, out
    assert not Certificate.objects.filter(last_attempt_at__isnull=False).exists()  # the panel ordered nothing
    na.start()
    nb.start()
    domain_row, server_row = wait_for_order(
        [Certificate.objects.filter(domain=two_nodes.b), Certificate.objects.filter(server=True, node=two_nodes.nb)],
        since)
    assert (domain_row.last_error, server_row.last_error) == ("", "")
    assert domain_row.names == ["mail.b.test", "webmail.b.test"]
    assert domain_row.issuer.startswith("CN=Pebble Intermediate CA")
    assert domain_row.not_after > timezone.now() + timedelta(days=30) and domain_row.attempts == 0
    assert server_row.names == ["nb.example.test"] and server_row.node_id == two_nodes.nb.pk
    assert not Certificate.objects.filter(server=True, node__isnull=True).exists()

    tls = nb.root / "etc/mailpanel/tls"
    root_pem = two_nodes.pebble.root_pem()
    results = presented(tls / "domains/b.test", ["mail.b.test", "webmail.b.test"], root_pem)
    assert all(v.startswith("Pebble Intermediate CA") for v in results.values()), results
    assert presented(tls, ["nb.example.test"], root_pem)["nb.example.test"].startswith("Pebble Intermediate CA")
    assert (tls / "sni_names").read_text() == "mail.b.test b.test\nwebmail.b.test b.test\n"
    assert not list(two_nodes.na_webroot.rglob("*")), "a token was written into na's webroot"

    # The re-render for the new SNI names went to nb only; na's tree is untouched.
    applies = wait_done(list(Job.objects.filter(kind="apply").values_list("pk", flat=True)))
    assert {job.node.name for job in applies} == {"nb"}
    assert all(job.state == JobState.DONE for job in applies), [job.log for job in applies]
    assert na.files() == before_na
    assert not (na.root / "etc/mailpanel/tls").exists()

    listed = {row["name"]: row for row in json.loads(cli("list", "--json"))}
    assert listed["b.test"]["names"] == ["mail.b.test", "webmail.b.test"] and listed["b.test"]["node"] is None
    assert listed["nb.example.test"]["node"] == "nb" and listed["nb.example.test"]["server"] is True

    # The timer's run: only what is due is queued, on its node, and renewed there.
    chain = (tls / "domains/b.test/fullchain.pem").read_bytes()
    Certificate.objects.filter(pk=domain_row.pk).update(not_after=timezone.now() + timedelta(days=10))
    since = timezone.now()
    counts = json.loads(cli("renew", "--json"))
    # b.test due; nb's host name not due; c.test never ordered: due; na.localdomain never a target
    assert counts == {"queued": 2, "waiting": 0, "not_due": 1}, counts
    renewed, _ = wait_for_order(
        [Certificate.objects.filter(domain=two_nodes.b), Certificate.objects.filter(domain=two_nodes.c)], since)
    assert renewed.last_error == "" and renewed.not_after > timezone.now() + timedelta(days=30)
    assert (tls / "domains/b.test/fullchain.pem").read_bytes() != chain
    wait_done(list(Job.objects.filter(kind="apply").values_list("pk", flat=True)))
    assert na.files() == before_na


def test_a_failing_order_on_node_b_records_the_cas_error_and_backs_off(two_nodes):
    na, nb = two_nodes.nodes["na"], two_nodes.nodes["nb"]
    before_na = na.files()
    two_nodes.pebble.webroot.stop()  # nothing answers on the HTTP-01 port now
    nb.start()
    since = timezone.now()
    cli("issue", "c.test")
    (row,) = wait_for_order([Certificate.objects.filter(domain=two_nodes.c)], since)
    assert row.names == [] and row.attempts == 1
    assert "mail.c.test" in row.last_error and "connection refused" in row.last_error.lower(), row.last_error
    assert timedelta(minutes=59) < row.next_attempt_at - timezone.now() <= timedelta(hours=1)
    assert not (nb.root / "etc/mailpanel/tls/domains/c.test/fullchain.pem").exists()
    assert (nb.root / "etc/mailpanel/tls/domains/c.test/privkey.pending.pem").exists()  # made by nb's helper
    assert na.files() == before_na

    # The timer leaves it in its backoff: nothing queued for c.test (b.test
    # and nb's host name never had one: queued, for a stopped worker).
    nb.stop()
    counts = json.loads(cli("renew", "--json"))
    assert counts == {"queued": 2, "waiting": 1, "not_due": 0}, counts
    listed = {r["name"]: r for r in json.loads(cli("list", "--json"))}
    assert listed["c.test"]["last_error"] == row.last_error and listed["c.test"]["attempts"] == 1
