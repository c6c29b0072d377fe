"""The apply service: database → snapshot → rendered files → helper.

Rendering is pure (mailconf.render); this module is the shell around it: it reads
the database once, asks the helper which files differ, and hands over only those.
"""

import base64
import hashlib
import logging
import os
from collections import defaultdict
from operator import itemgetter
from dataclasses import dataclass, field

from django.conf import settings
from django.db.models import Q, Value
from django.db.models.functions import Concat

from mailconf import peers
from mailconf import snapshot as snap
from mailconf import tls
from mailconf import validate as v
from mailconf.managed import CODE_FILES, synced_domain
from mailconf.params import CodeParams, code_params
from ..helper_client import HelperError, call_helper
from ..models import (
    DomainMove,
    Job,
    JobKind,
    JobState,
    MailAccount,
    MailAlias,
    MailDomain,
    MailForward,
    MailNode,
    MovePhase,
    RelaySettings,
    ServerSettings,
)
from mailconf.render import render_all
from .. import dnsbl
from . import jobs, send_limits

logger = logging.getLogger(__name__)

# Files that an apply owns: present on disk but no longer rendered → removed.
# /root/.snappymail is written once by the SnappyMail install and never by apply.
RENDERED_PREFIXES = ("/etc/exim4/", "/etc/dovecot/", "/etc/nftables.d/", "/var/lib/snappymail/")

def layout_from_settings() -> snap.Layout:
    overrides = getattr(settings, "MAILPANEL_LAYOUT", {}) or {}
    return snap.Layout(root=settings.MAILPANEL_ROOT, **overrides)


def sni_pairs(layout: snap.Layout) -> tuple[tls.SniName, ...]:
    """The SNI index's pairs (root's file, 0644: names only) whose domain
    certificate is there, so the panel renders the code files the helper
    will (it also loads each key: a pair only the panel sees makes one
    needless code render there, never a wrong file). () without TLS or
    without a readable index."""
    if not tls.offers_tls(layout):
        return ()
    try:
        with open(layout.path(tls.SNI_INDEX), "rb") as index:
            pairs = tls.parse_sni_index(index.read(tls.MAX_SNI_INDEX_BYTES + 1))
    except PermissionError as e:
        # the TLS folder must be 0755 (install.sh): else no apply ever renders
        # the domains' certificates (Dovecot local_name, nginx's sites)
        logger.warning("cannot read the SNI index, domain certificates are not rendered: %s", e)
        return ()
    except (OSError, ValueError):
        return ()
    present = {d for d in {p.domain for p in pairs} if os.path.isfile(layout.path(tls.domain_cert_paths(d)[0]))}
    return tuple(p for p in pairs if p.domain in present)


def mail_peers(layout: snap.Layout) -> peers.MailPeers:
    """Root's mail peers (0644, no secret in it), so the panel renders the
    doveadm listener and firewall opening the helper will; none when the file
    is absent, unreadable or broken (the helper then refuses the apply and
    says why)."""
    try:
        with open(layout.path(peers.MAIL_PEERS_FILE), "rb") as found:
            return peers.parse_mail_peers(found.read(peers.MAX_PEERS_BYTES + 1))
    except (OSError, ValueError):
        return peers.NO_PEERS


def _relay_from_values(row: dict | None) -> snap.Relay | None:
    if row is None:
        return None
    return snap.Relay(
        host=row["host"],
        port=row["port"],
        username=row["username"],
        password=row["password"],
        auth=row["auth"],
        tls=row["tls"],
    )


def _role_address(email: str) -> str:
    """Where postmaster@ and abuse@ go: the owner's email address, when it is
    one Exim can route to; without one they bounce."""
    try:
        return v.address(email) if email else ""
    except ValueError:
        return ""


RELAY_VALUES = ("domain_id", "host", "port", "username", "password", "auth", "tls")


def moving_from(node, server) -> dict[int, str]:
    """{domain id: where its mail goes ("" = still delivered here)} of the
    domains moving away from node whose move is not done."""
    moves = (
        DomainMove.objects.filter(from_node=node)
        .exclude(phase=MovePhase.DONE)
        .select_related("to_node")
    )
    forwarding = (MovePhase.FORWARDING, MovePhase.FINISHING)
    return {m.domain_id: node_address(m.to_node, server) if m.phase in forwarding else "" for m in moves}


