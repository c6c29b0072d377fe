"""CLI noun `limit`: sending limits (messages per hour and per day,
recipients per message) for the server's defaults, a domain or a mailbox.
A number sets it (0 = no limit), "none" inherits the wider scope again."""

import argparse

from django.core.management.base import CommandError

from ..models import SendLimit
from ..services import accounts as account_service
from ..services import send_limits
from .common import add_json_flag, get_domain, system_actor

INHERIT = "none"
OPTIONS = (("--per-hour", "per_hour"), ("--per-day", "per_day"), ("--recipients", "recipients"))


def register(nouns):
    parser = nouns.add_parser("limit", help="sending limits: server defaults, a domain, a mailbox")
    verbs = parser.add_subparsers(dest="verb", required=True)
    set_ = verbs.add_parser("set", help="N (0 = no limit) or 'none' (inherit) per field")
    target = set_.add_mutually_exclusive_group(required=True)
    target.add_argument("target", nargs="?", metavar="ADDRESS|DOMAIN")
    target.add_argument("--default", action="store_true", help="the server-wide defaults")
    for option, _field in OPTIONS:
        set_.add_argument(option, type=limit_value, metavar="N|none")
    set_.set_defaults(handler=limit_set)
    show = verbs.add_parser("show", help="what applies (and where it comes from); no target: every limit set")
    show.add_argument("target", nargs="?", metavar="ADDRESS|DOMAIN")
    add_json_flag(show)
    show.set_defaults(handler=limit_show)


def limit_value(text: str):
    if text.strip().lower() == INHERIT:
        return INHERIT
    try:
        return send_limits.normalize_limit(text, "limit")
    except Exception:
        raise argparse.ArgumentTypeError(
            f"a limit is a whole number from 0 (no limit) to {send_limits.MAX_LIMIT}, or '{INHERIT}'"
        ) from None


def _scope(target):
    """(domain, account) of ADDRESS|DOMAIN; (None, None) for the server."""
    if not target:
        return None, None
    if "@" in target:
        account = account_service.get_account(target)
        return None, account
    return get_domain(target), None


def limit_set(command, options):
    values = {
        field: None if options[field] == INHERIT else options[field]
        for _option, field in OPTIONS
        if options.get(field) is not None
    }
    if not values:
        raise CommandError("nothing to set: give --per-hour, --per-day or --recipients")
    domain, account = _scope(None if options["default"] else options["target"])
    send_limits.set_limits(system_actor(), domain=domain, account=account, **values)
    _write_effective(command, options["target"] if not options["default"] else None)


def _describe(value):
    return "no limit" if not value else str(value)


def _write_effective(command, target):
    domain, account = _scope(target)
    if domain is None and account is None:
        row = send_limits.stored()
        shown = {field: getattr(row, field) for field in send_limits.FIELDS}
        command.stdout.write("server defaults: " + ", ".join(f"{f}={_describe(v)}" for f, v in shown.items()))
        return shown
    effective = send_limits.effective(account.domain if account else domain, account)
    command.stdout.write(
        f"{target}: "
        + ", ".join(f"{f}={_describe(e.value)}" + (f" ({e.source})" if e.source else "") for f, e in effective.items())
    )
    return {f: {"value": e.value, "from": e.source} for f, e in effective.items()}


def limit_show(command, options):
    if options["target"]:
        return _write_effective(command, options["target"])
    rows = []
    for row in SendLimit.objects.select_related("domain", "account", "account__domain").order_by("pk"):
        scope = (f"{row.account.local_part}@{row.account.domain.name}" if row.account_id
                 else row.domain.name if row.domain_id else "default")
        rows.append({"scope": scope, **{f: getattr(row, f) for f in send_limits.FIELDS}})
    if not options["json"]:
        if not rows:
            command.stdout.write("no sending limits set")
        for row in rows:
            command.stdout.write(
                row["scope"] + ": " + ", ".join(
                    f"{f}={INHERIT if row[f] is None else _describe(row[f])}" for f in send_limits.FIELDS
                )
            )
    return rows
