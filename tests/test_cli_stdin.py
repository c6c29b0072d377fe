"""Secrets on standard input, the same rule for every `--*-stdin` verb: all of
stdin less one trailing line break; any other line break or a NUL is a clear
error and nothing is stored (`printf 'new\\nline'` once stored "new")."""

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError

from mailadmin import passwords
from mailadmin.models import MailAccount, MailDomain, RelaySettings, ServerSettings
from tests.test_accounts_cli import mail

pytestmark = pytest.mark.django_db
PW = "Str0ng-enough-pass"
DQS = "abcdefghijklmnopqrstuvwxyz"  # 26 alphanumerics


@pytest.fixture
def domain(admin_user):
    domain = MailDomain.objects.create(name="example.org", owner=admin_user)
    mail("account", "add", "info@example.org", stdin=PW + "\n")
    return domain


def state():
    """Everything a stdin verb could have stored."""
    server = ServerSettings.load()
    return (
        sorted(get_user_model().objects.values_list("username", flat=True)),
        sorted(MailAccount.objects.values_list("local_part", "password_hash")),
        server.dqs_key,
        server.panel_smtp_host,
        server.panel_smtp_password,
        sorted(RelaySettings.objects.values_list("host", "password")),
    )


VERBS = {
    "user add": ("user", "add", "newuser"),
    "account add": ("account", "add", "new@example.org"),
    "account password": ("account", "password", "info@example.org"),
    "dqs set": ("dqs", "set"),
    "panel-smtp set": ("panel-smtp", "set", "--host", "smtp.example.net", "--user", "u",
                       "--password-stdin", "--from", "panel@example.org"),
    "relay set": ("relay", "set", "--domain", "example.org", "--host", "smtp.example.net",
                  "--user", "u", "--password-stdin"),
}
HOSTILE = {
    "two lines": "Str0ng-enough\npass\n",
    "two lines, no final break": "Str0ng-enough\npass",
    "carriage return inside": "Str0ng-enough\rpass",
    "NUL inside": "Str0ng-enough\x00pass",
    "two final breaks": PW + "\n\n",
    "empty": "",
    "only a break": "\n",
}


@pytest.mark.parametrize("verb", sorted(VERBS))
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_every_stdin_verb_refuses_what_is_not_one_line_and_stores_nothing(domain, verb, case):
    before = state()
    secret = HOSTILE[case].replace("Str0ng-enough", DQS[:13]).replace("pass", DQS[13:]) if verb == "dqs set" else HOSTILE[case]

    with pytest.raises(CommandError) as error:
        mail(*VERBS[verb], stdin=secret)

    message = str(error.value)
    assert "line break" in message or "NUL" in message or "nothing was read" in message
    assert "enough" not in message and "pass" not in message.replace("password", "")
    assert state() == before


@pytest.mark.parametrize("ending", ["", "\n", "\r\n"])
def test_one_trailing_line_break_is_dropped_and_the_rest_kept_byte_exact(domain, ending):
    secret = "  sp^ce:d $ecret "
    mail("account", "password", "info@example.org", stdin=secret + ending)
    stored = MailAccount.objects.get(local_part="info").password_hash
    assert passwords.check_password(secret, stored)
    assert not passwords.check_password(secret.strip(), stored)

    mail("dqs", "set", stdin=DQS + ending)
    assert ServerSettings.load().dqs_key == DQS
