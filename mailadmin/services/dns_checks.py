"""DNS checks and diagnostics: the shell around mailadmin.checks.

Reads the database and settings, runs the (async, socket-using) checks
concurrently, stores DnsCheckResult rows and MailDomain.dns_status. The event
loop runs in its own thread so job progress can be written to the database
from this one (Django's ORM refuses to run inside an event loop)."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections import defaultdict
from contextlib import closing
from pathlib import Path

from django.conf import settings
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from mailconf import validate as v

from .. import client_config, dkim, dnsbl, mta_sts
from ..checks import diagnostics as diag
from ..checks import dns as dnscheck
from ..checks import targets, tls_served
from ..checks.smtp import check_port25
from ..dnsrecords import build_records, mx_host
from ..models import DnsCheckResult, MailDomain, MailNode, ServerSettings
from .apply import layout_from_settings
from mailconf.snapshot import ServerIdentity

logger = logging.getLogger(__name__)


# --- settings --------------------------------------------------------------------


def check_timeout() -> float:
    return float(settings.MAILPANEL_CHECK_TIMEOUT)


def new_lookups() -> dnscheck.Lookups:
    """A resolver from MAILPANEL_RESOLVERS; call inside the run (the cache
    holds futures of one event loop)."""
    timeout = check_timeout()
    return dnscheck.Lookups(dnscheck.make_resolver(settings.MAILPANEL_RESOLVERS, timeout), timeout)


def refreshed_cloudflare_ips_file() -> Path:
    """Where `manage.py refresh_cloudflare_ips` writes (the package dir may be read-only)."""
    configured = getattr(settings, "MAILPANEL_CLOUDFLARE_IPS_FILE", "")
    return Path(configured) if configured else Path(settings.VAR_DIR) / "cloudflare-ips.txt"


def cloudflare_ips_file() -> Path:
    """The refreshed list if there is one, else the one shipped in mailadmin/data."""
    refreshed = refreshed_cloudflare_ips_file()
    return refreshed if refreshed.exists() else dnscheck.CLOUDFLARE_DATA


def cloudflare_networks():
    return dnscheck.load_cloudflare_networks(cloudflare_ips_file())


def server_identity(server: ServerSettings) -> ServerIdentity:
    return server.identity()


def domain_identity(domain: MailDomain, server: ServerSettings) -> ServerIdentity:
    """The identity of the node the domain lives on: its records name that
    node's host and addresses (domain.node: select_related for many domains)."""
    return domain.node.identity(server)


def node_identities(server: ServerSettings) -> dict[int, ServerIdentity]:
    """{node id: identity} of every node, in one query."""
    return {node.pk: node.identity(server) for node in MailNode.objects.all()}


def server_ips(server: ServerSettings | ServerIdentity) -> tuple[str, ...]:
    """Every address that means "this server" (the NAT address included)."""
    return tuple(ip for ip in (server.ipv4, server.ipv6, server.nat_ipv4) if ip)


def sending_ips(server: ServerSettings | ServerIdentity) -> tuple[str, ...]:
    """The public addresses receivers see; SPF must authorise these."""
    return tuple(ip for ip in (server.ipv4, server.ipv6) if ip)


def all_nodes_ips(server: ServerSettings) -> tuple[str, ...]:
    """Every address of every node: mail from any of them is "ours"."""
    found = {ip for identity in node_identities(server).values() for ip in server_ips(identity)}
    return tuple(sorted(found)) or server_ips(server)


def nodes_sending(server: ServerSettings) -> list[tuple[str, tuple[str, ...]]]:
    """[(host name, sending addresses)] per node, the same pair once."""
    pairs = {(i.hostname, sending_ips(i)) for i in node_identities(server).values()}
    return sorted(pairs) or [(server.hostname, sending_ips(server))]


def offered_services():
    """What Exim and Dovecot really offer with this install's Layout (no
    certificate: no 993 or 465): the truth the client-settings box, the
    autoconfig answers and the RFC 6186 SRV records all tell."""
    return client_config.offered_services(layout_from_settings())


