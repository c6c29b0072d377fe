"""Which webmail /webmail/ serves (admin): a section of the server settings
page's "Webmail and filters" tab."""

from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from ..models import WebmailApp
from ..services import webmail
from .common import require_admin, server_of
from .pages import SETTINGS_PAGE
from .shell import done


def webmail_context(request) -> dict:
    return {
        "webmail_app": server_of(request).webmail,
        "webmail_apps": WebmailApp.choices,
        "roundcube_installed": webmail.roundcube_installed(),
    }


WEBMAIL_CHOICE = SETTINGS_PAGE.section("webmail", "webmail-app", "mailadmin/webmail/section.html#webmail-app",
                                       webmail_context)


@require_POST
def webmail_save(request):
    require_admin(request)
    app = request.POST.get("webmail", "")
    try:
        job = webmail.set_webmail(request.user, app)
    except ValidationError as exc:
        return done(request, WEBMAIL_CHOICE, error=" ".join(exc.messages))
    label = dict(WebmailApp.choices)[app]
    notice = _("%(app)s will answer at /webmail/. The web server is being updated.") % {"app": label}
    return done(request, WEBMAIL_CHOICE, notice=notice, job=job)
