"""The tenant boundary on the real mail stack: what `exim -bt` does with the
rendered config when a customer tries to claim other people's names, and a
deleted domain's mail moved away by the real helper (issue #12)."""

import logging
from pathlib import Path

import pytest
from django.urls import reverse

from mailadmin.models import AuditEntry, MailAccount, MailDomain
from mailadmin.passwords import hash_password
from mailadmin.services import apply, ownership
from mailadmin.services import domains as domain_service
from tests.mailstack import exim_bt
from tests.test_apply_pipeline import live_root, run_pending_job  # noqa: F401 (a fixture)
from tests.test_domain_ownership import server_names  # noqa: F401 (a fixture)

pytestmark = pytest.mark.django_db

PASSWORD = "Vault-Horse-Lamp-91"

ELSEWHERE = {
    ("corp.test", "MX"): ["10 mx.corp-mail.test"],
    ("mx.corp-mail.test", "A"): ["192.0.2.31"],
    ("gmail.com", "MX"): ["10 gmail-smtp-in.l.google.com"],
    ("gmail-smtp-in.l.google.com", "A"): ["192.0.2.32"],
    ("sub.bob.test", "MX"): ["10 mx.bob-mail.test"],
    ("mx.bob-mail.test", "A"): ["192.0.2.33"],
    ("mx1.hoster.test", "A"): ["192.0.2.34"],
    ("alice.test", "MX"): ["10 mx.alice-old.test"],
    ("mx.alice-old.test", "A"): ["192.0.2.35"],
}


def add(client, name):
    return client.post(reverse("mailadmin:domain_add"), {"name": name, "dkim_enabled": "on"})


def mailbox_and_catchall(client, domain):
    """What the attacker did on each domain she got: a mailbox and a catch-all."""
    client.post(
        reverse("mailadmin:account_add", args=[domain.pk]),
        {"local_part": "loot", "password": PASSWORD, "quota_mb": "0"},
    )
    client.post(reverse("mailadmin:catchall_set", args=[domain.pk]), {"catchall": f"loot@{domain.name}"})


def test_customer_cannot_capture_the_admins_the_servers_or_another_customers_mail(
    client, alice, bob, server_names, mailstack_tree, fake_dns
):
    domain_service.add_domain(None, bob, "bob.test")

    client.force_login(alice)
    for name in ("corp.test", "mx1.hoster.test", "sub.bob.test"):
        assert add(client, name).status_code == 400, name
    assert add(client, "gmail.com").status_code == 302  # allowed, but only pending
    gmail = MailDomain.objects.get(name="gmail.com")
    mailbox_and_catchall(client, gmail)
    assert MailAccount.objects.filter(domain=gmail).exists() and MailDomain.objects.get(pk=gmail.pk).catchall

    layout = mailstack_tree(apply.build_snapshot())
    dns = fake_dns(ELSEWHERE)
    for address, mx in [
        ("admin@corp.test", "192.0.2.31"),  # where the admin's password reset goes
        ("postmaster@mx1.hoster.test", "192.0.2.34"),
        ("anyone@sub.bob.test", "192.0.2.33"),
        ("friend@gmail.com", "192.0.2.32"),
        ("loot@gmail.com", "192.0.2.32"),
    ]:
        out = exim_bt(layout, address, dns=dns)
        assert "router = dnslookup" in out and mx in out, out
        assert "local_mailbox" not in out and "catchall" not in out, out


def test_pending_domain_is_not_local_and_a_verified_one_is(alice, mailstack_tree, fake_dns):
    domain = domain_service.add_domain(alice, alice, "alice.test")
    MailAccount.objects.create(domain=domain, local_part="info", password_hash=hash_password(PASSWORD))
    dns = fake_dns(ELSEWHERE)
    layout = mailstack_tree(apply.build_snapshot())
    pending = exim_bt(layout, "info@alice.test", dns=dns)
    assert "router = dnslookup" in pending and "192.0.2.35" in pending, pending
    assert not Path(layout.path("/etc/exim4/domains/alice.test")).exists()  # no DKIM key, no relay either

    ownership.mark_verified(None, domain)
    mailstack_tree(apply.build_snapshot(), layout=layout)
    verified = exim_bt(layout, "info@alice.test", dns=dns)
    assert "router = local_mailbox" in verified, verified


# --- deleting a domain moves its mail away (the real helper) -------------------------


def deliver(root: Path, domain: str, local: str, count: int) -> Path:
    cur = root / "var/mail/vhosts" / domain / local / "Maildir" / "cur"
    cur.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (cur / f"1700000000.M{i}.host:2,S").write_bytes(b"Subject: old mail\r\n\r\nsecret\r\n")
    return cur


def test_deleted_domains_mail_moves_away_and_a_new_domain_of_that_name_starts_empty(client, live_root, alice, bob, admin_user):
    domain = domain_service.add_domain(None, alice, "example.org")
    assert run_pending_job().state == "done"
    deliver(live_root, "example.org", "info", 12)
    client.force_login(alice)
    response = client.post(reverse("mailadmin:domain_delete", args=[domain.pk]), {"confirm_name": "example.org"}, follow=True)
    assert "Mail domain example.org deleted." in response.content.decode()
    assert "could not be moved" not in response.content.decode()
    assert not (live_root / "var/mail/vhosts/example.org").exists()
    [moved] = (live_root / "var/mail/vhosts/.deleted").iterdir()
    assert moved.name.startswith("example.org-") and len(list((moved / "info/Maildir/cur").iterdir())) == 12
    assert not (live_root / "etc/exim4/domains/example.org").exists()  # not local before the move
    assert AuditEntry.objects.filter(action="domain.mail_moved", target="example.org").exists()

    domain_service.add_domain(admin_user, bob, "example.org")
    assert not (live_root / "var/mail/vhosts/example.org").exists()  # bob's mailboxes start empty


def test_helper_failure_on_delete_is_shown_logged_and_audited(client, live_root, alice, settings, tmp_path, caplog):
    domain = domain_service.add_domain(None, alice, "example.org")
    run_pending_job()
    broken = tmp_path / "broken-helper"
    broken.write_text('#!/bin/sh\necho \'{"ok": false, "error": "disk on fire"}\'\nexit 1\n')
    broken.chmod(0o755)
    settings.MAILPANEL_HELPER = str(broken)
    client.force_login(alice)
    with caplog.at_level(logging.ERROR, logger="mailadmin.services.domains"):
        response = client.post(
            reverse("mailadmin:domain_delete", args=[domain.pk]), {"confirm_name": "example.org"}, follow=True
        )
    page = response.content.decode()
    assert "could not be moved away" in page
    assert "disk on fire" not in page  # the helper's words are for admins
    assert not MailDomain.objects.exists()
    assert any("example.org" in r.getMessage() and "disk on fire" in r.getMessage() for r in caplog.records)
    assert AuditEntry.objects.filter(action="domain.mail_not_moved", target="example.org").exists()
