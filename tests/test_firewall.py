"""The panel's nftables file (/etc/nftables.d/mailpanel.nft): checked by the
real `nft -c -f` (as root), loaded in a private network namespace, and written
through the helper by the apply job when ManageSieve's external access changes."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mailadmin.models import Job
from mailconf.render import render_code
from mailconf.render.firewall import FIREWALL_RULES, render_firewall, render_firewall_rules
from mailadmin.services import apply, sieve
from mailconf.params import CodeParams
from mailconf.snapshot import Layout

NFT = shutil.which("nft")
HELPER = Path(__file__).resolve().parent.parent / "deploy" / "mailpanel_helper.py"
needs_nft_root = pytest.mark.skipif(
    NFT is None or os.geteuid() != 0, reason="nft checks need the nft binary and root"
)
ACCEPT = 'tcp dport 4190 accept'
DROP = 'tcp dport 4190 drop'

STATES = {
    "off": CodeParams(sieve_enabled=False, sieve_external=False),
    "local only": CodeParams(sieve_enabled=True, sieve_external=False),
    "external": CodeParams(sieve_enabled=True, sieve_external=True),
    "external without sieve": CodeParams(sieve_enabled=False, sieve_external=True),
}


def nft_check(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([NFT, "-c", "-f", str(path)], capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("state", STATES)
def test_4190_is_accepted_only_when_external_access_is_on(state):
    rules = render_firewall_rules(STATES[state], Layout()).decode()
    if state == "external":
        assert ACCEPT in rules and DROP not in rules
    else:
        assert ACCEPT not in rules
        assert DROP in rules and 'iifname "lo" accept' in rules  # SnappyMail still reaches it


@needs_nft_root
@pytest.mark.parametrize("state", STATES)
def test_rendered_rules_pass_nft_check(tmp_path, state):
    path = tmp_path / "mailpanel.nft"
    path.write_bytes(render_firewall_rules(STATES[state], Layout()))
    check = nft_check(path)
    assert check.returncode == 0, check.stderr


@needs_nft_root
def test_nft_check_really_rejects_a_broken_file(tmp_path):
    path = tmp_path / "broken.nft"
    path.write_bytes(render_firewall_rules(STATES["external"], Layout()).replace(b"accept comment", b"acept comment"))
    assert nft_check(path).returncode != 0


@needs_nft_root
def test_loading_the_file_twice_replaces_our_table_and_leaves_others_alone(tmp_path):
    """In a private network namespace: the host's firewall is never touched."""
    path = tmp_path / "mailpanel.nft"
    path.write_bytes(render_firewall_rules(STATES["external"], Layout()))
    other = tmp_path / "admin.nft"
    other.write_text("table inet filter {\n\tchain input {\n\t\ttype filter hook input priority filter;\n\t}\n}\n")
    script = f"{NFT} -f {other} && {NFT} -f {path} && {NFT} -f {path} && {NFT} list ruleset"
    proc = subprocess.run(["unshare", "-n", "sh", "-c", script], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0 and "unshare" in proc.stderr:
        pytest.skip(f"no private network namespace here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("table inet mailpanel") == 1
    assert proc.stdout.count("tcp dport 4190 accept") == 1
    assert "table inet filter" in proc.stdout


def test_firewall_file_is_always_rendered_with_its_reload():
    for params in STATES.values():
        files = render_code(params, Layout())
        spec = files[FIREWALL_RULES]
        assert (spec.owner, spec.group, spec.mode, spec.service) == ("root", "root", 0o644, "firewall")


def test_rule_follows_the_layouts_sieve_port():
    rules = render_firewall(STATES["external"], Layout(sieve_port=14190))[FIREWALL_RULES].content
    assert b"tcp dport 14190 accept" in rules and b"4190 " not in rules.replace(b"14190", b"")


@needs_nft_root
@pytest.mark.django_db
def test_switching_external_access_writes_the_rule_through_the_helper(tmp_path, settings, admin_user):
    """The apply job renders the file, the helper validates it with `nft -c -f`
    and asks the (test) service command to reload the firewall."""
    root = tmp_path / "root"
    root.mkdir()
    reloads = tmp_path / "reloads"
    service = tmp_path / "service"
    service.write_text(f'#!/bin/sh\necho "$@" >> {reloads}\n')
    service.chmod(0o755)
    settings.MAILPANEL_ROOT = str(root)
    settings.MAILPANEL_HELPER = f"{sys.executable} {HELPER} --root {root} --service-command {service}"
    live = root / FIREWALL_RULES.lstrip("/")

    job = sieve.set_sieve(admin_user, enabled=True, external=True)
    apply.run_apply_job(job.pk)
    job.refresh_from_db()
    assert job.state == "done", job.log
    assert ACCEPT in live.read_text()
    assert live.stat().st_mode & 0o777 == 0o644
    assert "reload firewall" in reloads.read_text()
    assert "reload dovecot" in reloads.read_text()
    assert "service managesieve-login" in (root / "etc/dovecot/dovecot.conf").read_text()

    job = sieve.set_sieve(admin_user, enabled=True, external=False)
    apply.run_apply_job(job.pk)
    job.refresh_from_db()
    assert job.state == "done", job.log
    assert FIREWALL_RULES in job.changed_files
    assert "/etc/dovecot/dovecot.conf" not in job.changed_files  # only the firewall changed
    assert ACCEPT not in live.read_text() and DROP in live.read_text()
    assert Job.objects.filter(state="failed").count() == 0
