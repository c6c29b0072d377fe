"""`python manage.py mail <noun> <verb>`: the admin CLI, same powers and
validation as the panel. Each noun lives in mailadmin/cli/<noun>.py and
registers its verbs; this command only dispatches."""

import json
import sys

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from mailadmin.cli import NOUN_MODULES


class Command(BaseCommand):
    help = "Manage the mail server: users, domains, accounts, relays, settings, diagnostics."

    def add_arguments(self, parser):
        nouns = parser.add_subparsers(dest="noun", required=True, metavar="NOUN")
        for module in NOUN_MODULES:
            module.register(nouns)

    def handle(self, *args, **options):
        handler = options.pop("handler")
        try:
            result = handler(self, options)
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages))
        if result is not None and options.get("json"):
            self.stdout.write(json.dumps(result, indent=2, ensure_ascii=False, default=str))


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