def node_address(node, server) -> str:
    """Where another node reaches this node's Exim: its IPv4, else IPv6, else host name."""
    identity = node.identity(server)
    return identity.ipv4 or identity.ipv6 or identity.hostname


def build_snapshot(only_domains=None, node=None) -> snap.Snapshot:
    """The whole database as plain data, in a constant number of queries.
    only_domains: load just these domains (a one-domain apply).
    node: only the domains living on this MailNode, with its identity (what
    that node's worker renders); None: every domain, the server settings'.

    Plain values() rows grouped in Python, not model instances with
    prefetch_related: for 10,000 domains that is 0.5 s instead of 2 s. Sorted
    in Python, not by the database: collations differ between engines and the
    rendered bytes must not."""
    server = ServerSettings.load()
    domains = MailDomain.objects.live().values(
        "id", "name", "dkim_enabled", "dkim_private_key", "dkim_selector", "suspended", "hosted_elsewhere", "catchall",
        "owner__email", "role_address", "subaddressing", "local_senders",
    )
    relays = RelaySettings.objects.filter(domain__isnull=False).values(*RELAY_VALUES)
    accounts = MailAccount.objects.values(
        "id", "domain_id", "local_part", "password_hash", "quota_mb", "forward_only"
    )
    forwards = MailForward.objects.values("account_id", "target")
    aliases = MailAlias.objects.values("domain_id", "local_part", "target")
    moving_away = {}
    if node is not None:
        # A domain moving away stays here until its move is done: still
        # accepted, its mailboxes still served for the copy, and from the
        # forwarding phase on its mail sent on to the new node.
        moving_away = moving_from(node, server)
        ids = list(moving_away)
        domains = domains.filter(Q(node=node) | Q(id__in=ids))
        relays = relays.filter(Q(domain__node=node) | Q(domain_id__in=ids))
        accounts = accounts.filter(Q(domain__node=node) | Q(domain_id__in=ids))
        forwards = forwards.filter(Q(account__domain__node=node) | Q(account__domain_id__in=ids))
        aliases = aliases.filter(Q(domain__node=node) | Q(domain_id__in=ids))
    if only_domains is not None:
        names = sorted(only_domains)
        domains = domains.filter(name__in=names)
        relays = relays.filter(domain__name__in=names)
        accounts = accounts.filter(domain__name__in=names)
        forwards = forwards.filter(account__domain__name__in=names)
        aliases = aliases.filter(domain__name__in=names)

    sending = send_limits.sending_snapshot(only_domains)
    relay_by_domain = {row["domain_id"]: row for row in relays}
    forwards_by_account = defaultdict(list)
    for row in sorted(forwards, key=itemgetter("target")):
        forwards_by_account[row["account_id"]].append(row["target"])
    accounts_by_domain = defaultdict(list)
    for row in sorted(accounts, key=itemgetter("local_part")):
        accounts_by_domain[row["domain_id"]].append(row)
    aliases_by_domain = defaultdict(lambda: defaultdict(list))
    for row in sorted(aliases, key=itemgetter("local_part", "target")):
        aliases_by_domain[row["domain_id"]][row["local_part"]].append(row["target"])

    snapshot_domains = []
    for domain in sorted(domains, key=itemgetter("name")):
        domain_accounts = accounts_by_domain.get(domain["id"], ())
        snapshot_domains.append(
            snap.Domain(
                name=domain["name"],
                dkim_enabled=domain["dkim_enabled"],
                dkim_private_pem=domain["dkim_private_key"] if domain["dkim_enabled"] else "",
                dkim_selector=domain["dkim_selector"],
                suspended=domain["suspended"],
                hosted_elsewhere=domain["hosted_elsewhere"],
                relay=_relay_from_values(relay_by_domain.get(domain["id"])),
                mailboxes=tuple(
                    snap.Mailbox(
                        local_part=a["local_part"],
                        password_hash=a["password_hash"],
                        quota_mb=a["quota_mb"],
                        forward_only=a["forward_only"],
                        send_limits=sending.account(a["id"]),
                    )
                    for a in domain_accounts
                ),
                aliases=tuple(
                    snap.Alias(local, tuple(targets))
                    for local, targets in sorted(aliases_by_domain.get(domain["id"], {}).items())
                ),
                forwards=tuple(
                    snap.Forward(a["local_part"], tuple(forwards_by_account[a["id"]]))
                    for a in domain_accounts
                    if forwards_by_account.get(a["id"])
                ),
                catchall=domain["catchall"],
                role_address=_role_address(domain["role_address"] or domain["owner__email"]),
                subaddressing=domain["subaddressing"],
                local_senders=tuple(domain["local_senders"].split()),
                send_limits=sending.domain(domain["id"]),
                held_senders=sending.held.get(domain["id"], ()),
                moved_to=moving_away.get(domain["id"], ""),
                moved_to_port=settings.MAILPANEL_NODE_SMTP_PORT,
            )
        )
    global_relay = RelaySettings.objects.filter(domain__isnull=True).values(*RELAY_VALUES).first()
    return snap.Snapshot(
        server=server.identity() if node is None else node.identity(server),
        domains=tuple(snapshot_domains),
        global_relay=_relay_from_values(global_relay),
        dnsbl_zones=dnsbl.queried_zones(server.dnsbl_zones, server.dqs_key),
        internal_lookup=server.internal_lookup,
        sieve_enabled=server.sieve_enabled,
        sieve_external=server.sieve_external,
        snappymail=snap.SnappyMail(
            installed=server.snappymail_installed,
            admin_login=server.snappymail_admin_login,
            admin_password_hash=server.snappymail_admin_password_hash,
            admin_key=server.snappymail_admin_key,
        ),
        send_limits=sending.server,
        webmail=server.webmail,
    )


