"""SnappyMail: install as a background job, admin credentials, credentials file.

The admin password exists in plain text only in /root/.snappymail (root, 0600,
the FAQ's `Username:` / `Password:` / `Secret key:` lines). The database keeps
the login, the bcrypt hash and the admin panel key (encrypted); the panel reads
the file back through the helper to show it to admins until it is deleted.
Nothing secret goes into the job log, the audit log or the Python log.
"""

import base64
import logging
from urllib.parse import SplitResult, urlsplit, urlunsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.utils.translation import gettext as _

from .. import snappymail_release as release
from ..helper_client import HelperError, call_helper
from ..models import Job, JobKind, MailDomain, ServerSettings
from ..validation import normalize_hostname
from . import apply, audit, jobs

logger = logging.getLogger(__name__)

CREDENTIALS_FILE = release.CREDENTIALS_FILE
INSTALL_TASK = "mailadmin.tasks.install_snappymail"
# Unpacking a release through the helper takes longer than a config apply.
INSTALL_HELPER_TIMEOUT = 600


def install_source(tarball: str = "", sha256: str = "") -> tuple[str, str]:
    """The tarball (explicit path or the configured URL) and its expected
    SHA-256; ValidationError with a clear message when either is missing."""
    source = (tarball or settings.MAILPANEL_SNAPPYMAIL_URL or "").strip()
    expected = (sha256 or settings.MAILPANEL_SNAPPYMAIL_SHA256 or "").strip()
    if not source:
        raise ValidationError(
            _("No SnappyMail release is configured: set MAILPANEL_SNAPPYMAIL_URL or give a local tarball.")
        )
    if not expected:
        raise ValidationError(
            _("The release's SHA-256 is not configured: set MAILPANEL_SNAPPYMAIL_SHA256 or give --sha256.")
        )
    try:
        expected = release.normalize_sha256(expected)
    except release.ReleaseError:
        raise ValidationError(_("The SHA-256 must be 64 hexadecimal characters."))
    return source, expected


def start_install(actor, tarball: str = "", sha256: str = "") -> Job:
    """Queue the install job (the worker runs run_install_job)."""
    source, expected = install_source(tarball, sha256)
    audit.record(actor, "snappymail.install", "snappymail")
    return jobs.start_job(
        JobKind.SNAPPYMAIL_INSTALL, actor, task_path=INSTALL_TASK, source=source, sha256=expected
    )


def create_install_job(actor) -> Job:
    """A job row for a synchronous install (the CLI runs it in its own process)."""
    return Job.objects.create(
        kind=JobKind.SNAPPYMAIL_INSTALL,
        requested_by=actor if getattr(actor, "pk", None) else None,
    )


def run_install_job(job_id: int, source: str, sha256: str, echo=None) -> Job:
    return jobs.run_job(
        job_id,
        lambda job, log: _install(source, sha256, log),
        expected=(release.ReleaseError, HelperError),
        echo=echo,
    )


def _install(source: str, sha256: str, log) -> dict:
    log(f"fetching the release from {source}")
    data = release.fetch_tarball(source)
    log(f"fetched {len(data)} bytes")
    actual = release.verify_sha256(data, sha256)
    log(f"SHA-256 verified: {actual}")

    log("unpacking into /var/lib/snappymail")
    answer = call_helper(
        {
            "op": "install_tarball",
            "tarball_b64": base64.b64encode(data).decode(),
            "sha256": actual,
        },
        timeout=INSTALL_HELPER_TIMEOUT,
    )
    log(f"unpacked {answer.get('files', 0)} files and {answer.get('dirs', 0)} folders")
    if answer.get("kept_data"):
        log("kept the existing data folder (settings, users' data)")

    server = ServerSettings.load()
    fields = ["snappymail_installed"]
    if server.snappymail_admin_login and server.snappymail_admin_password_hash and server.snappymail_admin_key:
        log(f"keeping the existing admin login {server.snappymail_admin_login}")
    else:
        credentials = release.generate_credentials()
        _write_credentials_file(credentials)
        log(f"admin credentials written to {CREDENTIALS_FILE} (root only, mode 0600)")
        server.snappymail_admin_login = credentials.login
        server.snappymail_admin_password_hash = release.hash_admin_password(credentials.password)
        server.snappymail_admin_key = credentials.key
        server.snappymail_credentials_file = True
        fields += [
            "snappymail_admin_login",
            "snappymail_admin_password_hash",
            "snappymail_admin_key",
            "snappymail_credentials_file",
        ]
    server.snappymail_installed = True
    server.save(update_fields=fields + ["updated_at"])

    log("writing application.ini and domains/default.json")
    apply.apply_now(log)
    log("SnappyMail is installed")
    return {"admin_login": server.snappymail_admin_login}


