"""`mail diagnose port25|blacklist|rdns [--json]`, `mail diagnose domain|receive DOMAIN [--json]`.
Runs in the foreground (each check has the settings' timeout)."""

from ..services import dns_checks
from .common import add_json_flag, get_domain


def register(nouns):
    parser = nouns.add_parser("diagnose", help="deliverability checks")
    verbs = parser.add_subparsers(dest="verb", required=True)
    for name, handler, help_text in (
        ("port25", diagnose_port25, "can this server reach port 25 of a remote MX"),
        ("blacklist", diagnose_blacklist, "the server IPs against the configured DNSBLs"),
        ("rdns", diagnose_rdns, "reverse DNS of the server IPs"),
    ):
        verb = verbs.add_parser(name, help=help_text)
        add_json_flag(verb)
        verb.set_defaults(handler=handler)
    for name, help_text in (
        ("domain", "receiving (MX) and sending readiness (SPF, DKIM, DMARC) of a domain"),
        ("receive", "receiving (MX) of a domain"),
    ):
        verb = verbs.add_parser(name, help=help_text)
        verb.add_argument("domain")
        verb.add_argument("--connect", action="store_true", help="also connect to port 25 of each MX address")
        add_json_flag(verb)
        verb.set_defaults(handler=diagnose_domain, only_receive=name == "receive")


def _out(command, options, data, lines):
    if options["json"]:
        return data
    for line in lines:
        command.stdout.write(line)
    return None


def diagnose_port25(command, options):
    data = dns_checks.port25()
    lines = [f"port 25 to {data['target']}: {data['status']} {data['banner'] or data['detail']}".rstrip()]
    lines += [f"  - {fix}" for fix in data["fixes"]]
    return _out(command, options, data, lines)


def diagnose_blacklist(command, options):
    rows = dns_checks.blacklists()
    lines = [f"{r['ip']}\t{r['zone']}\t{r['status']}\t{r['explanation']}" for r in rows]
    return _out(command, options, rows, lines or ["no server IP or no DNSBL configured"])


def diagnose_rdns(command, options):
    rows = dns_checks.reverse_dns()
    lines = []
    for r in rows:
        lines.append(
            f"{r['ip']}\tPTR {', '.join(r['ptr']) or '-'}\t{r['status']}"
            f"\tmatches hostname: {'yes' if r['matches_hostname'] else 'no'}"
            f"\tforward-confirmed: {'yes' if r['forward_confirmed'] else 'no'}"
        )
        lines += [f"  - {fix}" for fix in r["fixes"]]
    return _out(command, options, rows, lines or ["set the server's public IP in the server settings"])


def diagnose_domain(command, options):
    domain = get_domain(options["domain"])
    data = dns_checks.diagnose_domain(domain, connect=options["connect"])
    if options.get("only_receive"):
        data = {"domain": data["domain"], "receiving": data["receiving"]}
    receive = data["receiving"]
    lines = [f"receiving: {receive['status']}"]
    for host in receive["hosts"]:
        flags = ("this server" if host["points_here"] else "elsewhere") + (", Cloudflare proxy" if host["cloudflare"] else "")
        lines.append(f"  MX {host['preference']} {host['host']} -> {', '.join(host['addresses']) or '-'} ({flags})")
        lines += [f"    port 25 {c['target']}: {c['status']} {c['banner']}".rstrip() for c in host["smtp"]]
    lines += [f"  - {fix}" for fix in receive["fixes"]]
    if "sending" in data:
        lines.append(f"sending: {data['sending']['status']}")
        for check in data["sending"]["checks"]:
            lines.append(f"  {check['purpose']}: {check['status']} {check['detail']}".rstrip())
            if check["fix"]:
                lines.append(f"    - {check['fix']}")
    if "tls" in data:
        lines.append(f"certificate served for {data['tls']['name']}: {data['tls']['status']}")
        for port in data["tls"]["ports"]:
            lines.append(f"  port {port['port']}: {port['status']} {', '.join(port['names'])} {port['detail']}".rstrip())
        if data["tls"]["hint"]:
            lines.append(f"    - {data['tls']['hint']}")
    return _out(command, options, data, lines)