@dataclass
class Plan:
    write: dict[str, snap.FileSpec] = field(default_factory=dict)
    remove: list[str] = field(default_factory=list)
    code_changed: bool = False  # a code file differs: send the code parameters

    @property
    def empty(self) -> bool:
        return not self.write and not self.remove


def plan_changes(rendered: dict[str, snap.FileSpec], live_hashes: dict[str, str]) -> Plan:
    """Pure: which files differ from the live ones, which to remove."""
    plan = Plan()
    for path in sorted(rendered):
        spec = rendered[path]
        if live_hashes.get(path) != hashlib.sha256(spec.content).hexdigest():
            plan.write[path] = spec
    plan.remove = sorted(
        path
        for path in live_hashes
        if path not in rendered and path.startswith(RENDERED_PREFIXES)
    )
    # A live code file no longer rendered (the last domain certificate gone:
    # no per-name nginx sites) is the helper's to remove: it renders the code.
    plan.code_changed = any(path in CODE_FILES for path in [*plan.write, *plan.remove]) or any(
        path in CODE_FILES and path not in rendered for path in live_hashes
    )
    return plan


def helper_request(plan: Plan, params: CodeParams | None = None) -> dict:
    """The helper gets data files as content and code files as parameters: it
    renders exim4.conf, dovecot.conf, … itself (see mailconf.managed)."""
    request = {
        "op": "apply",
        "write": [
            {"path": path, "content_b64": base64.b64encode(spec.content).decode()}
            for path, spec in plan.write.items()
            if path not in CODE_FILES
        ],
        "remove": [path for path in plan.remove if path not in CODE_FILES],
    }
    if params is not None and plan.code_changed:
        request["code"] = params.to_json()
    return request


def multi_node_count() -> int:
    return MailNode.objects.count()


def domain_folder(name: str) -> str:
    return f"/etc/exim4/domains/{name}/"


def apply_now(log=None, domains=None, node=None) -> dict:
    """Render, hand the difference to the helper. Raises HelperError.

    domains=None renders and compares every managed file; a set of domain names
    renders and compares only those domains' folders (their files depend on
    nothing else), which keeps a one-domain change fast with 10,000 domains.
    node: the MailNode this process's helper serves (its domains only; a
    domain in `domains` that lives elsewhere now is pruned here)."""
    log = log or (lambda line: None)
    layout = layout_from_settings()
    first = {"written": [], "removed": []}
    if domains is not None:
        first, complete = _apply_domains(sorted(domains), layout, log, node)
        if complete:
            return first
        log("server-wide files are missing: applying everything")
    snapshot = build_snapshot(node=node)
    rendered = render_all(snapshot, layout, sni_pairs(layout), mail_peers(layout))
    live = call_helper({"op": "state"}).get("files", {})
    plan = plan_changes(rendered, live)
    log(f"rendered {len(rendered)} files, {len(plan.write)} changed, {len(plan.remove)} to remove")
    if plan.empty:
        log("nothing to do: the live configuration is up to date")
        return {**first, "reloads": {}}
    answer = _call_and_log(helper_request(plan, code_params(snapshot)), log)
    _log_written(answer, log)
    for key in ("written", "removed"):
        answer[key] = sorted({*first.get(key, []), *answer.get(key, [])})
    return answer


