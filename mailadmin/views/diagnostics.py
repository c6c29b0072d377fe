"""Deliverability diagnostics (SPEC §4): admins run the server checks (port 25,
blacklists, reverse DNS) and every domain's checks; customers run the
per-domain checks (receiving, sending readiness) of their own domains only.
The checks run as background jobs; the page polls the job for its progress."""

from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from ..models import Job, JobKind, JobState, MailDomain, is_admin
from ..services import user_checks
from .common import get_domain_for_user, require_admin

PAGE = "mailadmin/diagnostics.html"
DIAGNOSE_TASK = "mailadmin.tasks_dns.diagnose"
DNS_CHECK_TASK = "mailadmin.tasks_dns.dns_check"


def _visible_job(request, job_id) -> Job:
    job = get_object_or_404(Job, pk=job_id, kind__in=[JobKind.DIAGNOSE, JobKind.DNS_CHECK])
    if is_admin(request.user):
        return job
    if job.requested_by_id != request.user.pk or job.domain_id is None:
        raise Http404
    # the domain may have changed hands since: scope by today's ownership too
    get_domain_for_user(request, job.domain_id)
    return job


def _context(request, job=None, selected=None) -> dict:
    domains = MailDomain.objects.visible_to(request.user).order_by("name").only("id", "name")
    latest_server = None
    if is_admin(request.user):
        latest_server = (
            Job.objects.filter(
                kind=JobKind.DIAGNOSE, domain__isnull=True, state=JobState.DONE, result__what="server"
            )
            .order_by("-id")
            .first()
        )
    return {
        "domains": domains,
        "selected_domain": selected,
        "diag_job": job,
        "latest_server_job": latest_server,
        "relay_url": reverse("mailadmin:global_relay") + "#relay-section",
    }


@require_GET
def diagnostics(request):
    job = None
    if request.GET.get("job", "").isdigit():
        job = _visible_job(request, int(request.GET["job"]))
    selected = None
    if request.GET.get("domain", "").isdigit():
        selected = get_domain_for_user(request, int(request.GET["domain"]))
    elif job is not None and job.domain_id:
        selected = job.domain
    return render(request, PAGE, _context(request, job, selected))


@require_POST
def diagnostics_run(request):
    action = request.POST.get("action")
    try:
        job = _start(request, action)
    except user_checks.TooManyChecks as exc:
        ctx = {**_context(request), "diag_error": str(exc)}
        if request.htmx:  # htmx swaps only 2xx answers
            return render(request, PAGE + "#diag-job", ctx)
        return render(request, PAGE, ctx, status=429)
    if request.htmx:
        return render(request, PAGE + "#diag-job", _context(request, job, job.domain))
    return redirect(reverse("mailadmin:diagnostics") + f"?job={job.pk}")


def _start(request, action) -> Job:
    """Every start goes through user_checks: the customer's limit, the checks queue."""
    if action == "domain":
        domain_id = request.POST.get("domain", "")
        if not domain_id.isdigit():
            raise Http404
        domain = get_domain_for_user(request, int(domain_id))
        return user_checks.start_check(
            request.user,
            JobKind.DIAGNOSE,
            domain,
            DIAGNOSE_TASK,
            what="domain",
            domain_id=domain.pk,
            connect=request.POST.get("connect") == "on" and is_admin(request.user),
        )
    if action == "server":
        require_admin(request)
        return user_checks.start_check(request.user, JobKind.DIAGNOSE, None, DIAGNOSE_TASK, what="server")
    if action == "dns_all":
        require_admin(request)
        return user_checks.start_check(request.user, JobKind.DNS_CHECK, None, DNS_CHECK_TASK)
    raise Http404


@require_GET
def diagnostics_job(request, job_id):
    """The job's results; polled by htmx until the job is finished."""
    job = _visible_job(request, job_id)
    if not request.htmx:
        return redirect(reverse("mailadmin:diagnostics") + f"?job={job.pk}")
    return render(request, PAGE + "#diag-job", _context(request, job, job.domain))
