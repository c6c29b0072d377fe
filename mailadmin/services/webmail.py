"""Which webmail https://<host name>/webmail/ (and http://webmail.<domain>/)
serves: SnappyMail (the default) or Roundcube from Debian's roundcube-core.

Saving changes the database only; the apply job renders the webmail's nginx
locations, its PHP-FPM pools and Roundcube's config.inc.php
(mailconf/render/webmail.py, mailconf/render/roundcube.py).
"""

import os

from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _

from ..models import Job, ServerSettings, WebmailApp
from . import audit, jobs
from .apply import layout_from_settings


def roundcube_installed() -> bool:
    """Debian's roundcube-core is on this host (its web root's index.php,
    where the Layout says apt put it)."""
    return os.path.isfile(os.path.join(layout_from_settings().roundcube_dir, "public_html", "index.php"))


def set_webmail(actor, app: str) -> Job:
    """Refuses an unknown app, and Roundcube while its package is missing
    (the site would answer 404)."""
    if app not in WebmailApp.values:
        raise ValidationError(_("Choose SnappyMail or Roundcube."))
    if app == WebmailApp.ROUNDCUBE and not roundcube_installed():
        raise ValidationError(
            _("Roundcube is not installed on this server (Debian packages roundcube-core, "
              "roundcube-plugins and roundcube-sqlite3).")
        )
    server = ServerSettings.load()
    changed = ["webmail"] if server.webmail != app else []
    server.webmail = app
    server.save(update_fields=["webmail", "updated_at"])
    audit.record(actor, "webmail.set", "server", changed)
    return jobs.request_apply(actor)
