"""`mail webmail set snappymail|roundcube`, `mail webmail show`."""

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError

from ..models import ServerSettings, WebmailApp
from ..services import webmail
from .common import add_json_flag, system_actor


def register(nouns):
    parser = nouns.add_parser("webmail", help="which webmail https://<hostname>/webmail/ serves")
    verbs = parser.add_subparsers(dest="verb", required=True)
    choose = verbs.add_parser("set", help="serve SnappyMail (the default) or Roundcube (Debian's package)")
    choose.add_argument("app", choices=WebmailApp.values)
    choose.set_defaults(handler=webmail_set)
    show = verbs.add_parser("show", help="the webmail served now")
    add_json_flag(show)
    show.set_defaults(handler=webmail_show)


def webmail_set(command, options):
    try:
        job = webmail.set_webmail(system_actor(), options["app"])
    except ValidationError as exc:
        raise CommandError(" ".join(exc.messages)) from exc
    command.stdout.write(f"webmail: {options['app']}; apply job #{job.pk} queued")


def webmail_show(command, options):
    app = ServerSettings.load().webmail
    data = {"webmail": app, "roundcube_installed": webmail.roundcube_installed()}
    if not options.get("json"):
        command.stdout.write(app)
    return data
