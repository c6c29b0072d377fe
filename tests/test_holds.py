"""Hold, don't bounce — the issue's “done when”, with a real Exim daemon on
127.0.0.1, real Dovecot auth, a loopback smarthost (aiosmtpd) and panel SMTP
to a second one, all driven from the database through the real helper:

with a limit of 5 an hour the 6th message of a mailbox is held (frozen, not
bounced, not sent to the smarthost), exactly one notification goes out,
release delivers the held messages, other mailboxes keep sending, and a
local submission by a mapped Unix user is limited by its mapping.

Then the pages and the CLI around a hold, and the periodic job's units."""

import dataclasses
import io
import json
import shutil
import subprocess
import sys
import time
from email import message_from_bytes
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from mailadmin.models import JobState, MailDomain, RelaySettings, SendHold
from mailadmin.services import accounts, holds, panel_smtp, send_limits
from mailadmin.services.apply import apply_now, build_snapshot
from tests import mailstack
from tests.test_helper_queue import HELPER, submit

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(shutil.which("dovecot") is None, reason="dovecot is not installed"),
]

PW = "Str0ng-enough-pass"
NEW_PW = "N3w-after-the-theft"
SYSTEMD = Path(__file__).resolve().parent.parent / "deploy" / "systemd"


@pytest.fixture
def panel(settings, alice, admin_user, smtp_sinks):
    """hosted.example (alice's: mailboxes info and other, Unix user www-data
    mapped), a server-wide limit of 5 an hour, the global relay a loopback
    smarthost, panel SMTP a second sink."""
    alice.email = "alice@owner.example"
    alice.save()
    admin_user.email = "admin@panel.example"
    admin_user.save()
    smarthost, notices = smtp_sinks(), smtp_sinks()
    domain = MailDomain.objects.create(name="hosted.example", owner=alice, dkim_enabled=False,
                                       local_senders="www-data")
    info = accounts.add_account(alice, domain, "info", PW).object
    accounts.add_account(alice, domain, "other", PW)
    RelaySettings.objects.create(domain=None, host="127.0.0.1", port=smarthost.port, tls="none")
    send_limits.set_limits(admin_user, per_hour=5)
    settings.EMAIL_BACKEND = "mailadmin.services.panel_smtp.PanelEmailBackend"
    settings.MAILPANEL_BASE_URL = "https://panel.example.net"
    panel_smtp.save_settings(None, host="127.0.0.1", port=notices.port, security="none", username="",
                             password="", from_email="panel@panel.example.net")
    return {"domain": domain, "info": info, "smarthost": smarthost, "notices": notices, "admin": admin_user}


def use_tree(settings, layout):
    """The panel and the helper both render for this tree: the helper's
    Layout (layout.json under its root) is the test's."""
    fields = {k: v for k, v in dataclasses.asdict(layout).items() if k != "root"}
    layout_file = Path(layout.root) / "etc" / "mailpanel" / "layout.json"
    layout_file.parent.mkdir(parents=True, exist_ok=True)
    layout_file.write_text(json.dumps(fields))
    settings.MAILPANEL_ROOT = layout.root
    settings.MAILPANEL_LAYOUT = fields
    settings.MAILPANEL_HELPER = f"{sys.executable} {HELPER} --root {layout.root} --service-command true"


@pytest.fixture
def running(panel, mailstack_tree, settings):
    layout = mailstack_tree(build_snapshot())
    use_tree(settings, layout)
    with mailstack.dovecot_daemon(layout) as dovecot, mailstack.exim_daemon(layout) as exim:
        yield {**panel, "layout": layout, "exim": exim, "dovecot": dovecot}


def send(exim, login, count, subject, start=0):
    exim.send_many(
        [(login, [f"r{n}@foreign.example"], mailstack.make_message(login, f"r{n}@foreign.example", f"{subject}{n}"))
         for n in range(start, start + count)],
        login=(login, PW),
    )


def subjects(sink):
    return sorted(message_from_bytes(m.data)["Subject"] for m in sink.messages)


def queue_run(layout):
    mailstack._exim(layout, "-qf")  # not -qff: frozen (held) mail stays put


def settle():
    time.sleep(0.5)  # long enough for a delivery that should not happen


