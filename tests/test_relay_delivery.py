"""Relays proven by real deliveries: the panel's own pipeline from the database
(services.relay → build_snapshot() → render_all into a temporary root) runs a
real Exim that delivers to aiosmtpd relays on 127.0.0.1.

The base cases (global LOGIN, PLAIN-only relay, per-domain precedence, the
password corpus) live in test_render_exim.py; these cover what changes in
the database over time (clearing falls back), DKIM through a relay, and TLS.
"""

import grp
import os
import re
import stat
import statistics
import time

import dkim as dkimpy
import pytest
from django.urls import reverse

from mailadmin.services import domains as domain_service
from mailadmin.services import relay as relay_service
from mailadmin.services.apply import build_snapshot
from tests import mailstack

pytestmark = pytest.mark.django_db

GLOBAL = ("global-user", "gl0bal pass: ^x$")
DOMAIN = ("alice-relay", ' al1ce "pass" \\ #ü ')
RECIPIENT = "someone@remote.example"


@pytest.fixture(autouse=True)
def _root(settings):
    mailstack.require_root()


@pytest.fixture
def domains(alice, bob):
    """alice.example (will get its own relay) and bob.example (none)."""
    alice_domain = domain_service.add_domain(None, alice, "alice.example")
    bob_domain = domain_service.add_domain(None, bob, "bob.example")
    # The tests submit as root from the command line, like a web app whose
    # Unix user an admin mapped to the domain.
    for domain in (alice_domain, bob_domain):
        domain_service.update_domain(None, domain, local_senders="root")
    return alice_domain, bob_domain


def creds(pair):
    return {(pair[0].encode(), pair[1].encode())}


def set_relay(domain, sink, pair, auth, tls="none", actor=None):
    relay_service.set_relay(
        actor, domain, host="127.0.0.1", port=sink.port, tls=tls,
        username=pair[0], password=pair[1], auth=auth,
    )


class Tree:
    """The rendered tree of one test: re-rendered from the database on demand."""

    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.layout = None

    def render(self):
        snapshot = build_snapshot()
        if self.layout is None:
            self.layout = mailstack.render_tree(snapshot, self.tmp_path)
        else:
            mailstack.render_tree(snapshot, self.tmp_path, layout=self.layout)
        return self.layout

    def send(self, sender, subject="relay test"):
        message = mailstack.make_message(sender, RECIPIENT, subject=subject)
        started = time.monotonic()
        proc = mailstack.exim_submit(self.layout, sender, [RECIPIENT], message)
        elapsed = time.monotonic() - started
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")
        return elapsed

    def route(self, sender, dns=None):
        return mailstack.exim_bt(self.layout, RECIPIENT, sender=sender, dns=dns)

    def mainlog(self):
        return mailstack.main_log(self.layout)


