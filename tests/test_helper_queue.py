"""The helper's queue, log and session ops (queue_list, queue_show,
queue_action, held_senders, kick_mailbox, log_search), run as a real process
with --root on a tree whose spool a real Exim filled. Hostile requests first:
each is refused before Exim or doveadm runs, and nothing in the spool moves.
No Django."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mailconf.snapshot import Domain, Mailbox, Relay, SendLimits, ServerIdentity, Snapshot
from tests import mailstack
from tests.mailstack import _exim, make_message

HELPER = Path(__file__).resolve().parent.parent / "deploy" / "mailpanel_helper.py"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="reading Exim's spool needs root")

ID_96 = "1xXECy-00081o-0g"
ID_97 = "1xXECy-00000000081-0000"


@pytest.fixture(autouse=True)
def _english():
    """No Django here (see tests/test_render_exim.py)."""


def run_helper(root, request, raw=None):
    data = raw if raw is not None else json.dumps(request).encode()
    proc = subprocess.run(
        [sys.executable, str(HELPER), "--root", str(root)], input=data, capture_output=True, timeout=60
    )
    assert proc.stderr == b"", proc.stderr.decode()
    return proc.returncode, json.loads(proc.stdout)


def submit(layout, messages, *args):
    """One ``exim -bs`` session (queued only, -odq) with a transaction per
    (sender, recipients, subject); extra args e.g. -oMt www-data. Returns the
    ids Exim gave, in order."""
    lines = [b"EHLO client.example"]
    for sender, recipients, subject in messages:
        body = make_message(sender, recipients[0], subject=subject).replace(b"\n", b"\r\n") + b"."
        lines += [f"MAIL FROM:<{sender}>".encode(), *(f"RCPT TO:<{r}>".encode() for r in recipients),
                  b"DATA", body]
    lines.append(b"QUIT")
    proc = _exim(layout, "-odq", *args, "-bs", input=b"\r\n".join(lines) + b"\r\n")
    out = proc.stdout.decode()
    return [line.split("id=")[1].strip() for line in out.splitlines() if "250 OK id=" in line]


def spool(layout) -> Path:
    return Path(layout.path(layout.spool_dir)) / "input"


def spool_state(layout) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(spool(layout).iterdir())}


@pytest.fixture
def queue_tree(mailstack_tree, smtp_sinks):
    """hosted.example (mailboxes alice, bob; Unix user www-data mapped to it)
    with a server-wide limit of 2 messages an hour; a sink as global relay.
    In the queue: 4 local submissions by www-data (2 held), 1 from root
    (unmapped, never held), 1 for a hosted mailbox."""
    sink = smtp_sinks()
    snap = Snapshot(
        server=ServerIdentity(hostname="mx.test.example"),
        domains=(
            Domain("hosted.example", dkim_enabled=False, local_senders=("www-data",),
                   mailboxes=(Mailbox("alice", "{PLAIN}alice-pw"), Mailbox("bob", "{PLAIN}bob-pw"))),
            Domain("other.example", dkim_enabled=False, mailboxes=(Mailbox("carol", "{PLAIN}c"),)),
        ),
        global_relay=Relay("127.0.0.1", sink.port, tls="none"),
        send_limits=SendLimits(per_hour=2),
    )
    layout = mailstack_tree(snap)
    mapped = submit(layout, [("web@hosted.example", [f"r{n}@foreign.example", "cc@foreign.example"], f"web {n}")
                             for n in range(4)], "-oMt", "www-data")
    unmapped = submit(layout, [("cron@other.example", ["admin@foreign.example"], "cron")])
    inbound = submit(layout, [("x@foreign.example", ["carol@other.example"], "inbound")])
    assert len(mapped) == 4 and len(unmapped) == 1 and len(inbound) == 1
    return layout, sink, {"mapped": mapped, "unmapped": unmapped, "inbound": inbound}


# -- hostile requests ------------------------------------------------------------

BAD_IDS = [
    "../../etc/passwd", ID_96 + "\n", ID_96 + " ", " " + ID_96, "-C/tmp/x", "-Mrm", ID_96[:-1],
    ID_96 + "-H", ID_96 + "-D", "1xXECy-000000081o-0000", "1xXECy-00081o-0g0", "1xXECy_00081o-0g",
    "１xXECy-00081o-0g", "1xXECy-00081o-0ğ", "", "*", 5, None, ["x"], {"id": ID_96},
]


@pytest.mark.parametrize("bad", BAD_IDS, ids=repr)
def test_a_message_id_not_in_exims_format_is_refused_before_exim_runs(queue_tree, bad):
    layout, _sink, ids = queue_tree
    before = spool_state(layout)
    for request in (
        {"op": "queue_action", "action": "delete", "ids": [ids["mapped"][0], bad]},
        {"op": "queue_show", "id": bad},
    ):
        code, answer = run_helper(layout.root, request)
        assert code == 2, answer
        assert answer["rule"] in ("bad message id", "bad request")
    assert spool_state(layout) == before


@pytest.mark.parametrize(
    "request_",
    [
        {"op": "queue_action", "action": "-bh", "ids": [ID_96]},
        {"op": "queue_action", "action": "deliver -C /tmp/x", "ids": [ID_96]},
        {"op": "queue_action", "action": "Mrm", "ids": [ID_96]},
        {"op": "queue_action", "action": None, "ids": [ID_96]},
        {"op": "queue_action", "action": ["delete"], "ids": [ID_96]},
        {"op": "queue_action", "action": "delete", "ids": []},
        {"op": "queue_action", "action": "delete", "ids": ID_96},
        {"op": "queue_action", "action": "delete", "ids": [ID_96] * 1001},
        {"op": "queue_action", "action": "delete"},
        {"op": "queue_action", "action": "delete", "ids": [ID_96], "sender_key": "a@b.example"},
        {"op": "queue_action", "action": "delete", "sender_key": ""},
        {"op": "queue_action", "action": "delete", "sender_key": "a@b.example\n"},
        {"op": "queue_action", "action": "delete", "ids": [ID_96], "options": ["-C", "/tmp/x"]},
        {"op": "queue_action", "action": "delete", "ids": [ID_96], "spool_dir": "/tmp"},
        {"op": "queue_show", "id": ID_96, "body": "yes"},
        {"op": "queue_show", "id": ID_96, "path": "/etc/shadow"},
        {"op": "queue_list", "offset": -1},
        {"op": "queue_list", "offset": "0"},
        {"op": "queue_list", "limit": 201},
        {"op": "queue_list", "limit": True},
        {"op": "queue_list", "sender": "a\nb"},
        {"op": "queue_list", "sender": "x" * 321},
        {"op": "queue_list", "recipient": 5},
        {"op": "queue_list", "domains": ["Hosted.Example"]},
        {"op": "queue_list", "domains": ["../etc"]},
        {"op": "queue_list", "domains": "hosted.example"},
        {"op": "queue_list", "frozen": "yes"},
        {"op": "queue_list", "held": 1},
        {"op": "queue_list", "spool_dir": "/etc"},
        {"op": "held_senders", "limit": 5},
    ],
    ids=lambda r: json.dumps(r)[:80],
)
def test_hostile_queue_requests_are_refused_and_touch_nothing(queue_tree, request_):
    layout, _sink, _ids = queue_tree
    before = spool_state(layout)
    code, answer = run_helper(layout.root, request_)
    assert code == 2, answer
    assert answer["refused"] is True
    assert spool_state(layout) == before


@pytest.mark.parametrize(
    "address",
    ["*@hosted.example", "a?c@hosted.example", "alice*@hosted.example", "-a@hosted.example",
     "alice@hosted.example\n", "alice@", "@hosted.example", "alice@-x.example", "Alice@hosted.example",
     "alice@hosted.example -A", "a" * 300 + "@hosted.example", "alice", None, ["alice@hosted.example"]],
    ids=repr,
)
def test_kick_takes_one_plain_mailbox_address_never_a_mask_or_an_option(tmp_path, address):
    code, answer = run_helper(tmp_path, {"op": "kick_mailbox", "address": address})
    assert code == 2, answer
    assert answer["rule"] == "bad address"


@pytest.mark.parametrize(
    "request_",
    [
        {"op": "log_search", "terms": "alice@hosted.example"},
        {"op": "log_search", "terms": []},
        {"op": "log_search", "terms": ["abc"] * 6},
        {"op": "log_search", "terms": ["alice\n2026-11-28 fake line"]},
        {"op": "log_search", "terms": ["ab"]},
        {"op": "log_search", "terms": ["   ab  "]},
        {"op": "log_search", "terms": [None]},
        {"op": "log_search", "terms": ["x" * 321]},
        {"op": "log_search", "terms": ["alice"], "days": 0},
        {"op": "log_search", "terms": ["alice"], "days": 61},
        {"op": "log_search", "terms": ["alice"], "days": "3"},
        {"op": "log_search", "terms": ["alice"], "days": True},
        {"op": "log_search", "terms": ["alice"], "limit": 0},
        {"op": "log_search", "terms": ["alice"], "limit": 2001},
        {"op": "log_search", "terms": ["alice"], "path": "/etc/shadow"},
        {"op": "log_search", "terms": ["alice"], "log_dir": "/etc"},
        {"op": "log_search", "terms": ["alice"], "regex": ".*"},
    ],
    ids=lambda r: json.dumps(r)[:80],
)
def test_hostile_log_searches_are_refused(tmp_path, request_):
    code, answer = run_helper(tmp_path, request_)
    assert code == 2, answer
    assert answer["refused"] is True


def test_a_linked_spool_file_is_never_read(queue_tree, tmp_path):
    """Exim's user owns the spool: a -H file it turned into a link to a file
    of root's (or a hard link, if the kernel allowed one) is skipped."""
    layout, _sink, ids = queue_tree
    secret = Path(layout.root) / "secret-H"
    victim = ids["mapped"][0]
    header = spool(layout) / f"{victim}-H"
    secret.write_bytes(header.read_bytes().replace(b"web@hosted.example", b"SECRET@hosted.example"))
    header.unlink()
    header.symlink_to(secret)
    other = ids["mapped"][1]
    other_header = spool(layout) / f"{other}-H"
    other_header.unlink()
    os.link(secret, other_header)
    code, answer = run_helper(layout.root, {"op": "queue_list", "limit": 200})
    assert code == 0, answer
    listed = {m["id"] for m in answer["messages"]}
    assert victim not in listed and other not in listed
    assert "SECRET" not in json.dumps(answer)
    code, answer = run_helper(layout.root, {"op": "queue_show", "id": victim})
    assert answer == {"ok": True, "found": False}


