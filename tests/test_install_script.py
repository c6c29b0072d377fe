"""deploy/install.sh before it touches anything: it refuses another OS and
bad options, and changes nothing when it refuses. (The install itself runs in
a booted Debian 13 box: `make test-install`, tests/testbox.py.)

Every call here passes --check or must be refused: this machine is never
installed on.
"""

import hashlib
import http.client
import os
import shlex
import shutil
import socket
import subprocess
import time
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


def install_functions(script: str, **variables: str) -> subprocess.CompletedProcess:
    """install.sh sourced (its functions, main not run) with these variables,
    then the bash `script`."""
    assigns = "".join(f"{name}={shlex.quote(value)}; " for name, value in variables.items())
    return subprocess.run(["bash", "-c", f"source {shlex.quote(str(INSTALL))}; {assigns}{script}"],
                          capture_output=True, text=True, timeout=60)


def nginx_site(**variables: str) -> str:
    proc = install_functions("nginx_site_text", **variables)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_the_panels_nginx_site_is_byte_for_byte_what_it_was():
    """The node's port-80 site reuses the panel's pieces; the panel's file
    stays the one earlier installs wrote (sha256 of its text before)."""
    text = nginx_site(HOSTNAME_ARG="mail.example.com")

    assert hashlib.sha256(text.encode()).hexdigest() == "cb67461592b5b68c153c679cf97b008a4b44aaa73052453ba75ba11730122747"
    assert "proxy_pass http://127.0.0.1:8000;" in text


def serve_port80(tmp_path, site: str):
    """The site's port-80 server in a real nginx on a loopback port."""
    from tests.mailstack import free_port

    port = free_port()
    site = site.replace("listen 80 default_server;", f"listen 127.0.0.1:{port};")
    site = site.replace("listen [::]:80 default_server;\n", "")
    port80 = site[site.index("server {"):site.index("\n}\n") + 3]  # the first server: port 80
    (tmp_path / "logs").mkdir(parents=True)
    (tmp_path / "nginx.conf").write_text(
        f"user root;\npid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/logs/error.log;\nevents {{}}\n"
        f"http {{\naccess_log off;\nclient_body_temp_path {tmp_path}/body;\n{port80}}}\n")
    proc = subprocess.Popen(["nginx", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-g", "daemon off;"],
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return proc, port
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("nginx did not listen")


def get(port: int, path: str) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path, headers={"Host": "mx2.example.com"})
    return conn.getresponse()


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nginx"), reason="nginx (deploy/apt-packages-test.txt), as root")
def test_a_mail_nodes_nginx_serves_only_the_acme_challenges_on_port_80(tmp_path):
    webroot = tmp_path / "acme"
    (webroot / ".well-known/acme-challenge").mkdir(parents=True)
    (webroot / ".well-known/acme-challenge/tok3n").write_text("tok3n.thumbprint")
    (webroot / "secret.txt").write_text("not served")
    site = nginx_site(NODE="b", HOSTNAME_ARG="mx2.example.com", ACME_WEBROOT=str(webroot))
    assert "443" not in site and "proxy_pass" not in site and "mail node b" in site
    proc, port = serve_port80(tmp_path / "nginx", site)
    try:
        answer = get(port, "/.well-known/acme-challenge/tok3n")
        assert (answer.status, answer.read()) == (200, b"tok3n.thumbprint")
        for path in ("/", "/secret.txt", "/.well-known/acme-challenge/../../secret.txt", "/admin/", "/webmail/"):
            answer = get(port, path)
            assert answer.status == 404, path
            assert b"not served" not in answer.read()
        # the panel's port 80 (same piece) redirects instead
        proc.terminate()
        proc.wait(timeout=10)
        panel = nginx_site(HOSTNAME_ARG="mail.example.com", ACME_WEBROOT=str(webroot))
        proc, port = serve_port80(tmp_path / "panel", panel)
        answer = get(port, "/admin/")
        assert (answer.status, answer.getheader("Location")) == (301, "https://mail.example.com/admin/")
        assert get(port, "/.well-known/acme-challenge/tok3n").read() == b"tok3n.thumbprint"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.parametrize("node, command", [("", "mail cert issue --server --force"),
                                           ("b", "mail cert issue --server --node b --force")])
def test_the_install_orders_its_host_names_certificate_when_given_a_ca(tmp_path, node, command):
    """A mail node queues its own host name's order (mailpanel mail cert
    issue --server --node NAME, run by its worker); the panel's is unchanged."""
    called = tmp_path / "called"
    proc = install_functions(f'mailpanel() {{ echo "$*" >{shlex.quote(str(called))}; echo queued; }}; acme',
                             NODE=node, HOSTNAME_ARG="mx2.example.com", TLS=str(tmp_path),
                             ACME_DIRECTORY="https://ca.example.com/dir")
    assert proc.returncode == 0, proc.stderr
    assert called.read_text().strip() == command
    assert "changed: ACME certificate for mx2.example.com" in proc.stdout
    called.unlink()
    proc = install_functions(f'mailpanel() {{ echo "$*" >{shlex.quote(str(called))}; }}; acme',
                             NODE=node, HOSTNAME_ARG="mx2.example.com", TLS=str(tmp_path), ACME_DIRECTORY="")
    assert proc.returncode == 0 and not called.exists()  # no CA given: no order
