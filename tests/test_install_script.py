"""deploy/install.sh before it touches anything: it refuses another OS and
bad options, and changes nothing when it refuses. (The install itself runs in
a booted Debian 13 box: `make test-install`, tests/testbox.py.)

Every call here passes --check or must be refused: this machine is never
installed on.
"""

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
INSTALL = REPO / "deploy" / "install.sh"
GOOD = ["--hostname", "mail.example.com", "--ipv4", "203.0.113.5", "--admin-email", "admin@example.com"]


def os_release(tmp_path, text):
    path = tmp_path / "os-release"
    path.write_text(text)
    return path


def install(tmp_path, *args, release='ID=debian\nVERSION_ID="13"\n'):
    env = {**os.environ, "MAILPANEL_OS_RELEASE": str(os_release(tmp_path, release))}
    return subprocess.run(["bash", str(INSTALL), *args], capture_output=True, text=True, env=env, timeout=60)


def test_the_script_parses():
    assert subprocess.run(["bash", "-n", str(INSTALL)]).returncode == 0


@pytest.mark.parametrize(
    "release",
    ['ID=debian\nVERSION_ID="12"\n', 'ID=ubuntu\nVERSION_ID="24.04"\n', "", 'ID=debian\nVERSION_ID="14"\n'],
    ids=["debian-12", "ubuntu", "unknown", "debian-14"],
)
def test_another_os_is_refused_clearly_before_anything_else(tmp_path, release):
    proc = install(tmp_path, *GOOD, release=release)

    assert proc.returncode == 2
    assert "installs on Debian 13 (trixie) only" in proc.stderr
    assert "Nothing was changed" in proc.stderr
    assert proc.stdout == ""


@pytest.mark.skipif(os.geteuid() != 0, reason="install.sh refuses non-root first")
@pytest.mark.parametrize(
    "args, complaint",
    [
        (["--hostname", "mail.example.com;reboot", "--ipv4", "203.0.113.5", "--admin-email", "a@example.com"], "--hostname"),
        (["--hostname", "localhost", "--ipv4", "203.0.113.5", "--admin-email", "a@example.com"], "--hostname"),
        (["--hostname", "mail.example.com", "--ipv4", "203.0.113.256", "--admin-email", "a@example.com"], "--ipv4"),
        (["--hostname", "mail.example.com", "--ipv4", "203.0.113.5\n1.2.3.4", "--admin-email", "a@example.com"], "--ipv4"),
        (["--hostname", "mail.example.com", "--ipv4", "203.0.113.5", "--admin-email", 'a"@example.com'], "--admin-email"),
        (["--hostname", "mail.example.com", "--ipv4", "203.0.113.5"], "required"),
        ([*GOOD, "--offline"], "--offline needs --wheels"),
        ([*GOOD, "--acme-directory", "http://ca.example.com/dir"], "--acme-directory"),
        ([*GOOD, "--no-such-option"], "unknown option"),
    ],
)
def test_bad_options_are_refused_with_the_option_named(tmp_path, args, complaint):
    proc = install(tmp_path, "--check", *args)

    assert proc.returncode == 2, proc.stdout
    assert complaint in proc.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="install.sh refuses non-root first")
def test_check_accepts_good_options_and_changes_nothing(tmp_path):
    proc = install(tmp_path, "--check", *GOOD)

    assert proc.returncode == 0, proc.stderr
    assert "nothing was changed" in proc.stdout


def test_server_packages_add_what_production_needs_beside_the_mail_stack():
    names = set((REPO / "deploy" / "apt-packages-server.txt").read_text().split())

    assert {"nginx", "postgresql", "php-fpm", "python3-venv", "openssl"} <= names
    # one ACME mechanism: the panel's own (mail cert issue, services/certificates.py)
    assert "certbot" not in names