def test_a_linked_log_file_is_never_read(tmp_path):
    secret = tmp_path / "shadow"
    secret.write_text("2026-11-28 09:00:00 root:$6$SECRET:19000::::::\n")
    logs = tmp_path / "var" / "log" / "exim4"
    logs.mkdir(parents=True)
    (logs / "mainlog").symlink_to(secret)
    os.link(secret, logs / "mainlog.1")
    code, answer = run_helper(tmp_path, {"op": "log_search", "terms": ["root"]})
    assert code == 0, answer
    assert answer["lines"] == []


def test_where_the_spool_is_comes_from_the_helpers_layout_only(queue_tree):
    layout, _sink, _ids = queue_tree
    # the layout file under --root (root's) moves the spool; the request cannot
    layout_file = Path(layout.root) / "etc" / "mailpanel" / "layout.json"
    layout_file.parent.mkdir(parents=True, exist_ok=True)
    layout_file.write_text(json.dumps({"spool_dir": "/nowhere"}))
    code, answer = run_helper(layout.root, {"op": "queue_list"})
    assert (code, answer["total"]) == (0, 0)
    layout_file.unlink()
    code, answer = run_helper(layout.root, {"op": "queue_list"})
    assert (code, answer["total"]) == (0, 6)


# -- the envelope cache: root's own file, anything odd about it is ignored ------------------

