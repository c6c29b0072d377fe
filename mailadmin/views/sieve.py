"""ManageSieve (admin): on/off and external access, one section of the server
settings page."""

from django.contrib import messages
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from ..models import ServerSettings
from ..services import sieve
from .common import require_admin

T_SECTION = "mailadmin/sieve/section.html"


def settings_section(request, **extra) -> dict:
    server = ServerSettings.load()
    return {
        "sieve_enabled": server.sieve_enabled,
        "sieve_external": server.sieve_external,
        **extra,
    }


@require_POST
def sieve_save(request):
    require_admin(request)
    enabled = bool(request.POST.get("enabled"))
    external = bool(request.POST.get("external"))
    job = sieve.set_sieve(request.user, enabled, external)
    if not enabled:
        notice = _("ManageSieve switched off. The mail server is being updated.")
    elif external and enabled:
        notice = _("ManageSieve switched on for SnappyMail and external mail clients (port 4190). The mail server is being updated.")
    else:
        notice = _("ManageSieve switched on for SnappyMail (port 4190 closed to other hosts). The mail server is being updated.")
    if request.htmx:
        return render(request, f"{T_SECTION}#sieve", settings_section(request, sieve_notice=notice, sieve_job=job))
    messages.success(request, notice)
    return redirect(reverse("mailadmin:server_settings") + "#sieve")
