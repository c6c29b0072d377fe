import argparse

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError

from ..services import customers
from ..services.users import add_user
from .common import add_json_flag, get_user, read_secret_from_stdin, system_actor


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
    set_ = verbs.add_parser("set", help="a customer's limits: a number, or 'none' for no limit")
    set_.add_argument("name")
    for option in ("--max-domains", "--max-mailboxes", "--max-quota-mb"):
        set_.add_argument(option, type=limit_value, metavar="N|none")
    set_.set_defaults(handler=user_set)
    for verb, flag in (("suspend", True), ("unsuspend", False)):
        sub = verbs.add_parser(verb, help="all the user's mail domains off/on, panel login refused/allowed")
        sub.add_argument("name")
        sub.set_defaults(handler=user_suspend, suspend=flag)


NO_LIMIT = "none"


def limit_value(text: str):
    if text.strip().lower() == NO_LIMIT:
        return NO_LIMIT
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a limit is a whole number or '{NO_LIMIT}', not {text!r}")
    if value < 0:
        raise argparse.ArgumentTypeError(f"a limit cannot be negative: {value}")
    return value


def user_add(command, options):
    password = read_secret_from_stdin("password")
    user = add_user(system_actor(), options["name"], password, options["email"], options["admin"])
    command.stdout.write(f"added user {user.username}{' (admin)' if user.is_staff else ''}")


def user_set(command, options):
    user = get_user(options["name"])
    limits = {
        field: None if options[field] == NO_LIMIT else options[field]
        for field in customers.LIMIT_FIELDS
        if options.get(field) is not None
    }
    if not limits:
        raise CommandError("nothing to set: give --max-domains, --max-mailboxes or --max-quota-mb")
    profile = customers.set_limits(system_actor(), user, **limits)
    shown = ", ".join(f"{f}={getattr(profile, f) if getattr(profile, f) is not None else NO_LIMIT}" for f in customers.LIMIT_FIELDS)
    command.stdout.write(f"limits of {user.username}: {shown}")


def user_suspend(command, options):
    user = get_user(options["name"])
    customers.set_suspended(system_actor(), user, options["suspend"])
    command.stdout.write(f"{'suspended' if options['suspend'] else 'unsuspended'} {user.username}")


def user_list(command, options):
    rows = [
        {
            "name": u.username,
            "email": u.email,
            "admin": u.is_staff,
            "active": u.is_active,
            "suspended": bool(getattr(getattr(u, "mail_profile", None), "suspended", False)),
        }
        for u in get_user_model().objects.select_related("mail_profile").order_by("username")
    ]
    if not options["json"]:
        for row in rows:
            command.stdout.write(f"{row['name']}\t{'admin' if row['admin'] else 'customer'}\t{row['email']}")
    return rows
