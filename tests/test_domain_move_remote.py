"""A domain's mail copied between two machines: Dovecot's doveadm TCP service.

Root's /etc/mailpanel/mail-peers.json (mailconf/peers.py) names the other
nodes by host, address and port, and this node's own listener (this_node);
the shared doveadm password is root's /etc/mailpanel/doveadm.password
(root:root 0600). The helper renders dovecot.conf's listener (TLS, this
node's address, ``doveadm_password = <FILE``) and the firewall's opening
for the peers only; ``sync_mail`` to such a peer runs
``doveadm sync -1 -u USER tcps:HOST:PORT``.

Hostile peer files and password files first (the parser, then the real
helper); then two real Dovecots on loopback, each with its own root and its
own helper-rendered dovecot.conf: the old node listens on 127.0.0.2, the
new one on 127.0.0.1 (the test certificate's name), and a domain move's
copy phase runs over TCP end to end; a wrong password is refused and
nothing is copied. Dovecot 2.4's listener is checked as text only here
(Debian 12 runs 2.3; 2.4 runs in the Debian 13 box only).
"""

import dataclasses
import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from mailconf import peers as mp
from mailconf.params import CodeParams
from mailconf.render import render_code
from mailconf.snapshot import Layout
from mailadmin.models import DomainMove, MovePhase
from mailadmin.services import apply, domain_move, nodes
from tests import mailstack
from tests.test_domain_move_mailstack import BOXES, Node, node_models, on, queued, run_applies  # noqa: F401 (fixture)
from tests.test_helper_hostile import MARKER, TOUCH, run, tree_state

PASSWORD = "c2hhcmVkLWRvdmVhZG0tc2VjcmV0LW9mLXRoZS1ub2Rlcw"
OTHER_PASSWORD = "YW5vdGhlci1zZWNyZXQtdGhhdC1kb2VzLW5vdC1tYXRjaA"


def peers_json(**entries) -> bytes:
    return json.dumps(entries).encode()


GOOD = {"n1": {"this_node": True, "address": "192.0.2.1", "port": 24245},
        "n2": {"host": "mx2.example.net", "address": "192.0.2.2", "port": 24245}}

# name -> (peers file content, a hostile value that must not be echoed or "")
HOSTILE_PEERS = {
    "host an option": ({**GOOD, "n2": {**GOOD["n2"], "host": "-oMail_location=x"}}, "-oMail_location"),
    "host with a colon (a second destination)": ({**GOOD, "n2": {**GOOD["n2"], "host": "a:1 tcp:evil"}}, "evil"),
    "host with a newline": ({**GOOD, "n2": {**GOOD["n2"], "host": "mx2\n/usr/bin/touch"}}, "touch"),
    "host a command": ({**GOOD, "n2": {**GOOD["n2"], "host": "$(touch /tmp/x)"}}, "touch"),
    "host upper case": ({**GOOD, "n2": {**GOOD["n2"], "host": "MX2.example.net"}}, "MX2"),
    "host an IPv6 literal": ({**GOOD, "n2": {**GOOD["n2"], "host": "[::1]"}}, "[::1]"),
    "host not a string": ({**GOOD, "n2": {**GOOD["n2"], "host": ["mx2"]}}, ""),
    "address a name": ({**GOOD, "n2": {**GOOD["n2"], "address": "mx2.example.net"}}, "mx2.example.net"),
    "address a network": ({**GOOD, "n2": {**GOOD["n2"], "address": "0.0.0.0/0"}}, "0.0.0.0/0"),
    "address a set (firewall syntax)": ({**GOOD, "n2": {**GOOD["n2"], "address": "192.0.2.2 } accept"}}, "accept"),
    "address with a scope": ({**GOOD, "n2": {**GOOD["n2"], "address": "fe80::1%eth0"}}, "eth0"),
    "address not canonical": ({**GOOD, "n2": {**GOOD["n2"], "address": "192.000.2.2"}}, "192.000"),
    "port 0": ({**GOOD, "n2": {**GOOD["n2"], "port": 0}}, ""),
    "port too large": ({**GOOD, "n2": {**GOOD["n2"], "port": 65536}}, ""),
    "port a string": ({**GOOD, "n2": {**GOOD["n2"], "port": "24245; drop"}}, "drop"),
    "port a bool": ({**GOOD, "n2": {**GOOD["n2"], "port": True}}, ""),
    "an extra key (a password)": ({**GOOD, "n2": {**GOOD["n2"], "password": "x" * 40}}, "x" * 40),
    "an extra key (a command)": ({**GOOD, "n2": {**GOOD["n2"], "remote_cmd": TOUCH}}, TOUCH),
    "mail_root mixed with host": ({**GOOD, "n2": {**GOOD["n2"], "mail_root": "/tmp/x"}}, ""),
    "this_node not true": ({**GOOD, "n1": {**GOOD["n1"], "this_node": "yes"}}, ""),
    "this_node listening everywhere": ({**GOOD, "n1": {**GOOD["n1"], "address": "*"}}, ""),
    "this_node with a host": ({**GOOD, "n1": {**GOOD["n1"], "host": "x"}}, ""),
    "two this_node": ({**GOOD, "n3": dict(GOOD["n1"])}, ""),
    "remote peers without this_node": ({"n2": GOOD["n2"]}, ""),
    "this_node without remote peers": ({"n1": GOOD["n1"]}, ""),
    "a name that is no node name": ({**GOOD, "N2;x": GOOD["n2"]}, "N2;x"),
    "not an object": (["n2"], ""),
    "an entry not an object": ({**GOOD, "n3": "mx3"}, ""),
}


