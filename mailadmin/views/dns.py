"""A domain's DNS records: the list (SPEC §1.3), "Check now" (§1.4) and the
BIND download. Every URL takes the domain through get_domain_for_user (404
for outsiders)."""

from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from ..models import ServerSettings
from ..services import dns_checks
from ..zonefile import render_zone
from .common import get_domain_for_user

PAGE = "mailadmin/dns/records.html"


def dns_context(request, domain, result=None) -> dict:
    identity = dns_checks.server_identity(ServerSettings.load_public())
    records = dns_checks.domain_records(domain, identity)
    if result is None:
        result = dns_checks.latest_result(domain)
    verdicts = {}
    if result is not None:
        verdicts = {(v.get("purpose"), v.get("name")): v for v in result.results}
    rows = [{"record": r, "verdict": verdicts.get((r.purpose, r.name))} for r in records]
    return {
        "dns_domain": domain,
        "dns_rows": rows,
        "dns_result": result,
        "dns_server_incomplete": not (identity.ipv4 or identity.ipv6),
        "dns_cloudflare": any(row["verdict"] and row["verdict"].get("cloudflare") for row in rows),
    }


def domain_section(request, domain) -> dict:
    """Registered in sections.DOMAIN_SECTIONS."""
    return dns_context(request, domain)


@require_GET
def domain_dns(request, domain_id):
    domain = get_domain_for_user(request, domain_id)
    return render(request, PAGE, dns_context(request, domain))


@require_POST
def domain_dns_check(request, domain_id):
    domain = get_domain_for_user(request, domain_id)
    result = dns_checks.check_domain(domain)
    if request.htmx:
        return render(request, PAGE + "#dns-records", dns_context(request, domain, result))
    if request.POST.get("return_to") == "domain":
        return redirect(reverse("mailadmin:domain_detail", args=[domain.pk]) + "#dns-records")
    return redirect("mailadmin:domain_dns", domain.pk)


@require_GET
def domain_dns_zone(request, domain_id):
    domain = get_domain_for_user(request, domain_id)
    identity = dns_checks.server_identity(ServerSettings.load_public())
    text = render_zone(domain.name, dns_checks.domain_records(domain, identity))
    response = HttpResponse(text, content_type="text/plain; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{domain.name}.zone"'
    return response
