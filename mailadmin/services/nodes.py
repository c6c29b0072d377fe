"""Mail nodes: the servers whose Exim and Dovecot the panel runs. Each domain
lives on one node; each node's worker takes the apply jobs of its queue
(node-<name>), renders only its own domains and writes through its own
helper (management command node_worker). The worker's heartbeat says when
the node last answered; a node silent for longer than
MAILPANEL_NODE_STALE_SECONDS is flagged."""

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib.metadata import PackageNotFoundError, version as package_version

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count
from django.utils import timezone
from django.utils.translation import gettext as _

from ..forms import MailNodeForm
from ..models import Job, JobKind, JobState, MailDomain, MailNode, NodeStatus
from . import audit, domain_move, jobs
from .outcome import Change

logger = logging.getLogger(__name__)


def mailpanel_version() -> str:
    try:
        return package_version("mailpanel")
    except PackageNotFoundError:
        return "unknown"


def stale_after() -> timedelta:
    return timedelta(seconds=settings.MAILPANEL_NODE_STALE_SECONDS)


def is_stale(node: MailNode, now: datetime | None = None) -> bool:
    """Not answered for longer than the setting (or never)."""
    now = now or timezone.now()
    return node.heartbeat_at is None or now - node.heartbeat_at > stale_after()


@dataclass(frozen=True)
class NodeRow:
    node: MailNode
    domains: int
    pending_jobs: int
    stale: bool


def node_rows(now: datetime | None = None) -> list[NodeRow]:
    """Every node with its domain count and queued applies: two queries."""
    now = now or timezone.now()
    pending = dict(
        Job.objects.filter(kind=JobKind.APPLY, state=JobState.PENDING, node__isnull=False)
        .values_list("node_id")
        .annotate(n=Count("id"))
        .values_list("node_id", "n")
    )
    nodes = MailNode.objects.annotate(domain_count=Count("domains")).order_by("name")
    # One server on the database backend: db_worker applies and keeps no heartbeat.
    beats = jobs.multi_node()
    return [NodeRow(n, n.domain_count, pending.get(n.pk, 0), beats and is_stale(n, now)) for n in nodes]


def get_node(name: str) -> MailNode:
    try:
        return MailNode.objects.get(name=name)
    except MailNode.DoesNotExist:
        raise ValidationError(_("There is no mail node %(name)s.") % {"name": name})


def add_node(actor, data: dict) -> MailNode:
    """A second node needs workers that other machines reach: RQ
    (MAILPANEL_TASK_BACKEND=rq); the database backend runs one server."""
    form = MailNodeForm(data)
    if not form.is_valid():
        raise ValidationError({field: list(errors) for field, errors in form.errors.items()})
    if not jobs.multi_node() and MailNode.objects.exists():
        raise ValidationError(
            _("More than one mail node needs the RQ task backend (MAILPANEL_TASK_BACKEND=rq) and PostgreSQL.")
        )
    with transaction.atomic():
        node = form.save()
        audit.record(actor, "node.add", node.name, form.changed_data)
    return node


def update_node(actor, node: MailNode, data: dict) -> Change[MailNode]:
    """Host name, addresses and status. Its identity is in its server-wide
    files (exim4.conf's host name): a full apply on that node."""
    old_status = node.status
    status = data.get("status", old_status)
    if status not in NodeStatus.values:
        raise ValidationError({"status": [_("Choose active or draining.")]})
    form = MailNodeForm({"name": node.name, **data}, instance=node)
    if not form.is_valid():
        raise ValidationError({field: list(errors) for field, errors in form.errors.items()})
    changed = [f for f in form.changed_data if f != "name"] + (["status"] if status != old_status else [])
    node = form.save(commit=False)
    node.status = status
    if not changed:
        return Change(node)
    with transaction.atomic():
        node.save()
        audit.record(actor, "node.update", node.name, changed)
        job = jobs.request_apply(actor, node=node, whole_server=True) if set(changed) - {"status"} else None
    return Change(node, job, tuple(changed))


def beat(node: MailNode) -> None:
    """The node's worker is alive: its heartbeat and the version it runs."""
    MailNode.objects.filter(pk=node.pk).update(heartbeat_at=timezone.now(), version=mailpanel_version())


def orphaned_applies(node: MailNode) -> bool:
    return Job.objects.filter(kind=JobKind.APPLY, state=JobState.RUNNING, node=node).exists()


def requeue_pending(node: MailNode, older_than: timedelta = timedelta(0)) -> list[int]:
    """Put the node's pending applies onto its queue again: a job whose
    enqueue was lost (the panel stopped between the commit and the enqueue,
    Redis lost its data) still runs. Harmless when it is queued already: the
    first run claims the job, a second finds it claimed and does nothing."""
    cutoff = timezone.now() - older_than
    pending = list(
        Job.objects.filter(kind=JobKind.APPLY, state=JobState.PENDING, node=node, created_at__lte=cutoff)
        .order_by("id")
    )
    for job in pending:
        jobs.enqueue_apply(job, on_commit=False)
    return [job.pk for job in pending]


def move_domain(actor, domain: MailDomain, node: MailNode) -> Change[MailDomain]:
    """The domain's files move to `node`: the new node writes its folder, the
    old one prunes it (a one-domain apply on each). A domain with mailboxes
    (other than send-only) moves with its mail, in phases
    (services/domain_move.py): the old node keeps it until the move is confirmed."""
    if node.pk == domain.node_id:
        return Change(domain)
    if node.status != NodeStatus.ACTIVE:
        raise ValidationError(_("The node %(name)s takes no new domains.") % {"name": node.name})
    if not domain.hosted_elsewhere and domain.accounts.exists():
        change = domain_move.start_move(actor, domain, node)
        return Change(domain, change.job, ("node",))
    old_node_id = domain.node_id
    with transaction.atomic():
        domain.node = node
        domain.save(update_fields=["node", "updated_at"])
        audit.record(actor, "domain.move", domain.name, ["node"])
        job = jobs.request_apply(actor, domain=domain)
        jobs.request_apply(actor, domain_name=domain.name, node=old_node_id)
    return Change(domain, job, ("node",))
