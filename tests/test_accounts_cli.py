"""`python manage.py mail account|alias|forward|catchall …`: same rules as the panel,
passwords only from stdin, clear errors with a non-zero exit."""

import io
import json
import sys

import pytest
from django.core.management import CommandError, call_command

from mailadmin import passwords
from mailadmin.models import AuditEntry, MailAccount, MailAlias, MailDomain, MailForward

pytestmark = pytest.mark.django_db
PW = "Str0ng-enough-pass"


@pytest.fixture
def domain(alice):
    return MailDomain.objects.create(name="example.org", owner=alice)


def mail(*args, stdin=""):
    out = io.StringIO()
    old = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        call_command("mail", *args, stdout=out)
    finally:
        sys.stdin = old
    return out.getvalue()


def test_account_add_reads_password_from_stdin_and_sets_quota(domain):
    assert "added info@example.org" in mail("account", "add", "Info@Example.org", "--quota", "300", stdin=PW + "\n")
    account = MailAccount.objects.get()
    assert account.quota_mb == 300 and passwords.check_password(PW, account.password_hash)
    assert AuditEntry.objects.get(action="account.add").actor_name == "cli"


def test_account_password_and_delete(domain):
    mail("account", "add", "info@example.org", stdin=PW)
    mail("account", "password", "info@example.org", stdin="N3w-better-password\n")
    assert passwords.check_password("N3w-better-password", MailAccount.objects.get().password_hash)
    assert "deleted info@example.org" in mail("account", "delete", "info@example.org")
    assert not MailAccount.objects.exists()


def test_account_list_json_summary(domain):
    mail("account", "add", "info@example.org", "--quota", "10", stdin=PW)
    mail("alias", "add", "sales@example.org", "info@example.org")
    mail("forward", "add", "info@example.org", "boss@elsewhere.example", "--no-local-copy")
    mail("catchall", "set", "example.org", "info@example.org")
    data = json.loads(mail("account", "list", "example.org", "--json"))
    assert data == {
        "domain": "example.org",
        "catchall": "info@example.org",
        "accounts": [
            {
                "address": "info@example.org",
                "local_part": "info",
                "quota_mb": 10,
                "aliases": ["sales@example.org"],
                "forwards": ["boss@elsewhere.example"],
                "forward_only": True,
            }
        ],
    }
    text = mail("account", "list", "example.org")
    assert "info@example.org\t10 MB\taliases=sales@example.org\tforwards=boss@elsewhere.example (no local copy)" in text
    assert "catch-all → info@example.org" in text


def test_alias_forward_catchall_delete_and_clear(domain):
    mail("account", "add", "info@example.org", stdin=PW)
    mail("alias", "add", "sales@example.org", "info@example.org")
    mail("forward", "add", "info@example.org", "boss@elsewhere.example")
    mail("catchall", "set", "example.org", "sales@example.org")
    mail("alias", "delete", "sales@example.org", "info@example.org")
    mail("forward", "delete", "info@example.org", "boss@elsewhere.example")
    assert not MailAlias.objects.exists() and not MailForward.objects.exists()
    # the catch-all pointed at the removed alias: it went with it
    assert MailDomain.objects.get().catchall == ""
    mail("catchall", "set", "example.org", "info@example.org")
    mail("catchall", "clear", "example.org")
    assert MailDomain.objects.get().catchall == ""


@pytest.mark.parametrize(
    "args, stdin, message",
    [
        (("account", "add", "bad name@example.org"), PW, "cannot be used before the @"),
        (("account", "add", "info@nowhere.example"), PW, "No mail domain"),
        (("account", "add", "info@example.org"), "", "nothing was read"),
        (("account", "add", "info@example.org"), "weakpass", "too weak"),
        (("account", "add", "info@example.org", "--quota", "-1"), PW, "quota"),
        (("account", "delete", "ghost@example.org"), "", "No mail account"),
        (("alias", "add", "loop@example.org", "loop@example.org"), "", "itself"),
        (("alias", "add", "x@example.org", "nobody@example.org"), "", "no account or alias"),
        (("forward", "add", "info@example.org", "info@example.org"), "", "itself"),
        (("catchall", "set", "example.org", "not an address"), "", "not an email address"),
    ],
)
def test_bad_input_is_a_clear_error_and_saves_nothing(domain, args, stdin, message):
    if args[0] == "forward":
        mail("account", "add", "info@example.org", stdin=PW)
    before = (MailAccount.objects.count(), MailAlias.objects.count(), MailForward.objects.count())
    with pytest.raises(CommandError) as exc:
        mail(*args, stdin=stdin)
    assert message in str(exc.value)
    assert (MailAccount.objects.count(), MailAlias.objects.count(), MailForward.objects.count()) == before


def test_duplicate_alias_and_forward_are_refused(domain):
    mail("account", "add", "info@example.org", stdin=PW)
    mail("alias", "add", "sales@example.org", "info@example.org")
    with pytest.raises(CommandError, match="already delivers"):
        mail("alias", "add", "sales@example.org", "info@example.org")
    mail("forward", "add", "info@example.org", "boss@elsewhere.example")
    with pytest.raises(CommandError, match="already forwarded"):
        mail("forward", "add", "info@example.org", "boss@elsewhere.example")


def test_password_is_never_accepted_on_the_command_line(domain):
    with pytest.raises(CommandError):
        call_command("mail", "account", "add", "info@example.org", "--password", PW)


def test_config_render_writes_the_shared_account_files(domain, tmp_path):
    mail("account", "add", "info@example.org", "--quota", "250", stdin=PW)
    mail("account", "add", "keep@example.org", stdin=PW)
    mail("alias", "add", "sales@example.org", "info@example.org")
    mail("forward", "add", "info@example.org", "boss@elsewhere.example", "--no-local-copy")
    mail("forward", "add", "keep@example.org", "boss@elsewhere.example")
    mail("catchall", "set", "example.org", "keep@example.org")
    mail("config", "render", "--out", str(tmp_path))
    folder = tmp_path / "etc/exim4/domains/example.org"
    passwd = (folder / "passwd").read_text().splitlines()
    info_hash = MailAccount.objects.get(local_part="info").password_hash
    assert passwd[0] == f"info:{info_hash}::::::userdb_quota_rule=*:storage=250M"
    assert passwd[1].startswith("keep:{BLF-CRYPT}$2b$") and passwd[1].endswith("::::::")
    assert (folder / "aliases").read_text() == "sales: info@example.org\n*: keep@example.org\n"
    # forward-only: no local copy; otherwise the mailbox is one of its own targets
    assert (folder / "forwards").read_text() == (
        "info: boss@elsewhere.example\nkeep: boss@elsewhere.example, keep@example.org\n"
    )
    assert PW not in "".join(p.read_text() for p in folder.iterdir())
