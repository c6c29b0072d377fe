from django.contrib.auth import get_user_model
from django.core.management.base import CommandError

from ..models import MailDomain
from ..validation import normalize_domain


def system_actor():
    """The CLI acts as root: audit entries name it 'cli'."""

    class CliActor:
        pk = None
        username = "cli"
        is_authenticated = True
        is_staff = True

    return CliActor()


def get_domain(name: str) -> MailDomain:
    ascii_name = normalize_domain(name)
    try:
        return MailDomain.objects.get(name=ascii_name)
    except MailDomain.DoesNotExist:
        raise CommandError(f"no mail domain {name}")


def get_user(username: str):
    try:
        return get_user_model().objects.get(username=username)
    except get_user_model().DoesNotExist:
        raise CommandError(f"no user {username}")


def add_json_flag(parser):
    parser.add_argument("--json", action="store_true", help="machine-readable output")