CACHE_DIR = Path("var/cache/mailpanel-helper")
CACHE = CACHE_DIR / "queue-envelopes"


def forged_cache(layout, ids) -> bytes:
    """The cache a filtered page wrote, with one sender changed to FORGED and
    the checksum made to fit: what the helper would show if it took the file."""
    code, _answer = run_helper(layout.root, {"op": "queue_list", "held": True})
    assert code == 0
    raw = (Path(layout.root) / CACHE).read_bytes()
    _head, _newline, body = raw.partition(b"\n")
    data = json.loads(body)
    data["entries"][ids["mapped"][2]][6] = "FORGED@hosted.example"
    body = json.dumps(data).encode()
    return b"mailpanel-queue-envelopes 1 " + hashlib.sha256(body).hexdigest().encode() + b"\n" + body


def listed_senders(layout):
    code, answer = run_helper(layout.root, {"op": "queue_list", "held": True})
    assert code == 0, answer
    return [m["sender"] for m in answer["messages"]]


def test_the_envelope_cache_is_roots_alone_and_follows_the_spool(queue_tree):
    layout, _sink, ids = queue_tree
    assert listed_senders(layout) == ["web@hosted.example"] * 2
    cache = Path(layout.root) / CACHE
    assert (cache.parent.stat().st_mode & 0o777, cache.stat().st_mode & 0o777) == (0o700, 0o600)
    assert (cache.stat().st_uid, cache.parent.stat().st_uid) == (0, 0)
    # a root-owned cache with a good checksum is taken as it is (only root writes it) ...
    cache.write_bytes(forged_cache(layout, ids))
    assert "FORGED@hosted.example" in listed_senders(layout)
    # ... until Exim rewrites that message's -H file: it is read again
    code, answer = run_helper(layout.root, {"op": "queue_action", "action": "thaw", "ids": [ids["mapped"][2]]})
    assert code == 0, answer
    code, answer = run_helper(layout.root, {"op": "queue_list", "held": True, "frozen": True})
    assert [m["id"] for m in answer["messages"]] == [ids["mapped"][3]]
    code, answer = run_helper(layout.root, {"op": "queue_list", "domains": ["hosted.example"]})
    assert "FORGED" not in json.dumps(answer) and answer["frozen"] == 1


