"""Sending limits in the panel: the service (admins set, blank inherits, 0 =
no limit), what the snapshot and the rendered files get, the pages (admins
edit, owners see, others get 404) and `mail limit set|show`. Hostile values
first."""

import json

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError

from mailadmin.models import AuditEntry, MailAccount, MailDomain, SendHold, SendLimit
from mailadmin.services import send_limits
from mailadmin.services.apply import build_snapshot
from mailconf.render.exim import render_exim
from mailconf.snapshot import Layout, SendLimits

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_shipped_default():
    """These tests start from a server without limits: the default the
    migrations ship (200 an hour, 1,000 a day) is removed, and its own test
    below puts it back first."""
    SendLimit.objects.filter(domain=None, account=None).delete()


def test_the_shipped_default_holds_a_stolen_mailbox_and_is_the_admins_to_change(capsys):
    from importlib import import_module

    migration = import_module("mailadmin.migrations.0017_default_send_limits")
    from django.apps import apps

    migration.add_default(apps, None)
    assert build_snapshot().send_limits == SendLimits(per_hour=200, per_day=1000)
    call_command("mail", "limit", "show", "--json")
    assert json.loads(capsys.readouterr().out)[0] == {
        "scope": "default", "per_hour": 200, "per_day": 1000, "recipients": None}
    call_command("mail", "limit", "set", "--default", "--per-hour", "0", "--per-day", "none")
    assert build_snapshot().send_limits == SendLimits(per_hour=0)
    # an admin's own choice stays: the migration adds the default only where none is stored
    migration.add_default(apps, None)
    assert build_snapshot().send_limits == SendLimits(per_hour=0)


@pytest.fixture
def hosted(alice, bob):
    domain = MailDomain.objects.create(name="alice.example", owner=alice, dkim_enabled=False,
                                       local_senders="www-data")
    info = MailAccount.objects.create(domain=domain, local_part="info", password_hash="{PLAIN}x")
    other = MailAccount.objects.create(domain=domain, local_part="other", password_hash="{PLAIN}y")
    bobs = MailDomain.objects.create(name="bob.example", owner=bob, dkim_enabled=False)
    return {"domain": domain, "info": info, "other": other, "bobs": bobs}


# -- hostile values first ------------------------------------------------------------


@pytest.mark.parametrize("bad", [-1, "-1", "5abc", "1e3", "0x10", "5.0", " ", "１", 10**9, True, "5\n", [5]])
def test_a_limit_that_is_not_a_whole_number_in_range_is_refused_and_nothing_changes(admin_user, bad):
    if bad == " ":
        send_limits.set_limits(admin_user, per_hour=bad)  # blank: inherit, not an error
        assert not SendLimit.objects.exists()
        return
    with pytest.raises(ValidationError) as err:
        send_limits.set_limits(admin_user, per_hour=bad)
    assert "per_hour" in err.value.message_dict
    assert not SendLimit.objects.exists()


def test_only_admins_set_limits(alice, hosted):
    with pytest.raises(PermissionDenied):
        send_limits.set_limits(alice, domain=hosted["domain"], per_hour=1000)
    with pytest.raises(PermissionDenied):
        send_limits.set_limits(alice, account=hosted["info"], per_hour=0)
    assert not SendLimit.objects.exists()


def test_unknown_fields_and_two_scopes_are_programming_errors(admin_user, hosted):
    with pytest.raises(ValueError):
        send_limits.set_limits(admin_user, per_minute=5)
    with pytest.raises(ValueError):
        send_limits.set_limits(admin_user, domain=hosted["domain"], account=hosted["info"], per_hour=5)


# -- the service -----------------------------------------------------------------------


def test_set_inherit_and_no_limit_per_scope(admin_user, hosted):
    send_limits.set_limits(admin_user, per_hour=100, per_day=1000, recipients=50)
    send_limits.set_limits(admin_user, domain=hosted["domain"], per_hour=20)
    send_limits.set_limits(admin_user, account=hosted["info"], per_hour=0, recipients=5)
    info = send_limits.effective(hosted["domain"], hosted["info"])
    assert (info["per_hour"].value, info["per_hour"].source) == (0, "mailbox")
    assert info["per_hour"].unlimited
    assert (info["per_day"].value, info["per_day"].source) == (1000, "server")
    assert (info["recipients"].value, info["recipients"].source) == (5, "mailbox")
    other = send_limits.effective(hosted["domain"], hosted["other"])
    assert (other["per_hour"].value, other["per_hour"].source) == (20, "domain")
    # back to inheriting: the row goes away when nothing is left
    send_limits.set_limits(admin_user, account=hosted["info"], per_hour=None, recipients="")
    assert not SendLimit.objects.filter(account=hosted["info"]).exists()
    assert send_limits.effective(hosted["domain"], hosted["info"])["per_hour"].value == 20
    actions = list(AuditEntry.objects.values_list("action", "target"))
    assert ("send_limit.set", "info@alice.example") in actions and ("send_limit.set", "server") in actions


