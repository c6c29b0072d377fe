"""`mail node …`: the mail nodes (services.nodes), the same form as the page."""

from django.utils import timezone

from django.core.management.base import CommandError

from ..models import DomainMove, MailDomain, MovePhase, ServerSettings
from ..services import domain_move, nodes
from .common import add_json_flag, get_domain, system_actor


def register(nouns):
    parser = nouns.add_parser("node", help="mail nodes: the servers domains live on")
    verbs = parser.add_subparsers(dest="verb", required=True)
    list_ = verbs.add_parser("list", help="every node with its heartbeat, last apply and version")
    add_json_flag(list_)
    list_.set_defaults(handler=node_list)
    add = verbs.add_parser("add", help="a new node (needs MAILPANEL_TASK_BACKEND=rq)")
    add.add_argument("name", help="lower-case letters, digits, inner hyphens; its queue is node-NAME")
    add.add_argument("--hostname", default="", help="default: the server settings' host name")
    add.add_argument("--ipv4", default="")
    add.add_argument("--ipv6", default="")
    add.set_defaults(handler=node_add)
    set_ = verbs.add_parser("set", help="a node's host name, addresses or status")
    set_.add_argument("name")
    set_.add_argument("--hostname")
    set_.add_argument("--ipv4")
    set_.add_argument("--ipv6")
    set_.add_argument("--status", choices=["active", "draining"], help="draining: no new domains")
    set_.set_defaults(handler=node_set)
    show = verbs.add_parser("show", help="one node and its domains")
    show.add_argument("name")
    add_json_flag(show)
    show.set_defaults(handler=node_show)
    move = verbs.add_parser("move", help="move a domain to another node (with its mail: in phases)")
    move.add_argument("domain")
    move.add_argument("name", help="the node it moves to")
    move.set_defaults(handler=node_move)
    moves = verbs.add_parser("moves", help="domains moving between nodes: phase, DNS changes, errors")
    add_json_flag(moves)
    moves.set_defaults(handler=node_moves)
    confirm = verbs.add_parser("confirm", help="a moving domain's DNS names the new node: final copy, old node lets go")
    confirm.add_argument("domain")
    confirm.set_defaults(handler=node_move_step, step=domain_move.confirm)
    retry = verbs.add_parser("retry", help="queue a moving domain's failed phase again")
    retry.add_argument("domain")
    retry.set_defaults(handler=node_move_step, step=domain_move.retry)


def _row(row: nodes.NodeRow) -> dict:
    node = row.node
    return {
        "name": node.name,
        "hostname": node.hostname,
        "ipv4": node.ipv4 or "",
        "ipv6": node.ipv6 or "",
        "status": node.status,
        "domains": row.domains,
        "pending_applies": row.pending_jobs,
        "heartbeat_at": node.heartbeat_at.isoformat() if node.heartbeat_at else None,
        "last_apply_at": node.last_apply_at.isoformat() if node.last_apply_at else None,
        "version": node.version,
        "not_answering": row.stale,
    }


def _line(data: dict) -> str:
    flag = "  NOT ANSWERING" if data["not_answering"] else ""
    return (
        f"{data['name']:<16} {data['status']:<9} {data['domains']:>6} domains  "
        f"heartbeat {data['heartbeat_at'] or 'never'}  last apply {data['last_apply_at'] or 'never'}  "
        f"version {data['version'] or '?'}{flag}"
    )


def node_list(command, options):
    rows = [_row(row) for row in nodes.node_rows(timezone.now())]
    if options.get("json"):
        return rows
    for data in rows:
        command.stdout.write(_line(data))


def node_add(command, options):
    data = {key: options[key] for key in ("name", "hostname", "ipv4", "ipv6")}
    node = nodes.add_node(system_actor(), data)
    command.stdout.write(f"node {node.name} added: its worker serves the queue {node.queue_name}")


def node_set(command, options):
    node = nodes.get_node(options["name"])
    data = {key: options[key] for key in ("hostname", "ipv4", "ipv6", "status") if options[key] is not None}
    data = {"hostname": node.hostname, "ipv4": node.ipv4 or "", "ipv6": node.ipv6 or "", **data}
    change = nodes.update_node(system_actor(), node, data)
    command.stdout.write(f"node {node.name}: {', '.join(change.changed) or 'nothing'} changed")


def node_show(command, options):
    node = nodes.get_node(options["name"])
    (row,) = [row for row in nodes.node_rows() if row.node.pk == node.pk]
    data = {**_row(row), "domain_names": list(MailDomain.objects.filter(node=node).values_list("name", flat=True))}
    if options.get("json"):
        return data
    command.stdout.write(_line(data))
    for name in data["domain_names"]:
        command.stdout.write(f"  {name}")


def node_move(command, options):
    domain = get_domain(options["domain"])
    node = nodes.get_node(options["name"])
    change = nodes.move_domain(system_actor(), domain, node)
    if domain_move.live_move(domain) is not None:
        command.stdout.write(
            f"{domain.name} moves to node {node.name} with its mail; `mail node moves` shows the phase, "
            f"`mail node confirm {domain.name}` finishes it once DNS names the new node"
        )
    elif change.changed:
        command.stdout.write(f"{domain.name} moves to node {node.name}")
    else:
        command.stdout.write(f"{domain.name} is on node {node.name} already")


def node_moves(command, options):
    server = ServerSettings.load()
    rows = []
    for move in DomainMove.objects.exclude(phase=MovePhase.DONE).select_related("domain", "from_node", "to_node"):
        rows.append({
            "domain": move.domain.name,
            "from": move.from_node.name,
            "to": move.to_node.name,
            "phase": move.phase,
            "error": move.error,
            "dns_changes": [
                {"name": c.name, "type": c.type, "old": c.old, "new": c.new}
                for c in domain_move.dns_changes(move, server)
            ],
        })
    if options.get("json"):
        return rows
    for row in rows:
        error = f"  ERROR {row['error']}" if row["error"] else ""
        command.stdout.write(f"{row['domain']:<30} {row['from']} → {row['to']}  {row['phase']}{error}")
        for change in row["dns_changes"]:
            command.stdout.write(f"  {change['name']} {change['type']}: {change['old'] or '(none)'} → {change['new'] or '(remove)'}")


def node_move_step(command, options):
    domain = get_domain(options["domain"])
    move = domain_move.live_move(domain)
    if move is None:
        raise CommandError(f"{domain.name} is not moving")
    options["step"](system_actor(), move)
    command.stdout.write(f"{domain.name}: {'confirmed' if options['step'] is domain_move.confirm else 'queued again'}")
