"""A domain moved between two mail nodes keeps its mail (issue 18, step 4).

Two nodes on one machine, each with its own root: real Exim and real Dovecot
on loopback, rendered from build_snapshot(node=…), and the real helper
(deploy/mailpanel_helper.py --root) of each node doing that node's part.
Each phase of services/domain_move.py runs as its task would on the node's
worker (this process, with that node's MAILPANEL_HELPER); the applies run as
apply jobs (run_apply_job). Mail is sent to the old node before the move,
while it still delivers locally, after its dsync copy (delivered there,
picked up by the final sync), while it forwards, and straight to the new
node; at the end every message is read over IMAP on the new node exactly
once (count and Message-IDs), and the old node no longer accepts the domain.
"""

import dataclasses
import imaplib
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from mailadmin.models import DomainMove, Job, JobKind, JobState, MailDomain, MailNode, MovePhase, ServerSettings
from mailadmin.services import accounts, apply, dns_checks, domain_move, domains, jobs, nodes
from tests import mailstack

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(shutil.which("doveadm") is None, reason="dovecot is not installed"),
]

HELPER = Path(__file__).resolve().parent.parent / "deploy" / "mailpanel_helper.py"
PW = "Str0ng-enough-pass"
BOXES = ("alice", "bob")


class Node:
    """One node's tree, daemons and helper."""

    def __init__(self, model, layout, dovecot, exim):
        self.model, self.layout, self.dovecot, self.exim = model, layout, dovecot, exim

    @property
    def helper(self) -> str:
        return f"{sys.executable} {HELPER} --root {self.layout.root} --service-command /bin/true"

    @property
    def mail_root(self) -> Path:
        return Path(self.layout.path(self.layout.mail_root))

    def send(self, subject: str, to: str = "alice@example.org") -> str:
        message = mailstack.make_message("sender@elsewhere.test", to, subject=subject)
        self.exim.send("sender@elsewhere.test", [to], message)
        return message.split(b"Message-ID: ")[1].split(b"\n")[0].decode()

    def imap_message_ids(self, address: str) -> list[str]:
        with imaplib.IMAP4(mailstack.LOOPBACK, self.layout.imap_port) as imap:
            imap.login(address, PW)
            imap.select("INBOX", readonly=True)
            _, data = imap.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        return [part[1].decode().split(":", 1)[1].strip() for part in data if isinstance(part, tuple)]


def write_root_file(layout, production: str, content: str) -> None:
    path = Path(layout.path(production))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    os.chmod(path, 0o644)


def node_models(settings, alice):
    """The database side of two nodes on RQ: node "main" (127.0.0.2, mx-a.test)
    holds example.org with BOXES, node "b" (127.0.0.1, mx-b.test) nothing.
    Returns (domain, main, b)."""
    settings.MAILPANEL_TASK_BACKEND = "rq"
    server = ServerSettings.load()
    server.hostname = "mx-a.test"
    server.save()
    main = MailNode.objects.get()
    MailNode.objects.filter(pk=main.pk).update(hostname="mx-a.test", ipv4="127.0.0.2")
    main.refresh_from_db()
    node_b = MailNode.objects.create(name="b", hostname="mx-b.test", ipv4="127.0.0.1")
    domain = domains.add_domain(None, alice, "example.org", dkim_enabled=False)
    for box in BOXES:
        accounts.add_account(None, domain, box, PW)
    Job.objects.all().delete()
    return domain, main, node_b


@pytest.fixture
def two_nodes(mailstack_tree, settings, alice, tmp_path):
    """Node "main" (old) holds example.org with two mailboxes; node "b"
    (new, 127.0.0.1) holds nothing yet. Both run Exim and Dovecot."""
    domain, main, node_b = node_models(settings, alice)

    started = []
    with __import__("contextlib").ExitStack() as stack:
        for model in (main, node_b):
            layout = mailstack_tree(apply.build_snapshot(node=model))
            # The helper renders exim4.conf and dovecot.conf itself: with this
            # tree's layout (root's layout.json), as the test rendered them.
            fields = {k: v for k, v in dataclasses.asdict(layout).items() if k != "root"}
            write_root_file(layout, "/etc/mailpanel/layout.json", json.dumps(fields))
            dovecot = stack.enter_context(mailstack.dovecot_daemon(layout))
            exim = stack.enter_context(mailstack.exim_daemon(layout))
            started.append(Node(model, layout, dovecot, exim))
        old, new = started
        # Root's peer list on the old node: where node b's mail lives.
        write_root_file(old.layout, "/etc/mailpanel/mail-peers.json", json.dumps({"b": {"mail_root": str(new.mail_root)}}))
        settings.MAILPANEL_NODE_SMTP_PORT = new.exim.port
        yield domain, old, new


@pytest.fixture
def queued(monkeypatch):
    """The tasks the phases put on node queues: (queue, task, args)."""
    calls = []
    monkeypatch.setattr(
        jobs, "enqueue_on_node",
        lambda node_id, task, *args: calls.append((MailNode.objects.get(pk=node_id).queue_name, task.rsplit(".", 1)[1], args)),
    )
    return calls


