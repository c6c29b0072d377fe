"""`mail sieve enable [--external] | disable`."""

from ..services import sieve
from .common import system_actor


def register(nouns):
    parser = nouns.add_parser("sieve", help="ManageSieve (Dovecot sieve filters, port 4190)")
    verbs = parser.add_subparsers(dest="verb", required=True)
    enable = verbs.add_parser("enable", help="switch ManageSieve on")
    enable.add_argument(
        "--external",
        action="store_true",
        help="also open TCP 4190 in the firewall for external mail clients",
    )
    enable.set_defaults(handler=sieve_enable)
    disable = verbs.add_parser("disable", help="switch ManageSieve off (and close 4190)")
    disable.set_defaults(handler=sieve_disable)


def sieve_enable(command, options):
    job = sieve.set_sieve(system_actor(), True, options["external"])
    where = "SnappyMail and external clients" if options["external"] else "local clients only"
    command.stdout.write(f"ManageSieve on ({where}); apply job #{job.pk} queued")


def sieve_disable(command, options):
    job = sieve.set_sieve(system_actor(), False, False)
    command.stdout.write(f"ManageSieve off; apply job #{job.pk} queued")
