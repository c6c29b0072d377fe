from ..services import server_mail
from .common import system_actor


def register(nouns):
    parser = nouns.add_parser(
        "internal-lookup",
        help="on: mail for domains hosted here is delivered locally; "
        "off: it is routed by MX (mail hosted elsewhere, or everything relayed)",
    )
    parser.add_argument("state", choices=["on", "off"])
    parser.set_defaults(handler=internal_lookup_set)


def internal_lookup_set(command, options):
    enabled = options["state"] == "on"
    server_mail.set_internal_lookup(system_actor(), enabled)
    command.stdout.write(f"internal lookup {options['state']}")