# -- the grammar ---------------------------------------------------------------

def test_a_good_peers_file_parses():
    parsed = mp.parse_mail_peers(json.dumps({**GOOD, "n3": {"mail_root": "/var/mail/b"}}).encode())
    assert parsed.listener == mp.Listener("192.0.2.1", 24245, ("192.0.2.2",))
    assert parsed.get("n2").destination == "tcps:mx2.example.net:24245"
    assert parsed.get("n3") == mp.LocalPeer("n3", "/var/mail/b")
    # the old same-machine form alone: no listener
    assert mp.parse_mail_peers(b'{"b": {"mail_root": "/var/mail/b"}}').listener is None


@pytest.mark.parametrize("case", sorted(HOSTILE_PEERS))
def test_hostile_peers_files_are_refused_without_quoting_them(case):
    content, value = HOSTILE_PEERS[case]
    with pytest.raises(ValueError) as e:
        mp.parse_mail_peers(json.dumps(content).encode())
    if value:
        assert value not in str(e.value)


@pytest.mark.parametrize("content", [
    b"", b"short", b"x" * 31, b"x" * 257, b"a" * 40 + b"\n\n", b"a" * 40 + b"\nb",
    b"a" * 40 + b" ", b"a" * 36 + b"\"x\"", b"a" * 40 + b"\x00", "ä".encode() * 20,
])
def test_a_password_file_outside_its_grammar_is_refused(content):
    with pytest.raises(ValueError) as e:
        mp.check_password(content)
    assert "aaaa" not in str(e.value)


def test_a_sound_password_file_passes():
    mp.check_password(PASSWORD.encode() + b"\n")


# -- the renderers ---------------------------------------------------------------

def render(version: str, peers=mp.NO_PEERS, tls: bool = True) -> dict[str, str]:
    layout = Layout(dovecot_version=version, tls_certificate="/etc/exim4/tls/mail.crt" if tls else "")
    files = render_code(CodeParams(), layout, (), peers)
    return {path: spec.content.decode() for path, spec in files.items()}


PEERS = mp.parse_mail_peers(json.dumps(GOOD).encode())


@pytest.mark.parametrize("version", ["2.3", "2.4"])
def test_a_node_without_remote_peers_renders_no_listener_and_no_opening(version):
    alone = render(version)
    same_machine = mp.parse_mail_peers(b'{"b": {"mail_root": "/var/mail/b"}}')
    assert render(version, same_machine) == alone
    assert "doveadm" not in alone["/etc/dovecot/dovecot.conf"]
    assert "doveadm" not in alone["/etc/nftables.d/mailpanel.nft"]


