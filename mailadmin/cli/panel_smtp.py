from django.core.management.base import CommandError

from ..forms_server_mail import PanelSmtpForm
from ..models import ServerSettings
from ..services import panel_smtp
from .common import form_errors, read_secret_from_stdin, system_actor


def register(nouns):
    parser = nouns.add_parser("panel-smtp", help="how the panel sends its own mail")
    verbs = parser.add_subparsers(dest="verb", required=True)
    set_ = verbs.add_parser("set", help="send panel mail through an SMTP server")
    set_.add_argument("--host", required=True)
    set_.add_argument("--port", default="587")
    set_.add_argument("--security", choices=panel_smtp.SECURITIES, default="starttls")
    set_.add_argument("--user", default="")
    set_.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    set_.add_argument("--from", dest="from_email", required=True)
    set_.set_defaults(handler=panel_smtp_set)
    clear = verbs.add_parser("clear", help="back to the local mail server; forget the settings")
    clear.set_defaults(handler=panel_smtp_clear)
    test = verbs.add_parser("test", help="send a test mail and show the server's answer")
    test.add_argument("--to", required=True)
    test.set_defaults(handler=panel_smtp_test)


def panel_smtp_set(command, options):
    """The panel's form, bound to the options: the same parsing, the same
    rule for a stored password (kept only for the same endpoint)."""
    data = {
        "enabled": "on",
        "host": options["host"],
        "port": options["port"],
        "security": options["security"],
        "username": options["user"],
        "password": read_secret_from_stdin("password") if options["password_stdin"] else "",
        "from_email": options["from_email"],
    }
    form = PanelSmtpForm(data, server=ServerSettings.load())
    if not (form.is_valid() and form.save(system_actor())):
        raise CommandError(form_errors(form))
    command.stdout.write("panel SMTP saved")


def panel_smtp_clear(command, options):
    panel_smtp.clear_settings(system_actor())
    command.stdout.write("panel mail goes through the local mail server")


def panel_smtp_test(command, options):
    result = panel_smtp.send_test_mail(options["to"])
    if not options.get("json"):
        for line in result.transcript:
            command.stdout.write(line)
    if not result.ok:
        raise CommandError(f"test mail not sent: {result.summary}")
    command.stdout.write(f"sent: {result.summary}")
