"""A domain moving to another mail node with its mail (issue 18, step 4).

Each phase is a task on the queue of the node whose machine does the work, so
it runs after what that node has queued already (its applies) and waits while
the node is down:

1. ``start_move`` (panel): the domain belongs to the new node from now on --
   its DNS records name the new node -- and a one-domain apply there writes
   its files (accounts, passwd, aliases, DKIM key, relay…): the new node
   accepts the domain. The old node keeps it too (apply.moving_from) and
   still delivers it locally. Phase PREPARING.
2. ``arrived`` (new node's queue, after that apply): checks through its own
   helper that the domain's files are there, then queues the copy on the old
   node. Phase COPYING.
3. ``copy`` (old node's queue): its helper's ``sync_mail`` copies every
   mailbox with dsync (``doveadm sync -1``) to the new node while the old node
   still receives; then the old node's apply renders the ``moved_to`` file:
   from now on its Exim forwards everything for the domain to the new node.
   Phase FORWARDING, until an admin confirms (DNS points to the new node).
4. ``confirm`` (panel) → ``finish`` (old node's queue): a final incremental
   sync picks up what the old node delivered locally before it started
   forwarding; the move is DONE, the old node's one-domain apply removes the
   domain's files (it stops accepting) and its Maildirs step aside into
   <mail root>/.deleted (helper op ``move_mail_away``; purged later).

A phase that fails keeps its phase and says why (``error``); ``retry``
queues it again. dsync is idempotent: a copy run twice copies nothing twice.
"""

import logging
import time
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from ..helper_client import HelperError, call_helper
from ..models import DomainMove, MailDomain, MailNode, MovePhase, NodeStatus
from . import apply, audit, dns_checks, jobs
from .outcome import Change

logger = logging.getLogger(__name__)

TASKS = "mailadmin.tasks."
# Which node's queue runs each phase's task, and the task.
PHASE_TASKS = {
    MovePhase.PREPARING: ("to_node_id", TASKS + "domain_move_arrived"),
    MovePhase.COPYING: ("from_node_id", TASKS + "domain_move_copy"),
    MovePhase.FINISHING: ("from_node_id", TASKS + "domain_move_finish"),
}


def live_move(domain: MailDomain) -> DomainMove | None:
    """Its move that is not done. One server (the database backend) never
    moves a domain: no query then (the DNS tab's query count stays)."""
    if not jobs.multi_node():
        return None
    return DomainMove.objects.filter(domain=domain).exclude(phase=MovePhase.DONE).select_related(
        "from_node", "to_node"
    ).first()


def start_move(actor, domain: MailDomain, node: MailNode) -> Change[DomainMove]:
    if node.pk == domain.node_id:
        raise ValidationError(_("%(domain)s is on %(node)s already.") % {"domain": domain.unicode_name, "node": node.name})
    if node.status != NodeStatus.ACTIVE:
        raise ValidationError(_("The node %(name)s takes no new domains.") % {"name": node.name})
    if live_move(domain) is not None:
        raise ValidationError(_("%(domain)s is moving already.") % {"domain": domain.unicode_name})
    if not jobs.multi_node():
        raise ValidationError(_("Moving mail between nodes needs the RQ task backend (MAILPANEL_TASK_BACKEND=rq)."))
    with transaction.atomic():
        old_node_id = domain.node_id
        domain.node = node
        domain.save(update_fields=["node", "updated_at"])
        audit.record(actor, "domain.move", domain.name, ["node"])
        job = jobs.request_apply(actor, domain=domain)  # the new node only: the old one has it all
        move = DomainMove.objects.create(domain=domain, from_node_id=old_node_id, to_node=node)
        _queue_phase(move)
    return Change(move, job, ("node",))


def confirm(actor, move: DomainMove) -> Change[DomainMove]:
    """The admin switched DNS: the final copy and the old node lets go."""
    if move.phase != MovePhase.FORWARDING:
        raise ValidationError(_("The move can be confirmed once the old node forwards the mail (now: %(phase)s).")
                              % {"phase": move.get_phase_display()})
    with transaction.atomic():
        _advance(move, MovePhase.FINISHING, "confirmed")
        audit.record(actor, "domain.move_confirm", move.domain.name, ["node"])
        _queue_phase(move)
    return Change(move, None, ("phase",))


def retry(actor, move: DomainMove) -> Change[DomainMove]:
    """Queue a failed phase again (it is idempotent)."""
    if move.phase not in PHASE_TASKS:
        raise ValidationError(_("Nothing to retry: the move waits for confirmation or is done."))
    with transaction.atomic():
        audit.record(actor, "domain.move_retry", move.domain.name, ["phase"])
        _queue_phase(move)
    return Change(move, None, ())


@dataclass(frozen=True)
class DnsChange:
    name: str
    type: str
    old: str  # "" = a new record
    new: str  # "" = remove it
    purpose: str