def on(node: Node, settings, work, *args):
    """Run work as node's worker would: with that node's helper."""
    settings.MAILPANEL_HELPER = node.helper
    return work(*args)


def run_applies(node: Node, settings) -> None:
    for job in Job.objects.filter(kind=JobKind.APPLY, state=JobState.PENDING, node=node.model).order_by("id"):
        on(node, settings, apply.run_apply_job, job.pk)
        job.refresh_from_db()
        assert job.state == JobState.DONE, job.log


def test_a_domain_moved_between_nodes_keeps_its_mail(two_nodes, settings, queued):
    domain, old, new = two_nodes
    sent = {box: [] for box in BOXES}

    def send(node, label):
        for box in BOXES:
            sent[box].append(node.send(f"{label} {box}", f"{box}@example.org"))

    for i in range(3):
        send(old, f"before {i}")
    old.dovecot.wait_for_messages("alice@example.org", 3)

    # 1. The domain belongs to b now; b's apply writes its files.
    change = nodes.move_domain(None, domain, new.model)
    move = DomainMove.objects.get()
    assert move.phase == MovePhase.PREPARING and change.job.node_id == new.model.pk
    assert queued == [("node-b", "domain_move_arrived", (move.pk,))]
    run_applies(new, settings)
    assert (Path(new.layout.path("/etc/exim4/domains/example.org/passwd"))).exists()
    # The old node still has it (nothing queued there) and still delivers it.
    assert Path(old.layout.path("/etc/exim4/domains/example.org/passwd")).exists()
    assert not Job.objects.filter(node=old.model).exists()
    send(old, "preparing")

    # 2. b checks with its own helper that it has the files; the copy is queued on the old node.
    on(new, settings, domain_move.arrived, move.pk)
    move.refresh_from_db()
    assert move.phase == MovePhase.COPYING and queued[-1] == ("node-main", "domain_move_copy", (move.pk,))
    on(old, settings, domain_move.copy, move.pk)
    move.refresh_from_db()
    assert move.phase == MovePhase.FORWARDING, move.log
    assert "copied 2 mailbox(es)" in move.log
    assert len(new.dovecot.messages("alice@example.org")) == 4  # 3 before + 1 while preparing
    # Delivered on the old node after the copy and before it forwards: the final sync's.
    send(old, "after copy")
    old.dovecot.wait_for_messages("alice@example.org", 5)

    # The old node's apply renders its forward to b (data, checked by the helper's grammar).
    run_applies(old, settings)
    moved_to = Path(old.layout.path("/etc/exim4/domains/example.org/moved_to")).read_text()
    assert moved_to == f"host: 127.0.0.1\nport: {new.exim.port}\n"
    assert "router = moved_domain" in mailstack.exim_bt(old.layout, "bob@example.org", "sender@elsewhere.test")
    send(old, "forwarded")
    new.dovecot.wait_for_messages("alice@example.org", 5)
    new.dovecot.wait_for_messages("bob@example.org", 5)
    assert len(old.dovecot.messages("alice@example.org")) == 5  # nothing more delivered there
    send(new, "direct")  # DNS changed already for some senders

    # 3. The DNS records name the new node, and the move says which ones changed.
    server = ServerSettings.load()
    records = dns_checks.domain_records(domain, dns_checks.domain_identity(MailDomain.objects.get(pk=domain.pk), server))
    assert ("mail.example.org", "A", "127.0.0.1") in [(r.name, r.type, r.value) for r in records]
    assert not any("127.0.0.2" in r.value for r in records)
    changes = {(c.name, c.type): (c.old, c.new) for c in domain_move.dns_changes(move, server)}
    assert changes[("mail.example.org", "A")] == ("127.0.0.2", "127.0.0.1")
    assert "127.0.0.1" in changes[("example.org", "TXT")][1]  # SPF

    # 4. Confirmed: the final copy, then the old node lets go.
    domain_move.confirm(None, move)
    assert queued[-1] == ("node-main", "domain_move_finish", (move.pk,))
    on(old, settings, domain_move.finish, move.pk)
    move.refresh_from_db()
    assert move.phase == MovePhase.DONE and move.error == "", move.log
    assert not Path(old.layout.path("/etc/exim4/domains/example.org")).exists()
    assert not (old.mail_root / "example.org").exists()
    assert [p.name.startswith("example.org-") for p in (old.mail_root / ".deleted").iterdir()] == [True]
    # The old node no longer takes the domain as its own (no local delivery, no forward).
    routing = mailstack.exim_bt(old.layout, "alice@example.org", "sender@elsewhere.test")
    assert "router = local_mailbox" not in routing and "moved_domain" not in routing, routing
    send(new, "after")

    for box in BOXES:
        address = f"{box}@example.org"
        new.dovecot.wait_for_messages(address, len(sent[box]))
        ids = new.imap_message_ids(address)
        assert len(ids) == len(sent[box]) == 8, ids  # nothing lost, nothing twice
        assert sorted(ids) == sorted(sent[box])
