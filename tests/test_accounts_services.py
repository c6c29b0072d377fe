"""Mail accounts, aliases, forwards, catch-all: the rules (same for panel and CLI).
Bad input gives a clear error and leaves nothing half-saved."""

import pytest
from django.core.exceptions import ValidationError

from mailadmin import passwords
from mailadmin.models import Job, AuditEntry, MailAccount, MailAlias, MailDomain, MailForward
from mailadmin.services import accounts as svc

pytestmark = pytest.mark.django_db
PW = "Str0ng-enough-pass"


@pytest.fixture
def domain(alice):
    return MailDomain.objects.create(name="example.org", owner=alice)


@pytest.fixture
def other_domain(bob):
    return MailDomain.objects.create(name="bob.example", owner=bob)


def errors_of(exc_info) -> dict:
    return exc_info.value.message_dict


def snapshot_rows():
    return (
        list(MailAccount.objects.values_list("local_part", "quota_mb", "forward_only")),
        list(MailAlias.objects.values_list("local_part", "target")),
        list(MailForward.objects.values_list("target", flat=True)),
        list(MailDomain.objects.values_list("name", "catchall")),
        AuditEntry.objects.count(),
    )


def test_add_account_stores_only_a_dovecot_hash_and_audits_field_names(alice, domain):
    account = svc.add_account(alice, domain, " Info ", PW, quota_mb=500).object
    assert account.local_part == "info" and account.quota_mb == 500
    assert account.password_hash.startswith("{BLF-CRYPT}$2b$")
    assert PW not in account.password_hash
    assert passwords.check_password(PW, account.password_hash)
    entry = AuditEntry.objects.get(action="account.add")
    assert entry.target == "info@example.org"
    assert entry.fields == ["local_part", "password_hash", "quota_mb"]
    assert PW not in str(entry.fields)
    assert Job.objects.filter(state="pending", domain=domain).count() == 1


@pytest.mark.parametrize(
    "local_part", ["", "a b", "a@b", ".info", "info.", "in..fo", "x" * 65, 'qu"ote', "pipe|x", "sl/ash", "ünï"]
)
def test_invalid_local_parts_are_refused_with_a_message(alice, domain, local_part):
    with pytest.raises(ValidationError) as exc:
        svc.add_account(alice, domain, local_part, PW)
    assert errors_of(exc)["local_part"][0]
    assert not MailAccount.objects.exists() and not AuditEntry.objects.exists()


def test_duplicate_account_is_refused(alice, domain):
    svc.add_account(alice, domain, "info", PW)
    with pytest.raises(ValidationError) as exc:
        svc.add_account(alice, domain, "INFO", PW)
    assert "already exists" in errors_of(exc)["local_part"][0]
    assert MailAccount.objects.count() == 1


def test_weak_password_and_bad_quota_are_reported_together(alice, domain):
    with pytest.raises(ValidationError) as exc:
        svc.add_account(alice, domain, "info", "info1234", quota_mb=-5)
    errors = errors_of(exc)
    assert "too weak" in errors["password"][0]
    assert "quota" in errors["quota_mb"][0].lower()
    assert not MailAccount.objects.exists()


def test_account_cannot_take_an_alias_address(alice, domain):
    svc.add_account(alice, domain, "info", PW)
    svc.add_alias(alice, domain, "sales", "info@example.org")
    with pytest.raises(ValidationError) as exc:
        svc.add_account(alice, domain, "sales", PW)
    assert "already an alias" in errors_of(exc)["local_part"][0]


def test_alias_equal_to_an_existing_account_is_refused(alice, domain):
    svc.add_account(alice, domain, "info", PW)
    svc.add_account(alice, domain, "sales", PW)
    before = snapshot_rows()
    with pytest.raises(ValidationError) as exc:
        svc.add_alias(alice, domain, "sales", "info@example.org")
    assert "is a mail account" in errors_of(exc)["local_part"][0]
    assert snapshot_rows() == before


def test_alias_to_itself_and_duplicate_alias_are_refused(alice, domain):
    svc.add_account(alice, domain, "info", PW)
    svc.add_alias(alice, domain, "sales", "info@example.org")
    with pytest.raises(ValidationError) as exc:
        svc.add_alias(alice, domain, "sales", "info@example.org")
    assert "already delivers" in errors_of(exc)["target"][0]
    with pytest.raises(ValidationError) as exc:
        svc.add_alias(alice, domain, "self", "self@example.org")
    assert "itself" in errors_of(exc)["target"][0]
    assert MailAlias.objects.count() == 1


def test_alias_that_loops_is_refused_and_nothing_is_saved(alice, domain):
    svc.add_account(alice, domain, "info", PW)
    svc.add_alias(alice, domain, "a", "info@example.org")
    svc.add_alias(alice, domain, "b", "a@example.org")
    before = snapshot_rows()
    with pytest.raises(ValidationError) as exc:
        svc.add_alias(alice, domain, "a", "b@example.org")  # a → b → a
    message = errors_of(exc)["target"][0]
    assert "loop" in message and "a@example.org" in message and "b@example.org" in message
    assert snapshot_rows() == before


def test_loop_through_a_forward_and_another_domain_is_refused(alice, domain, other_domain, bob):
    info = svc.add_account(alice, domain, "info", PW).object
    svc.add_alias(bob, other_domain, "x", "info@example.org")
    with pytest.raises(ValidationError) as exc:
        svc.add_forward(alice, info, "x@bob.example", forward_only=True)
    assert "loop" in errors_of(exc)["target"][0]
    info.refresh_from_db()
    assert not info.forward_only and not MailForward.objects.exists()


