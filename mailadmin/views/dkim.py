"""The domain page's DKIM section: the signing key, its age, and the guided
rotation (services.dkim_rotation). One URL, the button's name says the step;
htmx swaps the section, a plain POST redirects back to the page."""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from ..forms import ServerIdentityForm
from ..forms_dkim import DkimPolicyForm, DkimRotateForm
from ..models import ServerSettings
from ..services import dkim_rotation
from .common import get_domain_for_user, require_admin
from .sections import settings_sections_context

SECTION = "mailadmin/dkim/section.html"
POLICY = "mailadmin/dkim/policy.html"


def dkim_section(request, domain, status=None, **extra) -> dict:
    """Registered in sections.DOMAIN_SECTIONS."""
    status = status or dkim_rotation.status(domain)
    return {
        "dkim": status,
        "dkim_records": {record.purpose: record for record in status.records},
        "dkim_form": extra.get("form") or DkimRotateForm(),
        "dkim_verdict": extra.get("verdict"),
        "dkim_notice": extra.get("notice", ""),
        "dkim_error": extra.get("error", ""),
    }


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
    if request.htmx:
        ctx = {"domain": domain, **dkim_section(request, domain, form=form, verdict=verdict, notice=notice, error=error)}
        return render(request, SECTION + "#dkim", ctx)
    if error:
        messages.error(request, error)
    elif notice:
        messages.success(request, notice)
    return redirect(domain.get_absolute_url() + "#dkim")


# --- the admin's policy (server settings page) ---------------------------------------


def policy_section(request, form=None) -> dict:
    """Registered in sections.SETTINGS_SECTIONS."""
    server = ServerSettings.load_public()
    initial = {"dkim_grace_days": server.dkim_grace_days, "dkim_max_age_months": server.dkim_max_age_months}
    return {"dkim_policy_form": form or DkimPolicyForm(initial=initial)}


@require_POST
def dkim_policy_save(request):
    require_admin(request)
    form = DkimPolicyForm(request.POST)
    notice = ""
    if form.is_valid():
        try:
            dkim_rotation.set_policy(
                request.user, form.cleaned_data["dkim_grace_days"], form.cleaned_data["dkim_max_age_months"]
            )
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            notice = _("Saved.")
    ok = not form.errors
    if request.htmx:
        return render(request, POLICY + "#dkim-policy", {**policy_section(request, form if not ok else None), "notice": notice})
    if ok:
        messages.success(request, notice)
        return redirect(reverse("mailadmin:server_settings") + "#dkim-policy")
    ctx = {
        "form": ServerIdentityForm(instance=ServerSettings.load()),
        **settings_sections_context(request),
        **policy_section(request, form),
    }
    return render(request, "mailadmin/server_settings.html", ctx, status=400)