def test_the_snapshot_and_the_rendered_files_carry_every_scope_and_the_holds(admin_user, hosted):
    send_limits.set_limits(admin_user, per_hour=100)
    send_limits.set_limits(admin_user, domain=hosted["domain"], recipients=20)
    send_limits.set_limits(admin_user, account=hosted["info"], per_day=0)
    SendHold.objects.create(domain=hosted["domain"], local_part="other", reason="hour")
    SendHold.objects.create(domain=hosted["domain"], local_part="*", reason="day")
    snapshot = build_snapshot()
    assert snapshot.send_limits == SendLimits(per_hour=100)
    domain = next(d for d in snapshot.domains if d.name == "alice.example")
    assert domain.send_limits == SendLimits(recipients=20)
    assert domain.held_senders == ("*", "other")
    assert {m.local_part: m.send_limits for m in domain.mailboxes}["info"] == SendLimits(per_day=0)
    files = render_exim(snapshot, Layout())
    assert files["/etc/exim4/send_limits"].content == b"*: hour=100\n"
    assert files["/etc/exim4/domains/alice.example/send_limits"].content == b"*: rcpt=20\ninfo: day=0\n"
    assert files["/etc/exim4/domains/alice.example/held_senders"].content == b"*:\nother:\n"
    assert "/etc/exim4/domains/bob.example/send_limits" not in files
    # a one-domain apply reads the same
    only = build_snapshot(only_domains={"alice.example"})
    assert only.send_limits == snapshot.send_limits and only.domains[0] == domain


def test_a_one_domain_snapshot_costs_three_more_queries_whatever_the_size(admin_user, hosted, django_assert_max_num_queries):
    for n in range(20):
        account = MailAccount.objects.create(domain=hosted["domain"], local_part=f"box{n}", password_hash="{PLAIN}x")
        send_limits.set_limits(admin_user, account=account, per_hour=n)
    with django_assert_max_num_queries(12):
        build_snapshot(only_domains={"alice.example"})


# -- pages -----------------------------------------------------------------------------


def test_the_owner_sees_what_applies_and_cannot_change_it(client, alice, admin_user, hosted):
    send_limits.set_limits(admin_user, per_hour=100)
    send_limits.set_limits(admin_user, account=hosted["info"], per_hour=7)
    client.force_login(alice)
    url = f"/domains/{hosted['domain'].pk}/sending-limits/"
    page = client.get(url).content.decode()
    row = page.split("info@alice.example", 1)[1].split("</tr>", 1)[0]
    assert "<td>7" in row
    other = page.split("other@alice.example", 1)[1].split("</tr>", 1)[0]
    assert "100" in other and "(server)" in other
    assert 'name="per_hour"' not in page  # no form for the owner
    assert client.post(url, {"per_hour": "100000"}).status_code == 404
    assert SendLimit.objects.get(account=hosted["info"]).per_hour == 7


def test_the_owner_finds_the_limits_page_from_the_held_page(client, alice, hosted):
    client.force_login(alice)
    page = client.get("/held/").content.decode()
    assert f"/domains/{hosted['domain'].pk}/sending-limits/" in page
    assert f"/domains/{hosted['bobs'].pk}/sending-limits/" not in page


def test_another_customer_gets_404(client, bob, hosted):
    client.force_login(bob)
    assert client.get(f"/domains/{hosted['domain'].pk}/sending-limits/").status_code == 404
    assert client.get("/settings/server/sending-limits/").status_code == 404


def test_the_admin_sets_a_mailboxs_limits_and_the_servers(client, admin_user, hosted):
    client.force_login(admin_user)
    url = f"/domains/{hosted['domain'].pk}/sending-limits/"
    response = client.post(url, {"account": hosted["info"].pk, "per_hour": "5", "per_day": "", "recipients": "0"})
    assert response.status_code == 302
    row = SendLimit.objects.get(account=hosted["info"])
    assert (row.per_hour, row.per_day, row.recipients) == (5, None, 0)
    response = client.post(url, {"account": hosted["info"].pk, "per_hour": "-5"})
    assert response.status_code == 400
    assert SendLimit.objects.get(account=hosted["info"]).per_hour == 5
    # a mailbox of another domain cannot be named here
    bobs_box = MailAccount.objects.create(domain=hosted["bobs"], local_part="box", password_hash="{PLAIN}x")
    assert client.post(url, {"account": bobs_box.pk, "per_hour": "1"}).status_code == 404
    assert not SendLimit.objects.filter(account=bobs_box).exists()
    response = client.post("/settings/server/sending-limits/", {"per_hour": "200", "per_day": "", "recipients": ""})
    assert response.status_code == 302
    assert send_limits.stored().per_hour == 200
    page = client.get("/settings/server/sending-limits/").content.decode()
    assert "info@alice.example" in page


# -- CLI -------------------------------------------------------------------------------


def test_cli_limit_set_and_show(hosted, capsys):
    call_command("mail", "limit", "set", "--default", "--per-hour", "100", "--recipients", "50")
    call_command("mail", "limit", "set", "alice.example", "--per-hour", "20")
    call_command("mail", "limit", "set", "info@alice.example", "--per-day", "0")
    out = capsys.readouterr().out
    assert "info@alice.example: per_hour=20 (domain), per_day=no limit (mailbox), recipients=50 (server)" in out
    call_command("mail", "limit", "show", "--json")
    rows = json.loads(capsys.readouterr().out)
    assert {r["scope"]: r["per_hour"] for r in rows} == {"default": 100, "alice.example": 20, "info@alice.example": None}
    call_command("mail", "limit", "set", "alice.example", "--per-hour", "none")
    assert not SendLimit.objects.filter(domain=hosted["domain"]).exists()


@pytest.mark.parametrize("args", [["--per-hour", "-1"], ["--per-hour", "lots"], ["--per-day", "1e3"]])
def test_cli_refuses_a_bad_limit(hosted, args):
    with pytest.raises((CommandError, SystemExit)):
        call_command("mail", "limit", "set", "--default", *args)
    assert not SendLimit.objects.exists()


def test_cli_needs_something_to_set_and_a_known_target(hosted):
    with pytest.raises(CommandError, match="nothing to set"):
        call_command("mail", "limit", "set", "--default")
    with pytest.raises(CommandError):
        call_command("mail", "limit", "set", "nowhere.example", "--per-hour", "5")
    with pytest.raises(CommandError):
        call_command("mail", "limit", "set", "nobody@alice.example", "--per-hour", "5")
