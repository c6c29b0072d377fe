import sys

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError

from ..models import MailDomain
from ..validation import normalize_domain


def system_actor():
    """The CLI acts as root: audit entries name it 'cli'."""

    class CliActor:
        pk = None
        username = "cli"
        is_authenticated = True
        is_staff = True

    return CliActor()


def get_domain(name: str) -> MailDomain:
    ascii_name = normalize_domain(name)
    try:
        return MailDomain.objects.get(name=ascii_name)
    except MailDomain.DoesNotExist:
        raise CommandError(f"no mail domain {name}")


def get_user(username: str):
    try:
        return get_user_model().objects.get(username=username)
    except get_user_model().DoesNotExist:
        raise CommandError(f"no user {username}")


def add_json_flag(parser):
    parser.add_argument("--json", action="store_true", help="machine-readable output")


MAX_SECRET_BYTES = 64 * 1024


def read_secret_from_stdin(what: str) -> str:
    """Secrets come from stdin, never argv (argv is visible in ps). All of
    stdin is the secret, less one trailing line break (what echo and most
    editors add); any other line break or a NUL is refused, never cut off:
    `printf 'new\\nline'` must not quietly store "new"."""
    if sys.stdin is None or sys.stdin.closed:
        raise CommandError(f"{what}: pipe it on standard input")
    value = sys.stdin.read(MAX_SECRET_BYTES + 1)
    if len(value) > MAX_SECRET_BYTES:
        raise CommandError(f"{what}: more than {MAX_SECRET_BYTES} characters on standard input")
    if value.endswith("\r\n"):
        value = value[:-2]
    elif value.endswith("\n"):
        value = value[:-1]
    if any(c in value for c in "\r\n"):
        raise CommandError(f"{what}: standard input holds more than one line; a {what} cannot contain a line break")
    if "\x00" in value:
        raise CommandError(f"{what}: a {what} cannot contain a NUL character")
    if not value:
        raise CommandError(f"{what}: nothing was read from standard input")
    return value


def form_errors(form) -> str:
    """A bound form's errors on one line, each after its option's name."""
    parts = []
    for field, errors in form.errors.items():
        label = "" if field == "__all__" else f"{field.replace('_', '-')}: "
        parts.extend(f"{label}{message}" for message in errors)
    return "; ".join(parts)