def test_the_sixth_message_is_held_one_notice_goes_out_and_release_delivers(running):
    exim, layout = running["exim"], running["layout"]
    smarthost, notices = running["smarthost"], running["notices"]
    send(exim, "info@hosted.example", 7, "info")
    smarthost.wait_for_messages(5)
    settle()
    assert subjects(smarthost) == [f"info{n}" for n in range(5)]
    log = exim.wait_for_log(r"held \(hour\) for info@hosted\.example", count=2)
    assert log.count("frozen by ACL") == 2
    assert " ** " not in log and "<= <>" not in log  # nothing bounced
    # other mailboxes keep sending
    send(exim, "other@hosted.example", 3, "other")
    smarthost.wait_for_messages(8)

    created = holds.check_held()
    (hold,) = created
    assert (hold.local_part, hold.reason, hold.held_count) == ("info", "hour", 2)
    (notice,) = notices.wait_for_messages(1)
    mail = message_from_bytes(notice.data)
    assert sorted(notice.recipients) == ["admin@panel.example", "alice@owner.example"]
    body = mail.get_payload(decode=True).decode()
    assert "info@hosted.example" in mail["Subject"]
    assert "Messages held so far: 2" in body and "r5@foreign.example (1)" in body and "127.0.0.1 (2)" in body
    assert f"https://panel.example.net/held/{hold.pk}/" in body

    # suspended: the next message is held whatever the rate
    apply_now(domains={"hosted.example"})
    held_senders = Path(layout.path("/etc/exim4/domains/hosted.example/held_senders"))
    assert held_senders.read_text() == "info:\n"
    send(exim, "info@hosted.example", 1, "later", start=7)
    exim.wait_for_log(r"held \(suspended\) for info@hosted\.example")
    assert holds.check_held() == []
    hold.refresh_from_db()
    assert hold.held_count == 3
    settle()
    assert len(notices.messages) == 1  # exactly one notification

    # the one action: new password, sessions ended, held mail released
    job = holds.resolve(running["admin"], hold, holds.RELEASE, password=NEW_PW)
    holds.run_finish_job(job.pk, hold.pk, holds.RELEASE, True)
    job.refresh_from_db()
    assert job.state == JobState.DONE, job.log
    assert "3 held messages released" in job.log
    smarthost.wait_for_messages(11)
    assert {"info5", "info6", "later7"} <= set(subjects(smarthost))
    assert not SendHold.objects.exists()
    assert not held_senders.exists()  # sending no longer suspended
    with pytest.raises(Exception):
        exim.send_many([("info@hosted.example", ["x@foreign.example"], b"Subject: x\n\nx\n")],
                       login=("info@hosted.example", PW))  # the old password is gone
    settle()
    assert len(notices.messages) == 1


def test_a_local_submission_is_limited_by_its_mapping(running):
    exim, layout, smarthost = running["exim"], running["layout"], running["smarthost"]
    # www-data is mapped to hosted.example: limited as the domain (*@hosted.example)
    ids = submit(layout, [("web@hosted.example", [f"w{n}@foreign.example"], f"web{n}") for n in range(6)],
                 "-oMt", "www-data")
    assert len(ids) == 6
    queue_run(layout)
    smarthost.wait_for_messages(5)
    settle()
    assert len(smarthost.messages) == 5
    assert mailstack.main_log(layout).count("held (hour) for *@hosted.example") == 1
    # root is mapped to nothing: no identity, no limit
    submit(layout, [("cron@hosted.example", ["admin@foreign.example"], f"cron{n}") for n in range(6)])
    queue_run(layout)
    smarthost.wait_for_messages(11)
    (hold,) = holds.check_held()
    assert hold.local_part == "*"
    (notice,) = running["notices"].wait_for_messages(1)
    assert "web applications mapped to hosted.example" in message_from_bytes(notice.data)["Subject"]
    assert "www-data (1)" in message_from_bytes(notice.data).get_payload(decode=True).decode()
    # its mail deleted: no password to change, nothing delivered
    job = holds.resolve(running["admin"], hold, holds.DELETE)
    holds.run_finish_job(job.pk, hold.pk, holds.DELETE, False)
    job.refresh_from_db()
    assert job.state == JobState.DONE and "1 held messages deleted" in job.log
    settle()
    assert len(smarthost.messages) == 11
    assert f"{ids[5]} removed by root" in mailstack.main_log(layout)