@pytest.fixture
def tree():
    # Not under tmp_path: another pytest run starting meanwhile chmods
    # /tmp/pytest-of-root back to 0700 and Exim (Debian-exim) loses its way in.
    import shutil
    import tempfile
    from pathlib import Path

    root = Path(tempfile.mkdtemp(prefix="mailpanel-relay-"))
    try:
        yield Tree(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def only_message(sink, timeout=10):
    messages = sink.wait_for_messages(1, timeout)
    assert len(messages) == 1
    return messages[0]


# -- precedence over time --------------------------------------------------------


def test_clearing_the_domain_relay_falls_back_to_the_global_relay(domains, smtp_sinks, tree, admin_user):
    alice_domain, _bob = domains
    global_sink = smtp_sinks(credentials=creds(GLOBAL))
    domain_sink = smtp_sinks(mechanisms=("PLAIN",), credentials=creds(DOMAIN))
    set_relay(None, global_sink, GLOBAL, "login", actor=admin_user)
    set_relay(alice_domain, domain_sink, DOMAIN, "plain")
    tree.render()
    assert "router = smtp_relay_domain" in tree.route("web@ALICE.Example")
    assert "router = smtp_relay_global" in tree.route("web@bob.example")

    tree.send("web@alice.example", "first")
    msg = only_message(domain_sink)
    assert (msg.auth.mechanism, msg.auth.username, msg.auth.password) == (
        "PLAIN", DOMAIN[0].encode(), DOMAIN[1].encode()
    )
    assert global_sink.messages == []

    relay_file = tree.layout.path("/etc/exim4/domains/alice.example/smtp_relay.conf")
    st = os.stat(relay_file)
    assert stat.S_IMODE(st.st_mode) == 0o640 and st.st_uid == 0
    assert grp.getgrgid(st.st_gid).gr_name == "Debian-exim"

    assert relay_service.clear_relay(None, alice_domain).job is not None
    tree.render()
    assert not os.path.exists(relay_file)
    for sender in ("web@alice.example", "web@ALICE.Example"):
        assert "router = smtp_relay_global" in tree.route(sender)
    tree.send("web@alice.example", "second")
    msg = only_message(global_sink)
    assert b"Subject: second" in msg.data
    assert (msg.auth.mechanism, msg.auth.username, msg.auth.password) == (
        "LOGIN", GLOBAL[0].encode(), GLOBAL[1].encode()
    )
    assert len(domain_sink.messages) == 1  # nothing more went to the removed relay


def test_clearing_both_relays_delivers_directly(domains, smtp_sinks, tree, fake_dns, admin_user):
    alice_domain, _bob = domains
    global_sink = smtp_sinks(credentials=creds(GLOBAL))
    domain_sink = smtp_sinks(credentials=creds(DOMAIN))
    set_relay(None, global_sink, GLOBAL, "login", actor=admin_user)
    set_relay(alice_domain, domain_sink, DOMAIN, "login")
    tree.render()
    assert "router = smtp_relay_domain" in tree.route("web@alice.example")
    assert "router = smtp_relay_global" in tree.route("web@bob.example")

    relay_service.clear_relay(None, alice_domain)
    relay_service.clear_relay(admin_user, None)
    tree.render()
    dns = fake_dns({("remote.example", "MX"): ["10 mx.remote.example"], ("mx.remote.example", "A"): ["127.0.0.77"]})
    for sender in ("web@alice.example", "web@bob.example", "web@ALICE.EXAMPLE"):
        routing = tree.route(sender, dns=dns)
        assert "router = dnslookup, transport = remote_smtp" in routing, routing
        assert "mx.remote.example [127.0.0.77]" in routing
        assert "smtp_relay" not in routing

    # and a real direct delivery to the (fake) MX on port 25
    mx = smtp_sinks(host="127.0.0.77", port=25)
    message = mailstack.make_message("web@alice.example", RECIPIENT, subject="direct")
    proc = mailstack.exim_submit(tree.layout, "web@alice.example", [RECIPIENT], message, dns=dns)
    assert proc.returncode == 0
    msg = only_message(mx)
    assert msg.auth is None and b"Subject: direct" in msg.data
    assert global_sink.messages == [] and domain_sink.messages == []


# -- DKIM through a relay -----------------------------------------------------------


def published_dkim_record(client, domain) -> str:
    """The DKIM TXT value exactly as the domain page's DNS tab shows it."""
    page = client.get(reverse("mailadmin:domain_dns", args=[domain.pk])).content.decode()
    match = re.search(r'<pre class="record" id="dkim-record">([^<]+)</pre>', page)
    assert match, "no DKIM record on the domain page's DNS tab"
    return match.group(1).strip()


@pytest.mark.parametrize("scope", ["domain", "global"])
def test_relayed_mail_carries_a_dkim_signature_that_verifies_against_the_published_key(
    domains, smtp_sinks, tree, alice_client, admin_user, scope
):
    alice_domain, _bob = domains
    sink = smtp_sinks(credentials=creds(DOMAIN))
    set_relay(alice_domain if scope == "domain" else None, sink, DOMAIN, "login", actor=admin_user)
    record = published_dkim_record(alice_client, alice_domain)
    assert record.startswith("v=DKIM1; k=rsa; p=")
    tree.render()

    tree.send("web@alice.example", "signed")
    msg = only_message(sink)
    assert b"DKIM-Signature:" in msg.data
    asked = []

    def published(name, timeout=5):
        asked.append(name)
        return record.encode() if name == b"mail._domainkey.alice.example." else None

    assert dkimpy.verify(msg.data, dnsfunc=published), msg.data.decode(errors="replace")
    assert asked == [b"mail._domainkey.alice.example."]
    signature = dkimpy.DKIM(msg.data)
    signature.verify(dnsfunc=published)
    assert signature.domain == b"alice.example" and signature.selector == b"mail"


def test_dkim_signature_does_not_verify_against_another_key(domains, smtp_sinks, tree, alice_client, bob):
    """The verification above can fail: bob's record does not verify alice's mail."""
    alice_domain, bob_domain = domains
    sink = smtp_sinks(credentials=creds(DOMAIN))
    set_relay(alice_domain, sink, DOMAIN, "login")
    tree.render()
    tree.send("web@alice.example")
    msg = only_message(sink)
    from mailadmin import dkim as panel_dkim

    bobs = panel_dkim.dns_value(bob_domain.dkim_private_key).encode()
    assert not dkimpy.verify(msg.data, dnsfunc=lambda name, timeout=5: bobs)


# -- TLS to the relay ----------------------------------------------------------------


@pytest.mark.parametrize("tls", ["starttls", "ssl"])
def test_relay_over_tls_with_the_test_ca(domains, smtp_sinks, tree, alice_client, tls):
    alice_domain, _bob = domains
    sink = smtp_sinks(
        mechanisms=("PLAIN",), credentials=creds(DOMAIN),
        starttls=tls == "starttls", implicit_tls=tls == "ssl",
    )
    set_relay(alice_domain, sink, DOMAIN, "plain", tls=tls)
    layout = tree.render()
    # the rendered config trusts the bundle the harness put at relay_ca_bundle
    conf = open(mailstack.exim_conf(layout)).read()
    assert f"MP_RELAY_CA = {layout.path(layout.relay_ca_bundle)}" in conf
    tree.send("web@alice.example", "over tls")
    msg = only_message(sink)
    assert msg.tls is True
    assert (msg.auth.username, msg.auth.password) == (DOMAIN[0].encode(), DOMAIN[1].encode())
    record = published_dkim_record(alice_client, alice_domain)
    assert dkimpy.verify(msg.data, dnsfunc=lambda name, timeout=5: record.encode())
    log = tree.mainlog()
    assert re.search(r"=> someone@remote\.example .*X=TLS", log), log[-2000:]


@pytest.mark.parametrize("tls", ["starttls", "ssl"])
def test_relay_with_a_wrong_certificate_is_refused_and_the_mail_stays_queued(
    domains, smtp_sinks, tree, tls
):
    alice_domain, _bob = domains
    sink = smtp_sinks(
        credentials=creds(DOMAIN), starttls=tls == "starttls", implicit_tls=tls == "ssl", wrong_ca=True
    )
    set_relay(alice_domain, sink, DOMAIN, "login", tls=tls)
    layout = tree.render()
    tree.send("web@alice.example", "must not leave")
    time.sleep(0.3)
    assert sink.messages == [] and sink.auth_attempts == []
    log = tree.mainlog()
    assert "=> someone@remote.example" not in log
    assert re.search(r"== someone@remote\.example .*(certificate|TLS|tls)", log, re.I), log[-2000:]
    queue = mailstack._exim(layout, "-bp").stdout.decode()
    assert "someone@remote.example" in queue


# -- how long a relayed delivery takes ------------------------------------------------


@pytest.mark.parametrize("tls", ["none", "starttls"])
def test_delivery_time_per_relayed_message(domains, smtp_sinks, tree, record_property, tls):
    alice_domain, _bob = domains
    sink = smtp_sinks(credentials=creds(DOMAIN), starttls=tls == "starttls")
    set_relay(alice_domain, sink, DOMAIN, "login", tls=tls)
    tree.render()
    times = [tree.send("web@alice.example", f"timed {i}") for i in range(20)]
    assert len(sink.wait_for_messages(20)) == 20
    median = statistics.median(times)
    record_property("relay_delivery_median_s", round(median, 4))
    record_property("relay_delivery_max_s", round(max(times), 4))
    print(f"\nrelayed delivery (exim -odf, tls={tls}, AUTH LOGIN, DKIM 2048): "
          f"median {median * 1000:.1f} ms, min {min(times) * 1000:.1f} ms, max {max(times) * 1000:.1f} ms")
    assert median < 1.0


def test_relay_given_as_an_ipv6_address_delivers(domains, smtp_sinks, tree):
    """route_data is a colon list: an unprotected ::1 would be split apart."""
    alice_domain, _bob = domains
    sink = smtp_sinks(host="::1", credentials=creds(DOMAIN))
    relay_service.set_relay(
        None, alice_domain, host="[::1]", port=sink.port, tls="none",
        username=DOMAIN[0], password=DOMAIN[1], auth="login",
    )
    tree.render()
    assert "host ::1 [::1]" in tree.route("web@alice.example")
    tree.send("web@alice.example", "v6")
    msg = only_message(sink)
    assert msg.auth.password == DOMAIN[1].encode()
