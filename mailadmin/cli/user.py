from django.contrib.auth import get_user_model

from ..services.users import add_user
from .common import add_json_flag, system_actor


def register(nouns):
    parser = nouns.add_parser("user", help="panel users (customers and admins)")
    verbs = parser.add_subparsers(dest="verb", required=True)
    add = verbs.add_parser("add", help="add a user; the password is read from stdin")
    add.add_argument("name")
    add.add_argument("--admin", action="store_true")
    add.add_argument("--email", default="")
    add.set_defaults(handler=user_add)
    lst = verbs.add_parser("list")
    add_json_flag(lst)
    lst.set_defaults(handler=user_list)


def user_add(command, options):
    from ..management.commands.mail import read_secret_from_stdin

    password = read_secret_from_stdin("password")
    user = add_user(system_actor(), options["name"], password, options["email"], options["admin"])
    command.stdout.write(f"added user {user.username}{' (admin)' if user.is_staff else ''}")


def user_list(command, options):
    rows = [
        {"name": u.username, "email": u.email, "admin": u.is_staff, "active": u.is_active}
        for u in get_user_model().objects.order_by("username")
    ]
    if not options["json"]:
        for row in rows:
            command.stdout.write(f"{row['name']}\t{'admin' if row['admin'] else 'customer'}\t{row['email']}")
    return rows
