from django.core.exceptions import ValidationError

from ..forms import ServerIdentityForm
from ..models import ServerSettings
from ..services import audit, customers, jobs
from .common import system_actor


def register(nouns):
    parser = nouns.add_parser("server", help="server identity")
    verbs = parser.add_subparsers(dest="verb", required=True)
    set_ = verbs.add_parser("set")
    set_.add_argument("--hostname", required=True)
    set_.add_argument("--ipv4", required=True)
    set_.add_argument("--ipv6", default="")
    set_.add_argument("--nat-ipv4", default="")
    set_.set_defaults(handler=server_set)
    switch = verbs.add_parser("customer-domains", help="may customers add mail domains?")
    switch.add_argument("state", choices=["on", "off"])
    switch.set_defaults(handler=server_customer_domains)


def server_customer_domains(command, options):
    customers.set_customers_add_domains(system_actor(), options["state"] == "on")
    command.stdout.write(f"customers may add mail domains: {options['state']}")


def server_set(command, options):
    server = ServerSettings.load()
    form = ServerIdentityForm(
        {
            "hostname": options["hostname"],
            "ipv4": options["ipv4"],
            "ipv6": options["ipv6"],
            "nat_ipv4": options["nat_ipv4"],
        },
        instance=server,
    )
    if not form.is_valid():
        raise ValidationError(
            [f"{field}: {' '.join(errors)}" for field, errors in form.errors.items()]
        )
    form.save()
    actor = system_actor()
    audit.record(actor, "server.identity", "server", form.changed_data)
    jobs.request_apply(actor)
    command.stdout.write("server identity saved")
