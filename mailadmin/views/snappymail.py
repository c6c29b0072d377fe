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
from ..models import ApplyJob, JobKind, ServerSettings
from ..services import snappymail
from .common import require_admin

T_SECTION = "mailadmin/snappymail/section.html"


# --- section builders (registered in views/sections.py) -------------------------


def settings_section(request, **extra) -> dict:
    server = ServerSettings.load()
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
        "snappymail_job": ApplyJob.objects.filter(kind=JobKind.SNAPPYMAIL_INSTALL).order_by("-id").first(),
        **extra,
    }


def domain_webmail_section(request, domain) -> dict:
    return {
        "webmail_installed": ServerSettings.load_public().snappymail_installed,
        "webmail_url": f"https://webmail.{domain.name}/",
    }


# --- views --------------------------------------------------------------------------


def _back(request, notice="", error=""):
    if request.htmx:
        return render(request, f"{T_SECTION}#snappymail", settings_section(request, snappymail_notice=notice, snappymail_error=error))
    if notice:
        messages.success(request, notice)
    if error:
        messages.error(request, error)
    return redirect(reverse("mailadmin:server_settings") + "#snappymail")


@require_POST
def snappymail_install(request):
    require_admin(request)
    try:
        snappymail.start_install(request.user)
    except ValidationError as exc:
        return _back(request, error=" ".join(exc.messages))
    return _back(request, notice=_("SnappyMail is being installed; the progress is shown below."))


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
    return redirect(reverse("mailadmin:server_settings") + "#snappymail")
