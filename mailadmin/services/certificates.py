"""Certificates from an ACME CA for the server's host name and every mail
domain, and their lifecycle.

One order per domain with all its names that point here (mail., webmail.,
autoconfig., mta-sts.: checked through the panel's resolver first; the rest
is stored and shown as "not pointing here"). The private key never leaves
root: the helper makes it and answers a CSR (op cert_key), this worker runs
the order unprivileged (acme_client, HTTP-01 through the webroot), the
helper checks the chain against the pending key and the names, swaps it in
and reloads (op cert_install). A failure keeps the installed certificate,
stores the CA's own message and waits before the next try (backoff doubling
from an hour to a day): the periodic `mail cert renew` never hammers the CA.
"""

from __future__ import annotations

import asyncio
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone
from django.utils.translation import gettext as _

from mailconf import validate

from .. import acme_client
from ..helper_client import HelperError, call_helper
from ..models import AcmeAccount, Certificate, Job, JobKind, JobState, MailDomain, MailNode, ServerSettings, is_admin
from . import audit, dns_checks, jobs, user_checks
from .jobs import request_apply

# The names a mail domain's certificate asks for, those of them that point here.
CERT_PREFIXES = ("mail", "webmail", "autoconfig", "mta-sts")
RENEW_BEFORE = timedelta(days=30)
BACKOFF_FIRST = timedelta(hours=1)
BACKOFF_MAX = timedelta(days=1)
# The helper makes an RSA key (openssl, a few hundred ms) and reloads three
# daemons: more than an apply of one domain, less than the default.
HELPER_TIMEOUT = 120


def backoff(failures: int) -> timedelta:
    """How long to wait after this many failures in a row: 1 h, 2 h, 4 h … 1 day."""
    if failures <= 0:
        return timedelta(0)
    return min(BACKOFF_FIRST * (2 ** min(failures - 1, 16)), BACKOFF_MAX)


@dataclass
class Outcome:
    certificate: Certificate
    issued: bool = False
    waiting: bool = False  # nothing asked of the CA: the backoff is not over
    error: str = ""


def state(domain: MailDomain | None, node: MailNode | None = None) -> Certificate:
    """The domain's row, else the server's: with several nodes (node given)
    that node's own host name's row, on one server the one server row."""
    if domain is None:
        return Certificate.objects.get_or_create(server=True, domain=None, node=node)[0]
    return Certificate.objects.get_or_create(domain=domain, defaults={"server": False})[0]


# --- names ---------------------------------------------------------------------


def names_pointing_here(domain: MailDomain, server: ServerSettings) -> tuple[list[str], list[dict]]:
    """(names whose A/AAAA answers include one of this server's addresses,
    [{"name", "reason"}] for the others), through MAILPANEL_RESOLVERS."""
    ours = set(dns_checks.server_ips(dns_checks.domain_identity(domain, server)))
    candidates = tls_names(domain.name)

    async def run(report):
        with closing(dns_checks.new_lookups()) as lookups:
            return await asyncio.gather(
                *(lookups.query(name, rtype) for name in candidates for rtype in ("A", "AAAA"))
            )

    answers = dns_checks.run_async(run)
    names, left_out = [], []
    for index, name in enumerate(candidates):
        found = [a for a in answers[2 * index : 2 * index + 2]]
        addresses = sorted({v for a in found for v in a.values})
        if ours & set(addresses):
            names.append(name)
        elif any(a.failed for a in found) and not addresses:
            left_out.append({"name": name, "reason": _("DNS lookup failed: %(why)s") % {
                "why": next(a.error for a in found if a.failed)}})
        elif addresses:
            left_out.append({"name": name, "reason": _("points to %(addresses)s, not here") % {
                "addresses": ", ".join(addresses)}})
        else:
            left_out.append({"name": name, "reason": _("not in DNS")})
    return names, left_out


def tls_names(domain_name: str) -> list[str]:
    return [f"{prefix}.{domain_name}" for prefix in CERT_PREFIXES]