def _write_credentials_file(credentials: release.Credentials) -> None:
    content = release.credentials_file_text(credentials).encode("utf-8")
    call_helper(
        {
            "op": "apply",
            "write": [{"path": CREDENTIALS_FILE, "content_b64": base64.b64encode(content).decode()}],
            "remove": [],
            "reload": [],
        }
    )


def read_credentials() -> str | None:
    """The credentials file's text, or None once it is gone. Admins only: the
    callers check. Keeps the database's flag in step with the disk."""
    answer = call_helper({"op": "read", "path": CREDENTIALS_FILE})
    text = None
    if answer.get("exists"):
        text = base64.b64decode(answer.get("content_b64", "")).decode("utf-8", "replace")
    server = ServerSettings.load()
    if server.snappymail_credentials_file != (text is not None):
        server.snappymail_credentials_file = text is not None
        server.save(update_fields=["snappymail_credentials_file", "updated_at"])
    return text


def delete_credentials(actor) -> bool:
    """Remove /root/.snappymail (FAQ: delete it when no longer needed).
    True if a file was removed."""
    answer = call_helper(
        {"op": "apply", "write": [], "remove": [CREDENTIALS_FILE], "reload": []}
    )
    ServerSettings.objects.filter(pk=ServerSettings.load().pk).update(
        snappymail_credentials_file=False
    )
    audit.record(actor, "snappymail.delete_credentials", CREDENTIALS_FILE)
    return CREDENTIALS_FILE in answer.get("removed", [])


def admin_url(key: str) -> str:
    """The SnappyMail admin panel's address with its key: on the configured
    MAILPANEL_SNAPPYMAIL_ADMIN_URL, else on the server's host name. Never on a
    customer's domain — whoever runs its DNS would receive the key — so ""
    when the host name lies in a customer's domain and no URL is configured."""
    configured = settings.MAILPANEL_SNAPPYMAIL_ADMIN_URL
    if configured:
        return urlunsplit(_admin_base(configured)._replace(query=key))
    hostname = ServerSettings.load_public().hostname
    if _in_customer_domain(hostname):
        return ""
    # SnappyMail is served at /webmail/ on the host name (mailconf/render/webmail.py)
    return urlunsplit(("https", hostname, "/webmail/", key, ""))


def _admin_base(url: str) -> SplitResult:
    """The configured URL, refused unless it is a plain http(s)://host[:port]/path."""
    parts = urlsplit(url.strip())
    try:
        normalize_hostname(parts.hostname or "")
        parts.port  # noqa: B018 (raises ValueError when it is not a number)
    except (ValidationError, ValueError):
        parts = None
    if parts is None or parts.scheme not in ("https", "http") or parts.username is not None:
        raise ImproperlyConfigured(f"MAILPANEL_SNAPPYMAIL_ADMIN_URL is not an https:// URL: {url!r}")
    if "?" in url or "#" in url:
        raise ImproperlyConfigured("MAILPANEL_SNAPPYMAIL_ADMIN_URL must not have a query or fragment: the key goes there")
    return parts._replace(path=parts.path or "/")


def _in_customer_domain(hostname: str) -> bool:
    """Is the host name a customer's domain or a name under one?"""
    labels = hostname.lower().rstrip(".").split(".")
    names = [".".join(labels[i:]) for i in range(len(labels))]
    return (
        MailDomain.objects.filter(name__in=names)
        .exclude(owner__is_staff=True)
        .exclude(owner__is_superuser=True)
        .exists()
    )
