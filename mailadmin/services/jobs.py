"""Enqueue background jobs. Quick successive edits of one person coalesce into
one apply: while their apply job is still pending, their later edits reuse it
(the worker renders whatever the database holds when the job starts).

Each job shows its requester only their own changes: edits of different people
never share a job (a customer could not see a job started by someone else, and
would see the other's file paths in a shared one), and what a customer's job
log and changed files say about other customers' domains is not shown to them
(a job that applies everything writes whatever differs, theirs included)."""

import functools
import logging
import re

from django.db import connections, transaction
from django.utils import timezone
from django.utils.translation import ngettext

from ..models import DomainMove, Job, JobKind, JobState, MailDomain, MailNode, MovePhase, default_node_pk, is_admin

logger = logging.getLogger(__name__)


def request_apply(actor=None, domain=None, *, domain_name=None, whole_server=False, node=None) -> Job:
    """A change to one domain's own files (relay, accounts, DKIM, a new or deleted
    domain) applies only that domain's folder, on the node it lives on; anything
    else, or whole_server=True (a flag that lands in a server-wide file),
    applies everything: on the domain's node, or with no domain on every node
    (one job each; the first is returned). A deleted domain passes its name and
    the node it was on."""
    name = domain_name or (domain.name if domain is not None else None)
    scope = None if whole_server or name is None else [name]
    requester = actor if getattr(actor, "pk", None) else None  # None: the CLI, a task
    if domain is not None:
        # A domain moving away is still on its old node until the move is
        # done (services/domain_move.py): its files there follow its changes.
        node_ids = [domain.node_id, *old_nodes_of(domain)]
    elif node is not None:
        node_ids = [getattr(node, "pk", node)]
    else:
        node_ids = list(MailNode.objects.order_by("name").values_list("pk", flat=True)) or [default_node_pk()]
    queued = [_request_node_apply(requester, node_id, domain, scope) for node_id in node_ids]
    return queued[0]


def old_nodes_of(domain) -> list[int]:
    """The node a domain is moving away from, if it is (RQ only: one server
    moves nothing, and asks nothing)."""
    if not multi_node() or domain.pk is None:
        return []
    return list(
        DomainMove.objects.filter(domain=domain).exclude(phase=MovePhase.DONE)
        .exclude(from_node_id=domain.node_id).values_list("from_node_id", flat=True)
    )


def _request_node_apply(requester, node_id, domain, scope) -> Job:
    """Coalescing, per node: the requester's pending apply on that node takes
    the change, else a new job goes onto the node's queue."""
    with transaction.atomic():
        job = (
            Job.objects.select_for_update()
            .filter(kind=JobKind.APPLY, state=JobState.PENDING, requested_by=requester, node_id=node_id)
            .order_by("id")
            .first()
        )
        if job is not None:
            merged = None if job.scope is None or scope is None else sorted({*job.scope, *scope})
            if merged != job.scope:
                job.scope = merged
                job.save(update_fields=["scope"])
            return job
        job = Job.objects.create(
            kind=JobKind.APPLY, requested_by=requester, domain=domain, scope=scope, node_id=node_id
        )
    enqueue_apply(job)
    return job


def enqueue_apply(job: Job, on_commit: bool = True) -> None:
    """The apply task onto the queue of the job's node (node-<name>) with the
    RQ backend; with the database backend, the one server's "default" queue."""
    queue = apply_queue_name(job.node_id)
    if on_commit:
        _enqueue_on_commit("mailadmin.tasks.apply_config", job.pk, queue_name=queue)
    else:
        _enqueue(("mailadmin.tasks.apply_config"), job.pk, queue_name=queue)


def enqueue_on_node(node_id, task_path: str, *args) -> None:
    """A task that must run on one node's machine (its helper, its files),
    on that node's queue after what is queued there already."""
    from django.utils.module_loading import import_string

    queue = MailNode.objects.get(pk=node_id).queue_name
    transaction.on_commit(lambda: import_string(task_path).using(queue_name=queue).enqueue(*args))


def apply_queue_name(node_id) -> str:
    if not multi_node():
        return "default"
    return MailNode.objects.get(pk=node_id).queue_name


def multi_node() -> bool:
    """Nodes each with their own worker need RQ (MAILPANEL_TASK_BACKEND=rq)."""
    from django.conf import settings

    return getattr(settings, "MAILPANEL_TASK_BACKEND", "database") == "rq"


# A managed path inside one domain's folder: /etc/exim4/domains/<d>/…, <mail root>/<d>/…
_DOMAIN_PATH = re.compile(r"/(?:domains|vhosts)/([a-z0-9][a-z0-9.-]*)")


