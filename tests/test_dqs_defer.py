"""The Spamhaus DQS key never reaches a log when a DNSBL lookup defers
(issue #12). Exim's `dnslist_defer` log line names the query —
"<ip>.<key>.zen.dq.spamhaus.net" — so the rendered log_selector turns it off.

Real Exim in a private network namespace (tests/exim_netns.py) whose resolver
on 127.0.0.1 reads every query and never answers (and, once, with nothing on
port 53 at all): a real SMTP session (`exim -bs -oMa <ip>`, logging to the
rendered log directory) and `exim -bh` (whose "LOG:" lines are what would be
logged). The key must be in no log file, no spool file, no SMTP reply; the
mail is accepted (a deferred lookup means "not listed"). The panel's own
blacklist check with a dead resolver keeps the key out of the job and page."""

import json
from pathlib import Path

import pytest
from django.urls import reverse

from mailadmin import tasks_dns
from mailadmin.models import Job, JobKind, MailAccount, ServerSettings
from mailadmin.passwords import hash_password
from mailadmin.services import apply
from mailadmin.services import domains as domain_service
from tests import exim_netns
from tests.dnsserver import SilentResolver
from tests.mailstack import exim_conf, render_tree, require_root

pytestmark = pytest.mark.django_db

KEY = "k3y0f26letters4nddigits789"  # made up, 26 letters and digits
SENDER_IP = "127.1.2.9"  # not in localhost_hosts: the DNSBL statements run
DIALOGUE = (
    "EHLO client.test\r\n"
    "MAIL FROM:<someone@sender.test>\r\n"
    "RCPT TO:<alice@hosted.test>\r\n"
    "DATA\r\n"
    "Subject: deferred DNSBL lookup\r\n\r\nhello\r\n.\r\n"
    "QUIT\r\n"
)


def _reversed(ip):
    return ".".join(reversed(ip.split(".")))


def _replies(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line[:3].isdigit()]


def _files_under(*dirs: str) -> dict[str, str]:
    out = {}
    for directory in dirs:
        for path in Path(directory).rglob("*"):
            if path.is_file():
                out[str(path)] = path.read_bytes().decode("utf-8", "replace")
    return out


@pytest.fixture
def dqs_tree(admin_client_, admin_user, alice, tmp_path):
    require_root()
    if reason := exim_netns.available():
        pytest.skip(reason)
    domain = domain_service.add_domain(admin_user, alice, "hosted.test", dkim_enabled=False)
    MailAccount.objects.create(domain=domain, local_part="alice", password_hash=hash_password("secret-password"))
    response = admin_client_.post(reverse("mailadmin:dqs_save"), {"action": "set", "key": KEY})
    assert response.status_code == 302
    layout = render_tree(apply.build_snapshot(), tmp_path)
    assert f"{KEY}.zen.dq.spamhaus.net" in Path(layout.path("/etc/exim4/dnsbl.conf")).read_text()
    return layout


@pytest.mark.parametrize("dns", ["silent", "none"])
def test_deferred_dqs_lookup_logs_no_key_and_the_mail_is_accepted(dqs_tree, dns):
    layout = dqs_tree
    conf = exim_conf(layout)
    out = exim_netns.run_in_netns(
        {},
        [
            # a real session: the log lines go to the rendered log directory
            {"argv": ["exim", "-C", conf, "-odq", "-bs", "-oMa", SENDER_IP], "input": DIALOGUE},
            {"argv": ["exim", "-C", conf, "-bh", SENDER_IP], "input": DIALOGUE},
        ],
        dns=dns,
    )
    real, fake = out["results"]
    for run in (real, fake):
        replies = _replies(run["stdout"])
        rcpt, data = replies[-4], replies[-2]  # … RCPT, 354, DATA's answer, 221
        assert rcpt.startswith("250 ") and data.startswith("250 "), replies
    if dns == "silent":
        # the lookup really went to the (dead) resolver and deferred
        asked = {name for name, _type in out["queries"]}
        assert f"{_reversed(SENDER_IP)}.{KEY}.zen.dq.spamhaus.net" in asked

    files = _files_under(layout.path(layout.log_dir), layout.path(layout.spool_dir))
    mainlog = files[layout.path(layout.log_dir) + "/mainlog"]
    assert f"<= someone@sender.test H=(client.test) [{SENDER_IP}]" in mainlog
    fake_log = [line for line in fake["stderr"].splitlines() if line.startswith("LOG:")]
    assert fake_log, fake["stderr"]
    for where, text in {
        **files,
        "-bs stdout": real["stdout"],
        "-bs stderr": real["stderr"],
        "-bh SMTP replies": fake["stdout"],
        "-bh LOG lines": "\n".join(fake_log),
    }.items():
        assert KEY not in text.lower(), where
        assert "DNS list lookup defer" not in text, where


def test_panel_blacklist_check_with_a_dead_resolver_shows_no_key(admin_client_, settings):
    server = ServerSettings.load()
    server.ipv4, server.dqs_key, server.dnsbl_zones = "192.0.2.10", KEY, "zen.spamhaus.org"
    server.save()
    with SilentResolver() as silent:
        settings.MAILPANEL_RESOLVERS = [silent.address]
        settings.MAILPANEL_CHECK_TIMEOUT = 1.0
        job = Job.objects.create(kind=JobKind.DIAGNOSE)
        tasks_dns.run_diagnose_job(job.pk, "server")
    job.refresh_from_db()
    [row] = job.result["server"]["blacklist"]
    assert row["status"] == "unknown" and row["zone"] == "<DQS key>.zen.dq.spamhaus.net"
    page = admin_client_.get(reverse("mailadmin:diagnostics") + f"?job={job.pk}").content.decode()
    assert "&lt;DQS key&gt;.zen.dq.spamhaus.net" in page
    for text in (json.dumps(job.result), job.log, page):
        assert KEY not in text
