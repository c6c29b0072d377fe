"""`python manage.py mail <noun> <verb>`: the admin CLI, same powers and
validation as the panel. Each noun lives in mailadmin/cli/<noun>.py and
registers its verbs; this command only dispatches."""

import json

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