def test_a_temp_file_a_killed_helper_left_in_the_cache_folder_goes_once_a_minute_old(queue_tree):
    layout, _sink, _ids = queue_tree
    folder = Path(layout.root) / CACHE_DIR
    folder.mkdir(parents=True, mode=0o700)
    old, fresh = folder / ".queue-envelopes.mailpanel-tmp-0123456789ab", folder / ".queue-envelopes.mailpanel-tmp-ba9876543210"
    for path in (old, fresh):
        path.write_bytes(b"half a cache")
    os.utime(old, (time.time() - 61, time.time() - 61))
    listed_senders(layout)  # writes the cache
    assert not old.exists() and fresh.exists()


def test_a_settled_spool_is_listed_from_the_cache_until_exim_changes_it(queue_tree):
    """The spool folder unchanged for 2 s: the cache is the queue (no -H file
    looked at); the next change Exim makes there is seen at once."""
    layout, _sink, ids = queue_tree
    time.sleep(2.1)
    run_helper(layout.root, {"op": "queue_list", "held": True})
    folder_key = json.loads((Path(layout.root) / CACHE).read_bytes().partition(b"\n")[2])["folder"]
    assert folder_key is not None
    code, answer = run_helper(layout.root, {"op": "queue_action", "action": "freeze", "ids": [ids["mapped"][0]]})
    assert code == 0, answer
    code, answer = run_helper(layout.root, {"op": "queue_list", "frozen": True})
    assert [m["id"] for m in answer["messages"]] == [ids["mapped"][0], *ids["mapped"][2:]]
    code, answer = run_helper(layout.root, {"op": "queue_action", "action": "delete", "ids": [ids["mapped"][0]]})
    code, answer = run_helper(layout.root, {"op": "queue_list", "frozen": True})
    assert [m["id"] for m in answer["messages"]] == ids["mapped"][2:]


