"""`mail cert …`: certificates from the ACME CA for the server's host name and
the mail domains (the same service as the periodic timer:
services.certificates)."""

from django.conf import settings
from django.core.management.base import CommandError

from ..models import MailNode
from ..services import certificates, jobs
from .common import add_json_flag, get_domain, system_actor


def register(nouns):
    parser = nouns.add_parser("cert", help="TLS certificates from the ACME CA")
    verbs = parser.add_subparsers(dest="verb", required=True)
    issue = verbs.add_parser("issue", help="order a certificate now: a domain's names that point here, or --server")
    target = issue.add_mutually_exclusive_group(required=True)
    target.add_argument("domain", nargs="?", help="a mail domain")
    target.add_argument("--server", action="store_true", help="the server's host name")
    issue.add_argument("--force", action="store_true", help="do not wait out the backoff after failures")
    issue.add_argument("--node", default="", help="with several mail nodes and --server: that node's host name only"
                       " (default: MAILPANEL_NODE; none: every node's)")
    add_json_flag(issue)
    issue.set_defaults(handler=cert_issue)
    listing = verbs.add_parser("list", help="names, issuer, expiry and last error of every certificate")
    add_json_flag(listing)
    listing.set_defaults(handler=cert_list)
    renew = verbs.add_parser("renew", help="order the missing ones and those expiring within 30 days (periodic)")
    renew.add_argument("--force", action="store_true", help="every certificate, now, whatever its expiry or backoff")
    add_json_flag(renew)
    renew.set_defaults(handler=cert_renew)


def _describe(outcome) -> str:
    cert = outcome.certificate
    if outcome.issued:
        text = f"issued for {', '.join(cert.names)} by {cert.issuer}, valid until {cert.not_after:%Y-%m-%d %H:%M} UTC"
        return text + (f" (but: {outcome.error})" if outcome.error else "")
    if outcome.waiting:
        return (f"waiting until {cert.next_attempt_at:%Y-%m-%d %H:%M} UTC after {cert.attempts} failures"
                f" (--force to try now); last error: {cert.last_error}")
    return f"failed: {outcome.error}"


def _queued(command, options, queued):
    """Several mail nodes: each order runs in its node's worker."""
    if options["json"]:
        return {"queued": [{"name": q.name, "queue": q.queue} for q in queued]}
    for q in queued:
        command.stdout.write(f"{q.name}: queued on {q.queue} (mail cert list shows the outcome)")
    return None


def cert_issue(command, options):
    domain = None if options["server"] else get_domain(options["domain"])
    if options["node"] and domain is not None:
        raise CommandError("--node goes with --server (a domain's certificate is ordered on its own node)")
    if jobs.multi_node():
        nodes, name = None, options["node"] or (settings.MAILPANEL_NODE if domain is None else "")
        if name:
            nodes = list(MailNode.objects.filter(name=name))
            if not nodes:
                raise CommandError(f"no mail node {name!r}")
        return _queued(command, options, certificates.request_issue(
            system_actor(), domain, force=options["force"], nodes=nodes))
    outcome = certificates.issue(system_actor(), domain, force=options["force"])
    name = domain.name if domain else "the server"
    if options["json"]:
        return {"issued": outcome.issued, "waiting": outcome.waiting, "error": outcome.error,
                **certificates.as_dict(outcome.certificate, domain.name if domain else "")}
    command.stdout.write(f"{name}: {_describe(outcome)}")
    for entry in outcome.certificate.left_out if domain else ():
        command.stdout.write(f"  left out {entry['name']}: {entry['reason']}")
    if not outcome.issued:
        raise CommandError(f"no certificate for {name}")
    return None


def cert_list(command, options):
    rows = certificates.listing()
    if options["json"]:
        return rows
    for row in rows:
        until = row["not_after"][:16] if row["not_after"] else "none yet"
        command.stdout.write(f"{row['name']}: {' '.join(row['names']) or '-'} until {until} ({row['issuer'] or '-'})")
        if row["last_error"]:
            command.stdout.write(f"  last error: {row['last_error']}")
    return None


def cert_renew(command, options):
    def report(name, outcome):
        if not options["json"]:
            command.stdout.write(f"{name}: {_describe(outcome)}")

    if jobs.multi_node():  # each order in its node's worker
        counts = certificates.request_renew(system_actor(), force=options["force"])
    else:
        counts = certificates.renew(system_actor(), force=options["force"], report=report)
    if not options["json"]:
        command.stdout.write(", ".join(f"{key} {value}" for key, value in counts.items()))
    return counts
