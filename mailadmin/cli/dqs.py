from ..models import ServerSettings
from ..services import server_mail
from .common import read_secret_from_stdin, system_actor


def register(nouns):
    parser = nouns.add_parser("dqs", help="Spamhaus DQS key (read from standard input)")
    verbs = parser.add_subparsers(dest="verb", required=True)
    set_ = verbs.add_parser("set", help="read the key from standard input")
    set_.set_defaults(handler=dqs_set)
    clear = verbs.add_parser("clear", help="forget the key: back to the public zones")
    clear.set_defaults(handler=dqs_clear)
    show = verbs.add_parser("show", help="whether a key is set (never the key)")
    show.set_defaults(handler=dqs_show)


def dqs_set(command, options):
    server_mail.set_dqs_key(system_actor(), read_secret_from_stdin("DQS key"))
    command.stdout.write("DQS key saved; the mail server is being updated")


def dqs_clear(command, options):
    server_mail.clear_dqs_key(system_actor())
    command.stdout.write("DQS key removed; the public Spamhaus zones are used")


def dqs_show(command, options):
    command.stdout.write(server_mail.dqs_status(ServerSettings.load()))
