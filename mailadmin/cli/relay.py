"""`mail relay set|clear|show|test [--domain D]`: the global relay, or a domain's own.

The password comes only from stdin (--password-stdin), never from argv.
Validation is the panel's: the same RelayForm checks every value.
"""

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError

from ..checks.relay import check_relay
from ..forms_relay import RelayForm
from ..models import RelayAuth, RelayTls
from ..services import relay as relay_service
from ..services.relay import PRESETS
from .common import add_json_flag, form_errors, get_domain, read_secret_from_stdin, system_actor


def register(nouns):
    parser = nouns.add_parser("relay", help="SMTP relay: global, or per domain with --domain")
    verbs = parser.add_subparsers(dest="verb", required=True)

    set_ = verbs.add_parser("set", help="set the relay (omitted options keep their stored value)")
    set_.add_argument("--domain", help="the domain's own relay (default: the global relay)")
    set_.add_argument("--preset", choices=sorted(PRESETS), help="fill host/port/auth from a provider")
    set_.add_argument("--region", default="", help="region for the amazon_ses and oracle presets")
    set_.add_argument("--host")
    set_.add_argument("--port", type=int)
    set_.add_argument("--tls", choices=RelayTls.values)
    set_.add_argument("--user", help="user name; an empty string means no authentication")
    set_.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    set_.add_argument("--auth", choices=RelayAuth.values)
    set_.set_defaults(handler=relay_set)

    clear = verbs.add_parser("clear", help="remove the relay")
    clear.add_argument("--domain")
    clear.set_defaults(handler=relay_clear)

    show = verbs.add_parser("show", help="show the relay (the password only as set/unset)")
    show.add_argument("--domain")
    add_json_flag(show)
    show.set_defaults(handler=relay_show)

    test = verbs.add_parser("test", help="talk to the relay like the panel's Test button")
    test.add_argument("--domain")
    add_json_flag(test)
    test.set_defaults(handler=relay_test)


def _scope(options):
    return get_domain(options["domain"]) if options.get("domain") else None


def relay_set(command, options):
    domain = _scope(options)
    row = relay_service.get_relay(domain)
    current = RelayForm.from_relay(row).initial if row else {}
    preset = options.get("preset") or ""
    filled = relay_service.preset_values(preset, options["region"]) if preset else {}

    def pick(name, option):
        if options.get(option) is not None:
            return options[option]
        if name in filled:
            return filled[name]
        return current.get(name, "")

    tls = pick("tls", "tls") or RelayTls.STARTTLS
    if options.get("tls") is None and pick("port", "port") == 465:
        tls = RelayTls.SSL  # 465 is implicit TLS unless said otherwise
    data = {
        "preset": preset or current.get("preset") or "custom",
        "host": pick("host", "host"),
        "port": 587 if pick("port", "port") in ("", None) else pick("port", "port"),
        "tls": tls,
        # Choosing --tls none on the command line is the explicit confirmation.
        "confirm_no_tls": "on" if tls == RelayTls.NONE else "",
        "username": pick("username", "user"),
        "password": read_secret_from_stdin("relay password") if options["password_stdin"] else "",
        "auth": pick("auth", "auth") or RelayAuth.LOGIN,
    }
    if not data["host"]:
        raise CommandError("relay set: give --host (or --preset)")
    form = RelayForm(data, stored=row)
    if form.is_valid():
        try:
            row = relay_service.set_relay(system_actor(), domain, **form.service_values()).object
        except ValidationError as exc:
            form.add_error(None, exc)
    if form.errors:
        raise CommandError(form_errors(form))
    command.stdout.write(
        f"relay for {relay_service.scope_name(domain)}: {row.host}:{row.port} "
        f"tls={row.tls} auth={row.auth}"
    )


def relay_clear(command, options):
    domain = _scope(options)
    if relay_service.clear_relay(system_actor(), domain).job is not None:
        command.stdout.write(f"relay for {relay_service.scope_name(domain)} removed")
    else:
        command.stdout.write(f"no relay for {relay_service.scope_name(domain)}")


def relay_show(command, options):
    domain = _scope(options)
    data = relay_service.describe(relay_service.get_relay(domain), domain)
    if not options["json"]:
        if not data["configured"]:
            command.stdout.write(f"no relay for {data['scope']}")
        else:
            for key in ("scope", "preset", "host", "port", "tls", "auth", "username", "password"):
                command.stdout.write(f"{key}: {data[key]}")
    return data


def relay_test(command, options):
    import json

    domain = _scope(options)
    relay = relay_service.relay_for_test(domain)
    if relay is None:
        raise CommandError(f"no relay for {relay_service.scope_name(domain)}")
    result = check_relay(relay, **relay_service.check_options())
    if options["json"]:
        command.stdout.write(json.dumps(result.as_dict(), indent=2, ensure_ascii=False))
    else:
        command.stdout.write(result.transcript())
        command.stdout.write(f"{result.outcome}: {result.message}")
    if not result.ok:
        raise CommandError(f"relay test failed: {result.outcome}")
