"""Server settings sections (admin only): panel SMTP, Spamhaus DQS, DNSBL zones,
internal lookup. Each section is one template with one partial; htmx swaps the
partial, a plain POST redirects back to the settings page (or re-renders it
with the errors)."""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from ..forms import ServerIdentityForm
from ..forms_server_mail import (
    DnsblZoneForm,
    DqsKeyForm,
    InternalLookupForm,
    PanelSmtpForm,
    PanelSmtpTestForm,
)
from ..models import ServerSettings
from ..services import jobs, panel_smtp, server_mail
from .common import require_admin
from .sections import settings_sections_context

T_PANEL_SMTP = "mailadmin/server_mail/panel_smtp.html"
T_DQS = "mailadmin/server_mail/dqs.html"
T_DNSBL = "mailadmin/server_mail/dnsbl.html"
T_INTERNAL_LOOKUP = "mailadmin/server_mail/internal_lookup.html"


# --- section builders (registered in views/sections.py) -------------------------


def panel_smtp_section(request, server=None, **bound) -> dict:
    server = server or ServerSettings.load()
    return {
        "panel_smtp_server": server,
        "panel_smtp_form": bound.get("form") or PanelSmtpForm(server=server),
        "panel_smtp_test_form": bound.get("test_form") or PanelSmtpTestForm(),
        "panel_smtp_local": panel_smtp.local_mta_address(),
    }


def dqs_section(request, server=None, **bound) -> dict:
    server = server or ServerSettings.load()
    return {
        "dqs_is_set": bool(server.dqs_key),
        "dqs_status": server_mail.dqs_status(server),
        "dqs_form": bound.get("form") or DqsKeyForm(),
    }


def dnsbl_section(request, server=None, **bound) -> dict:
    server = server or ServerSettings.load()
    zones = server_mail.zone_list(server)
    from ..services.apply import dqs_zone

    return {
        # (zone as configured, queried through DQS?) — never the DQS zone name itself.
        "dnsbl_rows": [(zone, dqs_zone(zone, server.dqs_key) != zone) for zone in zones],
        "dnsbl_form": bound.get("form") or DnsblZoneForm(),
    }


def internal_lookup_section(request, server=None, **bound) -> dict:
    server = server or ServerSettings.load()
    return {
        "internal_lookup": server.internal_lookup,
        "internal_lookup_form": InternalLookupForm(initial={"internal_lookup": server.internal_lookup}),
    }


# --- responses --------------------------------------------------------------------


def _respond(request, template, partial, section_ctx, ok, notice="", anchor=""):
    """htmx: the section's partial (200 even with errors: htmx swaps only 2xx),
    with the apply job the change started (panel SMTP starts none).
    Plain POST: redirect on success, the whole page with the errors otherwise."""
    if request.htmx:
        job = None
        if ok and template != T_PANEL_SMTP:
            job = jobs.latest_apply(request.user)
        ctx = {**section_ctx, "notice": notice, "section_job": job}
        return render(request, f"{template}#{partial}", ctx)
    if ok:
        if notice:
            messages.success(request, notice)
        return redirect(reverse("mailadmin:server_settings") + (f"#{anchor}" if anchor else ""))
    ctx = {
        "form": ServerIdentityForm(instance=ServerSettings.load()),
        **settings_sections_context(request),
        **section_ctx,
    }
    return render(request, "mailadmin/server_settings.html", ctx, status=400)


# --- panel SMTP -------------------------------------------------------------------