def plant_cache(cache: Path, forged: bytes, tamper: str, tmp_path: Path, limit: int) -> None:
    """Put forged where the helper's cache file was, as tamper says: behind a
    symlink, oversize (limit + 1, sparse), another owner's, group-readable, a
    second hard link, a folder instead; any other tamper: as it is (0600)."""
    if tamper == "symlink":
        target = tmp_path / "planted"
        target.write_bytes(forged)
        target.chmod(0o600)
        cache.symlink_to(target)
        return
    if tamper == "a folder":
        cache.mkdir()
        return
    cache.write_bytes(forged)
    cache.chmod(0o640 if tamper == "group-readable" else 0o600)
    if tamper == "oversize":
        os.truncate(cache, limit + 1)  # sparse: no disk used
    elif tamper == "another owner":
        os.chown(cache, 65534, 65534)
    elif tamper == "hard link":
        os.link(cache, cache.parent.parent / "second-name")


@pytest.mark.parametrize(
    "tamper", ["symlink", "bad checksum", "not the cache's shape", "oversize", "another owner",
               "group-readable", "hard link", "a folder"],
)
def test_a_cache_file_anyone_else_could_have_made_is_ignored_and_rebuilt(queue_tree, tmp_path, tamper):
    layout, _sink, ids = queue_tree
    forged = forged_cache(layout, ids)
    cache = Path(layout.root) / CACHE
    cache.unlink()
    if tamper == "bad checksum":
        forged = forged.replace(b"envelopes 1 ", b"envelopes 1 0")
    elif tamper == "not the cache's shape":
        body = json.dumps({"spool": str(spool(layout)), "folder": None, "entries": {ids["mapped"][2]: ["x"]}})
        forged = (b"mailpanel-queue-envelopes 1 " + hashlib.sha256(body.encode()).hexdigest().encode()
                  + b"\n" + body.encode())
    plant_cache(cache, forged, tamper, tmp_path, 256 * 1024 * 1024)

    assert listed_senders(layout) == ["web@hosted.example"] * 2
    if tamper == "a folder":
        return  # nothing to replace it with: the answer came from the spool
    st = os.lstat(cache)  # rebuilt: root's own plain file again
    assert stat.S_ISREG(st.st_mode) and (st.st_uid, st.st_nlink, st.st_mode & 0o777) == (0, 1, 0o600)
    assert b"FORGED" not in cache.read_bytes()
    if tamper == "symlink":
        assert (tmp_path / "planted").read_bytes() == forged  # the link was replaced, not followed


@pytest.mark.parametrize("tamper", ["another owner", "group-writable", "symlink"])
def test_a_cache_folder_that_is_not_roots_alone_is_not_used(queue_tree, tmp_path, tamper):
    layout, _sink, ids = queue_tree
    forged = forged_cache(layout, ids)
    folder = Path(layout.root) / CACHE_DIR
    (folder / CACHE.name).write_bytes(forged)
    if tamper == "another owner":
        os.chown(folder, 65534, 65534)
    elif tamper == "group-writable":
        folder.chmod(0o770)
    else:
        elsewhere = tmp_path / "elsewhere"
        folder.rename(elsewhere)
        folder.symlink_to(elsewhere)
    before = (folder / CACHE.name).read_bytes()
    assert listed_senders(layout) == ["web@hosted.example"] * 2
    assert (folder / CACHE.name).read_bytes() == before  # neither read nor written