def shown_to(job: Job, user) -> tuple[str, list[str]]:
    """The job's log and changed files as `user` may see them: everything for
    admins; for the customer who asked, without the lines and files that name
    another domain's folder (theirs are the job's scope and the domains they
    own). Ends with how many lines were left out."""
    if is_admin(user):
        return job.log, list(job.changed_files)
    lines, files = job.log.splitlines(), list(job.changed_files)
    named = {name for text in (*lines, *files) for name in _DOMAIN_PATH.findall(text)}
    own = set(job.scope or ())
    if named - own:  # a query only when a line names a domain outside the scope
        own |= set(MailDomain.objects.filter(owner=user, name__in=named - own).values_list("name", flat=True))

    def theirs(text):
        return set(_DOMAIN_PATH.findall(text)) <= own

    shown = [line for line in lines if theirs(line)]
    hidden = len(lines) - len(shown)
    if hidden:
        shown.append(
            ngettext(
                "(%(count)d line about other customers' domains is not shown)",
                "(%(count)d lines about other customers' domains are not shown)",
                hidden,
            )
            % {"count": hidden}
        )
    return "\n".join(shown), [path for path in files if theirs(path)]


def latest_apply(user) -> Job | None:
    """The apply job a page shows after its user's change: theirs, the newest
    (a relay test or DNS check they started since is not it). Every tab of
    the domain and server pages shows it, so the statement is written once
    per process: the ORM spent about 0.25 ms building it each time, for a
    20 µs lookup (the same row, the same converters: Job.objects.raw)."""
    found = list(Job.objects.raw(_latest_apply_sql(Job.objects.db), [JobKind.APPLY, user.pk]))
    return found[0] if found else None


@functools.cache
def _latest_apply_sql(using: str) -> str:
    qn = connections[using].ops.quote_name
    column = {name: qn(Job._meta.get_field(name).column) for name in ("id", "kind", "requested_by")}
    return (
        f"SELECT * FROM {qn(Job._meta.db_table)} WHERE {column['kind']} = %s AND {column['requested_by']} = %s"
        f" ORDER BY {column['id']} DESC LIMIT 1"
    )


def start_job(kind: str, actor=None, domain=None, task_path: str = "", *, result=None, **task_kwargs) -> Job:
    """A one-off background job (installs, slow checks): never coalesced.
    `result` is what the job holds until the worker replaces it with the outcome."""
    job = Job.objects.create(
        kind=kind,
        requested_by=actor if getattr(actor, "pk", None) else None,
        domain=domain,
        result=result or {},
    )
    _enqueue_on_commit(task_path, job.pk, **task_kwargs)
    return job


def _enqueue_on_commit(task_path: str, job_id: int, queue_name: str = "", **kwargs):
    transaction.on_commit(lambda: _enqueue(task_path, job_id, queue_name, **kwargs))


def _enqueue(task_path: str, job_id: int, queue_name: str = "", **kwargs):
    from django.utils.module_loading import import_string

    task = import_string(task_path)
    if queue_name and queue_name != task.queue_name:
        task = task.using(queue_name=queue_name)
    task.enqueue(job_id, **kwargs)


class JobLog:
    """A job's log: each line is saved at once, so the page that polls the job
    shows progress while it runs. Never give it secrets or file contents."""

    def __init__(self, job_id: int, echo=None):
        self.job_id = job_id
        self.lines: list[str] = []
        self.echo = echo

    def __call__(self, line: str) -> None:
        self.extend([line])

    def extend(self, lines) -> None:
        lines = list(lines)
        self.lines.extend(lines)
        Job.objects.filter(pk=self.job_id).update(log="\n".join(self.lines))
        if self.echo:
            for line in lines:
                self.echo(line)


def run_job(job_id: int, work, expected=(), echo=None, crash_detail=True) -> Job:
    """Claim a pending job, run work(job, log) and record the outcome.

    work returns the job's result dict (or None) and may set job.changed_files.
    An exception of the `expected` types is a plain failure with its message;
    anything else is logged with a traceback on the server and recorded by
    type (and message unless crash_detail=False, for jobs whose errors might
    quote a secret such as a DQS zone)."""
    claimed = Job.objects.filter(pk=job_id, state=JobState.PENDING).update(
        state=JobState.RUNNING, started_at=timezone.now()
    )
    job = Job.objects.get(pk=job_id)
    if not claimed:
        return job  # another worker took it, or it was coalesced away
    log = JobLog(job_id, echo)
    try:
        job.result = work(job, log) or {}
        job.state = JobState.DONE
    except expected as exc:
        log(f"failed: {exc}")
        job.state = JobState.FAILED
    except Exception as exc:  # the job log is where an admin looks: record, don't hide
        logger.exception("%s job %s crashed", job.kind, job_id)
        log(f"failed: {type(exc).__name__}: {exc}" if crash_detail else f"failed: {type(exc).__name__}")
        job.state = JobState.FAILED
    job.log = "\n".join(log.lines)
    job.finished_at = timezone.now()
    job.save(update_fields=["state", "log", "result", "changed_files", "finished_at"])
    return job
