"""CLI noun `held`: senders whose mail is held after they passed their
sending limit. `check` is the periodic job (mailpanel-held-mail.timer);
`release` / `delete` end a hold as the panel does: a new password from stdin
(or --keep-password), sessions ended, the held mail delivered or deleted."""

import time

from django.core.management.base import CommandError

from ..models import Job, SendHold
from ..services import holds
from ..validation import normalize_domain
from .common import add_json_flag, read_secret_from_stdin, system_actor
from .queue import via_helper


def register(nouns):
    parser = nouns.add_parser("held", help="senders held after passing their sending limit")
    verbs = parser.add_subparsers(dest="verb", required=True)
    lst = verbs.add_parser("list")
    add_json_flag(lst)
    lst.set_defaults(handler=held_list)
    check = verbs.add_parser("check", help="find new held senders, suspend them, notify once (periodic)")
    check.set_defaults(handler=held_check)
    for verb in (holds.RELEASE, holds.DELETE):
        sub = verbs.add_parser(verb, help=f"{verb} a held sender's mail and lift the suspension")
        sub.add_argument("address", help="the mailbox, or *@DOMAIN for its web applications")
        how = sub.add_mutually_exclusive_group()
        how.add_argument("--password-stdin", action="store_true", help="the mailbox's new password on stdin")
        how.add_argument("--keep-password", action="store_true", help="the password was not stolen")
        sub.set_defaults(handler=held_end, action=verb)


def held_list(command, options):
    rows = [
        {"sender": hold.sender_key, "reason": hold.reason, "held": hold.held_count,
         "since": hold.created_at.isoformat(), "notified": bool(hold.notified_at)}
        for hold in SendHold.objects.select_related("domain").order_by("created_at")
    ]
    if not options["json"]:
        if not rows:
            command.stdout.write("no held senders")
        for row in rows:
            command.stdout.write(f"{row['sender']}\t{row['held']} held\t{row['reason']}\tsince {row['since']}")
    return rows


@via_helper
def held_check(command, options):
    created = holds.check_held(log=command.stdout.write)
    if created:
        command.stdout.write(f"{len(created)} new held senders")


def _hold(address: str) -> SendHold:
    local, _sep, name = address.strip().rpartition("@")
    hold = SendHold.objects.select_related("domain", "domain__owner").filter(
        domain__name=normalize_domain(name) if name else "", local_part=local.lower()
    ).first()
    if hold is None:
        raise CommandError(f"{address} is not held")
    return hold


@via_helper
def held_end(command, options):
    hold = _hold(options["address"])
    password = read_secret_from_stdin("password") if options["password_stdin"] else ""
    job = holds.resolve(system_actor(), hold, options["action"], password=password,
                        keep_password=options["keep_password"])
    holds.run_finish_job(job.pk, hold.pk, options["action"], hold.local_part != holds.DOMAIN_STAR)
    deadline = time.monotonic() + 120
    job.refresh_from_db()
    while not job.finished and time.monotonic() < deadline:  # a worker took it first
        time.sleep(0.5)
        job.refresh_from_db()
    command.stdout.write(job.log)
    if job.state != "done":
        raise CommandError(f"job #{job.pk} {job.state}")
    return Job.objects.filter(pk=job.pk).values("id", "state", "result").first()
