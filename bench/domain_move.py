"""A domain's mail copied to another node (issue 18 step 4): the helper's
sync_mail (doveadm sync -1) with real Dovecot on loopback (tests/mailstack.py
trees), once between two mail roots on this machine ("maildir") and once over
the new node's doveadm TCP service with TLS, as between two machines ("tcps":
listener on 127.0.0.1, the helper-rendered dovecot.conf of mailconf/peers.py). Prints the first copy, a
repeated copy with nothing new (the final sync's floor) and one with a few new
messages, and checks the new node's message count. Needs root (Dovecot, the
helper). Run: .venv/bin/python bench/domain_move.py

BENCH_MOVE_BOXES (20) mailboxes × BENCH_MOVE_MESSAGES (500) messages of ~2 KB.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mailconf import peers as mp  # noqa: E402
from mailconf.params import code_params  # noqa: E402
from mailconf.render import render_code  # noqa: E402
from mailconf.render.dovecot import DOVECOT_CONF  # noqa: E402
from mailconf.snapshot import Domain, Mailbox, ServerIdentity, Snapshot  # noqa: E402
from tests import mailstack  # noqa: E402

BOXES = int(os.environ.get("BENCH_MOVE_BOXES", "20"))
MESSAGES = int(os.environ.get("BENCH_MOVE_MESSAGES", "500"))
TRANSPORTS = os.environ.get("BENCH_MOVE_TRANSPORTS", "maildir tcps").split()
PASSWORD = "YmVuY2gtZG92ZWFkbS1zZWNyZXQtb2YtdGhlLW5vZGVz"
HELPER = ROOT / "deploy" / "mailpanel_helper.py"
BODY = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 30 + "\n").encode()


def put_messages(maildir: Path, start: int, count: int) -> None:
    """Messages as a delivery leaves them in new/ (Dovecot indexes them when it reads)."""
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    for i in range(start, start + count):
        data = (f"From: s@elsewhere.test\nTo: x@example.org\nSubject: m {i}\n"
                f"Message-ID: <bench-{maildir.parent.name}-{i}@test>\n\n").encode() + BODY
        (maildir / "new" / f"{1700000000 + i}.M{i}P1.bench,S={len(data)}").write_bytes(data)
    subprocess.run(["chown", "-R", "mail:mail", str(maildir.parent)], check=True)


def sync(root: str, boxes: list[str]) -> float:
    request = {"op": "sync_mail", "domain": "example.org", "local_parts": boxes, "peer": "b"}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, str(HELPER), "--root", root], input=json.dumps(request).encode(),
                          capture_output=True, timeout=3600)
    elapsed = time.perf_counter() - started
    answer = json.loads(proc.stdout)
    assert answer.get("ok") and len(answer["synced"]) == len(boxes), answer
    return elapsed


def root_file(layout, production: str, content: str, mode: int) -> None:
    path = Path(layout.path(production))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    os.chmod(path, mode)


def tcps_peers(snapshot, old, new) -> None:
    """Root's peer files and shared password on both nodes, and dovecot.conf
    with the doveadm listeners rendered from them (old 127.0.0.2, new 127.0.0.1:
    the test certificate's address)."""
    ports = {"a": mailstack.free_port(), "b": mailstack.free_port()}
    for layout, me, other, listen in ((old, "a", "b", "127.0.0.2"), (new, "b", "a", "127.0.0.1")):
        there = "127.0.0.1" if listen == "127.0.0.2" else "127.0.0.2"
        content = json.dumps({me: {"this_node": True, "address": listen, "port": ports[me]},
                              other: {"host": there, "address": there, "port": ports[other]}})
        root_file(layout, mp.MAIL_PEERS_FILE, content, 0o644)
        root_file(layout, mp.DOVEADM_PASSWORD_FILE, PASSWORD + "\n", 0o600)
        files = render_code(code_params(snapshot), layout, (), mp.parse_mail_peers(content.encode()))
        mailstack.write_rendered({DOVECOT_CONF: files[DOVECOT_CONF]}, layout, prune=False)


def main() -> None:
    mailstack.require_root()
    for transport in TRANSPORTS:
        run(transport)


def run(transport: str) -> None:
    boxes = [f"box{i:03d}" for i in range(BOXES)]
    hashed = mailstack.password_hash("bench-pass")
    snapshot = Snapshot(server=ServerIdentity(hostname="mx.bench.test"), domains=(
        Domain("example.org", dkim_enabled=False, mailboxes=tuple(Mailbox(b, hashed) for b in boxes)),))
    tmp = Path(tempfile.mkdtemp(prefix="mailpanel-bench-move-"))
    tls = transport == "tcps"
    old, new = mailstack.render_tree(snapshot, tmp, tls=tls), mailstack.render_tree(snapshot, tmp, tls=tls)
    old_mail, new_mail = Path(old.path(old.mail_root)), Path(new.path(new.mail_root))
    if tls:
        tcps_peers(snapshot, old, new)
    else:
        root_file(old, mp.MAIL_PEERS_FILE, json.dumps({"b": {"mail_root": str(new_mail)}}), 0o644)
    try:
        for box in boxes:
            put_messages(old_mail / "example.org" / box / "Maildir", 0, MESSAGES)
        size = sum(f.stat().st_size for f in old_mail.rglob("*") if f.is_file())
        with mailstack.dovecot_daemon(old), mailstack.dovecot_daemon(new):
            first = sync(old.root, boxes)
            again = sync(old.root, boxes)
            for box in boxes:
                put_messages(old_mail / "example.org" / box / "Maildir", MESSAGES, 5)
            final = sync(old.root, boxes)
        copied = sum(len(list((new_mail / "example.org" / b / "Maildir" / "cur").iterdir()))
                     + len(list((new_mail / "example.org" / b / "Maildir" / "new").iterdir())) for b in boxes)
        assert copied == BOXES * (MESSAGES + 5), copied
        total = BOXES * MESSAGES
        print(f"domain move over {transport}, {BOXES} mailboxes x {MESSAGES} messages"
              f" ({total} messages, {size / 1e6:.1f} MB):")
        print(f"  first copy (sync_mail)       {first:7.2f} s  ({total / first:,.0f} messages/s)")
        print(f"  again, nothing new           {again:7.2f} s  ({again / BOXES * 1000:.0f} ms a mailbox)")
        print(f"  final, 5 new a mailbox       {final:7.2f} s")
        print(f"  on the new node              {copied} messages (none twice)")
        print(f"  load average                 {os.getloadavg()[0]:.1f}")
    finally:
        mailstack.remove_trees()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