def test_reading_the_queue_and_the_logs_takes_no_lock(queue_tree):
    """A log search reads for up to 8 s: it must neither wait behind an apply
    nor make one wait. The read-only ops run while another helper holds the
    lock; an op that changes something still waits for it."""
    import fcntl

    layout, _sink, ids = queue_tree
    lock = Path(layout.root) / "run" / "mailpanel-helper.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        for request in ({"op": "queue_list", "held": True}, {"op": "queue_show", "id": ids["mapped"][0]},
                        {"op": "held_senders"}, {"op": "log_search", "terms": ["hosted.example"]}):
            proc = subprocess.run([sys.executable, str(HELPER), "--root", layout.root, "--lock-timeout", "1"],
                                  input=json.dumps(request).encode(), capture_output=True, timeout=60)
            assert proc.returncode == 0, proc.stdout
        proc = subprocess.run([sys.executable, str(HELPER), "--root", layout.root, "--lock-timeout", "1"],
                              input=json.dumps({"op": "queue_action", "action": "freeze",
                                                "ids": [ids["mapped"][0]]}).encode(),
                              capture_output=True, timeout=60)
        assert proc.returncode == 1 and b"another helper has held the lock" in proc.stdout
    finally:
        os.close(fd)


# -- the queue -------------------------------------------------------------------------


def test_the_list_reads_envelopes_oldest_first_with_held_mail_marked(queue_tree):
    layout, _sink, ids = queue_tree
    code, answer = run_helper(layout.root, {"op": "queue_list"})
    assert code == 0, answer
    # no filter: a page read alone, nothing counted
    assert (answer["total"], answer["frozen"], answer["held"]) == (6, None, None)
    code, counted = run_helper(layout.root, {"op": "queue_list", "frozen": False})
    assert (counted["total"], counted["frozen"], counted["held"]) == (4, 0, 0)
    code, counted = run_helper(layout.root, {"op": "queue_list", "domains": ["hosted.example"]})
    assert (counted["total"], counted["frozen"], counted["held"]) == (4, 2, 2)
    messages = answer["messages"]
    assert [m["id"] for m in messages] == ids["mapped"] + ids["unmapped"] + ids["inbound"]
    first, third = messages[0], messages[2]
    assert first["sender"] == "web@hosted.example"
    assert first["recipients"] == ["r0@foreign.example", "cc@foreign.example"]
    assert first["ident"] == "www-data" and first["sender_key"] == "*@hosted.example"
    assert not first["frozen"] and first["held"] == ""
    assert third["frozen"] and third["held"] == "hour"
    assert third["size"] > 100
    assert messages[4]["sender_key"] == "" and not messages[4]["frozen"]  # root: not mapped


@pytest.mark.parametrize(
    "filters, expected",
    [
        ({"held": True}, ["mapped2", "mapped3"]),
        ({"frozen": False}, ["mapped0", "mapped1", "unmapped0", "inbound0"]),
        ({"sender": "CRON@"}, ["unmapped0"]),
        ({"recipient": "r3@"}, ["mapped3"]),
        ({"recipient": "carol"}, ["inbound0"]),
        ({"domains": ["other.example"]}, ["unmapped0", "inbound0"]),  # sender's or a recipient's domain
        ({"domains": ["foreign.example"], "held": False}, ["mapped0", "mapped1", "unmapped0", "inbound0"]),
        ({"sender_key": "*@hosted.example"}, ["mapped0", "mapped1", "mapped2", "mapped3"]),
        ({"sender_key": "*@hosted.example", "held": True, "frozen": True}, ["mapped2", "mapped3"]),
        ({"domains": []}, []),
    ],
)
def test_the_list_filters(queue_tree, filters, expected):
    layout, _sink, ids = queue_tree
    names = {f"{kind}{n}": message_id for kind, found in ids.items() for n, message_id in enumerate(found)}
    code, answer = run_helper(layout.root, {"op": "queue_list", **filters})
    assert code == 0, answer
    assert [m["id"] for m in answer["messages"]] == [names[e] for e in expected]
    assert answer["total"] == len(expected)


