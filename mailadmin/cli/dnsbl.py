from ..models import ServerSettings
from ..services import server_mail
from ..dnsbl import dqs_zone
from .common import add_json_flag, system_actor


def register(nouns):
    parser = nouns.add_parser("dnsbl", help="DNS blacklist zones")
    verbs = parser.add_subparsers(dest="verb", required=True)
    add = verbs.add_parser("add")
    add.add_argument("zone")
    add.set_defaults(handler=dnsbl_add)
    remove = verbs.add_parser("remove")
    remove.add_argument("zone")
    remove.set_defaults(handler=dnsbl_remove)
    lst = verbs.add_parser("list")
    add_json_flag(lst)
    lst.set_defaults(handler=dnsbl_list)


def dnsbl_add(command, options):
    server_mail.add_zone(system_actor(), options["zone"])
    command.stdout.write(f"added {options['zone'].strip().lower()}")


def dnsbl_remove(command, options):
    server_mail.remove_zone(system_actor(), options["zone"])
    command.stdout.write(f"removed {options['zone'].strip().lower()}")


def dnsbl_list(command, options):
    server = ServerSettings.load()
    # The public zone names only: the DQS zone names carry the key.
    rows = [
        {"zone": zone, "dqs": dqs_zone(zone, server.dqs_key) != zone}
        for zone in server_mail.zone_list(server)
    ]
    if not options["json"]:
        for row in rows:
            command.stdout.write(row["zone"] + ("\t(through DQS)" if row["dqs"] else ""))
    return rows
