"""CLI noun `queue`: Exim's queue (list, show, deliver now, freeze, thaw,
delete, bounce) through the helper, as in the panel."""

import datetime
import functools

from django.core.management.base import CommandError

from ..helper_client import HelperError
from ..services import mail_queue
from .common import add_json_flag, system_actor

VERBS = {  # verb → the helper's queue action
    "release": "deliver",
    "delete": "delete",
    "freeze": "freeze",
    "thaw": "thaw",
    "bounce": "bounce",
}
HELP = {
    "release": "deliver now (thaws a frozen message)",
    "delete": "remove without telling the sender",
    "freeze": "keep in the queue, no delivery",
    "thaw": "deliver at the next queue run",
    "bounce": "give up: the sender gets a bounce",
}


def register(nouns):
    parser = nouns.add_parser("queue", help="Exim's mail queue")
    verbs = parser.add_subparsers(dest="verb", required=True)
    lst = verbs.add_parser("list")
    lst.add_argument("--frozen", action="store_true", help="only frozen messages")
    lst.add_argument("--held", action="store_true", help="only mail held by a sending limit")
    lst.add_argument("--domain", default="", help="sent from or to this domain")
    lst.add_argument("--sender", default="")
    lst.add_argument("--recipient", default="")
    lst.add_argument("--page", type=int, default=1)
    add_json_flag(lst)
    lst.set_defaults(handler=queue_list)
    show = verbs.add_parser("show", help="a message's envelope and headers")
    show.add_argument("id")
    show.add_argument("--body", action="store_true", help="the body too (at most 64 KiB)")
    add_json_flag(show)
    show.set_defaults(handler=queue_show)
    for verb, action in VERBS.items():
        sub = verbs.add_parser(verb, help=HELP[verb])
        sub.add_argument("ids", nargs="+", metavar="ID")
        sub.set_defaults(handler=queue_act, action=action)


def via_helper(handler):
    """The helper's refusal or failure as a clear error, not a traceback."""

    @functools.wraps(handler)
    def run(command, options):
        try:
            return handler(command, options)
        except HelperError as exc:
            raise CommandError(exc.message) from None

    return run


def _when(epoch):
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


@via_helper
def queue_list(command, options):
    from ..validation import normalize_domain

    filters = mail_queue.QueueFilter(
        sender=options["sender"],
        recipient=options["recipient"],
        domain=normalize_domain(options["domain"]) if options["domain"] else "",
        frozen=True if options["frozen"] else None,
        held=True if options["held"] else None,
    )
    page = mail_queue.list_page(system_actor(), filters, options["page"])
    if not options["json"]:
        counts = "" if page.frozen is None else f" ({page.frozen} frozen, {page.held} held)"
        command.stdout.write(f"{page.total} messages{counts}, page {page.number} of {page.pages}")
        for m in page.messages:
            state = "held" if m["held"] else "frozen" if m["frozen"] else ""
            command.stdout.write(f"{m['id']}  {_when(m['received'])}  {m['size']:>8}  <{m['sender']}>  "
                                 f"{', '.join(m['recipients'])}  {state}".rstrip())
    return {"total": page.total, "page": page.number, "pages": page.pages, "messages": page.messages}


@via_helper
def queue_show(command, options):
    if not mail_queue.MESSAGE_ID_RE.fullmatch(options["id"]):
        raise CommandError(f"{options['id']!r} is not an Exim message id")
    shown = mail_queue.show(system_actor(), options["id"], body=options["body"])
    if shown is None:
        raise CommandError(f"no message {options['id']} in the queue")
    if not options["json"]:
        m = shown["message"]
        command.stdout.write(f"id: {m['id']}\nfrom: <{m['sender']}>\nto: {', '.join(m['recipients'])}")
        command.stdout.write("\n".join(m["headers"]))
        if shown["body"] is not None:
            command.stdout.write("\n" + shown["body"])
    return shown


@via_helper
def queue_act(command, options):
    bad = [i for i in options["ids"] if not mail_queue.MESSAGE_ID_RE.fullmatch(i)]
    if bad:
        raise CommandError(f"not an Exim message id: {', '.join(bad)}")
    answer = mail_queue.act(system_actor(), options["action"], options["ids"])
    if answer.get("output"):
        command.stdout.write(answer["output"])
    command.stdout.write(f"{options['action']}: {len(answer.get('ids', []))} messages")
