"""ManageSieve (admin): on/off and external access, a section of the server
settings page's "Webmail and filters" tab."""

from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from ..services import sieve
from .common import require_admin, server_of
from .pages import SETTINGS_PAGE
from .shell import done


def sieve_context(request) -> dict:
    server = server_of(request)
    return {"sieve_enabled": server.sieve_enabled, "sieve_external": server.sieve_external}


SIEVE = SETTINGS_PAGE.section("webmail", "sieve", "mailadmin/sieve/section.html#sieve", sieve_context)


@require_POST
def sieve_save(request):
    require_admin(request)
    enabled = bool(request.POST.get("enabled"))
    external = bool(request.POST.get("external"))
    job = sieve.set_sieve(request.user, enabled, external)
    if not enabled:
        notice = _("ManageSieve switched off. The mail server is being updated.")
    elif external:
        notice = _("ManageSieve switched on for SnappyMail and external mail clients (port 4190). The mail server is being updated.")
    else:
        notice = _("ManageSieve switched on for SnappyMail (port 4190 closed to other hosts). The mail server is being updated.")
    return done(request, SIEVE, notice=notice, job=job)