def test_the_list_pages(queue_tree):
    layout, _sink, ids = queue_tree
    everything = ids["mapped"] + ids["unmapped"] + ids["inbound"]
    code, answer = run_helper(layout.root, {"op": "queue_list", "offset": 2, "limit": 3})
    assert [m["id"] for m in answer["messages"]] == everything[2:5]
    assert answer["total"] == 6
    code, answer = run_helper(layout.root, {"op": "queue_list", "offset": 6})
    assert answer["messages"] == [] and answer["total"] == 6


def test_show_gives_envelope_and_headers_and_the_body_only_when_asked(queue_tree):
    layout, _sink, ids = queue_tree
    code, answer = run_helper(layout.root, {"op": "queue_show", "id": ids["inbound"][0]})
    assert code == 0, answer
    message = answer["message"]
    assert message["recipients"] == ["carol@other.example"]
    assert "Subject: inbound" in message["headers"]
    assert any(h.startswith("Received: from") for h in message["headers"])
    assert "body" not in answer and "Hello." not in json.dumps(answer)
    code, answer = run_helper(layout.root, {"op": "queue_show", "id": ids["inbound"][0], "body": True})
    assert answer["body"] == "Hello.\n" and answer["body_truncated"] is False
    code, answer = run_helper(layout.root, {"op": "queue_show", "id": ID_96})
    assert answer == {"ok": True, "found": False}


def test_an_exim_497_id_is_accepted_and_exim_says_it_has_no_such_message(queue_tree):
    layout, _sink, _ids = queue_tree
    code, answer = run_helper(layout.root, {"op": "queue_action", "action": "freeze", "ids": [ID_97, ID_96]})
    assert code == 0, answer
    assert answer["ids"] == sorted([ID_97, ID_96])
    assert answer["status"] != 0  # neither is in this queue


def test_freeze_thaw_delete_and_bounce_act_through_exim(queue_tree):
    layout, sink, ids = queue_tree
    a, b = ids["mapped"][:2]
    code, answer = run_helper(layout.root, {"op": "queue_action", "action": "freeze", "ids": [a, b]})
    assert code == 0 and answer["status"] == 0, answer
    _, listed = run_helper(layout.root, {"op": "queue_list", "frozen": True})
    assert {a, b} <= {m["id"] for m in listed["messages"]}
    run_helper(layout.root, {"op": "queue_action", "action": "thaw", "ids": [b]})
    _, listed = run_helper(layout.root, {"op": "queue_list", "frozen": True})
    assert a in {m["id"] for m in listed["messages"]} and b not in {m["id"] for m in listed["messages"]}
    code, answer = run_helper(layout.root, {"op": "queue_action", "action": "delete", "ids": [a]})
    assert code == 0 and answer["status"] == 0, answer
    assert not (spool(layout) / f"{a}-H").exists()
    assert f"{a} removed by root" in mailstack.main_log(layout)
    code, answer = run_helper(layout.root, {"op": "queue_action", "action": "bounce", "ids": [b]})
    assert code == 0, answer
    # -Mg gives up: the sender gets a bounce (R= names the cancelled message)
    log = mailstack.main_log(layout)
    assert f"{b} cancelled by root" in log and f"<= <> R={b}" in log
    assert not (spool(layout) / f"{b}-H").exists()
    assert sink.messages == []


def test_release_by_sender_key_delivers_only_that_senders_held_mail(queue_tree):
    layout, sink, ids = queue_tree
    code, answer = run_helper(layout.root, {"op": "queue_action", "action": "deliver",
                                            "sender_key": "*@HOSTED.example"})
    assert code == 0, answer
    assert answer["ids"] == ids["mapped"][2:]
    received = sink.wait_for_messages(2)
    assert sorted(m.data.split(b"Subject: ")[1][:5] for m in received) == [b"web 2", b"web 3"]
    time.sleep(0.3)
    assert len(sink.messages) == 2  # the other queued mail stays queued
    _, listed = run_helper(layout.root, {"op": "queue_list"})
    assert [m["id"] for m in listed["messages"]] == ids["mapped"][:2] + ids["unmapped"] + ids["inbound"]


