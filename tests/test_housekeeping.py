"""Daily housekeeping: real rows with real times, deleted past their retention,
never the latest DNS result of a domain, a pending or running job, or the last
server diagnostics; run by a systemd timer through `manage.py housekeeping`."""

import io
import shutil
import subprocess
from datetime import timedelta

import pytest
from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from mailadmin import tasks
from mailadmin.models import Job, DnsCheckResult, JobKind, JobState, MailDomain, PasswordResetRequest
from mailadmin.services import housekeeping
from tests import taskqueue
from tests.test_deploy import DEPLOY, _verifiable_copy

pytestmark = pytest.mark.django_db
DAY = timedelta(days=1)


def ago(days):
    return timezone.now() - days * DAY


def aged(model, days, **fields):
    """A row created now, then moved back in time (auto_now_add ignores a given time)."""
    row = model.objects.create(**fields)
    time_field = {"DnsCheckResult": "checked_at", "Job": "created_at"}.get(model.__name__)
    if model._meta.app_label == "axes":
        time_field = "attempt_time"
    time_field = time_field or "at"
    model.objects.filter(pk=row.pk).update(**{time_field: ago(days)})
    return row


def login_models():
    present = []
    for app_label, name, _field in housekeeping.LOGIN_MODELS:
        try:
            present.append(apps.get_model(app_label, name))
        except LookupError:
            pass
    return present


def login_row(model, days, n):
    if model._meta.app_label == "axes":
        fields = dict(user_agent=f"ua{n}", ip_address="127.0.0.1", username="admin", http_accept="*/*", path_info="/login/")
        if model.__name__ == "AccessAttempt":
            fields.update(get_data="", post_data="", failures_since_start=1)
    else:
        fields = dict(username="admin", ip="127.0.0.1")
    return aged(model, days, **fields)


@pytest.fixture
def retention(settings):
    settings.MAILPANEL_KEEP_LOGIN_FAILURES_DAYS = 30
    settings.MAILPANEL_KEEP_RESET_REQUESTS_DAYS = 30
    settings.MAILPANEL_KEEP_DNS_RESULTS_DAYS = 90
    settings.MAILPANEL_KEEP_JOBS_DAYS = 90
    return settings


def test_login_and_reset_rows_go_after_their_retention(retention):
    models = login_models()
    assert any(m._meta.app_label == "axes" for m in models)
    rows = {m: (login_row(m, 31, 1), login_row(m, 29, 2)) for m in models}
    old_reset = aged(PasswordResetRequest, 31, email="a@example.org", ip="127.0.0.1")
    new_reset = aged(PasswordResetRequest, 29, email="a@example.org", ip="127.0.0.1")

    deleted = housekeeping.prune()

    for model, (old, new) in rows.items():
        assert list(model.objects.values_list("pk", flat=True)) == [new.pk], model
        assert deleted[model._meta.label] == 1
    assert list(PasswordResetRequest.objects.values_list("pk", flat=True)) == [new_reset.pk]
    assert old_reset.pk not in PasswordResetRequest.objects.values_list("pk", flat=True)


def test_dns_results_go_after_their_retention_but_never_a_domains_latest(retention, alice):
    a = MailDomain.objects.create(name="a.test", owner=alice)
    b = MailDomain.objects.create(name="b.test", owner=alice)
    oldest, older, latest_a = (aged(DnsCheckResult, d, domain=a, checked_at=timezone.now(), summary="ok") for d in (120, 100, 91))
    only_b = aged(DnsCheckResult, 200, domain=b, checked_at=timezone.now(), summary="missing")

    deleted = housekeeping.prune()

    kept = set(DnsCheckResult.objects.values_list("pk", flat=True))
    assert kept == {latest_a.pk, only_b.pk}
    assert deleted["mailadmin.DnsCheckResult"] == 2 and oldest.pk not in kept and older.pk not in kept

    # once a newer result exists, the 200-day-old one is no longer b's latest
    fresh = aged(DnsCheckResult, 1, domain=b, checked_at=timezone.now(), summary="ok")
    housekeeping.prune()
    assert set(DnsCheckResult.objects.values_list("pk", flat=True)) == {latest_a.pk, fresh.pk}


def job(state, days_finished, **fields):
    row = Job.objects.create(state=state, **fields)
    finished = ago(days_finished) if state in (JobState.DONE, JobState.FAILED) else None
    Job.objects.filter(pk=row.pk).update(created_at=ago(days_finished + 1), finished_at=finished)
    return row