def test_alias_to_a_missing_address_of_the_same_domain_is_refused(alice, domain):
    with pytest.raises(ValidationError) as exc:
        svc.add_alias(alice, domain, "sales", "nobody@example.org")
    assert "no account or alias" in errors_of(exc)["target"][0]


@pytest.mark.parametrize("target", ["not-an-address", "a@b@c", "|/bin/sh@example.org", "x@localhost", ":include:/etc/passwd"])
def test_bad_targets_are_refused(alice, domain, target):
    svc.add_account(alice, domain, "info", PW)
    with pytest.raises(ValidationError) as exc:
        svc.add_alias(alice, domain, "sales", target)
    assert errors_of(exc)["target"][0]
    assert not MailAlias.objects.exists()


def test_forward_to_itself_and_duplicate_forward_are_refused(alice, domain):
    info = svc.add_account(alice, domain, "info", PW).object
    with pytest.raises(ValidationError) as exc:
        svc.add_forward(alice, info, "Info@Example.org")
    assert "itself" in errors_of(exc)["target"][0]
    svc.add_forward(alice, info, "someone@elsewhere.example")
    with pytest.raises(ValidationError) as exc:
        svc.add_forward(alice, info, "someone@elsewhere.example", forward_only=True)
    assert "already forwarded" in errors_of(exc)["target"][0]
    info.refresh_from_db()
    assert not info.forward_only and info.forwards.count() == 1


def test_forward_only_needs_a_forward_and_last_forward_removal_restores_local_copy(alice, domain):
    info = svc.add_account(alice, domain, "info", PW).object
    with pytest.raises(ValidationError) as exc:
        svc.update_account(alice, info, forward_only=True)
    assert "forwarding address first" in errors_of(exc)["forward_only"][0]
    forward = svc.add_forward(alice, info, "someone@elsewhere.example", forward_only=True).object
    info.refresh_from_db()
    assert info.forward_only
    svc.delete_forward(alice, forward)
    info.refresh_from_db()
    assert not info.forward_only
    assert AuditEntry.objects.filter(action="forward.delete").get().fields == ["forward_only", "target"]


def test_update_account_blank_password_keeps_the_old_hash(alice, domain):
    info = svc.add_account(alice, domain, "info", PW).object
    old = info.password_hash
    svc.update_account(alice, info, password="", quota_mb=0)
    info.refresh_from_db()
    assert info.password_hash == old
    svc.set_password(alice, info, "An0ther-good-pass")
    info.refresh_from_db()
    assert info.password_hash != old and passwords.check_password("An0ther-good-pass", info.password_hash)
    assert AuditEntry.objects.filter(action="account.update").get().fields == ["password_hash"]


def test_catchall_set_and_clear(alice, domain):
    svc.add_account(alice, domain, "info", PW)
    with pytest.raises(ValidationError) as exc:
        svc.set_catchall(alice, domain, "ghost@example.org")
    assert "no account or alias" in errors_of(exc)["catchall"][0]
    svc.set_catchall(alice, domain, "INFO@example.org")
    domain.refresh_from_db()
    assert domain.catchall == "info@example.org"
    svc.clear_catchall(alice, domain)
    domain.refresh_from_db()
    assert domain.catchall == ""
    assert [e.action for e in AuditEntry.objects.order_by("id")][-2:] == ["catchall.set", "catchall.clear"]


def test_catchall_loop_is_refused(alice, domain, other_domain, bob):
    svc.add_account(bob, other_domain, "box", PW)
    svc.set_catchall(bob, other_domain, "whatever@example.org")  # unknown at example.org: no catch-all there yet
    with pytest.raises(ValidationError) as exc:
        svc.set_catchall(alice, domain, "unknown@bob.example")  # → bob's catch-all → back here
    assert "loop" in errors_of(exc)["catchall"][0]
    domain.refresh_from_db()
    assert domain.catchall == ""


def test_delete_account_removes_aliases_to_it_and_a_catchall_to_it(alice, domain):
    info = svc.add_account(alice, domain, "info", PW).object
    svc.add_account(alice, domain, "keep", PW)
    svc.add_alias(alice, domain, "sales", "info@example.org")
    svc.add_alias(alice, domain, "other", "keep@example.org")
    svc.set_catchall(alice, domain, "sales@example.org")
    svc.delete_account(alice, info)
    assert list(MailAccount.objects.values_list("local_part", flat=True)) == ["keep"]
    assert list(MailAlias.objects.values_list("local_part", flat=True)) == ["other"]
    domain.refresh_from_db()
    assert domain.catchall == ""
    entry = AuditEntry.objects.get(action="account.delete")
    assert entry.target == "info@example.org" and entry.fields == ["aliases", "catchall"]


def test_account_rows_summarise_quota_aliases_forwards(alice, domain):
    info = svc.add_account(alice, domain, "info", PW, quota_mb=100).object
    svc.add_alias(alice, domain, "sales", "info@example.org")
    svc.add_forward(alice, info, "boss@elsewhere.example", forward_only=True)
    (row,) = svc.account_rows(domain)
    assert row["address"] == "info@example.org" and row["quota_mb"] == 100
    assert row["aliases"] == ["sales@example.org"]
    assert row["forwards"] == ["boss@elsewhere.example"] and row["forward_only"]
