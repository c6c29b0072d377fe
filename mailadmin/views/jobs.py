from django.http import Http404
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from ..models import Job, AuditEntry, is_admin
from .common import page_of, require_admin


@require_GET
def job_status(request, job_id):
    """Polled by htmx every second while the job runs; stops polling when done."""
    job = get_object_or_404(Job, pk=job_id)
    if not is_admin(request.user) and job.requested_by_id != request.user.pk:
        raise Http404
    template = "mailadmin/job_detail.html"
    if request.htmx:
        template += "#job-status"
    return render(request, template, {"job": job})


@require_GET
def job_list(request):
    require_admin(request)
    jobs = Job.objects.select_related("requested_by", "domain")
    page = page_of(jobs, 50, request.GET.get("page"))
    return render(request, "mailadmin/job_list.html", {"page": page})


@require_GET
def audit_list(request):
    require_admin(request)
    entries = AuditEntry.objects.all()
    page = page_of(entries, 100, request.GET.get("page"))
    return render(request, "mailadmin/audit_list.html", {"page": page})