@require_POST
def panel_smtp_save(request):
    require_admin(request)
    server = ServerSettings.load()
    if request.POST.get("action") == "clear" or not request.POST.get("enabled"):
        # Unticked: back to the local MTA, the settings kept for later; "clear" wipes them.
        if request.POST.get("action") == "clear":
            server = panel_smtp.clear_settings(request.user)
        else:
            server = panel_smtp.disable(request.user)
        return _respond(
            request,
            T_PANEL_SMTP,
            "panel-smtp",
            panel_smtp_section(request, server),
            True,
            _("Panel mail now goes through the local mail server."),
            "panel-smtp",
        )
    form = PanelSmtpForm(request.POST, server=server)
    if form.is_valid():
        data = form.cleaned_data
        try:
            server = panel_smtp.save_settings(
                request.user,
                host=data["host"],
                port=data["port"],
                security=data["security"],
                username=data["username"],
                password=data["password"],
                from_email=data["from_email"],
            )
        except ValidationError as exc:
            for name, errors in exc.message_dict.items():
                form.add_error(name if name in form.fields else None, errors)
        else:
            return _respond(
                request,
                T_PANEL_SMTP,
                "panel-smtp",
                panel_smtp_section(request, server),
                True,
                _("Panel SMTP saved. Send a test mail to check it."),
                "panel-smtp",
            )
    return _respond(
        request, T_PANEL_SMTP, "panel-smtp", panel_smtp_section(request, server, form=form), False
    )


@require_POST
def panel_smtp_test(request):
    require_admin(request)
    server = ServerSettings.load()
    test_form = PanelSmtpTestForm(request.POST)
    ctx = panel_smtp_section(request, server, test_form=test_form)
    if test_form.is_valid():
        ctx["panel_smtp_result"] = panel_smtp.send_test_mail(test_form.cleaned_data["to"])
    template = f"{T_PANEL_SMTP}#panel-smtp" if request.htmx else "mailadmin/server_settings.html"
    if not request.htmx:
        ctx = {
            "form": ServerIdentityForm(instance=server),
            **settings_sections_context(request),
            **ctx,
        }
    # The result is the answer to this POST: shown in place, not redirected away.
    return render(request, template, ctx, status=200 if test_form.is_valid() or request.htmx else 400)


# --- Spamhaus DQS -----------------------------------------------------------------


@require_POST
def dqs_save(request):
    require_admin(request)
    if request.POST.get("action") == "clear":
        server = server_mail.clear_dqs_key(request.user)
        return _respond(
            request, T_DQS, "dqs", dqs_section(request, server), True,
            _("DQS key removed: the public Spamhaus zones are used again."), "dqs",
        )
    form = DqsKeyForm(request.POST)
    if form.is_valid():
        server = server_mail.set_dqs_key(request.user, form.cleaned_data["key"])
        return _respond(
            request, T_DQS, "dqs", dqs_section(request, server), True,
            _("DQS key saved. The mail server is being updated."), "dqs",
        )
    return _respond(request, T_DQS, "dqs", dqs_section(request, form=form), False)


# --- DNSBL zones ------------------------------------------------------------------


@require_POST
def dnsbl_save(request):
    require_admin(request)
    if request.POST.get("action") == "remove":
        try:
            server = server_mail.remove_zone(request.user, request.POST.get("zone", ""))
        except ValidationError as exc:
            form = DnsblZoneForm()
            form.add_error(None, exc)
            return _respond(request, T_DNSBL, "dnsbl", dnsbl_section(request, form=form), False)
        return _respond(
            request, T_DNSBL, "dnsbl", dnsbl_section(request, server), True,
            _("Zone removed. The mail server is being updated."), "dnsbl",
        )
    form = DnsblZoneForm(request.POST)
    if form.is_valid():
        try:
            server = server_mail.add_zone(request.user, form.cleaned_data["zone"])
        except ValidationError as exc:
            form.add_error("zone", exc)
        else:
            return _respond(
                request, T_DNSBL, "dnsbl", dnsbl_section(request, server), True,
                _("Zone added. The mail server is being updated."), "dnsbl",
            )
    return _respond(request, T_DNSBL, "dnsbl", dnsbl_section(request, form=form), False)


# --- internal lookup --------------------------------------------------------------


@require_POST
def internal_lookup_save(request):
    require_admin(request)
    form = InternalLookupForm(request.POST)
    form.is_valid()  # a checkbox: always valid
    enabled = bool(form.cleaned_data.get("internal_lookup"))
    server = server_mail.set_internal_lookup(request.user, enabled)
    notice = (
        _("Internal lookup is on: mail for domains hosted here is delivered locally.")
        if enabled
        else _("Internal lookup is off: mail for domains listed here is routed by their MX records.")
    )
    return _respond(
        request, T_INTERNAL_LOOKUP, "internal-lookup", internal_lookup_section(request, server),
        True, notice, "internal-lookup",
    )
