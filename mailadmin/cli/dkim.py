"""`mail dkim …`: a domain's DKIM key and its guided rotation (the same
service as the page: services.dkim_rotation)."""

from django.core.exceptions import ValidationError

from .. import dkim as dkim_keys
from ..forms_dkim import DkimRotateForm
from ..services import dkim_rotation
from .common import add_json_flag, get_domain, system_actor


def register(nouns):
    parser = nouns.add_parser("dkim", help="DKIM keys and their rotation")
    verbs = parser.add_subparsers(dest="verb", required=True)
    rotate = verbs.add_parser("rotate", help="make the next key; it signs once its record is seen in DNS")
    rotate.add_argument("domain")
    rotate.add_argument("--selector", default="", help="one DNS label (default: a dated one such as s20260115)")
    rotate.add_argument("--bits", type=int, default=dkim_keys.KEY_BITS, help="1024, 2048 (default) or 4096")
    add_json_flag(rotate)
    rotate.set_defaults(handler=dkim_rotate)
    status = verbs.add_parser("status", help="the key, its age and the rotation's step")
    status.add_argument("domain")
    add_json_flag(status)
    status.set_defaults(handler=dkim_status)
    advance = verbs.add_parser(
        "advance", help="switch when the next record is in DNS, retire old keys after the grace (periodic)"
    )
    advance.add_argument("domain", nargs="?", help="one domain (default: every domain with a step due)")
    add_json_flag(advance)
    advance.set_defaults(handler=dkim_advance)
    cancel = verbs.add_parser("cancel", help="discard the next key")
    cancel.add_argument("domain")
    cancel.set_defaults(handler=dkim_cancel)
    dismiss = verbs.add_parser("dismiss", help="the retired key's record is deleted: stop the reminder")
    dismiss.add_argument("domain")
    dismiss.set_defaults(handler=dkim_dismiss)
    policy = verbs.add_parser("policy", help="server-wide: grace days after a switch, key age that warns")
    policy.add_argument("--grace-days", type=int, required=True)
    policy.add_argument("--max-age-months", type=int, required=True, help="0 = never warn")
    policy.set_defaults(handler=dkim_policy)


def _print_status(command, status: dkim_rotation.DkimStatus) -> None:
    age = f", {status.age_days} days old" if status.age_days is not None else ""
    command.stdout.write(f"state: {status.state}; selector {status.selector} ({status.bits} bits{age})")
    if status.too_old:
        command.stdout.write(f"the key is older than {status.max_age_months} months: rotate it")
    for record in status.records:
        command.stdout.write(f"{record.purpose:<9} {record.name}\tTXT\t{record.value}")
    if status.old_until:
        command.stdout.write(f"keep {status.old_selector}._domainkey published until {status.old_until:%Y-%m-%d %H:%M} UTC")
    if status.retired_record:
        command.stdout.write(f"delete the TXT record at {status.retired_record}")


def dkim_rotate(command, options):
    domain = get_domain(options["domain"])
    form = DkimRotateForm({"selector": options["selector"], "bits": options["bits"]})
    if not form.is_valid():
        raise ValidationError([f"--{field}: {' '.join(errors)}" for field, errors in form.errors.items()])
    status = dkim_rotation.start_rotation(
        system_actor(), domain, form.cleaned_data["selector"], form.cleaned_data["bits"]
    )
    if options["json"]:
        return status.as_dict()
    _print_status(command, status)
    command.stdout.write("publish the dkim_next record; `mail dkim advance` switches once DNS shows it")
    return None


def dkim_status(command, options):
    status = dkim_rotation.status(get_domain(options["domain"]))
    if options["json"]:
        return status.as_dict()
    _print_status(command, status)
    return None


def dkim_advance(command, options):
    if not options.get("domain"):
        counts = dkim_rotation.advance_all(system_actor())
        if not options["json"]:
            command.stdout.write(", ".join(f"{key} {value}" for key, value in counts.items()))
        return counts
    outcome = dkim_rotation.advance(system_actor(), get_domain(options["domain"]))
    data = {"switched": outcome.switched, "retired": outcome.retired, **outcome.status.as_dict()}
    if outcome.verdict is not None:
        data["next_record_check"] = outcome.verdict.as_dict()
    if options["json"]:
        return data
    if outcome.switched:
        command.stdout.write("the next key's record is in DNS: signing switched")
    elif outcome.verdict is not None:
        command.stdout.write(f"the next key's record is {outcome.verdict.status}: {outcome.verdict.fix}".rstrip(": "))
    if outcome.retired:
        command.stdout.write("the grace period is over: the old key is retired")
    _print_status(command, outcome.status)
    return None


def dkim_cancel(command, options):
    dkim_rotation.cancel_rotation(system_actor(), get_domain(options["domain"]))
    command.stdout.write("the next key was discarded")


def dkim_dismiss(command, options):
    dkim_rotation.dismiss_retired(system_actor(), get_domain(options["domain"]))
    command.stdout.write("reminder removed")


def dkim_policy(command, options):
    server = dkim_rotation.set_policy(system_actor(), options["grace_days"], options["max_age_months"])
    command.stdout.write(
        f"old keys stay published {server.dkim_grace_days} days; keys older than "
        f"{server.dkim_max_age_months} months warn"
    )
