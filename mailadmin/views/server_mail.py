"""Server settings sections (admin only): panel SMTP (the Panel mail tab),
Spamhaus DQS and DNSBL zones (the Blacklists tab), internal lookup (the
Server tab). Each is a Section of the settings page; htmx swaps it, a plain
POST redirects back to its tab (or shows the tab with the errors)."""

from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from ..dnsbl import dqs_zone
from ..forms_server_mail import (
    DnsblZoneForm,
    DqsKeyForm,
    InternalLookupForm,
    PanelSmtpForm,
    PanelSmtpTestForm,
)
from ..models import ServerSettings
from ..services import panel_smtp, server_mail
from .common import require_admin, server_of
from .pages import SETTINGS_PAGE
from .shell import done, respond

# --- contexts ----------------------------------------------------------------------


def panel_smtp_context(request, form=None, test_form=None, result=None) -> dict:
    server = form.server if form is not None else ServerSettings.load()
    return {
        "panel_smtp_server": server,
        "panel_smtp_form": form or PanelSmtpForm(server=server),
        "panel_smtp_test_form": test_form or PanelSmtpTestForm(),
        "panel_smtp_local": panel_smtp.local_mta_address(),
        "panel_smtp_result": result,
    }


def dqs_context(request, form=None) -> dict:
    server = server_of(request)
    return {
        "dqs_is_set": bool(server.dqs_key),
        "dqs_status": server_mail.dqs_status(server),
        "dqs_form": form or DqsKeyForm(),
    }


def dnsbl_context(request, form=None) -> dict:
    server = server_of(request)
    return {
        # (zone as configured, queried through DQS?) — never the DQS zone name itself.
        "dnsbl_rows": [(zone, dqs_zone(zone, server.dqs_key) != zone) for zone in server_mail.zone_list(server)],
        "dnsbl_form": form or DnsblZoneForm(),
    }


def internal_lookup_context(request) -> dict:
    enabled = server_of(request).internal_lookup
    return {
        "internal_lookup": enabled,
        "internal_lookup_form": InternalLookupForm(initial={"internal_lookup": enabled}),
    }


PANEL_SMTP_TAB = SETTINGS_PAGE.tab("panel-smtp", "mailadmin/server_mail/panel_smtp.html#panel-smtp", panel_smtp_context)
PANEL_SMTP = SETTINGS_PAGE.section(
    "panel-smtp", "panel-smtp", "mailadmin/server_mail/panel_smtp.html#panel-smtp", panel_smtp_context
)
BLACKLISTS_TAB = SETTINGS_PAGE.tab("blacklists", "mailadmin/server_mail/blacklists.html", dqs_context, dnsbl_context)
DQS = SETTINGS_PAGE.section("blacklists", "dqs", "mailadmin/server_mail/dqs.html#dqs", dqs_context)
DNSBL = SETTINGS_PAGE.section("blacklists", "dnsbl", "mailadmin/server_mail/dnsbl.html#dnsbl", dnsbl_context)
INTERNAL_LOOKUP = SETTINGS_PAGE.section(
    "server", "internal-lookup", "mailadmin/server_mail/internal_lookup.html#internal-lookup", internal_lookup_context
)


# --- panel SMTP -------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
def panel_smtp_tab(request):
    require_admin(request)
    if request.method == "GET":
        return respond(request, PANEL_SMTP_TAB)
    if request.POST.get("action") == "clear":
        panel_smtp.clear_settings(request.user)
        return done(request, PANEL_SMTP, notice=_("Panel mail now goes through the local mail server."))
    if not request.POST.get("enabled"):
        # Unticked: back to the local MTA, the settings kept for later.
        panel_smtp.disable(request.user)
        return done(request, PANEL_SMTP, notice=_("Panel mail now goes through the local mail server."))
    form = PanelSmtpForm(request.POST, server=ServerSettings.load())
    if form.is_valid() and form.save(request.user):
        return done(request, PANEL_SMTP, notice=_("Panel SMTP saved. Send a test mail to check it."))
    return respond(request, PANEL_SMTP, status=400, form=form)


@require_POST
def panel_smtp_test(request):
    """The result is the answer to this POST: shown in place, not redirected away."""
    require_admin(request)
    test_form = PanelSmtpTestForm(request.POST)
    if not test_form.is_valid():
        return respond(request, PANEL_SMTP, status=400, test_form=test_form)
    result = panel_smtp.send_test_mail(test_form.cleaned_data["to"])
    return respond(request, PANEL_SMTP, test_form=test_form, result=result)


# --- blacklists: Spamhaus DQS and DNSBL zones ---------------------------------------


@require_GET
def blacklists_tab(request):
    require_admin(request)
    return respond(request, BLACKLISTS_TAB)


@require_POST
def dqs_save(request):
    require_admin(request)
    if request.POST.get("action") == "clear":
        change = server_mail.clear_dqs_key(request.user)
        return done(request, DQS, notice=_("DQS key removed: the public Spamhaus zones are used again."), job=change.job)
    form = DqsKeyForm(request.POST)
    if form.is_valid():
        change = server_mail.set_dqs_key(request.user, form.cleaned_data["key"])
        return done(request, DQS, notice=_("DQS key saved. The mail server is being updated."), job=change.job)
    return respond(request, DQS, status=400, form=form)


@require_POST
def dnsbl_save(request):
    require_admin(request)
    if request.POST.get("action") == "remove":
        try:
            change = server_mail.remove_zone(request.user, request.POST.get("zone", ""))
        except ValidationError as exc:
            return done(request, DNSBL, error=" ".join(exc.messages))
        return done(request, DNSBL, notice=_("Zone removed. The mail server is being updated."), job=change.job)
    form = DnsblZoneForm(request.POST)
    if form.is_valid():
        try:
            change = server_mail.add_zone(request.user, form.cleaned_data["zone"])
        except ValidationError as exc:
            form.add_error("zone", exc)
        else:
            return done(request, DNSBL, notice=_("Zone added. The mail server is being updated."), job=change.job)
    return respond(request, DNSBL, status=400, form=form)


# --- internal lookup --------------------------------------------------------------


@require_POST
def internal_lookup_save(request):
    require_admin(request)
    form = InternalLookupForm(request.POST)
    form.is_valid()  # a checkbox: always valid
    enabled = bool(form.cleaned_data.get("internal_lookup"))
    change = server_mail.set_internal_lookup(request.user, enabled)
    notice = (
        _("Internal lookup is on: mail for domains hosted here is delivered locally.")
        if enabled
        else _("Internal lookup is off: mail for domains listed here is routed by their MX records.")
    )
    return done(request, INTERNAL_LOOKUP, notice=notice, job=change.job)
