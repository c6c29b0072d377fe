"""Issue #14 end to end: certificates from a real ACME CA (Pebble on
loopback) for the server name and two mail domains, through the panel's whole
path (DNS check, helper key and CSR, the acme library's order, HTTP-01 from
the webroot, the helper's checked install and SNI index), then real Exim and
Dovecot rendered with those pairs present the right Pebble-issued chain per
SNI on 25 (STARTTLS), 465, 587 (STARTTLS), 993 and 4190 (STARTTLS), verified
with Python's ssl against Pebble's root, hostname checking on; a renewal is
picked up by both daemons."""

import json
import socket
import ssl
import sys
import time
from pathlib import Path

import pytest

from mailadmin.models import MailDomain, ServerSettings
from mailadmin.services import certificates
from mailconf import tls
from mailconf.render import render_all
from mailconf.snapshot import Domain, ServerIdentity, Snapshot
from tests import mailstack
from tests.dnsserver import DnsServer
from tests.pebble import PEBBLE, Pebble
from tests.test_helper import HELPER, load_helper_module
from tests.test_tls_sni import PORTS, TLS_LAYOUT

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(PEBBLE is None, reason="pebble missing (deploy/apt-packages-test.txt)"),
]

SERVER_NAME = "mx.server.test"
NAMES = {"a.test": ["mail.a.test", "webmail.a.test"], "b.test": ["mail.b.test"]}


def presented_der(port: int, server_name: str, cafile: str, starttls) -> bytes:
    """The leaf the server presents for this SNI, after ssl verified the
    chain against cafile and the host name."""
    context = ssl.create_default_context(cafile=cafile)
    with socket.create_connection((mailstack.LOOPBACK, port), timeout=10) as raw:
        if starttls:
            starttls(raw)
        with context.wrap_socket(raw, server_hostname=server_name) as conn:
            return conn.getpeercert(binary_form=True)


def leaf_der(fullchain: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(fullchain.read_text().split("-----END CERTIFICATE-----")[0]
                                    + "-----END CERTIFICATE-----\n")


@pytest.fixture
def stack(tmp_path, settings, alice):
    mailstack.require_root()
    root = mailstack.new_tree_root(tmp_path)
    p25, p465, p587 = (mailstack.free_port() for _ in range(3))
    layout = mailstack.loopback_layout(root, tls=True, smtp_ports=(p25, p465, p587), smtps_ports=(p465,),
                                       **TLS_LAYOUT)
    dovecot_conf = mailstack.dovecot_conf(layout)
    reloads = tmp_path / "reloads.log"
    service = tmp_path / "service"
    # The helper's reload of dovecot is a real one: new logins read the new chain.
    service.write_text(f'#!/bin/sh\necho "$*" >> {reloads}\n'
                       f'[ "$2" = dovecot ] && exec doveadm -c {dovecot_conf} reload\nexit 0\n')
    service.chmod(0o755)
    dns = DnsServer([f"{name}. 60 IN A 127.0.0.1" for name in
                     [SERVER_NAME, *NAMES["a.test"], *NAMES["b.test"]]]).start()
    pebble = Pebble(tmp_path / "pebble", dns, tmp_path / "webroot").start()
    settings.MAILPANEL_RESOLVERS = [dns.address]
    settings.MAILPANEL_CHECK_TIMEOUT = 2.0
    settings.MAILPANEL_ACME_DIRECTORY = pebble.directory
    settings.MAILPANEL_ACME_CA_BUNDLE = pebble.ca_bundle
    settings.MAILPANEL_ACME_WEBROOT = str(pebble.webroot_dir)
    settings.MAILPANEL_HELPER = f"{sys.executable} {HELPER} --root {root} --service-command {service}"
    server = ServerSettings.load()
    server.hostname, server.ipv4 = SERVER_NAME, "127.0.0.1"
    server.save()
    domains = {name: MailDomain.objects.create(name=name, owner=alice) for name in NAMES}
    root_file = tmp_path / "pebble-root.pem"
    root_file.write_text(pebble.root_pem())
    yield dict(root=root, layout=layout, pebble=pebble, domains=domains, ca=str(root_file),
               ports={"25": p25, "465": p465, "587": p587, "993": layout.imaps_port, "4190": layout.sieve_port})
    pebble.stop()
    dns.stop()


def test_pebble_issued_chains_are_served_per_sni_on_every_port_and_a_renewal_is_picked_up(stack):
    assert certificates.issue(None, None).issued
    for domain in stack["domains"].values():
        outcome = certificates.issue(None, domain)
        assert outcome.issued, outcome.error

    # What the apply the install queued does: render with the helper's usable pairs.
    layout, root = stack["layout"], stack["root"]
    helper = load_helper_module()
    usable, skipped = helper.sni_pairs(helper.Tree(str(root), chown=False), layout)
    assert [(p.name, p.domain) for p in usable] == [
        ("mail.a.test", "a.test"), ("mail.b.test", "b.test"), ("webmail.a.test", "a.test")] and not skipped
    snapshot = Snapshot(server=ServerIdentity(hostname=SERVER_NAME), domains=(Domain("a.test"), Domain("b.test")),
                        sieve_enabled=True)
    mailstack.render_tree(snapshot, root.parent, layout=layout)
    mailstack.write_rendered(render_all(snapshot, layout, usable), layout)

    tls_dir = Path(layout.path(tls.TLS_DIR))
    expected = {SERVER_NAME: leaf_der(tls_dir / "fullchain.pem")}
    for domain, names in NAMES.items():
        for name in names:
            expected[name] = leaf_der(tls_dir / "domains" / domain / "fullchain.pem")
    ca, ports = stack["ca"], stack["ports"]
    with mailstack.exim_daemon(layout), mailstack.dovecot_daemon(layout):
        for label, starttls in PORTS.items():
            for name, der in expected.items():
                assert presented_der(ports[label], name, ca, starttls) == der, (label, name)
            with pytest.raises(ssl.SSLCertVerificationError):  # hostname checking is on
                presented_der(ports[label], "mail.c.test", ca, starttls)

        # a renewal: a new key and chain in place; Exim reads per connection,
        # Dovecot after the helper's reload
        outcome = certificates.issue(None, stack["domains"]["b.test"], force=True)
        assert outcome.issued, outcome.error
        renewed = leaf_der(tls_dir / "domains/b.test/fullchain.pem")
        assert renewed != expected["mail.b.test"]
        for label, starttls in PORTS.items():
            deadline = time.monotonic() + 10
            while (seen := presented_der(ports[label], "mail.b.test", ca, starttls)) != renewed:
                assert time.monotonic() < deadline, f"{label} still presents the old chain"
                time.sleep(0.2)
            assert presented_der(ports[label], "mail.a.test", ca, starttls) == expected["mail.a.test"], label
