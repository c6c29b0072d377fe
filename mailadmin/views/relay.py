"""SMTP relays: a domain's own (the domain page's Relay tab, owner and admin)
and the global one (the server settings page's Global relay tab, admin only).

Each tab's URL shows the tab (GET) and saves the relay (POST). Every domain
URL goes through get_domain_for_user.
"""

from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from ..forms_relay import RelayForm
from ..models import Job, JobKind
from ..services import relay as relay_service
from ..services import relay_test
from ..services.user_checks import TooManyChecks
from .common import get_domain_for_user, require_admin
from .pages import DOMAIN_PAGE, SETTINGS_PAGE
from .shell import done, respond

SECTION = "mailadmin/relay/section.html#relay-section"


def _urls(domain) -> dict:
    if domain is None:
        return {"save": reverse("mailadmin:global_relay"), "test": reverse("mailadmin:global_relay_test"),
                "remove": reverse("mailadmin:global_relay_remove")}
    return {
        "save": reverse("mailadmin:domain_relay", args=[domain.pk]),
        "remove": reverse("mailadmin:domain_relay_remove", args=[domain.pk]),
        "test": reverse("mailadmin:domain_relay_test", args=[domain.pk]),
    }


def relay_context(request, domain=None, *, form=None, test_job=None, retype_password=False) -> dict:
    """The relay section: the stored relay (fetched once) and its form, or
    the bound form with its errors; a relay test's progress or transcript."""
    row = form.stored if form is not None else relay_service.get_relay(domain)
    ctx = {
        "relay": row,
        "relay_domain": domain,
        "relay_form": form if form is not None else RelayForm.from_relay(row),
        "relay_urls": _urls(domain),
        "relay_test": relay_test.result_of(test_job),
        "relay_test_job": test_job,
        "relay_retype_password": retype_password,
    }
    if test_job is not None:
        ctx["relay_test_url"] = _test_result_url(domain, test_job)
    return ctx


def global_relay_context(request, **kwargs) -> dict:
    return relay_context(request, None, **kwargs)


def _test_result_url(domain, job) -> str:
    if domain is None:
        return reverse("mailadmin:global_relay_test_result", args=[job.pk])
    return reverse("mailadmin:domain_relay_test_result", args=[domain.pk, job.pk])


DOMAIN_RELAY_TAB = DOMAIN_PAGE.tab("relay", SECTION, relay_context)
DOMAIN_RELAY = DOMAIN_PAGE.section("relay", "relay-section", SECTION, relay_context)
GLOBAL_RELAY_TAB = SETTINGS_PAGE.tab("relay", SECTION, global_relay_context)
GLOBAL_RELAY = SETTINGS_PAGE.section("relay", "relay-section", SECTION, global_relay_context)
# The test's progress alone, polled in place inside the section.
TEST = "mailadmin/relay/section.html#relay-test"
DOMAIN_RELAY_TEST = DOMAIN_PAGE.section("relay", "relay-test", TEST, relay_context)
GLOBAL_RELAY_TEST = SETTINGS_PAGE.section("relay", "relay-test", TEST, global_relay_context)


def _section(domain, test=False):
    if domain is not None:
        return DOMAIN_RELAY_TEST if test else DOMAIN_RELAY
    return GLOBAL_RELAY_TEST if test else GLOBAL_RELAY


def _scope(domain) -> tuple:
    """The section's arguments: the domain page takes the domain, the
    settings page none."""
    return (domain,) if domain is not None else ()


def _respond(request, domain, test=False, **kwargs):
    return respond(request, _section(domain, test), *_scope(domain), **kwargs)


def _done(request, domain, notice, job):
    return done(request, _section(domain), *_scope(domain), notice=notice, job=job)


def _save(request, domain):
    form = RelayForm(request.POST, stored=relay_service.get_relay(domain))
    if "switch_auth" in request.POST:
        return _respond(request, domain, form=form.redisplay(auth=request.POST["switch_auth"]), retype_password=True)
    if request.POST.get("action") == "preset":
        return _respond(request, domain, form=form.prefilled_with_preset())
    if form.is_valid():
        try:
            change = relay_service.set_relay(request.user, domain, **form.service_values())
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            return _done(request, domain, _("Relay saved. The mail server is being updated."), change.job)
    return _respond(request, domain, status=400, form=form)


def _remove(request, domain):
    change = relay_service.clear_relay(request.user, domain)
    if change.job is None:
        notice = _("There was no relay to remove.")
    elif domain is not None:
        notice = _("Relay removed: mail from this domain now leaves like the server's other mail.")
    else:
        notice = _("Global relay removed: mail is delivered directly unless a domain has its own relay.")
    return _done(request, domain, notice, change.job)


def _test(request, domain):
    form = RelayForm(request.POST, stored=relay_service.get_relay(domain))
    if not form.is_valid():
        return _respond(request, domain, status=400, form=form)
    try:
        target = relay_service.relay_for_test(domain, form.cleaned_data)
        # The worker talks to the relay; the section polls the job.
        job = relay_test.start_relay_test(request.user, domain, target)
    except ValidationError as exc:
        form.add_error(None, exc)
        return _respond(request, domain, status=400, form=form)
    except TooManyChecks as exc:
        form.add_error(None, str(exc))
        return _respond(request, domain, status=429, form=form)
    return _respond(request, domain, form=form, test_job=job, retype_password=bool(form.cleaned_data.get("password")))


def _test_result(request, domain, job_id):
    """The test's progress and transcript; polled by htmx until it is
    finished. Only the requester's own test of this relay (404 otherwise)."""
    job = get_object_or_404(
        Job,
        pk=job_id,
        kind=JobKind.DIAGNOSE,
        result__what=relay_test.WHAT,
        requested_by=request.user,
        domain=domain,
    )
    return _respond(request, domain, test=True, test_job=job)


@require_http_methods(["GET", "POST"])
def domain_relay(request, domain_id):
    domain = get_domain_for_user(request, domain_id)
    if request.method == "GET":
        return respond(request, DOMAIN_RELAY_TAB, domain)
    return _save(request, domain)


@require_POST
def domain_relay_remove(request, domain_id):
    return _remove(request, get_domain_for_user(request, domain_id))


@require_POST
def domain_relay_test(request, domain_id):
    return _test(request, get_domain_for_user(request, domain_id))


@require_GET
def domain_relay_test_result(request, domain_id, job_id):
    return _test_result(request, get_domain_for_user(request, domain_id), job_id)


@require_http_methods(["GET", "POST"])
def global_relay(request):
    require_admin(request)
    if request.method == "GET":
        return respond(request, GLOBAL_RELAY_TAB)
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
