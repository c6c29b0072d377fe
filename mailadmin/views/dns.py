"""A domain's DNS tab: the records it needs (SPEC §1.3), "Check now" (§1.4),
the BIND download, and the DKIM key (views.dkim). Every URL takes the domain
through get_domain_for_user (404 for outsiders)."""

from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.views.decorators.http import require_GET, require_POST

from ..models import Job, JobKind, ServerSettings
from ..services import dns_checks, domain_move, user_checks
from ..zonefile import render_zone
from .common import get_domain_for_user, server_of
from .dkim import dkim_section
from .pages import DOMAIN_PAGE
from .shell import respond

DNS_CHECK_TASK = "mailadmin.tasks_dns.dns_check"


def dns_context(request, domain, result=None, check_job=None) -> dict:
    identity = dns_checks.domain_identity(domain, server_of(request))
    records = dns_checks.domain_records(domain, identity, server=server_of(request))
    if result is None:
        result = dns_checks.latest_result(domain)
    verdicts = {}
    if result is not None:
        verdicts = {(v.get("purpose"), v.get("name")): v for v in result.results}
    rows = [{"record": r, "verdict": verdicts.get((r.purpose, r.name))} for r in records]
    move = domain_move.live_move(domain)
    return {
        "dns_move": move,
        "dns_move_changes": domain_move.dns_changes(move, server_of(request)) if move else (),
        "dns_domain": domain,
        "dns_rows": rows,
        "dns_result": result,
        "dns_server_incomplete": not (identity.ipv4 or identity.ipv6),
        "dns_cloudflare": any(row["verdict"] and row["verdict"].get("cloudflare") for row in rows),
        "dns_job": check_job,
    }


DNS_TAB = DOMAIN_PAGE.tab("dns", "mailadmin/domain/dns.html", dns_context, dkim_section)
DNS_RECORDS = DOMAIN_PAGE.section("dns", "dns-records", "mailadmin/dns/section.html#dns-records", dns_context)


@require_GET
def domain_dns(request, domain_id):
    return respond(request, DNS_TAB, get_domain_for_user(request, domain_id))


@require_POST
def domain_dns_check(request, domain_id):
    """Starts the check on the checks queue; the section polls it."""
    domain = get_domain_for_user(request, domain_id)
    try:
        job = user_checks.start_check(
            request.user, JobKind.DNS_CHECK, domain, DNS_CHECK_TASK, domain_ids=[domain.pk]
        )
    except user_checks.TooManyChecks as exc:
        return respond(request, DNS_RECORDS, domain, status=429, error=str(exc))
    if request.htmx:
        return respond(request, DNS_RECORDS, domain, check_job=job)
    return redirect("mailadmin:domain_dns_check_status", domain.pk, job.pk)


@require_GET
def domain_dns_check_status(request, domain_id, job_id):
    """The records with the check's verdicts once it is done; polled by htmx
    meanwhile. Only the requester's own check of this domain (404 otherwise)."""
    domain = get_domain_for_user(request, domain_id)
    job = get_object_or_404(
        Job, pk=job_id, kind=JobKind.DNS_CHECK, domain=domain, requested_by=request.user
    )
    return respond(request, DNS_RECORDS, domain, check_job=job)


@require_GET
def domain_dns_zone(request, domain_id):
    domain = get_domain_for_user(request, domain_id)
    server = ServerSettings.load_public()
    identity = dns_checks.domain_identity(domain, server)
    text = render_zone(domain.name, dns_checks.domain_records(domain, identity, server=server))
    response = HttpResponse(text, content_type="text/plain; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{domain.name}.zone"'
    return response