def test_the_23_listener_and_the_firewall_with_peers():
    files = render("2.3", PEERS)
    conf = files["/etc/dovecot/dovecot.conf"]
    assert conf == render("2.3")["/etc/dovecot/dovecot.conf"] + (
        "\n# Mail copies from and to the other mail nodes (doveadm sync, tcps:).\n"
        "service doveadm {\n  inet_listener {\n    address = 192.0.2.1\n    port = 24245\n"
        "    ssl = yes\n  }\n}\ndoveadm_port = 24245\n"
        "doveadm_password = </etc/mailpanel/doveadm.password\n"
        "ssl_client_ca_file = /etc/ssl/certs/ca-certificates.crt\n")
    nft = files["/etc/nftables.d/mailpanel.nft"]
    assert ('ip saddr { 192.0.2.2 } tcp dport 24245 accept comment "doveadm: mail copies from the other mail nodes"'
            in nft)
    assert nft.index("ip saddr { 192.0.2.2 }") < nft.index('tcp dport 24245 drop comment "doveadm: other mail nodes only"')


def test_the_24_listener_uses_24s_words():
    conf = render("2.4", PEERS)["/etc/dovecot/dovecot.conf"]
    tail = conf[len(render("2.4")["/etc/dovecot/dovecot.conf"]):]
    assert tail == ("\n# Mail copies from and to the other mail nodes (doveadm sync, tcps:).\n"
                    "service doveadm {\n  inet_listener doveadm {\n    listen = 192.0.2.1\n    port = 24245\n"
                    "    ssl = yes\n  }\n}\ndoveadm_port = 24245\n"
                    "doveadm_password = </etc/mailpanel/doveadm.password\n"
                    "ssl_client_ca_file = /etc/ssl/certs/ca-certificates.crt\n")


def test_ipv6_peers_get_their_own_rule():
    both = mp.parse_mail_peers(json.dumps({**GOOD, "n3": {"host": "mx3.example.net", "address": "2001:db8::3",
                                                           "port": 24245}}).encode())
    nft = render("2.3", both)["/etc/nftables.d/mailpanel.nft"]
    assert "ip saddr { 192.0.2.2 } tcp dport 24245 accept" in nft
    assert "ip6 saddr { 2001:db8::3 } tcp dport 24245 accept" in nft


def test_no_listener_without_tls():
    with pytest.raises(ValueError, match="TLS certificate"):
        render("2.3", PEERS, tls=False)