# --- one order -----------------------------------------------------------------


def _account(directory: str) -> AcmeAccount:
    account = AcmeAccount.objects.filter(directory=directory).first()
    if account is None:
        account = AcmeAccount.objects.create(
            directory=directory, key=acme_client.new_account_key(), email=settings.MAILPANEL_ACME_EMAIL
        )
    return account


def _target(domain: MailDomain | None) -> dict:
    return {"server": True} if domain is None else {"domain": domain.name}


def _failed(cert: Certificate, now: datetime, message: str, *, count: bool = True) -> Outcome:
    """Keep the installed certificate; store why and when to try again."""
    cert.last_attempt_at = now
    cert.last_error = message
    if count:
        cert.attempts += 1
        cert.next_attempt_at = now + backoff(cert.attempts)
    cert.save()
    return Outcome(cert, error=message)


def _parse_time(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        return None


def issue(actor, domain: MailDomain | None, *, force: bool = False, node: MailNode | None = None) -> Outcome:
    """One order for the domain's names that point here (None = the server's
    host name: node's with several nodes), on this machine: its helper, its
    webroot. Waits out the backoff unless force. With several nodes it runs
    in the node's worker (issue_on_node), never on the panel."""
    cert = state(domain, node)
    now = timezone.now()
    if not force and cert.next_attempt_at and cert.next_attempt_at > now:
        return Outcome(cert, waiting=True, error=cert.last_error)
    server = ServerSettings.load()
    if domain is None:
        names, cert.left_out = [server_hostname(server, node)], []
    else:
        names, cert.left_out = names_pointing_here(domain, server)
        if not names:
            # Nothing was asked of the CA: no backoff, the next run looks again.
            return _failed(cert, now, _("none of its names points to this server"), count=False)
    try:
        csr = call_helper({"op": "cert_key", **_target(domain), "names": names}, timeout=HELPER_TIMEOUT)
    except HelperError as exc:
        return _failed(cert, now, exc.message)
    directory = settings.MAILPANEL_ACME_DIRECTORY
    account = _account(directory)
    try:
        issued = acme_client.order(
            directory=directory,
            ca_bundle=settings.MAILPANEL_ACME_CA_BUNDLE,
            account_key=account.key,
            account_uri=account.uri,
            email=account.email,
            csr_pem=csr["csr_pem"],
            webroot=settings.MAILPANEL_ACME_WEBROOT,
            timeout=settings.MAILPANEL_ACME_TIMEOUT,
        )
    except acme_client.AcmeFailure as exc:
        return _failed(cert, now, exc.message)
    if issued.account_uri != account.uri:
        account.uri = issued.account_uri
        account.save(update_fields=["uri"])
    try:
        installed = call_helper(
            {"op": "cert_install", **_target(domain), "chain_pem": issued.fullchain_pem}, timeout=HELPER_TIMEOUT
        )
        error = ""
    except HelperError as exc:
        if "names" not in exc.answer:  # refused or failed before the swap
            return _failed(cert, now, exc.message)
        installed, error = exc.answer, exc.message  # installed; a reload failed
    new_names = sorted(installed["names"])
    names_changed = new_names != sorted(cert.names)
    cert.names = new_names
    cert.issuer = installed.get("issuer", "")[:300]
    cert.not_after = _parse_time(installed.get("not_after", ""))
    cert.issued_at = cert.last_attempt_at = now
    cert.last_error = error
    cert.attempts = 0
    cert.next_attempt_at = None
    cert.save()
    audit.record(actor, "certificate.issue", domain.name if domain else names[0], ["names"])
    if domain is not None and names_changed:
        # Dovecot's local_name blocks and nginx's server blocks are rendered
        # from the SNI index the helper just rewrote: on the domain's node.
        if jobs.multi_node():
            request_apply(actor, domain=domain, whole_server=True)
        else:
            request_apply(actor, whole_server=True)
    return Outcome(cert, issued=True, error=error)


# --- the periodic run ----------------------------------------------------------


def _is_real_hostname(name: str) -> bool:
    """A name a public CA could validate: not the default localhost.localdomain."""
    try:
        validate.domain(name)
    except ValueError:
        return False
    return not name.endswith((".localdomain", ".local", ".localhost"))


def due(cert: Certificate | None, now: datetime) -> bool:
    return cert is None or cert.not_after is None or cert.not_after <= now + RENEW_BEFORE


def server_hostname(server: ServerSettings, node: MailNode | None) -> str:
    return node.identity(server).hostname if node is not None else server.hostname


def renew(actor=None, *, force: bool = False, report=None) -> dict:
    """Order every certificate that is missing or expires within 30 days
    (force: every one), the server's first; each waits out its backoff
    unless force. Returns counts by result."""
    now = timezone.now()
    counts = {"issued": 0, "failed": 0, "waiting": 0, "not_due": 0}
    server = ServerSettings.load()
    targets: list[MailDomain | None] = []
    if _is_real_hostname(server.hostname):
        targets.append(None)
    targets += list(
        MailDomain.objects.live().filter(hosted_elsewhere=False).select_related("certificate", "node")
    )
    for domain in targets:
        cert = Certificate.objects.filter(server=True).first() if domain is None else getattr(
            domain, "certificate", None)
        if not force and not due(cert, now):
            counts["not_due"] += 1
            continue
        outcome = issue(actor, domain, force=force)
        key = "issued" if outcome.issued else "waiting" if outcome.waiting else "failed"
        counts[key] += 1
        if report is not None:
            report(domain.name if domain else server.hostname, outcome)
    return counts


def remove(actor, domain_name: str) -> bool:
    """A deleted domain's certificate leaves the SNI index at once (Exim
    serves the server's for its names); its files stay while dovecot.conf or
    nginx's sites name them (a restart would fail without them) and the
    helper deletes them when the apply requested here renders those without
    it (helper op_apply: prune_domain_certificates)."""
    answer = call_helper({"op": "cert_remove", "domain": domain_name}, timeout=HELPER_TIMEOUT)
    if answer.get("removed"):
        # With several nodes this runs in the deleted domain's node worker
        # (tasks.retire_domain_mail): that node's files only.
        request_apply(actor, whole_server=True, node=_this_node())
    return bool(answer.get("removed"))


def _this_node() -> MailNode | None:
    """The node whose queue the running task came from (RQ); None on one
    server and outside a node's worker (every node then)."""
    if not jobs.multi_node():
        return None
    from rq import get_current_job

    job = get_current_job()
    origin = getattr(job, "origin", "") or ""
    if not origin.startswith("node-"):
        return None
    return MailNode.objects.filter(name=origin.removeprefix("node-")).first()


# --- several mail nodes (MAILPANEL_TASK_BACKEND=rq) ----------------------------
# A certificate's key, chain and HTTP-01 token belong on the machine that
# serves its names: the domain's node (its helper, its webroot). The panel
# queues the order on that node's queue; the node's worker runs issue() and
# records the outcome in the shared database (page, `mail cert list`).


@dataclass
class Queued:
    name: str  # the domain, or the node's host name
    queue: str


def request_issue(actor, domain: MailDomain | None, *, force: bool = False,
                  nodes: list[MailNode] | None = None) -> list[Queued]:
    """Queue an order on the domain's node, or (domain None) one for each
    given node's own host name (default: every node)."""
    if domain is not None:
        _enqueue(domain.node, domain.name, force=force, renewal=False)
        return [Queued(domain.name, domain.node.queue_name)]
    server = ServerSettings.load()
    queued = []
    for node in nodes if nodes is not None else MailNode.objects.order_by("name"):
        _enqueue(node, "", force=force, renewal=False)
        queued.append(Queued(server_hostname(server, node), node.queue_name))
    return queued


def request_renew(actor=None, *, force: bool = False) -> dict:
    """renew() for several nodes: every due certificate's order queued on
    its node (each node's host name, each domain on its node); those still
    in their backoff are left for a later run. One task per certificate: a
    node's queue never holds one long job past RQ's timeout."""
    now = timezone.now()
    counts = {"queued": 0, "waiting": 0, "not_due": 0}
    server = ServerSettings.load()
    targets: list[tuple[MailNode, MailDomain | None, Certificate | None]] = []
    rows = {c.node_id: c for c in Certificate.objects.filter(server=True, node__isnull=False)}
    for node in MailNode.objects.order_by("name"):
        if _is_real_hostname(server_hostname(server, node)):
            targets.append((node, None, rows.get(node.pk)))
    for domain in MailDomain.objects.live().filter(hosted_elsewhere=False).select_related("certificate", "node"):
        targets.append((domain.node, domain, getattr(domain, "certificate", None)))
    for node, domain, cert in targets:
        if not force and not due(cert, now):
            counts["not_due"] += 1
        elif not force and cert is not None and cert.next_attempt_at and cert.next_attempt_at > now:
            counts["waiting"] += 1
        else:
            _enqueue(node, domain.name if domain else "", force=force, renewal=True)
            counts["queued"] += 1
    return counts


def _enqueue(node: MailNode, domain_name: str, *, force: bool, renewal: bool) -> None:
    from ..tasks import issue_certificate

    issue_certificate.using(queue_name=node.queue_name).enqueue(node.name, domain_name, force, renewal)


def issue_on_node(node_name: str, domain_name: str = "", force: bool = False, renewal: bool = False) -> dict:
    """In node_name's worker: the order for one of its domains ("" = its own
    host name). A domain deleted or moved to another node since is left (its
    node orders it); a renewal no longer due (an earlier task of a backlog
    did it) asks nothing."""
    node = MailNode.objects.filter(name=node_name).first()
    if node is None:
        return {"skipped": "no such node"}
    domain = None
    if domain_name:
        domain = MailDomain.objects.live().filter(name=domain_name).select_related("node").first()
        if domain is None or domain.node_id != node.pk or domain.hosted_elsewhere:
            return {"skipped": "not a domain of this node"}
    if renewal and not force:
        existing = (Certificate.objects.filter(domain=domain) if domain else
                    Certificate.objects.filter(server=True, node=node)).first()
        if not due(existing, timezone.now()):
            return {"skipped": "not due"}
    outcome = issue(None, domain, force=force, node=None if domain else node)
    return {"issued": outcome.issued, "waiting": outcome.waiting, "error": outcome.error}


# --- "Order certificate now" on the domain's page -------------------------------

ORDER_TASK = "mailadmin.tasks_dns.order_certificate"


class OrderRefused(Exception):
    """The order is not started; the message says why (shown on the page)."""


def waiting_until(cert: Certificate | None, now: datetime) -> datetime | None:
    """When a failed order's backoff ends, if it has not yet."""
    if cert is not None and cert.attempts and cert.next_attempt_at and cert.next_attempt_at > now:
        return cert.next_attempt_at
    return None


def start_order(actor, domain: MailDomain) -> Job:
    """The domain's order as a background job, for its owner or an admin:
    a customer's counts against their check limit (user_checks.TooManyChecks)
    and waits out the backoff of a failed order; an admin's ignores it. With
    several nodes it runs on the domain's node (tasks.issue_certificate),
    on one server on the checks queue."""
    if domain.pending or domain.suspended or domain.hosted_elsewhere or not (
            MailDomain.objects.live().filter(pk=domain.pk).exists()):
        raise OrderRefused(_("Certificates are ordered only for a verified, active domain whose mail is hosted here."))
    admin = is_admin(actor)
    until = waiting_until(Certificate.objects.filter(domain=domain).first(), timezone.now())
    if until is not None and not admin:
        raise OrderRefused(_("The last order failed; the next one can start after %(when)s (UTC).") % {
            "when": until.strftime("%Y-%m-%d %H:%M")})
    if jobs.multi_node():
        from ..tasks import issue_certificate

        queue, node = domain.node.queue_name, domain.node.name
        return user_checks.start_node_check(
            actor, JobKind.CERTIFICATE_ORDER, domain,
            lambda job: issue_certificate.using(queue_name=queue).enqueue(node, domain.name, admin, False, job.pk))
    return user_checks.start_check(actor, JobKind.CERTIFICATE_ORDER, domain, ORDER_TASK, force=admin)


def run_order_job(job_id: int, force: bool, node_name: str = "") -> Job:
    """The page's order (start_order): the outcome in the job (the new
    expiry, or the CA's error as the job's failure) and the certificate row."""

    def work(job, log):
        domain = MailDomain.objects.live().filter(pk=job.domain_id).select_related("node").first()
        if domain is None:
            raise OrderRefused(_("The domain is no longer active."))
        if node_name:
            result = issue_on_node(node_name, domain.name, force)
            if result.get("skipped"):
                raise OrderRefused(result["skipped"])
            outcome = Outcome(Certificate.objects.get(domain=domain), issued=result["issued"],
                              waiting=result["waiting"], error=result["error"])
        else:
            outcome = issue(job.requested_by, domain, force=force)
        if not outcome.issued:
            raise OrderRefused(outcome.error or _("The order is waiting for the pause after a failure."))
        not_after = outcome.certificate.not_after
        log(f"issued: {', '.join(outcome.certificate.names)}")
        return {"names": outcome.certificate.names, "not_after": not_after.isoformat() if not_after else None}

    return jobs.run_job(job_id, work, expected=(OrderRefused,))


def order_job(domain: MailDomain) -> Job | None:
    """The domain's newest order from its page, for the section to show."""
    return Job.objects.filter(kind=JobKind.CERTIFICATE_ORDER, domain=domain).order_by("-id").first()


def order_error(job: Job | None) -> str:
    """A failed order's reason as run_job logged it ("failed: …")."""
    if job is None or job.state != JobState.FAILED:
        return ""
    return job.log.rsplit("failed: ", 1)[-1]


# --- what the page, the CLI and diagnostics show -------------------------------


def as_dict(cert: Certificate, name: str) -> dict:
    return {
        "name": name,
        "server": cert.server,
        "node": cert.node.name if cert.node_id else None,
        "names": cert.names,
        "left_out": cert.left_out,
        "issuer": cert.issuer,
        "not_after": cert.not_after.isoformat() if cert.not_after else None,
        "last_error": cert.last_error,
        "attempts": cert.attempts,
        "next_attempt_at": cert.next_attempt_at.isoformat() if cert.next_attempt_at else None,
    }


def listing() -> list[dict]:
    """Every certificate row, the server's first, then by domain name."""
    server = ServerSettings.load_public()
    rows = Certificate.objects.select_related("domain", "node").order_by("-server", "node__name", "domain__name")
    return [as_dict(c, row_name(c, server)) for c in rows]


def row_name(cert: Certificate, server: ServerSettings) -> str:
    return cert.domain.name if not cert.server else server_hostname(server, cert.node)


SOON = timedelta(days=14)  # renewal starts at 30: 14 left means it is failing


def attention(now: datetime | None = None, limit: int = 20) -> list[dict]:
    """Certificates that need a person: expiring within 14 days, or whose last
    order failed; for the status page, the soonest first."""
    from django.db.models import Q

    now = now or timezone.now()
    rows = (
        Certificate.objects.select_related("domain", "node")
        .filter(Q(attempts__gt=0) | Q(not_after__lte=now + SOON))
        .order_by("not_after")[:limit]
    )
    server = ServerSettings.load_public()
    return [
        {
            **as_dict(c, row_name(c, server)),
            "domain_id": c.domain_id,
            "expiring": c.not_after is not None and c.not_after <= now + SOON,
        }
        for c in rows
    ]
