"""`mail snappymail install|credentials|delete-credentials`."""

from pathlib import Path

from django.core.management.base import CommandError

from ..helper_client import HelperError
from ..models import JobState
from ..services import audit, snappymail
from .common import add_json_flag, system_actor


def register(nouns):
    parser = nouns.add_parser("snappymail", help="SnappyMail webmail")
    verbs = parser.add_subparsers(dest="verb", required=True)
    install = verbs.add_parser(
        "install",
        help="install (or re-install, keeping its data) from MAILPANEL_SNAPPYMAIL_URL "
        "or a local tarball, checked against its SHA-256",
    )
    install.add_argument("--tarball", default="", help="a local release tarball")
    install.add_argument("--sha256", default="", help="the tarball's SHA-256 (hex)")
    add_json_flag(install)
    install.set_defaults(handler=snappymail_install)
    credentials = verbs.add_parser(
        "credentials", help=f"print {snappymail.CREDENTIALS_FILE} if it still exists"
    )
    credentials.set_defaults(handler=snappymail_credentials)
    delete = verbs.add_parser(
        "delete-credentials", help=f"delete {snappymail.CREDENTIALS_FILE}"
    )
    delete.set_defaults(handler=snappymail_delete_credentials)


def snappymail_install(command, options):
    """Runs the install job here and now (its log also lands in the job log)."""
    tarball = options["tarball"]
    if tarball:
        tarball = str(Path(tarball).resolve())
    source, sha256 = snappymail.install_source(tarball, options["sha256"])
    actor = system_actor()
    job = snappymail.create_install_job(actor)
    audit.record(actor, "snappymail.install", "snappymail")
    echo = None if options.get("json") else command.stdout.write
    job = snappymail.run_install_job(job.pk, source, sha256, echo=echo)
    if job.state != JobState.DONE:
        raise CommandError(f"SnappyMail install failed (job #{job.pk}); see the log above")
    if not options.get("json"):
        command.stdout.write(
            "credentials: python manage.py mail snappymail credentials "
            "(then: mail snappymail delete-credentials)"
        )
    return {"job": job.pk, "state": job.state, **job.result}


def snappymail_credentials(command, options):
    try:
        text = snappymail.read_credentials()
    except HelperError as exc:
        raise CommandError(f"cannot read {snappymail.CREDENTIALS_FILE}: {exc}")
    if text is None:
        raise CommandError(f"{snappymail.CREDENTIALS_FILE} has been deleted")
    command.stdout.write(text, ending="")


def snappymail_delete_credentials(command, options):
    try:
        removed = snappymail.delete_credentials(system_actor())
    except HelperError as exc:
        raise CommandError(f"cannot delete {snappymail.CREDENTIALS_FILE}: {exc}")
    if removed:
        command.stdout.write(f"deleted {snappymail.CREDENTIALS_FILE}")
    else:
        command.stdout.write(f"{snappymail.CREDENTIALS_FILE} did not exist")