@pytest.mark.skipif(shutil.which("nft") is None or os.geteuid() != 0, reason="needs nft and root")
def test_the_firewall_with_peers_passes_nft_check(tmp_path):
    path = tmp_path / "mailpanel.nft"
    path.write_text(render("2.3", PEERS)["/etc/nftables.d/mailpanel.nft"])
    check = subprocess.run([shutil.which("nft"), "-c", "-f", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


# -- the helper, as a compromised panel or a careless root would drive it ---------

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the helper's checks of root's files need root")
MAIL_ROOT = "var/mail/vhosts"


@pytest.fixture
def remote_node(tmp_path):
    root = tmp_path / "root"
    (root / MAIL_ROOT / "example.org" / "alice" / "Maildir" / "cur").mkdir(parents=True)
    etc = root / "etc/mailpanel"
    etc.mkdir(parents=True)
    (etc / "mail-peers.json").write_text(json.dumps(GOOD))
    (etc / "mail-peers.json").chmod(0o644)
    (etc / "doveadm.password").write_text(PASSWORD + "\n")
    (etc / "doveadm.password").chmod(0o600)
    return root


def sync_request(peer="n2"):
    return {"op": "sync_mail", "domain": "example.org", "local_parts": ["alice"], "peer": peer}


@needs_root
@pytest.mark.parametrize("case", sorted(HOSTILE_PEERS))
def test_a_hostile_peers_file_stops_the_sync_before_doveadm_runs(remote_node, case):
    content, value = HOSTILE_PEERS[case]
    (remote_node / "etc/mailpanel/mail-peers.json").write_text(json.dumps(content))
    before = tree_state(remote_node)
    status, output = run(remote_node, sync_request())
    assert status == 1 and "mail-peers.json" in output, output
    if value:
        assert value not in output
    assert tree_state(remote_node) == before and not MARKER.exists()


@needs_root
@pytest.mark.parametrize("case", ["missing", "group readable", "world readable", "not root's", "bad grammar"])
def test_a_password_file_root_did_not_write_right_stops_the_sync(remote_node, case):
    password = remote_node / "etc/mailpanel/doveadm.password"
    if case == "missing":
        password.unlink()
    elif case == "group readable":
        password.chmod(0o640)
    elif case == "world readable":
        password.chmod(0o604)
    elif case == "not root's":
        os.chown(password, 65534, 65534)
    else:
        password.write_text("too short\n")
    before = tree_state(remote_node)
    status, output = run(remote_node, sync_request())
    assert status == 1 and "doveadm.password" in output, output
    assert PASSWORD not in output and "too short" not in output
    assert tree_state(remote_node) == before


# -- two real Dovecots on loopback: the move's copy over doveadm's TCP service ----

def write_root_file(layout, production: str, content: str, mode: int = 0o644) -> Path:
    path = Path(layout.path(production))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    os.chmod(path, mode)
    os.chown(path, 0, 0)
    return path


def doveconf(layout) -> str:
    check = subprocess.run(["doveconf", "-n", "-c", mailstack.dovecot_conf(layout)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    return check.stdout


@pytest.fixture
def remote_nodes(mailstack_tree, settings, alice):
    """Node "main" (old; its doveadm on 127.0.0.2) holds example.org with two
    mailboxes; node "b" (new; doveadm on 127.0.0.1) nothing yet. Root's peer
    files name each other by address only (no mail_root: the copy can only
    go over TCP); dovecot.conf is the helper's own rendering."""
    domain, main, node_b = node_models(settings, alice)
    ports = {"main": mailstack.free_port(), "b": mailstack.free_port()}
    listen = {"main": "127.0.0.2", "b": "127.0.0.1"}
    with __import__("contextlib").ExitStack() as stack:
        started = []
        for model in (main, node_b):
            layout = mailstack_tree(apply.build_snapshot(node=model), tls=True)
            fields = {k: v for k, v in dataclasses.asdict(layout).items() if k != "root"}
            write_root_file(layout, "/etc/mailpanel/layout.json", json.dumps(fields))
            other = "b" if model.name == "main" else "main"
            write_root_file(layout, mp.MAIL_PEERS_FILE, json.dumps({
                model.name: {"this_node": True, "address": listen[model.name], "port": ports[model.name]},
                other: {"host": listen[other], "address": listen[other], "port": ports[other]},
            }))
            write_root_file(layout, mp.DOVEADM_PASSWORD_FILE, PASSWORD + "\n", 0o600)
            node = Node(model, layout, None, None)
            # The helper renders dovecot.conf (and the firewall) from root's files.
            on(node, settings, apply.apply_now, None, None, model)
            node.dovecot = stack.enter_context(mailstack.dovecot_daemon(layout))
            node.exim = stack.enter_context(mailstack.exim_daemon(layout))
            started.append(node)
        old, new = started
        settings.MAILPANEL_NODE_SMTP_PORT = new.exim.port
        yield domain, old, new, ports


def listening(address: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex((address, port)) == 0


def start_copy(domain, old, new, settings):
    """Move example.org to b up to its copy phase (b has the domain's files)."""
    nodes.move_domain(None, domain, new.model)
    move = DomainMove.objects.get()
    run_applies(new, settings)
    on(new, settings, domain_move.arrived, move.pk)
    move.refresh_from_db()
    assert move.phase == MovePhase.COPYING, move.log
    return move


@pytest.mark.django_db
def test_each_nodes_helper_renders_its_doveadm_listener_on_its_own_address(remote_nodes, settings):
    _domain, old, new, ports = remote_nodes
    for node, address, port in ((old, "127.0.0.2", ports["main"]), (new, "127.0.0.1", ports["b"])):
        conf = doveconf(node.layout)  # real doveconf -n of the helper's 2.3 file
        assert f"service doveadm {{\n  inet_listener {{\n    address = {address}\n    port = {port}\n    ssl = yes\n" in conf
        assert "doveadm_password = # hidden" in conf and PASSWORD not in conf
        assert PASSWORD not in Path(mailstack.dovecot_conf(node.layout)).read_text()
        nft = Path(node.layout.path("/etc/nftables.d/mailpanel.nft")).read_text()
        other = "127.0.0.1" if address == "127.0.0.2" else "127.0.0.2"
        assert f"ip saddr {{ {other} }} tcp dport {port} accept" in nft
        assert listening(address, port)
    # bound to the node's own address only
    assert not listening("127.0.0.1", ports["main"]) and not listening("127.0.0.2", ports["b"])
    # The panel reads root's peers file too (0644, no secret): it renders what
    # the helper did, so the next full apply has nothing to do.
    settings.MAILPANEL_ROOT = old.layout.root
    settings.MAILPANEL_LAYOUT = {k: v for k, v in dataclasses.asdict(old.layout).items() if k != "root"}
    log = []
    on(old, settings, apply.apply_now, log.append, None, old.model)
    assert log[-1] == "nothing to do: the live configuration is up to date", log


@pytest.mark.django_db
def test_a_domain_moved_to_another_machine_copies_its_mail_over_doveadm_tcp(remote_nodes, settings, queued):
    domain, old, new, _ports = remote_nodes
    sent = {box: [] for box in BOXES}
    for i in range(4):
        for box in BOXES:
            sent[box].append(old.send(f"before {i} {box}", f"{box}@example.org"))
    for box in BOXES:
        old.dovecot.wait_for_messages(f"{box}@example.org", 4)

    move = start_copy(domain, old, new, settings)
    on(old, settings, domain_move.copy, move.pk)
    move.refresh_from_db()
    assert move.phase == MovePhase.FORWARDING and move.error == "", move.log
    assert "copied 2 mailbox(es)" in move.log
    for box in BOXES:
        assert len(new.dovecot.messages(f"{box}@example.org")) == 4

    # Delivered at the old node after the copy, before it forwards: the final sync's.
    for box in BOXES:
        sent[box].append(old.send(f"after copy {box}", f"{box}@example.org"))
        old.dovecot.wait_for_messages(f"{box}@example.org", 5)
    run_applies(old, settings)
    for box in BOXES:
        sent[box].append(old.send(f"forwarded {box}", f"{box}@example.org"))
        new.dovecot.wait_for_messages(f"{box}@example.org", 5)

    domain_move.confirm(None, move)
    on(old, settings, domain_move.finish, move.pk)
    move.refresh_from_db()
    assert move.phase == MovePhase.DONE and move.error == "", move.log
    for box in BOXES:
        got = new.imap_message_ids(f"{box}@example.org")
        assert sorted(got) == sorted(sent[box]) and len(got) == 6
    assert not (old.mail_root / "example.org").exists()


@pytest.mark.django_db
def test_a_wrong_password_is_refused_and_nothing_is_copied(remote_nodes, settings, queued):
    domain, old, new, _ports = remote_nodes
    old.send("before", "alice@example.org")
    old.dovecot.wait_for_messages("alice@example.org", 1)
    move = start_copy(domain, old, new, settings)
    # The old node's secret differs from the new node's: b's doveadm refuses.
    write_root_file(old.layout, mp.DOVEADM_PASSWORD_FILE, OTHER_PASSWORD + "\n", 0o600)
    with pytest.raises(RuntimeError, match="doveadm authentication failed"):
        on(old, settings, domain_move.copy, move.pk)
    move.refresh_from_db()
    assert move.phase == MovePhase.COPYING and "authentication failed" in move.error, move.log
    assert PASSWORD not in move.error + move.log and OTHER_PASSWORD not in move.error + move.log
    assert new.dovecot.messages("alice@example.org") == []
    # root puts the shared secret back: the retried phase copies
    write_root_file(old.layout, mp.DOVEADM_PASSWORD_FILE, PASSWORD + "\n", 0o600)
    domain_move.retry(None, move)
    on(old, settings, domain_move.copy, move.pk)
    move.refresh_from_db()
    assert move.phase == MovePhase.FORWARDING, move.log
    assert len(new.dovecot.messages("alice@example.org")) == 1
