"""Three mail nodes on loopback (issue 18): the panel's applies travel on RQ
(real Redis, a database number of its own, flushed only there), each node has
its own worker process (manage.py node_worker) and its own helper root under
a temporary folder (the real deploy/mailpanel_helper.py in --root mode, as
test_apply_pipeline runs it). A change reaches exactly its node's files; a
stopped node keeps its jobs and applies them in order when it is back, jobs
queued by panel processes that are gone included; its heartbeat goes stale.

The workers read the same database as this process: PostgreSQL
(`make test-postgres`). On SQLite every process would have its own view of a
file database mid-test, so the module is left out of the SQLite run."""

import contextlib
import dataclasses
import imaplib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import pytest
from django.conf import settings as django_settings

# tests/conftest.py leaves this module out of the SQLite run (collect_ignore);
# make test's PostgreSQL run has it.
assert django_settings.DATABASES["default"]["ENGINE"] != "django.db.backends.sqlite3", "run with DATABASE_URL=postgres://…"

import redis  # noqa: E402
from django.db import connection, transaction  # noqa: E402

from mailadmin.models import Job, JobState, MailDomain, MailNode, RelaySettings, ServerSettings  # noqa: E402
from mailadmin.services import apply, domains, jobs, nodes  # noqa: E402
from mailadmin.services.jobs import request_apply  # noqa: E402
from panel.rq import NodeQueues  # noqa: E402

pytestmark = pytest.mark.django_db(transaction=True)

REPO = Path(__file__).resolve().parent.parent
HELPER = REPO / "deploy" / "mailpanel_helper.py"
# The suite's own Redis database: flushed before and after, nothing else is.
REDIS_URL = "redis://127.0.0.1:6379/13"
HEARTBEAT = 0.3
STALE = 2


def database_url() -> str:
    db = connection.settings_dict
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{db['USER']}{password}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