def domain_records(domain: MailDomain, identity: ServerIdentity, services=None, server: ServerSettings | None = None):
    """The domain's records; during a DKIM rotation also the next and the old
    key. Reads domain.dmarc_mailbox and domain.owner:
    select_related("dmarc_mailbox__account", "owner") when there are many
    domains. `services`: offered_services(), computed once by a caller with
    many domains; `server`: the settings row (its webmail names a label),
    loaded here when not given."""
    if server is None:
        server = ServerSettings.load_public()
    key, next_key, old_key = "", None, None
    if domain.dkim_enabled and domain.dkim_private_key:
        key = dkim.public_key_b64(domain.dkim_private_key)
        if domain.dkim_pending_private_key:
            next_key = (domain.dkim_pending_selector, dkim.public_key_b64(domain.dkim_pending_private_key))
        if domain.dkim_old_public_key:
            old_key = (domain.dkim_old_selector, domain.dkim_old_public_key)
    return build_records(
        domain.name,
        identity,
        key,
        receives_mail=not domain.hosted_elsewhere,
        verify_token=domain.verify_token if domain.pending else "",
        dkim_selector=domain.dkim_selector,
        dkim_next=next_key,
        dkim_old=old_key,
        dmarc_rua=dmarc_address(domain),
        mta_sts_mode=mta_sts.mode_of(domain.mta_sts_enforce),
        tlsrpt_rua=tlsrpt_address(domain),
        services=offered_services() if services is None else services,
        webmail_name=server.get_webmail_display(),
    )


def tlsrpt_address(domain: MailDomain) -> str:
    """Where TLS-RPT reports go: the domain's postmaster/abuse address, else
    its owner's email; "" when neither is an address. Reads domain.owner:
    select_related("owner") when there are many domains."""
    for candidate in (domain.role_address, domain.owner.email):
        try:
            return v.address(candidate)
        except ValueError:
            continue  # blank, or not an address Exim could route
    return ""


def dmarc_address(domain: MailDomain) -> str:
    """Where the domain's DMARC aggregate reports go, or ""."""
    try:
        mailbox = domain.dmarc_mailbox
    except MailDomain.dmarc_mailbox.RelatedObjectDoesNotExist:
        return ""
    return f"{mailbox.account.local_part}@{domain.name}"


