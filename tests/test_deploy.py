"""The deploy files the helper ships with: sudoers line and systemd units."""

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
SUDOERS = DEPLOY / "sudoers.d" / "mailpanel"
SUDO_UNITS = [  # run the helper through sudo
    DEPLOY / "systemd" / "mailpanel-gunicorn.service",
    DEPLOY / "systemd" / "mailpanel-worker.service",
]
CHECKS_WORKER = DEPLOY / "systemd" / "mailpanel-checks-worker.service"
PANEL_UNITS = [*SUDO_UNITS, CHECKS_WORKER]
FIREWALL_UNIT = DEPLOY / "systemd" / "mailpanel-firewall.service"
UNITS = [*PANEL_UNITS, FIREWALL_UNIT]


def apt_packages():
    path = DEPLOY / "apt-packages.txt"
    return {
        line.split("#")[0].strip()
        for line in path.read_text().splitlines()
        if line.split("#")[0].strip()
    }


def test_sudo_and_systemd_are_installed_by_the_project():
    assert {"sudo", "systemd"} <= apt_packages()


def test_sudoers_file_passes_visudo():
    visudo = shutil.which("visudo", path="/usr/sbin:/usr/bin:/sbin:/bin")
    if visudo is None:
        assert "sudo" in apt_packages()
        pytest.skip("visudo missing (sudo is listed in deploy/apt-packages.txt)")

    proc = subprocess.run(
        [visudo, "-c", "-f", str(SUDOERS)], capture_output=True, text=True, timeout=30
    )

    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_sudoers_allows_only_the_helper_without_arguments():
    rules = [
        line
        for line in SUDOERS.read_text().splitlines()
        if line.strip() and not line.startswith(("#", "Defaults"))
    ]

    assert rules == [
        'mailpanel ALL=(root) NOPASSWD: /usr/local/sbin/mailpanel-helper ""'
    ]


def test_helper_is_executable_and_runs_on_the_system_python():
    helper = DEPLOY / "mailpanel_helper.py"
    assert helper.stat().st_mode & stat.S_IXUSR
    assert helper.read_text().startswith("#!/usr/bin/python3")


def _verifiable_copy(unit: Path, tmp_path: Path) -> Path:
    """The unit's own text, except that Exec* programs that are not installed
    here (the production virtualenv) become stubs, which verify insists on."""
    stubs = tmp_path / "stubs"
    stubs.mkdir(exist_ok=True)

    def stub(match):
        program = match.group(2)
        if os.access(program, os.X_OK):
            return match.group(0)
        fake = stubs / Path(program).name
        fake.write_text("#!/bin/sh\nexit 0\n")
        fake.chmod(0o755)
        return match.group(1) + str(fake)

    text = re.sub(r"(?m)^(Exec\w+=[-@:+!]*)(/\S+)", stub, unit.read_text())
    copy = tmp_path / unit.name
    copy.write_text(text)
    return copy


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_systemd_unit_passes_verify(unit, tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        assert "systemd" in apt_packages()
        pytest.skip(
            "systemd-analyze missing (systemd is listed in deploy/apt-packages.txt)"
        )

    proc = subprocess.run(
        [analyze, "verify", str(_verifiable_copy(unit, tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr.strip() == "", proc.stderr


@pytest.mark.parametrize("unit", PANEL_UNITS, ids=lambda u: u.name)
def test_units_run_as_mailpanel_from_opt_with_its_env(unit):
    text = unit.read_text()

    assert "\nUser=mailpanel\n" in text
    assert "\nWorkingDirectory=/opt/mailpanel\n" in text
    assert "\nEnvironmentFile=/etc/mailpanel/env\n" in text
    assert re.search(r"(?m)^ExecStart=/opt/mailpanel/\.venv/bin/", text)


@pytest.mark.parametrize("unit", SUDO_UNITS, ids=lambda u: u.name)
def test_units_that_run_the_helper_keep_sudo_working(unit):
    # sudo (setuid) must keep working for the helper
    assert "NoNewPrivileges=true" not in unit.read_text()


def test_checks_worker_cannot_gain_privileges():
    """It runs network checks that customers start and never the helper."""
    assert "\nNoNewPrivileges=true\n" in CHECKS_WORKER.read_text()


def worker_queues(unit: Path) -> list[str]:
    match = re.search(r"(?m)^ExecStart=\S+/python manage\.py db_worker --queue-name (\S+)$", unit.read_text())
    assert match, unit.name
    return match.group(1).split(",")


def test_applies_and_checks_have_a_worker_each():
    """An apply never waits behind a customer's checks: the two queues are
    served by two workers, and every queue the settings name has a worker."""
    from django.conf import settings

    default = worker_queues(DEPLOY / "systemd" / "mailpanel-worker.service")
    checks = worker_queues(CHECKS_WORKER)
    assert default == ["default"] and checks == ["checks"]
    assert sorted(default + checks) == sorted(settings.TASKS["default"]["QUEUES"])


def test_development_server_runs_a_worker_per_queue():
    script = (REPO / "scripts" / "run-dev.sh").read_text()
    assert re.search(r"db_worker [^\n]*--queue-name default", script)
    assert re.search(r"db_worker [^\n]*--queue-name checks", script)


def test_firewall_unit_loads_the_rendered_nft_file_at_boot():
    """Debian's nftables.conf does not include /etc/nftables.d/: this unit does."""
    from mailconf.render.firewall import FIREWALL_RULES

    text = FIREWALL_UNIT.read_text()
    assert f"ExecStart=/usr/sbin/nft -f {FIREWALL_RULES}" in text
    assert "WantedBy=multi-user.target" in text


def assert_timer_units(name: str, command: str, tmp_path: Path, interval: str = "") -> None:
    """deploy/systemd/<name>.service runs `manage.py <command>` as mailpanel from
    <name>.timer (OnUnitActiveSec=<interval> when given); both pass systemd-analyze verify."""
    service, timer = DEPLOY / "systemd" / f"{name}.service", DEPLOY / "systemd" / f"{name}.timer"
    assert re.search(rf"(?m)^ExecStart=\S+/python manage\.py {re.escape(command)}$", service.read_text())
    assert "\nUser=mailpanel\n" in service.read_text()
    assert f"\nOnUnitActiveSec={interval}" in timer.read_text()
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze missing (systemd is listed in deploy/apt-packages.txt)")
    shutil.copyfile(timer, tmp_path / timer.name)
    for unit in (_verifiable_copy(service, tmp_path), tmp_path / timer.name):
        proc = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0 and not proc.stderr.strip(), proc.stdout + proc.stderr