def test_finished_jobs_go_after_their_retention_never_unfinished_ones(retention):
    done_old = job(JobState.DONE, 91)
    failed_old = job(JobState.FAILED, 120, kind=JobKind.DNS_CHECK)
    pending_old = job(JobState.PENDING, 400)
    running_old = job(JobState.RUNNING, 400)
    done_recent = job(JobState.DONE, 89)
    older_server = job(JobState.DONE, 300, kind=JobKind.DIAGNOSE, result={"what": "server"})
    last_server = job(JobState.DONE, 200, kind=JobKind.DIAGNOSE, result={"what": "server"})

    deleted = housekeeping.prune()

    kept = set(Job.objects.values_list("pk", flat=True))
    assert kept == {pending_old.pk, running_old.pk, done_recent.pk, last_server.pk}
    assert deleted["mailadmin.Job"] == 3
    assert {done_old.pk, failed_old.pk, older_server.pk}.isdisjoint(kept)


def test_finished_task_queue_rows_go_with_the_jobs_unfinished_stay(retention, django_capture_on_commit_callbacks):
    finished = tasks.housekeeping.enqueue()
    taskqueue.run_queue("default")
    waiting = tasks.housekeeping.enqueue()
    DBTaskResult.objects.update(enqueued_at=ago(100))
    DBTaskResult.objects.filter(pk=finished.id).update(finished_at=ago(91))

    housekeeping.prune()

    assert [str(pk) for pk in DBTaskResult.objects.values_list("pk", flat=True)] == [waiting.id]


def test_retention_comes_from_the_settings(retention):
    done = job(JobState.DONE, 10)
    housekeeping.prune()
    assert Job.objects.filter(pk=done.pk).exists()
    retention.MAILPANEL_KEEP_JOBS_DAYS = 7
    housekeeping.prune()
    assert not Job.objects.filter(pk=done.pk).exists()


def test_retention_settings_refuse_a_non_number(monkeypatch):
    from panel.settings import env_int

    monkeypatch.setenv("MAILPANEL_KEEP_JOBS_DAYS", "ninety")
    with pytest.raises(ImproperlyConfigured, match="MAILPANEL_KEEP_JOBS_DAYS"):
        env_int("MAILPANEL_KEEP_JOBS_DAYS", 90)
    monkeypatch.setenv("MAILPANEL_KEEP_JOBS_DAYS", "14")
    assert env_int("MAILPANEL_KEEP_JOBS_DAYS", 90) == 14


def test_the_command_prunes_and_says_how_much(retention):
    aged(PasswordResetRequest, 40, email="a@example.org")
    out = io.StringIO()
    call_command("housekeeping", stdout=out)
    assert "mailadmin.PasswordResetRequest: 1 deleted" in out.getvalue()
    assert not PasswordResetRequest.objects.exists()


def test_the_command_can_hand_it_to_the_worker(retention):
    aged(PasswordResetRequest, 40, email="a@example.org")
    call_command("housekeeping", "--enqueue", stdout=io.StringIO())
    assert PasswordResetRequest.objects.exists()
    assert taskqueue.run_queue("default") == ["mailadmin.tasks.housekeeping"]
    assert not PasswordResetRequest.objects.exists()


TIMER = DEPLOY / "systemd" / "mailpanel-housekeeping.timer"
SERVICE = DEPLOY / "systemd" / "mailpanel-housekeeping.service"


def test_a_daily_timer_runs_the_command():
    timer, service = TIMER.read_text(), SERVICE.read_text()
    assert "\nOnCalendar=daily\n" in timer and "\nPersistent=true\n" in timer
    assert "\nExecStart=/opt/mailpanel/.venv/bin/python manage.py housekeeping\n" in service
    assert "\nUser=mailpanel\n" in service and "\nEnvironmentFile=/etc/mailpanel/env\n" in service


def test_timer_and_service_pass_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze missing (systemd is listed in deploy/apt-packages.txt)")
    service = _verifiable_copy(SERVICE, tmp_path)
    timer = tmp_path / TIMER.name
    timer.write_text(TIMER.read_text())
    proc = subprocess.run(
        [analyze, "verify", str(timer), str(service)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr.strip() == "", proc.stderr


def test_deleted_domains_mail_goes_for_good_after_its_retention(settings, tmp_path):
    import sys
    from pathlib import Path

    helper = Path(__file__).resolve().parent.parent / "deploy" / "mailpanel_helper.py"
    settings.MAILPANEL_HELPER = f"{sys.executable} {helper} --root {tmp_path} --no-chown"
    settings.MAILPANEL_KEEP_DELETED_MAIL_DAYS = 30
    deleted = tmp_path / "var/mail/vhosts/.deleted"
    old = deleted / "gone.example-20200101000000"
    (old / "info/Maildir/cur").mkdir(parents=True)
    recent = deleted / ("kept.example-" + timezone.now().strftime("%Y%m%d%H%M%S"))
    recent.mkdir()

    result = tasks.housekeeping.call()

    assert result["deleted mail folders"] == 1
    assert not old.exists() and recent.exists()
