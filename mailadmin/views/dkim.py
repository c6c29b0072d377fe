"""The DKIM key section of the domain page's DNS tab: the signing key, its
age, and the guided rotation (services.dkim_rotation); and the admin's key
policy on the server settings page's Server tab. One URL, the button's name
says the step; htmx swaps the section, a plain POST redirects back to the tab."""

from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from ..forms_dkim import DkimPolicyForm, DkimRotateForm
from ..services import dkim_rotation
from .common import get_domain_for_user, require_admin, server_of
from .pages import DOMAIN_PAGE, SETTINGS_PAGE
from .shell import done, respond


def dkim_section(request, domain, form=None, verdict=None) -> dict:
    """The DKIM key as it stands, for the DNS tab."""
    status = dkim_rotation.status(domain, server=server_of(request))
    return {
        "domain": domain,
        "dkim": status,
        "dkim_records": {record.purpose: record for record in status.records},
        "dkim_form": form or DkimRotateForm(),
        "dkim_verdict": verdict,
    }


def policy_section(request, form=None) -> dict:
    server = server_of(request)
    initial = {"dkim_grace_days": server.dkim_grace_days, "dkim_max_age_months": server.dkim_max_age_months}
    return {"dkim_policy_form": form or DkimPolicyForm(initial=initial)}


DKIM = DOMAIN_PAGE.section("dns", "dkim", "mailadmin/dkim/section.html#dkim", dkim_section)
DKIM_POLICY = SETTINGS_PAGE.section("server", "dkim-policy", "mailadmin/dkim/policy.html#dkim-policy", policy_section)


@require_POST
def domain_dkim(request, domain_id):
    domain = get_domain_for_user(request, domain_id)
    action = request.POST.get("action")
    form, verdict, notice, error = None, None, "", ""
    try:
        if action == "rotate":
            form = DkimRotateForm(request.POST)
            if form.is_valid():
                dkim_rotation.start_rotation(
                    request.user, domain, form.cleaned_data["selector"], form.cleaned_data["bits"]
                )
                notice = _("A new key is ready. Publish its record; the server switches to it once DNS shows it.")
                form = None
            else:
                error = " ".join(e for errors in form.errors.values() for e in errors)
        elif action == "advance":
            outcome = dkim_rotation.advance(request.user, domain)
            verdict = outcome.verdict
            if outcome.switched:
                notice = _("The new record is published: the server now signs with the new key.")
            elif verdict is not None:
                error = _("The new record is not visible in DNS yet; the current key keeps signing.")
        elif action == "cancel":
            dkim_rotation.cancel_rotation(request.user, domain)
            notice = _("The new key was discarded; you may delete its record.")
        elif action == "dismiss":
            dkim_rotation.dismiss_retired(request.user, domain)
        else:
            error = _("Unknown action.")
    except ValidationError as exc:
        if form is not None and hasattr(exc, "error_dict"):
            form.add_error(None, exc)
        error = " ".join(exc.messages)
    return done(request, DKIM, domain, notice=notice, error=error, form=form, verdict=verdict)


@require_POST
def dkim_policy_save(request):
    require_admin(request)
    form = DkimPolicyForm(request.POST)
    if form.is_valid():
        try:
            dkim_rotation.set_policy(
                request.user, form.cleaned_data["dkim_grace_days"], form.cleaned_data["dkim_max_age_months"]
            )
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            return done(request, DKIM_POLICY, notice=_("Saved."))
    return respond(request, DKIM_POLICY, status=400, form=form)
