"""The apply pipeline end to end: database → render → helper (real exim -bV) → files.

The helper runs as a real subprocess with --root in a temporary directory."""

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from mailadmin.models import Job, MailDomain, RelaySettings, ServerSettings
from mailadmin.services import apply, domains
from mailadmin.services.jobs import request_apply

pytestmark = pytest.mark.django_db

HELPER = Path(__file__).resolve().parent.parent / "deploy" / "mailpanel_helper.py"


@pytest.fixture
def live_root(tmp_path, settings):
    root = tmp_path / "root"
    root.mkdir()
    settings.MAILPANEL_ROOT = str(root)
    settings.MAILPANEL_HELPER = f"{sys.executable} {HELPER} --root {root} --service-command true"
    return root


def run_pending_job():
    job = Job.objects.filter(state="pending").get()
    apply.run_apply_job(job.pk)
    job.refresh_from_db()
    return job


def test_adding_a_domain_writes_its_files_and_a_valid_exim_config(live_root, alice):
    domain = domains.add_domain(None, alice, "example.org")
    job = run_pending_job()
    assert job.state == "done", job.log
    assert "/etc/exim4/exim4.conf" in job.changed_files
    assert "/etc/exim4/domains/example.org/dkim.pem" in job.changed_files
    dkim_pem = live_root / "etc/exim4/domains/example.org/dkim.pem"
    assert dkim_pem.read_text() == domain.dkim_private_key
    assert dkim_pem.stat().st_mode & 0o777 == 0o640
    check = subprocess.run(
        ["exim", "-C", str(live_root / "etc/exim4/exim4.conf"), "-bV"], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr


def test_second_apply_with_no_change_writes_nothing(live_root, alice):
    domains.add_domain(None, alice, "example.org")
    run_pending_job()
    request_apply(alice)
    job = run_pending_job()
    assert job.state == "done" and job.changed_files == []
    assert "nothing to do" in job.log


def test_one_domain_relay_change_writes_only_that_domains_file(live_root, alice):
    for name in ["a.example", "b.example", "c.example"]:
        domains.add_domain(None, alice, name)
    run_pending_job()
    RelaySettings.objects.create(
        domain=MailDomain.objects.get(name="b.example"), host="smtp.example.net", username="u", password="p"
    )
    request_apply(alice)
    job = run_pending_job()
    assert job.changed_files == ["/etc/exim4/domains/b.example/smtp_relay.conf"]
    assert "p" not in job.log.split()  # file contents never reach the job log


def test_domain_changes_coalesce_into_one_job_scoped_to_those_domains(live_root, alice):
    domains.add_domain(None, alice, "a.example")
    run_pending_job()
    domains.add_domain(None, alice, "b.example")
    domains.add_domain(None, alice, "c.example")
    job = Job.objects.get(state="pending")
    assert job.scope == ["b.example", "c.example"]
    request_apply(None)  # a server-wide change by the same requester widens the job to everything
    job.refresh_from_db()
    assert job.scope is None
    job = run_pending_job()
    assert job.state == "done"
    assert (live_root / "etc/exim4/domains/c.example/dkim.pem").exists()


def test_deleting_a_domain_removes_its_folder(live_root, alice):
    domain = domains.add_domain(None, alice, "example.org")
    run_pending_job()
    domains.delete_domain(alice, domain)
    job = run_pending_job()
    assert job.state == "done", job.log
    assert not (live_root / "etc/exim4/domains/example.org").exists()


def test_failed_reload_marks_the_job_failed_and_keeps_the_last_good_files(live_root, alice, settings, tmp_path):
    domains.add_domain(None, alice, "example.org")
    run_pending_job()
    before = (live_root / "etc/exim4/exim4.conf").read_bytes()
    failing = tmp_path / "failing-service"
    failing.write_text("#!/bin/sh\necho 'exim4: reload refused' >&2\nexit 1\n")
    failing.chmod(0o755)
    settings.MAILPANEL_HELPER = f"{sys.executable} {HELPER} --root {live_root} --service-command {shlex.quote(str(failing))}"
    server = ServerSettings.load()
    server.hostname = "mx2.example.org"  # lands in exim4.conf: exim4 must reload
    server.save()
    domains.add_domain(None, alice, "second.example")
    request_apply(None)  # the identity form asks for a whole-server apply (same requester: one job)
    job = run_pending_job()
    assert job.state == "failed"
    assert "reload refused" in job.log
    assert (live_root / "etc/exim4/exim4.conf").read_bytes() == before
    assert not (live_root / "etc/exim4/domains/second.example").exists()


def test_worker_killed_mid_apply_converges_on_the_next_job(live_root, alice):
    domains.add_domain(None, alice, "first.example")
    run_pending_job()  # the server-wide files are live from here on
    domains.add_domain(None, alice, "example.org")
    stuck = Job.objects.get(state="pending")
    # The worker died after claiming the job: it stays "running" and is never picked again.
    Job.objects.filter(pk=stuck.pk).update(state="running")
    domains.add_domain(None, alice, "second.example")
    job = run_pending_job()
    assert job.pk != stuck.pk and job.state == "done"
    # Scoped to second.example, but a dead job before it: it applied everything.
    assert f"job #{stuck.pk} did not finish: applying everything" in job.log
    assert (live_root / "etc/exim4/domains/example.org/dkim.pem").exists()
    assert (live_root / "etc/exim4/domains/second.example/dkim.pem").exists()
    stuck.refresh_from_db()
    assert stuck.state == "failed" and f"job #{job.pk} has applied everything since" in stuck.log


def test_config_render_cli_writes_a_tree_exim_accepts_in_place(alice, tmp_path):
    from django.core.management import call_command

    domains.add_domain(None, alice, "example.org")
    call_command("mail", "config", "render", "--out", str(tmp_path / "out"))
    conf = tmp_path / "out/etc/exim4/exim4.conf"
    assert str(tmp_path / "out") in conf.read_text()
    check = subprocess.run(["exim", "-C", str(conf), "-bV"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