def test_held_senders_sums_up_each_held_sender(queue_tree):
    layout, _sink, ids = queue_tree
    code, answer = run_helper(layout.root, {"op": "held_senders"})
    assert code == 0, answer
    (held,) = answer["senders"]
    assert held["sender_key"] == "*@hosted.example"
    assert held["count"] == 2 and held["reasons"] == ["hour"]
    assert held["recipients"][0] == ["cc@foreign.example", 2]
    assert ["r2@foreign.example", 1] in held["recipients"]
    assert held["sources"] == [["www-data", 2]]
    assert held["ids"] == ids["mapped"][2:]


def test_log_search_joins_a_messages_lines_by_its_id_and_message_id(queue_tree):
    layout, sink, ids = queue_tree
    mailstack._exim(layout, "-M", ids["unmapped"][0])  # delivered to the sink
    sink.wait_for_messages(1)
    dovecot_log = Path(layout.path("/var/log/mail.log"))
    msgid = "deadbeef@test"
    dovecot_log.write_text(
        f"Nov 28 09:00:00 mx dovecot: lmtp(carol@other.example)<1><s>: msgid=<{msgid}>: saved mail to INBOX\n"
        "Nov 28 09:00:01 mx postfix/smtpd[1]: not dovecot admin@foreign.example\n"
    )
    code, answer = run_helper(layout.root, {"op": "log_search", "terms": ["ADMIN@foreign.example"]})
    assert code == 0, answer
    lines = [(entry["source"], entry["line"]) for entry in answer["lines"]]
    unmapped = ids["unmapped"][0]
    assert [s for s, _line in lines] == ["exim"] * len(lines)
    assert any(f"{unmapped} <= cron@other.example" in line for _s, line in lines)
    assert any(f"{unmapped} => admin@foreign.example" in line for _s, line in lines)
    assert any(f"{unmapped} Completed" in line for _s, line in lines)  # no address, joined by id
    assert not any(ids["inbound"][0] in line for _s, line in lines)
    # a Message-ID joins Dovecot's line (and not the syslog lines of others)
    code, answer = run_helper(layout.root, {"op": "log_search", "terms": [msgid]})
    assert [(e["source"], "saved mail to INBOX" in e["line"]) for e in answer["lines"]] == [("dovecot", True)]


def test_log_search_output_is_bounded(queue_tree):
    layout, _sink, _ids = queue_tree
    log = Path(layout.path(layout.log_dir)) / "mainlog"
    with log.open("a") as f:
        for n in range(3000):
            f.write(f"2026-11-28 09:00:00 {ID_96} == spam{n}@foreign.example R=x defer " + "y" * 3000 + "\n")
    code, answer = run_helper(layout.root, {"op": "log_search", "terms": ["foreign.example"], "limit": 100})
    assert code == 0, answer
    assert len(answer["lines"]) == 100 and answer["truncated"] is True
    assert max(len(e["line"]) for e in answer["lines"]) <= 2000


def test_kick_ends_a_mailboxs_imap_sessions(mailstack_tree):
    import imaplib

    layout = mailstack_tree(Snapshot(domains=(Domain("hosted.example", dkim_enabled=False,
                                                     mailboxes=(Mailbox("alice", "{PLAIN}alice-pw"),)),)))
    with mailstack.dovecot_daemon(layout):
        imap = imaplib.IMAP4(mailstack.LOOPBACK, layout.imap_port, timeout=10)
        imap.login("alice@hosted.example", "alice-pw")
        code, answer = run_helper(layout.root, {"op": "kick_mailbox", "address": "alice@hosted.example"})
        assert code == 0, answer
        assert answer["kicked"] is True
        with pytest.raises((imaplib.IMAP4.abort, OSError)):
            imap.noop()
            imap.noop()
        code, answer = run_helper(layout.root, {"op": "kick_mailbox", "address": "alice@hosted.example"})
        assert (code, answer["kicked"]) == (0, False)