def dns_changes(move: DomainMove, server) -> list[DnsChange]:
    """What the admin changes at the DNS host for the move: the one record
    builder's list for the old node's identity against the new node's, the
    records that differ (the mail host's A/AAAA, SPF, …)."""
    domain = move.domain

    def by_key(node):
        return {(r.name, r.type, r.purpose): r.value for r in dns_checks.domain_records(domain, node.identity(server))}

    old, new = by_key(move.from_node), by_key(move.to_node)
    return [
        DnsChange(name, rtype, old.get((name, rtype, purpose), ""), new.get((name, rtype, purpose), ""), purpose)
        for name, rtype, purpose in sorted(old.keys() | new.keys())
        if old.get((name, rtype, purpose)) != new.get((name, rtype, purpose))
    ]


# -- the phases' tasks (each on its node's worker, with that node's helper) -----


def arrived(move_id: int) -> None:
    move = _move(move_id, MovePhase.PREPARING)
    if move is None:
        return
    name = move.domain.name
    files = _helper(move, {"op": "state", "domains": [name]}).get("files", {})
    if not any(path.startswith(apply.domain_folder(name)) for path in files):
        _fail(move, "the new node has no files of the domain yet (its apply failed or has not run)")
    with transaction.atomic():
        _advance(move, MovePhase.COPYING, f"{move.to_node.name} accepts {name}")
        _queue_phase(move)


def copy(move_id: int, after: str = "") -> None:
    """The first copy, while the old node still delivers; then it forwards.
    after: the mailboxes up to this one are copied (a task that ran out of
    its time budget queued the rest)."""
    move = _move(move_id, MovePhase.COPYING)
    if move is None:
        return
    synced = _sync(move, after, TASKS + "domain_move_copy")
    if synced is None:
        return  # continues in the task it queued
    with transaction.atomic():
        _advance(move, MovePhase.FORWARDING, _synced_line(synced))
        # rendered after the phase changed: the old node's moved_to file
        jobs.request_apply(None, domain_name=move.domain.name, node=move.from_node_id)


def finish(move_id: int, after: str = "") -> None:
    move = _move(move_id, MovePhase.FINISHING)
    if move is None:
        return
    synced = _sync(move, after, TASKS + "domain_move_finish")  # what the old node delivered before it forwarded
    if synced is None:
        return
    name = move.domain.name
    _advance(move, MovePhase.DONE, "final " + _synced_line(synced))
    # No longer rendered on the old node: its files go, it stops accepting.
    apply.apply_now(domains={name}, node=move.from_node)
    try:
        moved = call_helper({"op": "move_mail_away", "domain": name}).get("moved_to")
    except HelperError as exc:
        _log(move, f"the old copy was not moved away: {exc.message}", error=exc.message)
        raise
    _log(move, f"old copy moved to {moved}" if moved else "no old copy left")


# -- inside --------------------------------------------------------------------


def _queue_phase(move: DomainMove) -> None:
    node_field, task = PHASE_TASKS[move.phase]
    jobs.enqueue_on_node(getattr(move, node_field), task, move.pk)


def _move(move_id: int, phase: str) -> DomainMove | None:
    """The move when it is in this phase; None (nothing to do) when a
    repeated task finds it past it already."""
    move = DomainMove.objects.select_related("domain", "from_node", "to_node").filter(pk=move_id).first()
    if move is None or move.phase != phase:
        return None
    return move


def _advance(move: DomainMove, phase: str, line: str) -> None:
    move.phase = phase
    move.error = ""
    move.log += f"{timezone.now():%Y-%m-%d %H:%M:%S} {phase}: {line}\n"
    move.save(update_fields=["phase", "error", "log", "updated_at"])


def _log(move: DomainMove, line: str, error: str = "") -> None:
    move.log += f"{timezone.now():%Y-%m-%d %H:%M:%S} {line}\n"
    move.error = error
    move.save(update_fields=["log", "error", "updated_at"])


def _fail(move: DomainMove, message: str):
    _log(move, f"{move.phase} failed: {message}", error=message)
    raise RuntimeError(message)


def _helper(move: DomainMove, request: dict, timeout: float | None = None) -> dict:
    try:
        return call_helper(request, timeout=timeout)
    except HelperError as exc:
        _fail(move, exc.message)


# RQ ends a job after its queue's timeout (900 s): a task copies mailboxes one
# helper call each for about this long, then queues the rest as a new task on
# the same node (dsync is incremental, so a mailbox copied twice costs little).
COPY_BUDGET_SECONDS = 300
MAILBOX_TIMEOUT_SECONDS = 840


def _sync(move: DomainMove, after: str, task: str) -> list[str] | None:
    """Copy the mailboxes after `after` (sorted). The local parts it copied,
    or None when the budget ran out and the rest went onto the node's queue."""
    started = time.monotonic()
    local_parts = sorted(move.domain.accounts.filter(local_part__gt=after).values_list("local_part", flat=True))
    synced = []
    for local in local_parts:
        if synced and time.monotonic() - started > COPY_BUDGET_SECONDS:
            _log(move, f"copied {len(synced)} mailbox(es) up to {synced[-1]}; the rest in another task")
            jobs.enqueue_on_node(move.from_node_id, task, move.pk, synced[-1])
            return None
        request = {"op": "sync_mail", "domain": move.domain.name, "local_parts": [local], "peer": move.to_node.name}
        _helper(move, request, timeout=MAILBOX_TIMEOUT_SECONDS)
        synced.append(local)
    return synced


def _synced_line(synced: list[str]) -> str:
    return f"copied {len(synced)} mailbox(es) with dsync"
