"""CLI nouns `account`, `alias`, `forward`, `catchall` (HestiaCP's
v-add-mail-account family). Same service functions and rules as the panel;
passwords only from stdin."""

from .. import client_config
from ..services import accounts as account_service
from ..services import client_config as client_config_service
from .common import add_json_flag, get_domain, read_secret_from_stdin, system_actor


def register(nouns):
    account = nouns.add_parser("account", help="mail accounts (mailboxes)")
    verbs = account.add_subparsers(dest="verb", required=True)
    add = verbs.add_parser("add", help="add a mailbox; the password is read from stdin")
    add.add_argument("address")
    add.add_argument("--quota", type=int, default=0, metavar="MB", help="quota in MB, 0 = unlimited")
    add.set_defaults(handler=account_add)
    delete = verbs.add_parser("delete")
    delete.add_argument("address")
    delete.set_defaults(handler=account_delete)
    password = verbs.add_parser("password", help="set a new password, read from stdin")
    password.add_argument("address")
    password.set_defaults(handler=account_password)
    quota = verbs.add_parser("quota", help="set the quota in MB (0 = unlimited)")
    quota.add_argument("address")
    quota.add_argument("mb", type=int)
    quota.set_defaults(handler=account_quota)
    lst = verbs.add_parser("list")
    lst.add_argument("domain")
    add_json_flag(lst)
    lst.set_defaults(handler=account_list)
    profile = verbs.add_parser(
        "mobileconfig", help="the Apple .mobileconfig profile of a mailbox (no password inside), to stdout"
    )
    profile.add_argument("address")
    profile.set_defaults(handler=account_mobileconfig)

    alias = nouns.add_parser("alias", help="aliases: ALIAS@domain delivers to TARGET")
    alias_verbs = alias.add_subparsers(dest="verb", required=True)
    for verb, handler in (("add", alias_add), ("delete", alias_delete)):
        p = alias_verbs.add_parser(verb)
        p.add_argument("alias")
        p.add_argument("target")
        p.set_defaults(handler=handler)

    forward = nouns.add_parser("forward", help="forward an account's mail")
    forward_verbs = forward.add_subparsers(dest="verb", required=True)
    p = forward_verbs.add_parser("add")
    p.add_argument("address")
    p.add_argument("target")
    p.add_argument("--no-local-copy", action="store_true", help="keep no copy in the mailbox")
    p.set_defaults(handler=forward_add)
    p = forward_verbs.add_parser("delete")
    p.add_argument("address")
    p.add_argument("target")
    p.set_defaults(handler=forward_delete)

    catchall = nouns.add_parser("catchall", help="where mail to unknown addresses goes")
    catchall_verbs = catchall.add_subparsers(dest="verb", required=True)
    p = catchall_verbs.add_parser("set")
    p.add_argument("domain")
    p.add_argument("target")
    p.set_defaults(handler=catchall_set)
    p = catchall_verbs.add_parser("clear")
    p.add_argument("domain")
    p.set_defaults(handler=catchall_clear)


def _password():
    return read_secret_from_stdin("password")


def account_add(command, options):
    domain, local = account_service.split_address(options["address"])
    password = _password()
    account = account_service.add_account(system_actor(), domain, local, password, options["quota"]).object
    command.stdout.write(f"added {account_service.address_of(account)}")


def account_delete(command, options):
    account = account_service.get_account(options["address"])
    address = account_service.address_of(account)
    account_service.delete_account(system_actor(), account)
    command.stdout.write(f"deleted {address}")


def account_password(command, options):
    account = account_service.get_account(options["address"])
    account_service.set_password(system_actor(), account, _password())
    command.stdout.write(f"new password for {account_service.address_of(account)}")


def account_quota(command, options):
    account = account_service.get_account(options["address"])
    account_service.update_account(system_actor(), account, quota_mb=options["mb"])
    command.stdout.write(f"quota of {account_service.address_of(account)}: {account.quota_mb or 'unlimited'} MB")


def account_list(command, options):
    domain = get_domain(options["domain"])
    rows = account_service.account_rows(domain)
    for row in rows:
        row.pop("id")
    if not options["json"]:
        for row in rows:
            quota = f"{row['quota_mb']} MB" if row["quota_mb"] else "unlimited"
            extra = ""
            if row["aliases"]:
                extra += "\taliases=" + ",".join(row["aliases"])
            if row["forwards"]:
                extra += "\tforwards=" + ",".join(row["forwards"])
                if row["forward_only"]:
                    extra += " (no local copy)"
            command.stdout.write(f"{row['address']}\t{quota}{extra}")
        if domain.catchall:
            command.stdout.write(f"*@{domain.name}\tcatch-all → {domain.catchall}")
    return {"domain": domain.name, "catchall": domain.catchall, "accounts": rows}


def account_mobileconfig(command, options):
    account = account_service.get_account(options["address"])
    profile = client_config.mobileconfig(
        client_config_service.client_settings(account.domain), account_service.address_of(account)
    )
    command.stdout.write(profile.decode("utf-8"), ending="")


def alias_add(command, options):
    domain, local = account_service.split_address(options["alias"])
    alias = account_service.add_alias(system_actor(), domain, local, options["target"]).object
    command.stdout.write(f"alias {alias.local_part}@{domain.name} → {alias.target}")


def alias_delete(command, options):
    domain, local = account_service.split_address(options["alias"])
    alias = account_service.find_alias(domain, local, options["target"])
    account_service.delete_alias(system_actor(), alias)
    command.stdout.write(f"removed alias {alias.local_part}@{domain.name} → {alias.target}")


def forward_add(command, options):
    account = account_service.get_account(options["address"])
    forward = account_service.add_forward(
        system_actor(), account, options["target"], forward_only=True if options["no_local_copy"] else None
    ).object
    note = " (no local copy)" if account.forward_only else ""
    command.stdout.write(f"{account_service.address_of(account)} forwards to {forward.target}{note}")


def forward_delete(command, options):
    account = account_service.get_account(options["address"])
    forward = account_service.find_forward(account, options["target"])
    account_service.delete_forward(system_actor(), forward)
    command.stdout.write(f"{account_service.address_of(account)} no longer forwards to {forward.target}")


def catchall_set(command, options):
    domain = get_domain(options["domain"])
    account_service.set_catchall(system_actor(), domain, options["target"])
    command.stdout.write(f"catch-all of {domain.name}: {domain.catchall}")


def catchall_clear(command, options):
    domain = get_domain(options["domain"])
    account_service.clear_catchall(system_actor(), domain)
    command.stdout.write(f"catch-all of {domain.name} cleared")