class NodeProcess:
    """One node: its helper root and its worker process."""

    def __init__(self, name: str, base: Path):
        self.name = name
        self.root = base / name / "root"
        self.root.mkdir(parents=True)
        self.var = base / name / "var"
        self.var.mkdir()
        self.log = base / name / "worker.log"
        self.proc = None

    def env(self) -> dict:
        return {
            **os.environ,
            "DATABASE_URL": database_url(),
            "DJANGO_SECRET_KEY": django_settings.SECRET_KEY,
            "MAILPANEL_ENCRYPTION_KEY": django_settings.MAILPANEL_ENCRYPTION_KEY,
            "MAILPANEL_VAR_DIR": str(self.var),
            "MAILPANEL_TASK_BACKEND": "rq",
            "MAILPANEL_REDIS_URL": REDIS_URL,
            "MAILPANEL_ROOT": str(self.root),
            "MAILPANEL_HELPER": f"{sys.executable} {HELPER} --root {self.root} --no-chown --service-command true",
            "MAILPANEL_NODE_HEARTBEAT_SECONDS": str(HEARTBEAT),
            "MAILPANEL_NODE_STALE_SECONDS": str(STALE),
        }

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "manage.py", "node_worker", self.name],
                cwd=REPO, env=self.env(), stdout=log, stderr=subprocess.STDOUT,
            )

    def stop(self) -> None:
        """SIGTERM: RQ's warm shutdown (a running job finishes first)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def files(self) -> dict[str, bytes]:
        return {
            str(p.relative_to(self.root)): p.read_bytes()
            for p in sorted(self.root.rglob("*"))
            if p.is_file() and ".mailpanel" not in p.parts  # the helper's own lock and backups
        }

    def panel_cli(self, *args: str) -> subprocess.CompletedProcess:
        """A panel process (the CLI) that enqueues and exits."""
        return subprocess.run(
            [sys.executable, "manage.py", "mail", *args], cwd=REPO, env=self.env(),
            capture_output=True, text=True, timeout=120,
        )


@pytest.fixture
def redis_db():
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.fail("Redis is not answering on 127.0.0.1:6379 (the machine starts it; see deploy/apt-packages-test.txt)")
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture
def rq_panel(settings, redis_db):
    """This test process is the panel: it enqueues on the same Redis."""
    settings.MAILPANEL_TASK_BACKEND = "rq"
    settings.RQ_QUEUES = NodeQueues({name: {"URL": REDIS_URL} for name in ("default", "checks")})
    settings.TASKS = {"default": {"BACKEND": "panel.rq_backend.NodeRQBackend", "QUEUES": ["default", "checks"]}}
    settings.MAILPANEL_NODE_STALE_SECONDS = STALE


@pytest.fixture
def cluster(transactional_db, rq_panel, tmp_path):
    server = ServerSettings.load()
    server.hostname, server.ipv4 = "panel.example.net", "192.0.2.1"
    server.save()
    MailNode.objects.all().delete()  # the migration's "main", with no worker here
    made = {}
    for index, name in enumerate(("n1", "n2", "n3"), start=1):
        MailNode.objects.create(name=name, hostname=f"{name}.example.net", ipv4=f"192.0.2.{10 + index}")
        made[name] = NodeProcess(name, tmp_path)
    try:
        yield made
    finally:
        for node in made.values():
            node.stop()


def wait_done(job_ids, timeout=90.0) -> list[Job]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list(Job.objects.filter(pk__in=job_ids).order_by("id"))
        if len(found) == len(set(job_ids)) and all(j.state in (JobState.DONE, JobState.FAILED) for j in found):
            return found
        time.sleep(0.1)
    states = list(Job.objects.filter(pk__in=job_ids).values_list("pk", "node__name", "state"))
    raise AssertionError(f"jobs not done within {timeout} s: {states}")


def pending_ids(node: str) -> list[int]:
    return list(Job.objects.filter(node__name=node, state=JobState.PENDING).order_by("id").values_list("pk", flat=True))


def all_pending() -> list[int]:
    return list(Job.objects.filter(state=JobState.PENDING).values_list("pk", flat=True))


def node_of(name: str) -> MailNode:
    return MailNode.objects.get(name=name)


def first_apply(cluster, alice) -> dict[str, MailDomain]:
    """One domain per node, every worker running, everything applied."""
    placed = {
        name: domains.add_domain(None, alice, f"{name}-shop.example", node=node_of(name)) for name in cluster
    }
    for node in cluster.values():
        node.start()
    request_apply(None)  # the server-wide files of every node
    done = wait_done(all_pending())
    assert all(job.state == JobState.DONE for job in done), [job.log for job in done]
    return placed


def test_a_domain_change_reaches_exactly_its_nodes_files(cluster, alice):
    placed = first_apply(cluster, alice)
    for name, node in cluster.items():
        files = node.files()
        folders = {path.split("/")[3] for path in files if path.startswith("etc/exim4/domains/")}
        assert folders == {f"{name}-shop.example"}  # its own domain only
        assert f"{name}.example.net".encode() in files["etc/exim4/exim4.conf"]  # its own host name
    before = {name: node.files() for name, node in cluster.items()}

    RelaySettings.objects.create(domain=placed["n2"], host="smtp.example.com", username="u", password="p")
    job = request_apply(alice, domain=placed["n2"])
    assert job.node.name == "n2"
    (job,) = wait_done([job.pk])

    assert job.state == JobState.DONE, job.log
    assert job.changed_files == ["/etc/exim4/domains/n2-shop.example/smtp_relay.conf"]
    after = {name: node.files() for name, node in cluster.items()}
    assert after["n1"] == before["n1"] and after["n3"] == before["n3"]  # byte for byte
    changed = {p for p in after["n2"] if after["n2"][p] != before["n2"].get(p)} | (before["n2"].keys() - after["n2"].keys())
    assert changed == {"etc/exim4/domains/n2-shop.example/smtp_relay.conf"}


def test_a_stopped_node_keeps_its_jobs_and_applies_them_in_order_when_back(cluster, alice, bob, admin_user):
    placed = first_apply(cluster, alice)
    n2 = cluster["n2"]
    n2.stop()
    before_n2 = n2.files()

    # Three requesters, three jobs (one person's edits coalesce into one).
    RelaySettings.objects.create(domain=placed["n2"], host="smtp.example.com", username="u", password="p")
    first = request_apply(alice, domain=placed["n2"])
    bobs = domains.add_domain(admin_user, bob, "bob-n2.example", node=node_of("n2"))
    second = Job.objects.get(node__name="n2", state=JobState.PENDING, requested_by=admin_user)
    # A panel process that enqueues and is gone: the CLI (requester: none).
    cli = n2.panel_cli("domain", "set", "n2-shop.example", "--mail-hosted-elsewhere", "yes")
    assert cli.returncode == 0, cli.stderr
    third = Job.objects.get(node__name="n2", state=JobState.PENDING, requested_by=None)
    # A panel that stopped between its commit and the enqueue: a job row that
    # never reached Redis (the node's worker puts it on its queue).
    lost = Job.objects.create(kind="apply", node=node_of("n2"), scope=["bob-n2.example"], requested_by=bob)
    # Meanwhile n1 goes on working.
    n1_job = request_apply(alice, domain=placed["n1"], whole_server=True)
    assert wait_done([n1_job.pk])[0].state == JobState.DONE

    time.sleep(STALE + 0.5)
    rows = {row.node.name: row for row in nodes.node_rows()}
    assert rows["n2"].stale and not rows["n1"].stale and not rows["n3"].stale
    assert rows["n2"].pending_jobs == 4
    assert pending_ids("n2") == [first.pk, second.pk, third.pk, lost.pk]
    assert n2.files() == before_n2  # nothing was written while it was down

    n2.start()
    done = wait_done([first.pk, second.pk, third.pk, lost.pk])
    assert [job.state for job in done] == [JobState.DONE] * 4, [job.log for job in done]
    starts = [job.started_at for job in done]
    assert starts == sorted(starts) and len(set(starts)) == 4  # in the order they were asked for

    files = n2.files()
    assert "etc/exim4/domains/n2-shop.example/smtp_relay.conf" in files
    assert "etc/exim4/domains/bob-n2.example/dkim.pem" in files
    assert b"n2-shop.example" in files["etc/exim4/send_only_domains"]
    assert not any("n1-shop" in path or "n3-shop" in path for path in files)
    assert MailDomain.objects.get(pk=bobs.pk).node.name == "n2"
    # Converged: a full apply of n2 now finds nothing to do.
    (check,) = wait_done([request_apply(None, node=node_of("n2")).pk])
    assert check.state == JobState.DONE and check.changed_files == [], check.log
    time.sleep(HEARTBEAT * 3)
    rows = {row.node.name: row for row in nodes.node_rows()}
    assert not rows["n2"].stale and rows["n2"].node.last_apply_at is not None and rows["n2"].node.version


def test_a_change_saved_in_the_web_panel_survives_the_panel_and_the_node_restarting(cluster, alice, admin_user):
    """gunicorn takes the change and is killed; the node's worker is down
    meanwhile; a new panel shows the job waiting; the node applies it."""
    import http.client
    import re

    from bench.served import Gunicorn, session_cookie

    placed = first_apply(cluster, alice)
    n3 = cluster["n3"]
    n3.stop()
    cookie = session_cookie(admin_user)
    domain = placed["n3"]
    url = f"/domains/{domain.pk}/settings/"

    def panel():
        # gunicorn inherits this process's environment: the panel's own for it
        with mock.patch.dict(os.environ, n3.env(), clear=True):
            return Gunicorn(workers=1)

    web = panel()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", web.port, timeout=30)
        conn.request("GET", url, headers={"Cookie": cookie})
        response = conn.getresponse()
        response.read()
        csrf = re.search(r"csrftoken=([^;]+)", response.getheader("Set-Cookie") or "").group(1)
        body = "dkim_enabled=on&role_address=&local_senders="  # sub-addressing off: a server-wide file of n3
        conn.request("POST", url, body=body, headers={
            "Cookie": f"{cookie}; csrftoken={csrf}", "X-CSRFToken": csrf,
            "Content-Type": "application/x-www-form-urlencoded",
        })
        response = conn.getresponse()
        response.read()
        assert response.status == 302, response.status
    finally:
        web.proc.kill()  # no clean shutdown
        web.proc.wait()
    (job,) = Job.objects.filter(node__name="n3", state=JobState.PENDING)

    web = panel()  # the panel restarted: the job is still there, waiting for n3
    try:
        page = web.get("/nodes/", cookie).decode()
        assert re.search(r'id="node-n3" data-stale="(yes|no)">.*?<td>1</td>\s*</tr>', page, re.S), page
    finally:
        web.stop()
    n3.start()
    (job,) = wait_done([job.pk])
    assert job.state == JobState.DONE, job.log
    assert job.changed_files == ["/etc/exim4/no_subaddressing"]
    assert b"n3-shop.example" in (n3.root / "etc/exim4/no_subaddressing").read_bytes()
    assert not (cluster["n1"].root / "etc/exim4/no_subaddressing").read_bytes()


def test_a_running_node_picks_up_a_job_whose_enqueue_was_lost(cluster, alice):
    """Its heartbeat finds a pending job while nothing is queued and the
    worker waits, once the job is older than the stale window."""
    n1 = cluster["n1"]
    domain = domains.add_domain(None, alice, "lost.example", node=node_of("n1"))
    n1.start()
    assert wait_done(all_pending())[0].state == JobState.DONE
    RelaySettings.objects.create(domain=domain, host="smtp.example.com", username="u", password="p")
    lost = Job.objects.create(kind="apply", node=node_of("n1"), scope=["lost.example"], requested_by=alice)
    (lost,) = wait_done([lost.pk], timeout=STALE + 30)
    assert lost.state == JobState.DONE, lost.log
    assert (lost.started_at - lost.created_at).total_seconds() >= STALE
    assert lost.changed_files == ["/etc/exim4/domains/lost.example/smtp_relay.conf"]


def test_a_deleted_domains_mail_is_moved_aside_on_its_own_node(cluster, alice):
    placed = first_apply(cluster, alice)
    n2 = cluster["n2"]
    maildir = n2.root / "var/mail/vhosts/n2-shop.example/info/Maildir/cur"
    maildir.mkdir(parents=True)
    (maildir / "1.mail").write_bytes(b"Subject: kept\r\n\r\nbody\r\n")
    before_n1 = cluster["n1"].files()

    outcome = domains.delete_domain(alice, placed["n2"])
    assert outcome.moved_to is None and not outcome.error  # it happens on n2, after the apply
    deadline = time.monotonic() + 60
    deleted = n2.root / "var/mail/vhosts/.deleted"
    while time.monotonic() < deadline and not (deleted.exists() and any(deleted.iterdir())):
        time.sleep(0.1)
    (moved,) = deleted.iterdir()
    assert moved.name.startswith("n2-shop.example-")
    assert (moved / "info/Maildir/cur/1.mail").read_bytes().startswith(b"Subject: kept")
    assert not (n2.root / "var/mail/vhosts/n2-shop.example").exists()
    assert not (n2.root / "etc/exim4/domains/n2-shop.example").exists()
    assert cluster["n1"].files() == before_n1


def test_a_retire_task_on_a_node_missing_its_server_files_applies_only_that_nodes_domains(cluster, alice):
    """retire_mail's one-domain apply falls back to a full one when the
    node's server-wide files are missing: still that node's domains only."""
    first_apply(cluster, alice)
    n2 = cluster["n2"]
    (n2.root / "etc/exim4/exim4.conf").unlink()
    before_n1 = cluster["n1"].files()

    with transaction.atomic():
        jobs.enqueue_on_node(node_of("n2").pk, "mailadmin.tasks.retire_domain_mail", "gone.example")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (n2.root / "etc/exim4/exim4.conf").exists():
        time.sleep(0.1)
    assert (n2.root / "etc/exim4/exim4.conf").exists(), n2.log.read_text()[-2000:]
    assert sorted(p.name for p in (n2.root / "etc/exim4/domains").iterdir()) == ["n2-shop.example"]
    assert "n1-shop.example" not in (n2.root / "etc/exim4/exim4.conf").read_text()
    assert cluster["n1"].files() == before_n1


def test_a_worker_killed_mid_apply_converges_when_its_node_starts_again(cluster, alice):
    domain = domains.add_domain(None, alice, "crash.example", node=node_of("n3"))
    stuck = Job.objects.get(node__name="n3", state=JobState.PENDING)
    # Its worker died after claiming the job (SIGKILL mid-apply): "running" for ever.
    Job.objects.filter(pk=stuck.pk).update(state=JobState.RUNNING)
    cluster["n3"].start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        stuck.refresh_from_db()
        if stuck.state != JobState.RUNNING:
            break
        time.sleep(0.1)
    assert stuck.state == JobState.FAILED and "has applied everything since" in stuck.log
    assert (cluster["n3"].root / f"etc/exim4/domains/{domain.name}/dkim.pem").exists()
    assert (cluster["n3"].root / "etc/exim4/exim4.conf").exists()


# -- a domain moved between nodes keeps its mail (step 4) --------------------------


class MailNodeProcess(NodeProcess):
    """A node whose helper root is a mailstack tree with real Exim and Dovecot
    on loopback: its worker renders with the tree's layout (the helper's own
    layout.json, and MAILPANEL_LAYOUT_FILE for the panel side) and its helper
    runs as root with owners set, so Exim and Dovecot read what it writes."""

    def __init__(self, name: str, base: Path, layout, extra_env: dict):
        super().__init__(name, base)
        self.root = Path(layout.root)
        self.layout = layout
        self.extra_env = extra_env
        self.layout_file = base / name / "layout.json"
        fields = {k: v for k, v in dataclasses.asdict(layout).items() if k != "root"}
        self.layout_file.write_text(json.dumps(fields))
        os.makedirs(self.root / "etc/mailpanel", exist_ok=True)
        (self.root / "etc/mailpanel/layout.json").write_text(json.dumps(fields))

    def env(self) -> dict:
        return {
            **super().env(),
            "MAILPANEL_HELPER": f"{sys.executable} {HELPER} --root {self.root} --service-command true",
            "MAILPANEL_LAYOUT_FILE": str(self.layout_file),
            **self.extra_env,
        }


def wait_for_phase(move, phase, timeout=90.0, during=None):
    """Poll the move until it reaches phase; `during()` runs between polls."""
    from mailadmin.models import DomainMove

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        move = DomainMove.objects.get(pk=move.pk)
        if move.phase == phase:
            return move
        if during is not None:
            during()
        time.sleep(0.2)
    raise AssertionError(f"the move stayed in {move.phase} ({move.error}):\n{move.log}")


def test_a_domain_moved_between_nodes_keeps_its_mail(transactional_db, rq_panel, tmp_path, mailstack_tree, alice):
    """n1 and n2 with real Exim and Dovecot, their own helpers and workers on
    RQ. Mail for example.org arrives at n1 before the move, all the time the
    move runs (delivered at n1 and copied with dsync, or forwarded once n1
    forwards), at n2 directly once DNS changed, and after the confirmation;
    every message is read over IMAP on n2 exactly once."""
    from mailadmin.models import DomainMove, MovePhase
    from mailadmin.services import accounts, domain_move
    from tests import mailstack

    password = "Str0ng-enough-pass"
    server = ServerSettings.load()
    server.hostname = "n1.example.net"
    server.save()
    MailNode.objects.all().delete()
    n1 = MailNode.objects.create(name="n1", hostname="n1.example.net", ipv4="127.0.0.2")
    n2 = MailNode.objects.create(name="n2", hostname="n2.example.net", ipv4="127.0.0.1")
    domain = domains.add_domain(None, alice, "example.org", dkim_enabled=False, node=n1)
    for box in ("alice", "bob"):
        accounts.add_account(None, domain, box, password)
    Job.objects.all().delete()

    old_layout = mailstack_tree(apply.build_snapshot(node=n1))
    new_layout = mailstack_tree(apply.build_snapshot(node=n2))
    new_mail_root = new_layout.path(new_layout.mail_root)
    peers = Path(old_layout.path("/etc/mailpanel/mail-peers.json"))
    peers.parent.mkdir(parents=True, exist_ok=True)
    peers.write_text(json.dumps({"n2": {"mail_root": new_mail_root}}))
    sent = {"alice": [], "bob": []}
    with contextlib.ExitStack() as stack:
        old_dovecot = stack.enter_context(mailstack.dovecot_daemon(old_layout))
        old_exim = stack.enter_context(mailstack.exim_daemon(old_layout))
        new_dovecot = stack.enter_context(mailstack.dovecot_daemon(new_layout))
        new_exim = stack.enter_context(mailstack.exim_daemon(new_layout))
        workers = {
            "n1": MailNodeProcess("n1", tmp_path, old_layout, {"MAILPANEL_NODE_SMTP_PORT": str(new_exim.port)}),
            "n2": MailNodeProcess("n2", tmp_path, new_layout, {}),
        }
        for worker in workers.values():
            stack.callback(worker.stop)
            worker.start()

        def send(exim, label):
            for box in sent:
                to = f"{box}@example.org"
                message = mailstack.make_message("sender@elsewhere.test", to, subject=f"{label} {len(sent[box])}")
                exim.send("sender@elsewhere.test", [to], message)
                sent[box].append(message.split(b"Message-ID: ")[1].split(b"\n")[0].decode())

        for _ in range(3):
            send(old_exim, "before")
        old_dovecot.wait_for_messages("alice@example.org", 3)

        started = time.monotonic()
        nodes.move_domain(None, domain, n2)
        move = DomainMove.objects.get()
        # n1 keeps receiving while n2 takes the files and the mail is copied.
        move = wait_for_phase(move, MovePhase.FORWARDING, during=lambda: send(old_exim, "during"))
        # The forward is on once n1 applied its moved_to file (queued after the copy).
        moved_to = Path(old_layout.path("/etc/exim4/domains/example.org/moved_to"))
        deadline = time.monotonic() + 60
        while not moved_to.exists():
            assert time.monotonic() < deadline, "n1 never rendered its forward"
            send(old_exim, "during")
            time.sleep(0.2)
        forwarding_after = time.monotonic() - started
        for _ in range(2):
            send(old_exim, "forwarded")
            send(new_exim, "direct")
        locally_at_n1 = len(old_dovecot.messages("alice@example.org"))
        assert locally_at_n1 >= 3

        confirmed = time.monotonic()
        domain_move.confirm(None, move)
        wait_for_phase(move, MovePhase.DONE)
        deadline = time.monotonic() + 60
        deleted = Path(old_layout.path(old_layout.mail_root)) / ".deleted"
        while not (deleted.exists() and any(deleted.iterdir())):
            assert time.monotonic() < deadline, DomainMove.objects.get().log
            time.sleep(0.1)
        assert not Path(old_layout.path("/etc/exim4/domains/example.org")).exists()
        finished_after = time.monotonic() - confirmed
        send(new_exim, "after")

        for box, ids in sent.items():
            address = f"{box}@example.org"
            new_dovecot.wait_for_messages(address, len(ids), timeout=60)
            with imaplib.IMAP4(mailstack.LOOPBACK, new_layout.imap_port) as imap:
                imap.login(address, password)
                imap.select("INBOX", readonly=True)
                _, data = imap.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
            found = [part[1].decode().split(":", 1)[1].strip() for part in data if isinstance(part, tuple)]
            assert sorted(found) == sorted(ids) and len(set(ids)) == len(ids), (box, len(found), len(ids))
        print(f"moved with {len(sent['alice'])} messages per mailbox, {locally_at_n1} delivered at n1; "
              f"forwarding {forwarding_after:.2f} s after the start, done {finished_after:.2f} s after the confirmation")