def run_async(make_coro, on_progress=None, interval: float = 0.5):
    """Run `make_coro(report)` in an event loop on a worker thread. `report(line)`
    may be called from the loop; `on_progress(lines)` gets the new lines here,
    on the calling thread, at most every `interval` seconds."""
    lines: queue.Queue = queue.Queue()
    outcome = {}
    language = translation.get_language()  # active per thread: hand it to the loop's

    def worker():
        try:
            with translation.override(language):
                outcome["value"] = asyncio.run(make_coro(lines.put))
        except BaseException as exc:  # re-raised on the calling thread
            outcome["error"] = exc

    thread = threading.Thread(target=worker, name="mailpanel-checks", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(interval)
        _drain(lines, on_progress)
    _drain(lines, on_progress)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _drain(lines, on_progress):
    batch = []
    while True:
        try:
            batch.append(lines.get_nowait())
        except queue.Empty:
            break
    if batch and on_progress:
        on_progress(batch)


def resolve_target(host: str, allow_loopback: bool = False) -> targets.Resolution:
    """A customer's target host through the panel's DNS client (checks.targets)."""

    async def run(report):
        with closing(new_lookups()) as lookups:
            return await targets.resolve_public(lookups, host, allow_loopback)

    return run_async(run)


# --- DNS record checks (§1.4) -----------------------------------------------------


def check_domains(domains, on_progress=None) -> dict[int, DnsCheckResult]:
    """Check every record of every domain, concurrently; store the results."""
    server = ServerSettings.load()
    identities = node_identities(server)
    by_node = defaultdict(list)
    for d in domains:
        by_node[d.node_id].append(d)
    names = {d.pk: d.name for d in domains}
    cf = cloudflare_networks()
    services = offered_services()

    async def run(report):
        def progress(pk, verdicts):
            report(f"{names[pk]}: {dnscheck.summarize(verdicts)}")

        verdicts = {}
        with closing(new_lookups()) as lookups:
            # Each node's domains against that node's addresses.
            for node_id, node_domains in sorted(by_node.items()):
                identity = identities.get(node_id) or server.identity()
                jobs = [(d.pk, domain_records(d, identity, services, server)) for d in node_domains]
                verdicts.update(await dnscheck.check_many(
                    lookups, jobs, server_ips(identity), sending_ips(identity), cf, progress=progress
                ))
        return verdicts

    verdicts = run_async(run, on_progress)
    return store_results(verdicts)


def check_record_sets(work) -> dict:
    """[(key, records)] → {key: [Verdict]}: record sets looked up
    concurrently through the panel's resolvers, nothing stored."""
    if not work:
        return {}

    async def run(report):
        with closing(new_lookups()) as lookups:
            return await dnscheck.check_many(lookups, work)

    return run_async(run)


def addresses_of(hosts) -> set[str]:
    """The A and AAAA addresses of host names (IP literals as they are),
    through the panel's resolvers; a name that does not resolve adds none."""
    import ipaddress

    found, names = set(), []
    for host in hosts:
        try:
            found.add(str(ipaddress.ip_address(host)))
        except ValueError:
            names.append(host)
    if not names:
        return found

    async def run(report):
        with closing(new_lookups()) as lookups:
            return await asyncio.gather(*(lookups.query(n, t) for n in names for t in ("A", "AAAA")))

    for answer in run_async(run):
        found.update(answer.values)
    return found


def store_results(verdicts_by_domain: dict) -> dict[int, DnsCheckResult]:
    now = timezone.now()
    rows = [
        DnsCheckResult(
            domain_id=pk,
            checked_at=now,
            summary=dnscheck.summarize(verdicts),
            results=[v.as_dict() for v in verdicts],
        )
        for pk, verdicts in verdicts_by_domain.items()
    ]
    DnsCheckResult.objects.bulk_create(rows)
    by_summary: dict[str, list[int]] = {}
    for row in rows:
        by_summary.setdefault(row.summary, []).append(row.domain_id)
    for summary, pks in by_summary.items():
        # update() so updated_at (the domain's settings time) stays as it was
        MailDomain.objects.filter(pk__in=pks).update(dns_status=summary, dns_checked_at=now)
    return {row.domain_id: row for row in rows}


def check_domain(domain: MailDomain) -> DnsCheckResult:
    return check_domains([domain])[domain.pk]


def latest_result(domain: MailDomain) -> DnsCheckResult | None:
    return DnsCheckResult.objects.filter(domain=domain).order_by("-checked_at", "-id").first()


# --- diagnostics (§4) ------------------------------------------------------------


def port25() -> dict:
    target = settings.MAILPANEL_PORT25_TARGET
    result = check_port25(target, check_timeout())
    data = result.as_dict()
    data["fixes"] = [] if result.ok else diag_fixes_port25()
    return data


def diag_fixes_port25() -> list[str]:
    from ..checks.smtp import fixes

    return fixes()


def dnsbl_zone_pairs(server: ServerSettings) -> list[tuple[str, str]]:
    """(zone queried, zone shown): the DQS key is applied for the query and
    masked for anything a person or a log sees."""
    zones = dnsbl.queried_zones(server.dnsbl_zones, server.dqs_key)
    return [(zone, dnsbl.masked(zone, server.dqs_key)) for zone in zones]


def blacklists(on_progress=None) -> list[dict]:
    server = ServerSettings.load()
    ips, zones = _every_sending_ip(server), dnsbl_zone_pairs(server)

    async def run(report):
        with closing(new_lookups()) as lookups:
            rows = await diag.blacklists(lookups, ips, zones)
        for row in rows:
            report(f"{row['ip']} {row['zone']}: {row['status']}")
        return rows

    return run_async(run, on_progress)


def _every_sending_ip(server) -> tuple[str, ...]:
    return tuple(sorted({ip for _host, ips in nodes_sending(server) for ip in ips}))


async def _reverse_dns_of_nodes(lookups, pairs) -> list[dict]:
    """Each node's addresses must point back to that node's host name
    (pairs: nodes_sending(), read before the event loop: no ORM in it)."""
    rows = []
    for hostname, ips in pairs:
        rows.extend(await diag.reverse_dns_all(lookups, ips, hostname))
    return rows


def reverse_dns(on_progress=None) -> list[dict]:
    pairs = nodes_sending(ServerSettings.load())

    async def run(report):
        with closing(new_lookups()) as lookups:
            rows = await _reverse_dns_of_nodes(lookups, pairs)
        for row in rows:
            report(f"{row['ip']}: {row['status']}")
        return rows

    return run_async(run, on_progress)


def diagnose_domain(domain: MailDomain, connect: bool = False, on_progress=None, connect_port: int = 25) -> dict:
    """Receiving (MX) and sending readiness (SPF, DKIM, DMARC) of one domain."""
    server = ServerSettings.load()
    identity = domain_identity(domain, server)
    records = domain_records(domain, identity, server=server)
    here, sending, cf = server_ips(identity), sending_ips(identity), cloudflare_networks()
    timeout = check_timeout()
    served = None if domain.hosted_elsewhere else name_served_plan(domain, identity)

    async def run(report):
        with closing(new_lookups()) as lookups:
            receive, send = await asyncio.gather(
                diag.receiving(
                    lookups, domain.name, here, cf, connect_port if connect else None, timeout,
                    expect_here=not domain.hosted_elsewhere,
                ),
                diag.sending_readiness(lookups, records, sending),
            )
        report(f"{domain.name} receiving: {receive['status']}")
        report(f"{domain.name} sending: {send['status']}")
        result = {"domain": domain.name, "domain_id": domain.pk, "receiving": receive, "sending": send}
        if served is not None:
            result["tls"] = await name_served(served, timeout)
            report(f"{domain.name} name served on {served['name']}: {result['tls']['status']}")
        return result

    result = run_async(run, on_progress)
    from .dkim_rotation import key_age_check  # it imports this module

    age = key_age_check(domain)
    if age is not None:
        result["sending"]["checks"].append(age)
        if result["sending"]["status"] == dnscheck.OK:
            result["sending"]["status"] = age["status"]
    return result


def name_served_plan(domain: MailDomain, identity: ServerIdentity) -> dict | None:
    """What the "name served" check asks (read before the event loop: no
    ORM in it): the domain's mail. name as SNI on the implicit-TLS ports and
    587 (STARTTLS) the Layout offers; None without TLS."""
    from ..client_config import PLAIN, STARTTLS, offered_services
    from .apply import layout_from_settings
    from .client_config import domain_certificate_names

    ports = [
        tls_served.Port(s.port, starttls=s.tls == STARTTLS)
        for s in offered_services(layout_from_settings())
        if s.offered and s.tls != PLAIN and (s.protocol == "smtp" or s.tls != STARTTLS)
    ]
    if not ports:
        return None
    name = mx_host(domain.name)
    return {
        "name": name,
        "host": settings.MAILPANEL_TLS_CHECK_HOST or identity.hostname,
        "ports": ports,
        "own_certificate": name in domain_certificate_names(domain),
        "hostname": identity.hostname,
    }


async def name_served(plan: dict, timeout: float) -> dict:
    results = await asyncio.gather(
        *(asyncio.to_thread(tls_served.check_port, plan["host"], port, plan["name"], timeout) for port in plan["ports"])
    )
    status = tls_served.summarize(results)
    hint = ""
    if status == tls_served.DIFFERENT and not plan["own_certificate"]:
        hint = _(
            "This domain has no certificate of its own yet: mail programs are told to use %(host)s, "
            "whose certificate the server presents."
        ) % {"host": plan["hostname"]}
    return {"name": plan["name"], "status": status, "hint": hint, "ports": [r.as_dict() for r in results]}


def server_diagnostics(on_progress=None, include=("port25", "blacklist", "rdns")) -> dict:
    """The admin's server-wide checks, run side by side."""
    server = ServerSettings.load()
    ips, zones = _every_sending_ip(server), dnsbl_zone_pairs(server)
    pairs = nodes_sending(server)
    target, timeout = settings.MAILPANEL_PORT25_TARGET, check_timeout()

    async def run(report):
        lookups = new_lookups()
        tasks = {}
        if "port25" in include:
            tasks["port25"] = asyncio.to_thread(check_port25, target, timeout)
        if "blacklist" in include:
            tasks["blacklist"] = diag.blacklists(lookups, ips, zones)
        if "rdns" in include:
            tasks["rdns"] = _reverse_dns_of_nodes(lookups, pairs)
        out = {}

        async def one(name, coro):
            out[name] = await coro
            report(f"{name}: done")

        with closing(lookups):
            await asyncio.gather(*(one(n, c) for n, c in tasks.items()))
        return out

    out = run_async(run, on_progress)
    if "port25" in out:
        result = out["port25"]
        out["port25"] = {**result.as_dict(), "fixes": [] if result.ok else diag_fixes_port25()}
    out["ips"] = list(ips)
    out["hostname"] = server.hostname
    return out