# -- without daemons: a spool with held mail, the helper reads it ----------------------


@pytest.fixture
def held_spool(panel, mailstack_tree, settings):
    layout = mailstack_tree(build_snapshot())
    use_tree(settings, layout)
    submit(layout, [("web@hosted.example", ["w@foreign.example"], f"web{n}") for n in range(7)], "-oMt", "www-data")
    return {**panel, "layout": layout}


def test_a_failed_notice_is_sent_by_the_next_check_and_only_once(held_spool, settings):
    panel_smtp.save_settings(None, host="127.0.0.1", port=mailstack.free_port(), security="none", username="",
                             password="", from_email="panel@panel.example.net")
    settings.MAILPANEL_SMTP_TIMEOUT = 2
    (hold,) = holds.check_held()
    hold.refresh_from_db()
    assert hold.notified_at is None and hold.held_count == 2
    panel_smtp.save_settings(None, host="127.0.0.1", port=held_spool["notices"].port, security="none",
                             username="", password="", from_email="panel@panel.example.net")
    assert holds.check_held() == []
    held_spool["notices"].wait_for_messages(1)
    holds.check_held()
    settle()
    assert len(held_spool["notices"].messages) == 1
    hold.refresh_from_db()
    assert hold.notified_at is not None


def test_owner_ends_the_hold_from_the_page_and_others_get_404(client, alice, bob, held_spool):
    (hold,) = holds.check_held()
    client.force_login(bob)
    assert client.get("/held/").content.decode().count("/held/") <= 1  # the nav, no row
    assert client.get(f"/held/{hold.pk}/").status_code == 404
    assert client.post(f"/held/{hold.pk}/", {"action": "delete", "keep_password": "on"}).status_code == 404
    client.force_login(alice)
    assert f"/held/{hold.pk}/" in client.get("/held/").content.decode()
    page = client.get(f"/held/{hold.pk}/").content.decode()
    assert "<li>w@foreign.example (2)</li>" in page and "<code>www-data</code> (2)" in page
    response = client.post(f"/held/{hold.pk}/", {"action": "delete"})
    assert response.status_code == 302  # web applications: no password to change
    job_url = response.headers["Location"]
    assert job_url.startswith("/jobs/")
    assert client.get(job_url).status_code == 200  # her own job


def test_a_held_mailbox_needs_a_new_password_or_a_word_that_it_was_not_stolen(client, alice, panel):
    hold = SendHold.objects.create(domain=panel["domain"], local_part="info", reason="hour", held_count=9)
    client.force_login(alice)
    response = client.post(f"/held/{hold.pk}/", {"action": "release"})
    assert response.status_code == 400 and "new password" in response.content.decode()
    response = client.post(f"/held/{hold.pk}/", {"action": "release", "password": "short"})
    assert response.status_code == 400
    old_hash = panel["info"].password_hash
    panel["info"].refresh_from_db()
    assert panel["info"].password_hash == old_hash
    response = client.post(f"/held/{hold.pk}/", {"action": "release", "password": NEW_PW})
    assert response.status_code == 302
    panel["info"].refresh_from_db()
    assert panel["info"].password_hash != old_hash
    assert client.post(f"/held/{hold.pk}/", {"action": "evil", "keep_password": "on"}).status_code == 400


def test_cli_held_list_check_and_delete(held_spool, capsys):
    call_command("mail", "held", "check")
    assert "held: *@hosted.example (2 messages, hour)" in capsys.readouterr().out
    call_command("mail", "held", "list", "--json")
    (row,) = json.loads(capsys.readouterr().out)
    assert row["sender"] == "*@hosted.example" and row["held"] == 2 and row["notified"]
    with pytest.raises(CommandError, match="is not held"):
        call_command("mail", "held", "delete", "info@hosted.example", "--keep-password")
    call_command("mail", "held", "delete", "*@hosted.example", stdout=io.StringIO())
    assert not SendHold.objects.exists()
    call_command("mail", "queue", "list", "--json", "--held")
    assert json.loads(capsys.readouterr().out)["messages"] == []


def test_the_held_mail_timer_and_service_pass_systemd_verify_and_run_the_cli(tmp_path):
    from tests.test_deploy import assert_timer_units

    assert_timer_units("mailpanel-held-mail", "mail held check", tmp_path, interval="1min")
