"""SMTP relay sections: a domain's own relay (domain page, owner and admin)
and the global relay (server settings page, admin only).

htmx requests get the section partial back; plain POSTs redirect after a
change, or render the whole page when there is something to show (form
errors, a test transcript). Every domain URL goes through get_domain_for_user.
"""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from ..forms import ServerIdentityForm
from ..forms_relay import RelayForm
from ..models import ApplyJob, JobKind, ServerSettings
from ..services import relay as relay_service
from ..services import jobs, relay_test
from ..services.user_checks import TooManyChecks
from .common import get_domain_for_user, require_admin
from .sections import settings_sections_context

SECTION = "mailadmin/relay/section.html"


def _urls(domain) -> dict:
    if domain is None:
        return {
            "save": reverse("mailadmin:global_relay_save"),
            "remove": reverse("mailadmin:global_relay_remove"),
            "test": reverse("mailadmin:global_relay_test"),
        }
    return {
        "save": reverse("mailadmin:domain_relay_save", args=[domain.pk]),
        "remove": reverse("mailadmin:domain_relay_remove", args=[domain.pk]),
        "test": reverse("mailadmin:domain_relay_test", args=[domain.pk]),
    }


def relay_context(request, domain, *, form=None, **extra) -> dict:
    row = relay_service.get_relay(domain)
    ctx = {
        "relay": row,
        "relay_domain": domain,
        "relay_form": form if form is not None else RelayForm.from_relay(row),
        "relay_urls": _urls(domain),
        "relay_test": None,
        "relay_test_job": None,
        "relay_notice": "",
        "relay_job": None,
        "relay_retype_password": False,
    }
    ctx.update(extra)
    job = ctx["relay_test_job"]
    if job is not None:
        ctx["relay_test"] = relay_test.result_of(job)
        ctx["relay_test_url"] = _test_result_url(domain, job)
    return ctx


def _test_result_url(domain, job) -> str:
    if domain is None:
        return reverse("mailadmin:global_relay_test_result", args=[job.pk])
    return reverse("mailadmin:domain_relay_test_result", args=[domain.pk, job.pk])


def domain_section(request, domain) -> dict:
    """Registered in sections.DOMAIN_SECTIONS."""
    return relay_context(request, domain)


def global_section(request) -> dict:
    """Registered in sections.SETTINGS_SECTIONS (the page is admin-only)."""
    return relay_context(request, None)


def _render(request, domain, status=200, **relay_ctx):
    if request.htmx:
        # htmx swaps only 2xx answers: form errors come back as 200.
        return render(request, SECTION + "#relay-section", relay_context(request, domain, **relay_ctx))
    if domain is not None:
        from .domains import domain_context

        ctx = domain_context(request, domain, **relay_context(request, domain, **relay_ctx))
        return render(request, "mailadmin/domain_detail.html", ctx, status=status)
    ctx = {
        "form": ServerIdentityForm(instance=ServerSettings.load()),
        **settings_sections_context(request),
        **relay_context(request, None, **relay_ctx),
    }
    return render(request, "mailadmin/server_settings.html", ctx, status=status)


def _done(request, domain, notice: str):
    if request.htmx:
        job = jobs.latest_apply(request.user)
        return _render(request, domain, relay_notice=notice, relay_job=job)
    messages.success(request, notice)
    if domain is not None:
        return redirect(domain)
    return redirect("mailadmin:server_settings")


def _bound_form(request, domain) -> RelayForm:
    row = relay_service.get_relay(domain)
    return RelayForm(request.POST, stored=row)


def _save(request, domain):
    form = _bound_form(request, domain)
    if "switch_auth" in request.POST:
        auth = request.POST["switch_auth"]
        return _render(request, domain, form=form.redisplay(auth=auth), relay_retype_password=True)
    if request.POST.get("action") == "preset":
        return _render(request, domain, form=form.prefilled_with_preset())
    if form.is_valid():
        try:
            relay_service.set_relay(request.user, domain, **form.service_values())
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            return _done(request, domain, _("Relay saved. The mail server is being updated."))
    return _render(request, domain, status=400, form=form)


def _remove(request, domain):
    if relay_service.clear_relay(request.user, domain):
        if domain is not None:
            notice = _("Relay removed: mail from this domain now leaves like the server's other mail.")
        else:
            notice = _("Global relay removed: mail is delivered directly unless a domain has its own relay.")
    else:
        notice = _("There was no relay to remove.")
    return _done(request, domain, notice)


def _test(request, domain):
    form = _bound_form(request, domain)
    if not form.is_valid():
        return _render(request, domain, status=400, form=form)
    try:
        relay = relay_service.relay_for_test(domain, form.cleaned_data)
    except ValidationError as exc:  # the relay changed since the form read it
        form.add_error(None, exc)
        return _render(request, domain, status=400, form=form)
    try:
        # The worker talks to the relay; this page polls the job.
        job = relay_test.start_relay_test(request.user, domain, relay)
    except TooManyChecks as exc:
        form.add_error(None, str(exc))
        return _render(request, domain, status=429, form=form)
    return _render(
        request,
        domain,
        form=form,
        relay_test_job=job,
        relay_retype_password=bool(form.cleaned_data.get("password")),
    )


def _test_result(request, domain, job_id):
    """The test's progress and transcript; polled by htmx until it is finished.
    Only the requester's own test of this relay (404 otherwise)."""
    job = get_object_or_404(
        ApplyJob,
        pk=job_id,
        kind=JobKind.DIAGNOSE,
        result__what=relay_test.WHAT,
        requested_by=request.user,
        domain=domain,
    )
    if request.htmx:
        return render(request, SECTION + "#relay-test", relay_context(request, domain, relay_test_job=job))
    return _render(request, domain, relay_test_job=job)


@require_POST
def domain_relay_save(request, domain_id):
    return _save(request, get_domain_for_user(request, domain_id))


@require_POST
def domain_relay_remove(request, domain_id):
    return _remove(request, get_domain_for_user(request, domain_id))


@require_POST
def domain_relay_test(request, domain_id):
    return _test(request, get_domain_for_user(request, domain_id))


@require_GET
def domain_relay_test_result(request, domain_id, job_id):
    return _test_result(request, get_domain_for_user(request, domain_id), job_id)


@require_POST
def global_relay_save(request):
    require_admin(request)
    return _save(request, None)


@require_POST
def global_relay_remove(request):
    require_admin(request)
    return _remove(request, None)


@require_POST
def global_relay_test(request):
    require_admin(request)
    return _test(request, None)


@require_GET
def global_relay_test_result(request, job_id):
    require_admin(request)
    return _test_result(request, None, job_id)
