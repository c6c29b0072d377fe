"""`mail dmarc …`: where a domain's DMARC aggregate reports go, reading them
(the periodic job) and what they said (services.dmarc_reports)."""

from ..services import dmarc_reports
from .common import add_json_flag, get_domain, system_actor


def register(nouns):
    parser = nouns.add_parser("dmarc", help="DMARC aggregate reports")
    verbs = parser.add_subparsers(dest="verb", required=True)
    set_ = verbs.add_parser("set", help="reports go to LOCAL@DOMAIN, a mailbox the panel makes and reads")
    set_.add_argument("domain")
    set_.add_argument("local_part")
    set_.set_defaults(handler=dmarc_set)
    clear = verbs.add_parser("clear", help="stop collecting reports (the mailbox goes, what was read stays)")
    clear.add_argument("domain")
    clear.set_defaults(handler=dmarc_clear)
    read = verbs.add_parser("read", help="read new reports now, as a job in the job log (periodic)")
    read.add_argument("domain", nargs="?", help="one domain (default: every domain that collects reports)")
    add_json_flag(read)
    read.set_defaults(handler=dmarc_read)
    show = verbs.add_parser("show", help="per source IP and day: messages, alignment, what receivers did")
    show.add_argument("domain")
    show.add_argument("--days", type=int, default=31)
    add_json_flag(show)
    show.set_defaults(handler=dmarc_show)


def dmarc_set(command, options):
    domain = get_domain(options["domain"])
    mailbox = dmarc_reports.set_mailbox(system_actor(), domain, options["local_part"]).object
    address = f"{mailbox.account.local_part}@{domain.name}"
    command.stdout.write(f"reports go to {address}; publish rua=mailto:{address} in the DMARC record (mail dns {domain.name})")


def dmarc_clear(command, options):
    dmarc_reports.clear_mailbox(system_actor(), get_domain(options["domain"]))
    command.stdout.write("reports are no longer collected")


def dmarc_read(command, options):
    domains = [get_domain(options["domain"])] if options.get("domain") else None
    echo = None if options["json"] else command.stdout.write
    job = dmarc_reports.read_reports(system_actor(), domains, echo=echo)
    if options["json"]:
        return {"job": job.pk, "state": job.state, **job.result}
    return None


def dmarc_show(command, options):
    domain = get_domain(options["domain"])
    rows = dmarc_reports.source_rows(domain, days=options["days"])
    if options["json"]:
        return {"domain": domain.name, "rows": [{**row, "day": row["day"].isoformat()} for row in rows]}
    for row in rows:
        command.stdout.write(
            f"{row['day']} {row['source_ip']:<39} {row['source']:<6} messages {row['messages']} "
            f"dkim {row['dkim']} spf {row['spf']} quarantined {row['quarantined']} rejected {row['rejected']}"
        )
    return None
