"""`mail dns DOMAIN [--json] [--zone] [--check]`: the records a domain needs
(the same list the page shows), as a BIND snippet, or checked live."""

from ..models import ServerSettings
from ..services import dns_checks
from ..zonefile import render_zone
from .common import add_json_flag, get_domain


def register(nouns):
    parser = nouns.add_parser("dns", help="DNS records a mail domain needs; --check looks them up")
    parser.add_argument("domain")
    parser.add_argument("--zone", action="store_true", help="print a BIND zone snippet")
    parser.add_argument("--check", action="store_true", help="look every record up now and store the result")
    add_json_flag(parser)
    parser.set_defaults(handler=dns_show)


def dns_show(command, options):
    domain = get_domain(options["domain"])
    records = dns_checks.domain_records(domain, dns_checks.domain_identity(domain, ServerSettings.load()))
    if options["zone"]:
        text = render_zone(domain.name, records)
        if options["json"]:
            return {"domain": domain.name, "zone": text}
        command.stdout.write(text, ending="")
        return None
    data = {"domain": domain.name, "records": [r.as_dict() for r in records]}
    if options["check"]:
        result = dns_checks.check_domain(domain)
        data["check"] = {
            "checked_at": result.checked_at.isoformat(),
            "summary": result.summary,
            "results": result.results,
        }
    if options["json"]:
        return data
    if "check" in data:
        for verdict in data["check"]["results"]:
            found = ", ".join(verdict["found"]) or "-"
            command.stdout.write(f"{verdict['status']:<9} {verdict['type']:<5} {verdict['name']}  found: {found}")
            if verdict["fix"]:
                command.stdout.write(f"          {verdict['fix']}")
        command.stdout.write(f"summary: {data['check']['summary']}")
    else:
        for r in records:
            command.stdout.write(f"{r.level:<11} {r.name}\t{r.type}\t{r.value}")
    return None
