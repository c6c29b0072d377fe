"""SnappyMail (admin): install job, the admin credentials shown until their
file is deleted. Customers get only the Webmail link on their domain pages."""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from .. import snappymail_release as release
from ..helper_client import HelperError
from ..models import Job, JobKind, ServerSettings
from ..services import snappymail
from .common import require_admin, server_of
from .pages import SETTINGS_PAGE
from .shell import done, respond
from .sieve import sieve_context
from .webmail import webmail_context


def snappymail_context(request) -> dict:
    server = server_of(request)
    try:
        snappymail.install_source()
        source_error = ""
    except ValidationError as exc:
        source_error = " ".join(exc.messages)
    return {
        "snappymail_installed": server.snappymail_installed,
        "snappymail_admin_login": server.snappymail_admin_login,
        "snappymail_credentials_file": server.snappymail_credentials_file,
        "snappymail_source_error": source_error,
        # The install job is the section's own (not an apply): it stays in view.
        "snappymail_job": Job.objects.filter(kind=JobKind.SNAPPYMAIL_INSTALL).order_by("-id").first(),
    }


WEBMAIL_TAB = SETTINGS_PAGE.tab("webmail", "mailadmin/snappymail/webmail_tab.html", webmail_context,
                                snappymail_context, sieve_context)
SNAPPYMAIL = SETTINGS_PAGE.section("webmail", "snappymail", "mailadmin/snappymail/section.html#snappymail", snappymail_context)


@require_GET
def webmail_tab(request):
    require_admin(request)
    return respond(request, WEBMAIL_TAB)


@require_POST
def snappymail_install(request):
    require_admin(request)
    try:
        snappymail.start_install(request.user)
    except ValidationError as exc:
        return done(request, SNAPPYMAIL, error=" ".join(exc.messages))
    return done(request, SNAPPYMAIL, notice=_("SnappyMail is being installed; the progress is shown below."))


@never_cache
@require_GET
def snappymail_credentials(request):
    """The credentials file's content, read back through the helper: shown to
    admins until the file is deleted, never stored or logged by the panel."""
    require_admin(request)
    error, fields = "", {}
    try:
        text = snappymail.read_credentials()
    except HelperError as exc:
        text, error = None, _("The credentials file could not be read: %(error)s") % {"error": exc}
    if text is not None:
        fields = release.parse_credentials_file(text)
    key = fields.get("Secret key", "")
    return render(
        request,
        "mailadmin/snappymail/credentials.html",
        {
            "credentials": fields,
            "secret_key": key,
            "credentials_exist": text is not None,
            "admin_url": snappymail.admin_url(key) if key else "",
            "credentials_path": snappymail.CREDENTIALS_FILE,
            "admin_login": ServerSettings.load().snappymail_admin_login,
            "error": error,
        },
    )


@require_POST
def snappymail_credentials_delete(request):
    require_admin(request)
    try:
        snappymail.delete_credentials(request.user)
    except HelperError as exc:
        messages.error(request, _("The credentials file could not be deleted: %(error)s") % {"error": exc})
        return redirect("mailadmin:snappymail_credentials")
    messages.success(request, _("The credentials file was deleted."))
    return redirect(SNAPPYMAIL.url() + "#snappymail")
