"""The helper's sync_mail op (a domain's mailboxes copied to another node with
dsync) as a compromised panel would drive it: the request names a domain,
local parts and a peer; where that peer's mail lives is root's choice in
/etc/mailpanel/mail-peers.json. Every hostile request is refused before
doveadm runs, and nothing under the root changes. The copy itself, with real
Dovecot, is in tests/test_domain_move_mailstack.py."""

import json
import os
from pathlib import Path

import pytest

from tests.test_helper_hostile import MARKER, SECRET, TOUCH, run, tree_state

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the helper's checks of root's files need root")

MAIL_ROOT = "var/mail/vhosts"


@pytest.fixture
def node(tmp_path):
    """A node root with mail of example.org (alice) and root's peer list
    naming "b" (a mail root outside this node's root)."""
    root = tmp_path / "root"
    (root / MAIL_ROOT / "example.org" / "alice" / "Maildir" / "cur").mkdir(parents=True)
    (root / MAIL_ROOT / "example.org" / "alice" / "Maildir" / "cur" / "1.msg").write_text("Subject: hi\n\nhello\n")
    peer = tmp_path / "peer-mail"
    peer.mkdir()
    peers = root / "etc/mailpanel/mail-peers.json"
    peers.parent.mkdir(parents=True)
    peers.write_text(json.dumps({"b": {"mail_root": str(peer)}}))
    peers.chmod(0o644)
    return root, peer


def request(**overrides):
    return {"op": "sync_mail", "domain": "example.org", "local_parts": ["alice"], "peer": "b", **overrides}


HOSTILE = {
    "domain climbing out": request(domain="../../etc"),
    "domain with a slash": request(domain="example.org/../../root"),
    "domain upper case": request(domain="Example.org"),
    "domain not a string": request(domain=["example.org"]),
    "domain option": request(domain="-c/tmp/x.conf"),
    "local part climbing out": request(local_parts=["../../../root"]),
    "local part an option": request(local_parts=["-oMail_location=maildir:/root"]),
    "local part with a blank": request(local_parts=["alice bob"]),
    "local part with a newline": request(local_parts=["alice\nbob"]),
    "local part with an at": request(local_parts=["alice@other.example"]),
    "local part too long": request(local_parts=["a" * 65]),
    "local parts not a list": request(local_parts="alice"),
    "local part not a string": request(local_parts=[1]),
    "too many local parts": request(local_parts=["a%d" % i for i in range(10001)]),
    "peer a path": request(peer="../b"),
    "peer a mail location": request(peer="maildir:/root"),
    "peer a command": request(peer="b; " + TOUCH),
    "peer upper case": request(peer="B"),
    "peer not in root's list": request(peer="c"),
    "destination in the request": {**request(), "destination": "maildir:/root"},
    "dsync options in the request": {**request(), "options": ["-R"]},
    "missing peer": {"op": "sync_mail", "domain": "example.org", "local_parts": ["alice"]},
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_sync_requests_are_refused_before_doveadm_runs(node, case):
    root, peer = node
    before, peer_before = tree_state(root), tree_state(peer)
    status, output = run(root, HOSTILE[case])
    assert status == 2, output
    assert json.loads(output)["refused"] is True
    assert not MARKER.exists() and str(SECRET) not in output
    assert tree_state(root) == before and tree_state(peer) == peer_before


def test_no_peer_list_no_sync(node):
    root, _peer = node
    (root / "etc/mailpanel/mail-peers.json").unlink()
    status, output = run(root, request())
    assert status == 2 and json.loads(output)["rule"] == "unknown peer", output


def test_a_peer_that_is_this_nodes_own_mail_root_is_refused(node):
    root, _peer = node
    (root / "etc/mailpanel/mail-peers.json").write_text(json.dumps({"b": {"mail_root": str(root / MAIL_ROOT)}}))
    status, output = run(root, request())
    assert status == 2 and "own mail root" in output, output


BAD_PEER_LISTS = {
    "relative mail root": {"b": {"mail_root": "var/mail"}},
    "mail root with a colon": {"b": {"mail_root": "/tmp/x:INDEX=/root"}},
    "mail root with a blank": {"b": {"mail_root": "/tmp/a b"}},
    "mail root climbing": {"b": {"mail_root": "/tmp/../root"}},
    "mail root /": {"b": {"mail_root": "/"}},
    "a remote command": {"b": {"mail_root": "/tmp/x", "remote": "ssh b " + TOUCH}},
    "not an object": {"b": "/tmp/x"},
}


@pytest.mark.parametrize("case", sorted(BAD_PEER_LISTS))
def test_a_peer_list_root_did_not_write_right_stops_the_sync(node, case):
    root, peer = node
    (root / "etc/mailpanel/mail-peers.json").write_text(json.dumps(BAD_PEER_LISTS[case]))
    before = tree_state(root)
    status, output = run(root, request())
    assert status == 1 and "mail-peers.json" in output, output
    assert tree_state(root) == before and not MARKER.exists() and not any(peer.iterdir())


def test_a_peer_list_others_may_write_is_not_trusted(node):
    root, peer = node
    peers = root / "etc/mailpanel/mail-peers.json"
    peers.chmod(0o666)
    status, output = run(root, request())
    assert status == 1 and "writable only by root" in output, output
    os.chown(peers, 65534, 65534)
    peers.chmod(0o644)
    status, output = run(root, request())
    assert status == 1 and "must belong to root" in output, output
    assert not any(peer.iterdir())


def test_mailboxes_without_mail_here_are_listed_and_not_synced(node):
    root, peer = node
    status, output = run(root, request(local_parts=["nobody-here", "other"]))
    assert status == 0, output
    assert json.loads(output) == {"ok": True, "synced": [], "missing": ["nobody-here", "other"]}
    assert not any(peer.iterdir())


def test_a_symlinked_domain_folder_is_not_followed(node, tmp_path):
    root, peer = node
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "alice").mkdir(parents=True)
    os.rename(root / MAIL_ROOT / "example.org", tmp_path / "moved")
    (root / MAIL_ROOT / "example.org").symlink_to(elsewhere)
    status, output = run(root, request())
    assert status == 0 and json.loads(output)["missing"] == ["alice"], output
    assert not any(peer.iterdir())


def test_doveadm_must_be_roots(node):
    """The program sync_mail runs is looked up on the helper's own PATH and
    checked: owned by root, writable by nobody else, up to /."""
    from tests.test_helper import load_helper_module

    helper = load_helper_module()
    path = helper._root_program("doveadm")
    assert Path(path).stat().st_uid == 0
