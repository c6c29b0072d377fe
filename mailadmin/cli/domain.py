from django.core.exceptions import ValidationError
from django.core.management.base import CommandError
from django.db.models import Count

from ..models import MailDomain
from ..services import domains as domain_service
from ..services import nodes, ownership
from ..validation import normalize_address, normalize_unix_users
from .common import add_json_flag, get_domain, get_user, system_actor


def register(nouns):
    parser = nouns.add_parser("domain", help="mail domains")
    verbs = parser.add_subparsers(dest="verb", required=True)
    add = verbs.add_parser("add")
    add.add_argument("owner")
    add.add_argument("domain")
    add.add_argument("--no-dkim", action="store_true")
    add.add_argument("--node", default="", help="the mail node it lives on (default: the first active one)")
    add.set_defaults(handler=domain_add)
    delete = verbs.add_parser("delete")
    delete.add_argument("domain")
    delete.set_defaults(handler=domain_delete)
    lst = verbs.add_parser("list")
    lst.add_argument("--owner")
    add_json_flag(lst)
    lst.set_defaults(handler=domain_list)
    set_ = verbs.add_parser("set")
    set_.add_argument("domain")
    set_.add_argument("--dkim", choices=["yes", "no"])
    set_.add_argument("--suspended", choices=["yes", "no"])
    set_.add_argument("--mail-hosted-elsewhere", choices=["yes", "no"])
    set_.add_argument("--subaddressing", choices=["yes", "no"])
    set_.add_argument("--role-address", help="where postmaster@ and abuse@ go ('' = the owner's email)")
    set_.add_argument("--local-senders", help="Unix users whose local mail may use the domain's relay and DKIM key")
    set_.set_defaults(handler=domain_set)
    verify = verbs.add_parser("verify", help="look a pending domain's ownership TXT record up now")
    verify.add_argument("domain")
    verify.add_argument("--skip-dns", action="store_true", help="verify without the record (the admin vouches)")
    verify.set_defaults(handler=domain_verify)
    pending = verbs.add_parser("verify-pending", help="verify every pending domain whose record is published (periodic)")
    add_json_flag(pending)
    pending.set_defaults(handler=domain_verify_pending)


def domain_add(command, options):
    owner = get_user(options["owner"])
    node = nodes.get_node(options["node"]) if options["node"] else None
    domain = domain_service.add_domain(
        system_actor(), owner, options["domain"], dkim_enabled=not options["no_dkim"], node=node
    )
    command.stdout.write(f"added {domain.name} for {owner.username}")


def domain_delete(command, options):
    domain = get_domain(options["domain"])
    outcome = domain_service.delete_domain(system_actor(), domain)
    command.stdout.write(f"deleted {domain.name}")
    if outcome.error:
        raise CommandError(f"the mail of {domain.name} was not moved away: {outcome.error}")
    if outcome.moved_to:
        command.stdout.write(f"its mail was moved to {outcome.moved_to}")


def domain_verify(command, options):
    domain = get_domain(options["domain"])
    outcome = ownership.verify_domain(system_actor(), domain, skip_dns=options["skip_dns"])
    if not outcome.verified:
        raise CommandError(f"{domain.name} is not verified: {outcome.problem}")
    command.stdout.write(f"{domain.name} is verified")


def domain_verify_pending(command, options):
    counts = ownership.verify_pending(system_actor())
    if not options["json"]:
        command.stdout.write(
            f"pending {counts['pending']}, verified {counts['verified']}, refused {counts['refused']}"
        )
    return counts


def domain_list(command, options):
    domains = MailDomain.objects.select_related("owner").annotate(accounts_count=Count("accounts"))
    if options.get("owner"):
        domains = domains.filter(owner=get_user(options["owner"]))
    rows = [
        {
            "name": d.name,
            "unicode_name": d.unicode_name,
            "owner": d.owner.username,
            "dkim": d.dkim_enabled,
            "suspended": d.suspended,
            "pending": d.pending,
            "hosted_elsewhere": d.hosted_elsewhere,
            "accounts": d.accounts_count,
        }
        for d in domains.order_by("name")
    ]
    if not options["json"]:
        for row in rows:
            command.stdout.write(f"{row['unicode_name']}\t{row['owner']}\tdkim={'on' if row['dkim'] else 'off'}")
    return rows


def domain_set(command, options):
    domain = get_domain(options["domain"])
    flags = {"dkim": "dkim_enabled", "suspended": "suspended", "mail_hosted_elsewhere": "hosted_elsewhere",
             "subaddressing": "subaddressing"}
    changes = {field: options[opt] == "yes" for opt, field in flags.items() if options.get(opt)}
    try:
        if options.get("role_address") is not None:
            raw = options["role_address"]
            changes["role_address"] = normalize_address(raw) if raw.strip() else ""
        if options.get("local_senders") is not None:
            changes["local_senders"] = normalize_unix_users(options["local_senders"])
    except ValidationError as exc:
        raise CommandError(" ".join(exc.messages)) from exc
    domain_service.update_domain(system_actor(), domain, **changes)
    command.stdout.write(f"updated {domain.name}")

