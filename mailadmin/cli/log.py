"""CLI noun `log`: “where is my mail?” — Exim's main log and Dovecot's
delivery log searched through the helper, each message's lines joined."""

from ..services import mail_log
from .common import add_json_flag, system_actor
from .queue import via_helper


def register(nouns):
    parser = nouns.add_parser("log", help="search the mail logs")
    verbs = parser.add_subparsers(dest="verb", required=True)
    search = verbs.add_parser("search", help="by Message-ID, Exim id, sender or recipient")
    search.add_argument("term")
    search.add_argument("--days", type=int, default=mail_log.DEFAULT_DAYS, choices=range(1, mail_log.MAX_DAYS + 1),
                        metavar=f"1-{mail_log.MAX_DAYS}")
    add_json_flag(search)
    search.set_defaults(handler=log_search)


@via_helper
def log_search(command, options):
    lines, truncated = mail_log.search(system_actor(), options["term"], options["days"])
    if not options["json"]:
        for line in lines:
            command.stdout.write(f"[{line.source}] {line.text}")
        if truncated:
            command.stdout.write("(more lines than shown: narrow the search)")
    return {"lines": [{"source": l.source, "line": l.text} for l in lines], "truncated": truncated}