def _apply_domains(names: list[str], layout, log, node=None) -> tuple[dict, bool]:
    """One round trip: send those domains' rendered folders, the helper writes
    what differs and prunes the rest. Not complete when the server-wide files
    are not live yet (a first apply must be a full one)."""
    rendered = render_all(build_snapshot(only_domains=set(names), node=node), layout)
    plan = Plan(write={p: spec for p, spec in rendered.items() if synced_domain(p) in names})
    request = {**helper_request(plan), "sync_domains": names}
    log(f"only the files of {', '.join(names)}: {len(plan.write)} rendered")
    answer = _call_and_log(request, log)
    _log_written(answer, log)
    server_wide = {p for p in rendered if synced_domain(p) is None}
    complete = server_wide <= set(answer.get("server_files", []))
    if complete and not answer.get("written") and not answer.get("removed"):
        log("nothing to do: the live configuration is up to date")
    return answer, complete


def _log_written(answer: dict, log) -> None:
    lines = [f"wrote {path}" for path in answer.get("written", [])]
    lines += [f"removed {path}" for path in answer.get("removed", [])]
    # A job's log saves itself on every call: one call for all the lines, not
    # one UPDATE of the growing log per file (a first apply writes 40,000).
    extend = getattr(log, "extend", None)
    if extend is not None:
        extend(lines)
    else:
        for line in lines:
            log(line)


def _call_and_log(request: dict, log) -> dict:
    try:
        answer = call_helper(request)
    except HelperError as exc:
        _log_helper_answer(exc.answer or {}, log)
        raise
    _log_helper_answer(answer, log)
    return answer


def _log_helper_answer(answer: dict, log) -> None:
    """What each validator and service said; never file contents."""
    for path, outcome in sorted((answer.get("validation") or {}).items()):
        if not outcome.get("ok"):
            log(f"validation of {path} FAILED: {outcome.get('output', '').strip()}")
    for key in ("reloads", "reloads_after_restore"):
        for service, outcome in sorted((answer.get(key) or {}).items()):
            state = "ok" if outcome.get("ok") else "FAILED"
            label = "reload" if key == "reloads" else "reload after restore"
            log(f"{label} {service}: {state} {outcome.get('output', '').strip()}".rstrip())
    if answer.get("restored"):
        log(f"restored the previous files: {', '.join(answer['restored'])}")


def run_apply_job(job_id: int) -> None:
    orphaned = []

    def work(job, log):
        scope = None if job.scope is None else set(job.scope)
        # An older apply still "running" lost its worker (killed mid-job): what it
        # was to write is unknown here, so this one applies everything.
        orphaned.extend(
            Job.objects.filter(kind=JobKind.APPLY, state=JobState.RUNNING, pk__lt=job.pk)
            .filter(Q(node=job.node_id) | Q(node__isnull=True))
            .values_list("pk", flat=True)
        )
        if orphaned and scope is not None:
            log(f"job #{orphaned[0]} did not finish: applying everything")
            scope = None
        node = MailNode.objects.filter(pk=job.node_id).first() if job.node_id else None
        if node is not None and multi_node_count() > 1:
            log(f"node {node.name}")
        answer = apply_now(log, domains=scope, node=node)
        job.changed_files = sorted(answer.get("written", []) + answer.get("removed", []))

    job = jobs.run_job(job_id, work, expected=(HelperError,))
    if job.state == JobState.DONE and orphaned:
        _close_orphaned_applies(job, orphaned)
    if job.state == JobState.DONE and job.node_id:
        MailNode.objects.filter(pk=job.node_id).update(last_apply_at=job.finished_at)


def _close_orphaned_applies(done_job, orphaned) -> None:
    """Everything the orphaned jobs would have written is live now: close them
    in the job log instead of showing them running forever."""
    Job.objects.filter(pk__in=orphaned, state=JobState.RUNNING).update(
        state=JobState.FAILED,
        finished_at=done_job.finished_at,
        log=Concat(
            "log",
            Value(f"\nthe worker stopped during this job; job #{done_job.pk} has applied everything since"),
        ),
    )
