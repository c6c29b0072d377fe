"""A booted Debian 13 box on this machine: `make test-install`.

    python -m tests.testbox            # the whole install test (make test-install)
    python -m tests.testbox --keep     # leave the box running afterwards (prints its PID)

What it does, with the measured recipes of shared/NOTES-debian-box.md:

1. A Debian 13 (trixie) minbase tree, debootstrapped once from the mirror the
   host's apt uses and cached as ``var/testbox/trixie-base.tar``.
2. A fresh copy per run (``var/testbox/run-<pid>/root``, mode 755: daemons that
   drop root must be able to enter it), into which the Debian packages of
   deploy/apt-packages*.txt are downloaded (``apt-get --download-only`` in a
   non-booted systemd-nspawn, with the host's network; cached in
   ``var/testbox/debs``) and the project's cp313 wheels (``pip download``,
   cached in ``var/testbox/wheels``), plus a copy of this checkout.
3. The box boots with systemd under ``systemd-nspawn --boot
   --private-network``: its own loopback only, no way out. Everything runs
   inside it through nsenter: ``deploy/install.sh --offline``, then the checks
   of tests/box_checks.py (run in the box's network namespace), a restart of
   the box, a second install that must change nothing, and an upgrade.

Standard library only; run as root. Timings are printed as it goes.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BOX_DIR = Path(os.environ.get("MAILPANEL_TESTBOX_DIR", REPO / "var" / "testbox"))
BASE_TARBALL = BOX_DIR / "trixie-base.tar"
DEB_CACHE = BOX_DIR / "debs"
WHEEL_CACHE = BOX_DIR / "wheels"
SUITE = "trixie"
BOOTSTRAP_INCLUDE = "systemd,systemd-sysv,dbus,iproute2"
# Where the checkout, the wheels and the checks go inside the box.
BOX_SRC = "/root/mailpanel-src"
BOX_WHEELS = "/root/mailpanel-wheels"
# What install.sh needs from the checkout: the code it copies and deploy/.
CHECKOUT_ITEMS = ("manage.py", "pyproject.toml", "panel", "mailadmin", "mailconf", "templates",
                  "static", "locale", "deploy")
# Only for the checks, never installed by install.sh: Let's Encrypt's test CA.
BOX_TEST_PACKAGES = ("pebble",)
HOSTNAME = "mail.example.test"
IPV4 = "192.0.2.25"  # TEST-NET-1: never routed, and the box has no network anyway
ADMIN_EMAIL = "admin@example.test"
BOX_ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root",
           "LANG=C.UTF-8", "TERM=dumb")
# Keep the box polite on a shared 2-core machine.
NICE = 10


def log(message: str) -> None:
    print(f"[testbox {time.strftime('%H:%M:%S')}] {message}", flush=True)


class Timer:
    """Named timings, printed at the end."""

    def __init__(self):
        self.spans: list[tuple[str, float]] = []

    @contextlib.contextmanager
    def __call__(self, name: str):
        start = time.monotonic()
        log(f"{name} …")
        try:
            yield
        finally:
            seconds = time.monotonic() - start
            self.spans.append((name, seconds))
            log(f"{name}: {seconds:.1f} s")

    def report(self) -> str:
        return "\n".join(f"  {name:<44} {seconds:7.1f} s" for name, seconds in self.spans)


def run(argv, *, check=True, capture=False, input=None, timeout=1800, env=None,
        text_mode=True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        argv, input=input, capture_output=capture, text=text_mode, timeout=timeout, env=env
    )
    if check and proc.returncode != 0:
        detail = (proc.stdout or "")[-3000:] + (proc.stderr or "")[-3000:] if capture else ""
        raise RuntimeError(f"{' '.join(map(str, argv))} exited {proc.returncode}\n{detail}")
    return proc


# -- host side ---------------------------------------------------------------


def host_mirror() -> str:
    """The Debian mirror the host's apt already uses (deb822 or one-line)."""
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.exists():
        match = re.search(r"(?m)^URIs:\s*(\S+)", sources.read_text())
        if match:
            return match.group(1)
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*.list"))]:
        if path.exists():
            match = re.search(r"(?m)^deb\s+(?:\[[^]]*\]\s+)?(\S+/debian)/?\s", path.read_text())
            if match:
                return match.group(1)
    raise RuntimeError("no Debian mirror found in the host's apt sources")


def ensure_host_tools() -> None:
    if os.geteuid() != 0:
        raise SystemExit("tests.testbox: run as root (debootstrap, systemd-nspawn, nsenter)")
    missing = [tool for tool in ("debootstrap", "systemd-nspawn", "nsenter")
               if shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin") is None]
    if missing:
        run(["bash", str(REPO / "scripts/install-system-packages.sh"),
             str(REPO / "tests/testbox-host-packages.txt")])


def base_tarball(timer: Timer) -> Path:
    """The cached minbase tree, built once."""
    if BASE_TARBALL.exists():
        return BASE_TARBALL
    BOX_DIR.mkdir(parents=True, exist_ok=True)
    build = BOX_DIR / f"build-{os.getpid()}"
    shutil.rmtree(build, ignore_errors=True)
    try:
        with timer("debootstrap trixie minbase (cached afterwards)"):
            run(["nice", "-n", str(NICE), "debootstrap", "--variant=minbase",
                 f"--include={BOOTSTRAP_INCLUDE}", SUITE, str(build), host_mirror()], capture=True)
        partial = BASE_TARBALL.with_suffix(".tar.partial")
        run(["tar", "-C", str(build), "--numeric-owner", "-cf", str(partial), "."])
        partial.rename(BASE_TARBALL)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return BASE_TARBALL


def package_list() -> list[str]:
    names: list[str] = []
    for name in ("apt-packages.txt", "apt-packages-server.txt"):
        for line in (REPO / "deploy" / name).read_text().splitlines():
            pkg = line.split("#")[0].strip()
            if pkg and pkg not in names:
                names.append(pkg)
    return names


def requirements() -> list[str]:
    import tomllib

    return sorted(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"])


def nspawn_offline_boot_args(root: Path) -> list[str]:
    return ["systemd-nspawn", "-q", "--register=no", "--keep-unit", "-D", str(root)]


def fetch_packages(root: Path) -> None:
    """Download (not install) the packages into the tree's apt cache with the
    host's network, through the tree's own apt: the same versions its apt
    will install offline. The .debs are kept in var/testbox/debs."""
    archives = root / "var/cache/apt/archives"
    archives.mkdir(parents=True, exist_ok=True)
    DEB_CACHE.mkdir(parents=True, exist_ok=True)
    for deb in DEB_CACHE.glob("*.deb"):
        with contextlib.suppress(FileExistsError):
            os.link(deb, archives / deb.name)
    apt = [*nspawn_offline_boot_args(root), "--pipe", "env", "DEBIAN_FRONTEND=noninteractive",
           "apt-get", "-q", "-y", "--no-install-recommends"]
    download = [*apt, "install", "--download-only", *package_list(), *BOX_TEST_PACKAGES]
    if run(download, check=False, capture=True).returncode != 0:
        run([*apt, "update"], capture=True)  # the cached lists are older than the mirror
        run(download, capture=True)
    for deb in archives.glob("*.deb"):
        with contextlib.suppress(FileExistsError):
            os.link(deb, DEB_CACHE / deb.name)


# Pure-Python dependencies published only as an sdist: built into wheels here
# (py3-none-any), since a download for another platform takes wheels only.
SDIST_ONLY = ("pyspf",)


def fetch_wheels() -> Path:
    """cp313 manylinux wheels of the project's dependencies, for an offline
    `pip install --no-index --find-links`."""
    WHEEL_CACHE.mkdir(parents=True, exist_ok=True)
    wanted = [r for r in requirements() if re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() in SDIST_ONLY]
    if wanted:
        run([sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "--no-deps",
             "--wheel-dir", str(WHEEL_CACHE), *wanted], capture=True, timeout=900)
    run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
         "--find-links", str(WHEEL_CACHE),
         "--dest", str(WHEEL_CACHE), "--only-binary=:all:", "--python-version", "3.13",
         "--implementation", "cp", "--abi", "cp313", "--abi", "abi3", "--abi", "none",
         "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
         "--platform", "manylinux2014_x86_64", "--platform", "any",
         *requirements()], capture=True, timeout=900)
    return WHEEL_CACHE


def copy_checkout(root: Path) -> None:
    """CHECKOUT_ITEMS as committed (git archive HEAD): what CI tests, whatever
    else is half-done in a shared working tree. MAILPANEL_TESTBOX_SOURCE=worktree
    (or a folder that is not a git checkout) copies the working files instead."""
    target = root / BOX_SRC.lstrip("/")
    target.mkdir(parents=True, exist_ok=True)
    if (REPO / ".git").exists() and os.environ.get("MAILPANEL_TESTBOX_SOURCE") != "worktree":
        archive = run(["git", "-C", str(REPO), "archive", "--format=tar", "HEAD", "--", *CHECKOUT_ITEMS],
                      capture=True, text_mode=False).stdout
        run(["tar", "-C", str(target), "-xf", "-"], input=archive, text_mode=False)
        return
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.mo")
    for item in CHECKOUT_ITEMS:
        source, dest = REPO / item, target / item
        if source.is_dir():
            shutil.copytree(source, dest, ignore=ignore, dirs_exist_ok=True)
        else:
            shutil.copy2(source, dest)


# -- the box -----------------------------------------------------------------


@dataclasses.dataclass
class Box:
    root: Path
    name: str
    log_path: Path
    process: subprocess.Popen | None = None

    @property
    def leader(self) -> int:
        """PID of the box's PID 1 (systemd), the nspawn process's child."""
        assert self.process is not None
        for _ in range(300):
            children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
            pids = children.read_text().split() if children.exists() else []
            if pids:
                return int(pids[0])
            if self.process.poll() is not None:
                raise RuntimeError(f"systemd-nspawn exited {self.process.returncode}: see {self.log_path}")
            time.sleep(0.1)
        raise RuntimeError("the box's init never started")

    def boot(self) -> None:
        self.root.chmod(0o755)
        out = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            ["nice", "-n", str(NICE), "systemd-nspawn", "-q", "-D", str(self.root), "--boot",
             "--register=no", "--keep-unit", "--private-network", f"--machine={self.name}"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
        out.close()
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            state = self.sh("systemctl is-system-running --wait", check=False, timeout=180).stdout.strip()
            if state in ("running", "degraded"):
                if state == "degraded":
                    failed = self.sh("systemctl --failed --no-legend --plain", check=False).stdout
                    log(f"box is degraded: {failed.strip()}")
                return
            time.sleep(1)
        raise RuntimeError(f"the box did not boot: see {self.log_path}")

    def nsenter(self, argv, **kwargs) -> subprocess.CompletedProcess:
        # A clean environment: nothing of the host's (PIP_*, proxies, locale) leaks in.
        return run(["nsenter", "-t", str(self.leader), "-a", "--", "env", "-i", *BOX_ENV, *argv], **kwargs)

    def sh(self, script: str, *, check=True, timeout=900, input=None) -> subprocess.CompletedProcess:
        """A shell command inside the box (its mounts, network, PIDs, users)."""
        return self.nsenter(["/bin/bash", "-c", script], check=check, capture=True,
                            timeout=timeout, input=input)

    def in_netns(self, argv, **kwargs) -> subprocess.CompletedProcess:
        """A host program in the box's network namespace only (its loopback)."""
        return run(["nsenter", "-t", str(self.leader), "-n", "--", *argv], **kwargs)

    def stop(self) -> None:
        """Power off from inside; then signal the nspawn process we started."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(Exception):
            self.sh("systemctl poweroff --no-block", check=False, timeout=30)
        try:
            self.process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            # nspawn stops the box on SIGTERM (it is our child, by its PID)
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def remove_stale_runs() -> None:
    """Trees of earlier runs whose harness is gone (killed, crashed)."""
    for work in BOX_DIR.glob("run-*"):
        pid = work.name.removeprefix("run-")
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(work, ignore_errors=True)


def prepare_box(timer: Timer) -> Box:
    remove_stale_runs()
    tarball = base_tarball(timer)
    work = BOX_DIR / f"run-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    root = work / "root"
    root.mkdir(parents=True)
    with timer("unpack a fresh tree"):
        run(["tar", "-C", str(root), "--numeric-owner", "-xf", str(tarball)])
        root.chmod(0o755)  # a 0700 root breaks every daemon that drops root (200/CHDIR)
    with timer("download .debs into the tree (host network)"):
        fetch_packages(root)
    with timer("download cp313 wheels (host network)"):
        wheels = fetch_wheels()
        shutil.copytree(wheels, root / BOX_WHEELS.lstrip("/"))
    copy_checkout(root)
    # The box's own name resolves locally (sudo, Exim and nginx look it up).
    (root / "etc/hostname").write_text("mail\n")
    (root / "etc/hosts").write_text(
        f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{HOSTNAME} mail\n"
    )
    return Box(root=root, name=f"mailpanel-test-{os.getpid()}", log_path=work / "console.log")


def remove_box(box: Box) -> None:
    shutil.rmtree(box.root.parent, ignore_errors=True)


# -- the install test ----------------------------------------------------------

INSTALL = (f"bash {BOX_SRC}/deploy/install.sh --hostname {HOSTNAME} --ipv4 {IPV4}"
           f" --admin-email {ADMIN_EMAIL} --offline --wheels {BOX_WHEELS}")
SIEVE_SCRIPT = """require ["fileinto", "mailbox"];
if header :contains "subject" "invoice" {
  fileinto :create "Invoices";
  stop;
}
"""


class Checks:
    """Each check: a name, pass or fail with the reason; all counted."""

    def __init__(self):
        self.results: list[tuple[str, bool, str]] = []

    def __call__(self, name: str, function, *args) -> bool:
        start = time.monotonic()
        try:
            detail = function(*args) or ""
            ok = True
        except (AssertionError, RuntimeError, subprocess.TimeoutExpired, KeyError, ValueError) as exc:
            detail, ok = f"{type(exc).__name__}: {exc}", False
        seconds = time.monotonic() - start
        self.results.append((name, ok, detail))
        log(f"{'PASS' if ok else 'FAIL'} {name} ({seconds:.1f} s){'' if ok else ': ' + str(detail)[:2000]}")
        return ok

    @property
    def failed(self) -> int:
        return sum(1 for _, ok, _ in self.results if not ok)


@dataclasses.dataclass
class Scenario:
    box: Box
    passwords: dict[str, str] = dataclasses.field(default_factory=dict)

    # -- helpers -----------------------------------------------------------

    def client(self, check: str, password: str = "", timeout=180, **args) -> str:
        """tests/box_checks.py in the box's network namespace."""
        args = {"hostname": HOSTNAME, "cafile": str(self.box.root / "etc/mailpanel/tls/fullchain.pem"), **args}
        import json

        proc = self.box.in_netns(
            [sys.executable, str(REPO / "tests/box_checks.py"), check, json.dumps(args)],
            check=False, capture=True, timeout=timeout,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "BOX_PASSWORD": password},
        )
        assert proc.returncode == 0, (proc.stdout + proc.stderr).strip()[-1500:]
        return proc.stdout.strip()

    def mailpanel(self, args: str, stdin: str | None = None, check=True) -> subprocess.CompletedProcess:
        return self.box.sh(f"mailpanel {args}", input=stdin, check=check, timeout=300)

    def wait_for_applies(self, timeout=120) -> str:
        """Until every apply job the panel queued is done (the worker runs them)."""
        code = ("from mailadmin.models import Job; "
                "print(' '.join(Job.objects.order_by('pk').values_list('state', flat=True)))")
        deadline = time.monotonic() + timeout
        while True:
            states = self.mailpanel(f'shell -v 0 -c "{code}"').stdout.split()
            if states and all(state not in ("pending", "running") for state in states):
                assert all(state == "done" for state in states), f"apply jobs: {states}"
                return " ".join(states)
            if time.monotonic() > deadline:
                raise AssertionError(f"apply jobs still {states} after {timeout} s")
            time.sleep(1)

    def active(self, units) -> str:
        states = self.box.sh("systemctl is-active " + " ".join(units), check=False).stdout.split()
        bad = [f"{unit}={state}" for unit, state in zip(units, states) if state != "active"]
        assert not bad, f"not active: {bad}"
        return f"{len(units)} units active"

    def units(self) -> list[str]:
        php = self.box.sh("systemctl list-unit-files --no-legend 'php*-fpm.service' | awk '{print $1}'").stdout.split()
        units = self.box.root / BOX_SRC.lstrip("/") / "deploy/systemd"  # the box's copy
        # Templates (mailpanel-node-worker@.service) run per instance, on mail nodes only.
        ours = [p.name for p in sorted(units.glob("*.service")) if "[Install]" in p.read_text() and "@." not in p.name]
        timers = [p.name for p in sorted(units.glob("*.timer"))]
        return ["exim4", "dovecot", "nginx", "postgresql", *php, *ours, *timers]

    # -- checks ------------------------------------------------------------

    def first_install(self, output: str) -> str:
        assert "Created the first admin." in output, output[-2000:]
        match = re.search(r"Password: (\S+)", output)
        assert match, "no admin password printed"
        self.passwords["admin"] = match.group(1)
        listing = self.box.sh(
            "stat -c '%n %U:%G %a' /etc/mailpanel/env /etc/mailpanel/layout.json /etc/sudoers.d/mailpanel"
            " /usr/local/sbin/mailpanel-helper /usr/local/lib/mailpanel-helper/mailconf"
            " /usr/local/lib/mailpanel-helper/mailconf/render/dovecot.py /etc/mailpanel/tls"
            " /etc/mailpanel/tls/privkey.pem"
            " /usr/local/lib/mailpanel-helper/mailpanel_helper.py /usr/local/lib/mailpanel-helper/__pycache__"
            " /usr/local/lib/mailpanel-helper/__pycache__/mailpanel_helper.cpython-313.pyc"
        ).stdout.split("\n")
        expected = [
            "/etc/mailpanel/env root:mailpanel 640", "/etc/mailpanel/layout.json root:root 644",
            "/etc/sudoers.d/mailpanel root:root 440", "/usr/local/sbin/mailpanel-helper root:root 755",
            "/usr/local/lib/mailpanel-helper/mailconf root:root 755",
            "/usr/local/lib/mailpanel-helper/mailconf/render/dovecot.py root:root 644",
            # the panel reads the SNI index and public chains there; keys protect themselves
            "/etc/mailpanel/tls root:root 755",
            "/etc/mailpanel/tls/privkey.pem root:Debian-exim 640",
            # the helper's bytecode compiled by install.sh, root's like its source
            "/usr/local/lib/mailpanel-helper/mailpanel_helper.py root:root 644",
            "/usr/local/lib/mailpanel-helper/__pycache__ root:root 755",
            "/usr/local/lib/mailpanel-helper/__pycache__/mailpanel_helper.cpython-313.pyc root:root 644",
        ]
        assert [line for line in listing if line] == expected, listing
        self.box.sh("visudo -c -q")
        env = self.box.sh("cat /etc/mailpanel/env").stdout
        assert self.passwords["admin"] not in env and "DJANGO_SECRET_KEY=\"" in env
        layout = self.box.sh("cat /etc/mailpanel/layout.json").stdout
        assert '"dovecot_version": "2.4"' in layout, layout
        assert '"dovecot_log_path": "/var/log/dovecot.log"' in layout, layout
        return "admin login printed once; files root-owned; visudo -c passes"

    def dovecot_24(self) -> str:
        """The live dovecot.conf is the 2.4 dialect, and every 2.4 variant
        the renderer makes passes Debian 13's doveconf -n."""
        head = self.box.sh("head -1 /etc/dovecot/dovecot.conf; dovecot --version").stdout.split("\n")
        assert head[0] == "dovecot_config_version = 2.4.0", head
        assert head[1].startswith("2.4."), head
        self.box.sh("doveconf -n >/dev/null")
        sys.path.insert(0, str(REPO))
        from mailconf.params import CodeParams
        from mailconf.render.dovecot import DOVECOT_CONF, render_dovecot
        from mailconf.snapshot import Layout

        folder = self.box.root / "root/dovecot-variants"
        folder.mkdir(exist_ok=True)
        names = []
        for sieve in (False, True):
            for tls in (False, True):
                for rootless in ("", "nobody:nogroup"):
                    layout = Layout(dovecot_version="2.4", dovecot_run_as=rootless,
                                    tls_certificate="/etc/mailpanel/tls/fullchain.pem" if tls else "",
                                    tls_privatekey="/etc/mailpanel/tls/privkey.pem" if tls else "")
                    text = render_dovecot(CodeParams(hostname=HOSTNAME, sieve_enabled=sieve), layout)
                    name = f"s{int(sieve)}-t{int(tls)}-r{int(bool(rootless))}.conf"
                    (folder / name).write_bytes(text[DOVECOT_CONF].content)
                    names.append(name)
        # A node with mail peers on other machines (domain moves): the doveadm
        # listener, doveadm_port and the password named by file (2.4 names).
        from mailconf.peers import DOVEADM_PASSWORD_FILE, parse_mail_peers

        peers = parse_mail_peers(json.dumps({
            "n1": {"this_node": True, "address": "192.0.2.1", "port": 24245},
            "n2": {"host": "n2.example.test", "address": "192.0.2.2", "port": 24245}}).encode())
        layout = Layout(dovecot_version="2.4", tls_certificate="/etc/mailpanel/tls/fullchain.pem",
                        tls_privatekey="/etc/mailpanel/tls/privkey.pem")
        text = render_dovecot(CodeParams(hostname=HOSTNAME, sieve_enabled=True), layout, peers=peers)
        (folder / "peers.conf").write_bytes(text[DOVECOT_CONF].content)
        names.append("peers.conf")
        self.box.sh(f"umask 077; [ -e {DOVEADM_PASSWORD_FILE} ] || {{ head -c 48 /dev/urandom | base64 -w0 >"
                    f" {DOVEADM_PASSWORD_FILE}; touch /root/dovecot-variants/.made-password; }}")
        try:
            for name in names:
                self.box.sh(f"doveconf -n -c /root/dovecot-variants/{name} >/dev/null")
        finally:
            self.box.sh(f"[ ! -e /root/dovecot-variants/.made-password ] || rm -f {DOVEADM_PASSWORD_FILE}"
                        " /root/dovecot-variants/.made-password")
        return f"live config is 2.4; {len(names)} variants (one with mail peers) pass doveconf -n"

    def add_domain_and_accounts(self) -> str:
        self.mailpanel(f"mail domain add admin example.test")
        verify = self.mailpanel("mail domain verify example.test --skip-dns", check=False)
        for user in ("info", "second"):
            self.passwords[user] = base64.b32encode(os.urandom(15)).decode().lower()
            self.mailpanel(f"mail account add {user}@example.test", stdin=self.passwords[user] + "\n")
        states = self.wait_for_applies()
        passwd = self.box.sh("stat -c '%U:%G %a' /etc/exim4/domains/example.test/passwd;"
                             " cut -d: -f1 /etc/exim4/domains/example.test/passwd").stdout.split()
        assert passwd == ["root:Debian-exim", "640", "info", "second"], passwd
        return f"jobs {states}; passwd written through sudo and the helper ({verify.stdout.strip()})"

    def smtp_to_imaps(self) -> str:
        subject, tagged = f"port 25 {time.time_ns()}", f"tagged {time.time_ns()}"
        for to, what in (("info@example.test", subject), ("info+news@example.test", tagged)):
            self.client("smtp-send", port=25, **{"from": "someone@remote.example.test", "to": to,
                                                  "subject": what})
        got = self.client("imap-wait", self.passwords["info"], user="info@example.test", subject=subject)
        self.client("imap-wait", self.passwords["info"], user="info@example.test", subject=tagged)
        return f"{got}; info+news@ lands in info's INBOX too"

    def log_search(self) -> str:
        """"Where is my mail?" on Debian 13 (no rsyslog, no /var/log/mail.log):
        Exim's reception and Dovecot's own log (log_path) saying where the
        LMTP delivery of the mail smtp_to_imaps sent went."""
        out = self.mailpanel("mail log search info@example.test --days 1").stdout
        assert "[exim]" in out and "<= someone@remote.example.test" in out, out[-2000:]
        assert "[dovecot]" in out and "saved mail to INBOX" in out, out[-2000:]
        self.box.sh("test -s /var/log/dovecot.log && logrotate -d /etc/logrotate.d/mailpanel-dovecot")
        return f"{out.count('[exim]')} Exim and {out.count('[dovecot]')} Dovecot lines"

    def submission(self) -> str:
        subject = f"submission {time.time_ns()}"
        self.client("smtp-send", self.passwords["info"], port=587, user="info@example.test",
                    **{"from": "info@example.test", "to": "second@example.test", "subject": subject})
        self.passwords["last-submission"] = subject
        got = self.client("imap-wait", self.passwords["second"], user="second@example.test", subject=subject)
        self.client("imap-login-fails", "wrong password", user="info@example.test")
        mixed = self.client("imap-wait", self.passwords["second"], user="Second@Example.TEST", subject=subject)
        return f"{got}; wrong password refused; Second@Example.TEST logs in: {mixed}"

    def web(self) -> str:
        self.client("http-port-80")
        return self.client("web-login", self.passwords["admin"], user="admin", expect="example.test")

    def webmail_and_autoconfig(self) -> str:
        """A stand-in SnappyMail release installed through the panel: its
        index.php reads the rendered default.json and tries /etc/passwd."""
        import hashlib
        import io
        import tarfile

        index = (b'<?php $d = json_decode(file_get_contents(__DIR__ . "/data/_data_/_default_/domains/default.json"), true);'
                 b' echo "webmail imap=" . $d["IMAP"]["host"] . " passwd=" . var_export(@file_get_contents("/etc/passwd") !== false, true);')
        files = {"index.php": index, "_include.php": b"<?php\n", "data/.htaccess": b"Require all denied\n",
                 "snappymail/v/2.38.2/index.php": b"<?php\n"}
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for name in ("data", "snappymail", "snappymail/v", "snappymail/v/2.38.2"):
                info = tarfile.TarInfo("./" + name)
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            for name, content in files.items():
                info = tarfile.TarInfo("./" + name)
                info.size, info.mode = len(content), 0o644
                tar.addfile(info, io.BytesIO(content))
        data = buf.getvalue()
        # the worker has a private /tmp: the tarball goes where it can read
        (self.box.root / "var/lib/mailpanel/snappymail-test.tar.gz").write_bytes(data)
        self.box.sh("chown mailpanel /var/lib/mailpanel/snappymail-test.tar.gz")
        self.mailpanel("mail snappymail install --tarball /var/lib/mailpanel/snappymail-test.tar.gz"
                       f" --sha256 {hashlib.sha256(data).hexdigest()}")
        self.wait_for_applies()
        got = self.client("webmail", domain="example.test", expect="webmail imap=localhost passwd=false")
        auto = self.client("client-autoconfig", domain="example.test")
        # Roundcube, the admin's second choice (Debian's package), then back.
        self.mailpanel("mail webmail set roundcube")
        self.wait_for_applies()
        roundcube = self.client("roundcube")
        self.mailpanel("mail webmail set snappymail")
        self.wait_for_applies()
        self.client("webmail", domain="example.test", expect="webmail imap=localhost passwd=false")
        return f"{got}; {auto}; {roundcube}"

    def quota_tempfail(self) -> str:
        """Over quota on Dovecot 2.4: 452, Exim keeps the message; a higher quota delivers it."""
        self.mailpanel("mail account quota info@example.test 1")
        self.wait_for_applies()
        subject = f"too big {time.time_ns()}"
        self.client("smtp-send", port=25, size_kb=1500,
                    **{"from": "someone@remote.example.test", "to": "info@example.test", "subject": subject})
        deadline = time.monotonic() + 60
        while "452" not in (line := self.box.sh(
                "grep -F '== info@example.test' /var/log/exim4/mainlog | tail -1", check=False).stdout):
            assert time.monotonic() < deadline, "no deferral in Exim's mainlog"
            time.sleep(1)
        queued = self.box.sh("exim -bpc").stdout.strip()
        assert queued == "1", f"queue: {queued}"
        assert "**" not in self.box.sh("cat /var/log/exim4/mainlog").stdout, "a message bounced"
        self.mailpanel("mail account quota info@example.test 10")
        self.wait_for_applies()
        self.box.sh("exim -qff")
        self.client("imap-wait", self.passwords["info"], user="info@example.test", subject=subject)
        return f"deferred with 452 ({line.strip()[-80:]}), delivered after the quota grew"

    def sieve(self) -> str:
        self.mailpanel("mail sieve enable")
        self.wait_for_applies()
        self.client("sieve-put", self.passwords["second"], user="second@example.test", script=SIEVE_SCRIPT)
        subject = f"Your invoice {time.time_ns()}"
        self.client("smtp-send", port=25, **{"from": "billing@remote.example.test", "to": "second@example.test",
                                              "subject": subject})
        return self.client("imap-wait", self.passwords["second"], user="second@example.test",
                           subject=subject, folder="Invoices")

    def after_restart(self) -> str:
        units = self.active(self.units())
        table = self.box.sh("nft list table inet mailpanel").stdout
        assert "dport 4190" in table, table
        kept = self.client("imap-wait", self.passwords["second"], user="second@example.test",
                           subject=self.passwords["last-submission"])
        return f"{units}; nftables table loaded; mail kept: {kept}"

    def second_install(self) -> str:
        output = self.box.sh(INSTALL, timeout=1800).stdout
        assert "nothing changed" in output, output[-3000:]
        assert "Password:" not in output
        return output.strip().splitlines()[-1]

    def upgrade(self) -> str:
        """A newer checkout (a changed template): --upgrade copies it, restarts
        the panel, applies, and the data is still there."""
        marker = f"<!-- upgraded {time.time_ns()} -->"
        template = self.box.root / BOX_SRC.lstrip("/") / "templates/registration/login.html"
        if not template.exists():
            template = next((self.box.root / BOX_SRC.lstrip("/") / "templates").rglob("*.html"))
        template.write_text(template.read_text() + marker + "\n")
        output = self.box.sh(f"bash {BOX_SRC}/deploy/install.sh --upgrade --offline --wheels {BOX_WHEELS}",
                             timeout=1800).stdout
        assert "changed: /opt/mailpanel/templates" in output, output[-3000:]
        assert "restarted mailpanel-gunicorn.service" in output, output[-3000:]
        assert marker in self.box.sh(f"cat /opt/mailpanel/templates/{template.relative_to(self.box.root / BOX_SRC.lstrip('/') / 'templates')}").stdout
        domains = self.mailpanel("mail domain list").stdout
        assert "example.test" in domains, domains
        self.active(self.units())
        self.client("web-login", self.passwords["admin"], user="admin", expect="example.test")
        kept = self.client("imap-wait", self.passwords["second"], user="second@example.test",
                           subject=self.passwords["last-submission"])
        return f"code replaced and panel restarted; domain, accounts and mail kept: {kept}"


    def acme(self) -> str:
        """A real ACME CA in the box (Pebble, resolving every name to
        127.0.0.1, validating HTTP-01 on port 80 through nginx): --upgrade with
        --acme-directory gets the certificate, and Exim, Dovecot and nginx
        serve it at once."""
        self.box.sh(PEBBLE_SETUP, timeout=300)
        output = self.box.sh(
            f"bash {BOX_SRC}/deploy/install.sh --upgrade --offline --wheels {BOX_WHEELS}"
            " --acme-directory https://127.0.0.1:14000/dir --acme-ca-bundle /root/pebble/cert.pem",
            timeout=600).stdout
        assert "changed: ACME certificate" in output, output[-3000:]
        issuers = {}
        for port, starttls in ((443, ""), (993, ""), (465, ""), (587, "-starttls smtp")):
            issuers[port] = self.box.sh(
                f"openssl s_client {starttls} -connect 127.0.0.1:{port} -servername {HOSTNAME} </dev/null"
                " 2>/dev/null | openssl x509 -noout -issuer", check=False).stdout.strip()
        assert all("Pebble" in issuer for issuer in issuers.values()), issuers
        again = self.box.sh(INSTALL, timeout=600).stdout
        assert "nothing changed" in again, again[-2000:]
        return f"served by nginx, Dovecot and Exim: {issuers[443]}; the next install changes nothing"

    def domain_certificate(self) -> str:
        """A mail domain's own certificate from Pebble (issue #14, #15 on
        Debian 13): its four names resolve to the box's address for the
        panel's resolver (a second pebble-challtestsrv answering 192.0.2.25,
        the --ipv4 of the install; Pebble's own resolves every name to
        127.0.0.1 as for the host name); `mail cert issue DOMAIN`; then the
        chains served by SNI (Dovecot 2.4 local_name, Exim 4.98
        $tls_in_sni, nginx's per-name sites) checked from the client side,
        and Dovecot restarted on that configuration."""
        import json

        self.box.sh(PANEL_DNS_SETUP, timeout=120)
        self.mailpanel(f"mail domain add admin {DOMAIN_WITH_CERT}")
        self.mailpanel(f"mail domain verify {DOMAIN_WITH_CERT} --skip-dns", check=False)
        self.wait_for_applies()
        out = self.box.sh(f"MAILPANEL_RESOLVERS=127.0.0.1:8054 mailpanel mail cert issue {DOMAIN_WITH_CERT} --json",
                          check=False, timeout=300)
        assert out.returncode == 0, (out.stdout + out.stderr)[-2000:]
        issued = json.loads(out.stdout)
        assert issued.get("issued") is True, issued
        wanted = [f"{prefix}.{DOMAIN_WITH_CERT}" for prefix in ("autoconfig", "mail", "mta-sts", "webmail")]
        assert sorted(issued.get("names", [])) == wanted, issued
        self.wait_for_applies()
        conf = self.box.sh("grep -c '^local_name ' /etc/dovecot/dovecot.conf; doveconf -n >/dev/null;"
                           " cat /etc/mailpanel/tls/sni_names; ls /etc/nginx/conf.d/").stdout
        assert conf.split("\n", 1)[0] == "4", conf
        assert "mailpanel-tls-sites.conf" in conf, conf
        args = {"domain": DOMAIN_WITH_CERT, "webmail_expect": "webmail imap=",
                "pebble_listener_ca": str(self.box.root / "root/pebble/cert.pem")}
        served = self.client("domain-certificate", **args)
        self.box.sh("systemctl restart dovecot")
        self.active(["dovecot"])
        after = self.client("sni-993", name=f"mail.{DOMAIN_WITH_CERT}", **args)
        return f"issued {issued.get('names')}; {served}; after restart: {after}"

    def certificate_removal(self) -> str:
        """cert_remove (what deleting the domain does) takes the names out of
        the index but leaves the files while dovecot.conf and nginx's sites
        name them: Dovecot 2.4 and nginx restart in between (with the files
        gone they did not: status 89 and "cannot load certificate"); the next
        apply renders both without them and the helper deletes them."""
        import json

        answer = json.loads(self.box.sh(
            f"""echo '{{"op": "cert_remove", "domain": "{DOMAIN_WITH_CERT}"}}' | /usr/local/sbin/mailpanel-helper"""
        ).stdout)
        assert answer.get("kept_until_apply") is True, answer
        folder = f"/etc/mailpanel/tls/domains/{DOMAIN_WITH_CERT}"
        self.box.sh(f"test -s {folder}/fullchain.pem && grep -q '^local_name mail.{DOMAIN_WITH_CERT} ' "
                    "/etc/dovecot/dovecot.conf")
        self.box.sh("systemctl restart dovecot nginx", check=False)
        self.active(["dovecot", "nginx"])
        out = self.mailpanel("mail config apply").stdout
        left = self.box.sh(f"ls /etc/mailpanel/tls/domains; grep -c '^local_name' /etc/dovecot/dovecot.conf;"
                           " ls /etc/nginx/conf.d", check=False).stdout
        assert DOMAIN_WITH_CERT not in left and "mailpanel-tls-sites.conf" not in left, left
        self.box.sh("systemctl restart dovecot nginx", check=False)
        self.active(["dovecot", "nginx"])
        return f"kept until the apply ({out.strip().splitlines()[-1]}), then deleted; Dovecot and nginx restart both times"


PEBBLE_SETUP = f"""set -e
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q --no-download --no-install-recommends pebble >/dev/null
mkdir -p /root/pebble && cd /root/pebble
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
  -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" -keyout key.pem -out cert.pem 2>/dev/null
cat >pebble.json <<'EOF'
{{"pebble": {{"listenAddress": "127.0.0.1:14000", "managementListenAddress": "127.0.0.1:15000",
  "certificate": "/root/pebble/cert.pem", "privateKey": "/root/pebble/key.pem",
  "httpPort": 80, "tlsPort": 5001, "ocspResponderURL": "", "externalAccountBindingRequired": false}}}}
EOF
systemd-run -q --unit pebble-dns pebble-challtestsrv -defaultIPv4 127.0.0.1 -defaultIPv6 "" \
  -dns01 127.0.0.1:8053 -http01 "" -tlsalpn01 "" -https01 "" -management 127.0.0.1:8055
systemd-run -q --unit pebble --setenv=PEBBLE_VA_NOSLEEP=1 --setenv=PEBBLE_WFE_NONCEREJECT=0 \
  pebble -config /root/pebble/pebble.json -dnsserver 127.0.0.1:8053
for i in $(seq 100); do ss -ltn | grep -q 127.0.0.1:14000 && exit 0; sleep 0.2; done
journalctl -u pebble -u pebble-dns --no-pager | tail -20
exit 1
"""


# A mail domain with its own certificate, and the panel's resolver for it: every
# name is the box's --ipv4 (Pebble's resolver keeps sending HTTP-01 to loopback).
DOMAIN_WITH_CERT = "shop.test"
PANEL_DNS_SETUP = f"""set -e
systemd-run -q --unit panel-dns pebble-challtestsrv -defaultIPv4 {IPV4} -defaultIPv6 "" \
  -dns01 127.0.0.1:8054 -http01 "" -tlsalpn01 "" -https01 "" -management 127.0.0.1:8056
for i in $(seq 100); do ss -lun | grep -q 127.0.0.1:8054 && exit 0; sleep 0.2; done
journalctl -u panel-dns --no-pager | tail -20
exit 1
"""


def install_test(keep: bool = False) -> int:
    timer, checks = Timer(), Checks()
    # SIGTERM (CI's timeout, Ctrl+C's cousin) still stops the box: finally runs.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    ensure_host_tools()
    box = prepare_box(timer)
    scenario = Scenario(box)
    try:
        with timer("boot the box"):
            box.boot()
        with timer("install.sh --offline (first run)"):
            first = box.sh(INSTALL, timeout=1800, check=False)
        (box.root.parent / "install-1.log").write_text(first.stdout + first.stderr)
        if not checks("install.sh --offline exits 0", lambda: None if first.returncode == 0 else
                      (_ for _ in ()).throw(AssertionError((first.stdout + first.stderr)[-3000:]))):
            return finish(timer, checks, box, keep)
        with timer("checks after the install"):
            checks("first install: admin login once, root-owned files, visudo", scenario.first_install, first.stdout)
            checks("every unit active", lambda: scenario.active(scenario.units()))
            checks("Dovecot 2.4: live config and all variants pass doveconf -n", scenario.dovecot_24)
            if checks("mailpanel mail domain add / account add → applied through sudo", scenario.add_domain_and_accounts):
                checks("SMTP 25 → IMAPS 993 read back", scenario.smtp_to_imaps)
                checks("log search: Exim's main log and Dovecot's own log (no rsyslog)", scenario.log_search)
                checks("submission 587 STARTTLS + AUTH → second account", scenario.submission)
                checks("Dovecot 2.4 over quota: 452, queued, delivered later", scenario.quota_tempfail)
                checks("ManageSieve upload files mail into a folder", scenario.sieve)
            checks("HTTP 80 redirects (not ACME); login over HTTPS through nginx", scenario.web)
            checks("webmail at https://<host name>/webmail/ through its PHP-FPM; autoconfig and autodiscover answer",
                   scenario.webmail_and_autoconfig)
        with timer("restart the box"):
            box.stop()
            box.boot()
        with timer("checks after the restart"):
            checks("after a restart: units, firewall table, mail still there", scenario.after_restart)
        with timer("install.sh again (must change nothing)"):
            checks("second install.sh changes nothing", scenario.second_install)
        with timer("install.sh --upgrade from a newer checkout"):
            checks("--upgrade: new code, restart, data kept", scenario.upgrade)
        with timer("ACME certificate from Pebble in the box"):
            acme = checks("--acme-directory: certificate issued and served on 443, 993, 465, 587", scenario.acme)
        if acme:
            with timer("a mail domain's certificate by SNI"):
                checks("mail cert issue DOMAIN: its chain by SNI on 993/4190 (Dovecot 2.4 local_name),"
                       " 25/465/587 (Exim); webmail./autoconfig./mta-sts. over HTTPS; Dovecot restarts",
                       scenario.domain_certificate)
                checks("cert_remove: the files stay until an apply renders Dovecot and nginx without them;"
                       " both restart in between and after", scenario.certificate_removal)
    finally:
        if keep:
            log(f"box left running: nspawn PID {box.process.pid if box.process else '?'}, root {box.root}")
        else:
            with timer("stop the box and remove its tree"):
                box.stop()
                remove_box(box)
    return finish(timer, checks, box, keep)


def finish(timer: Timer, checks: Checks, box: Box, keep: bool) -> int:
    print("\nTimings:\n" + timer.report(), flush=True)
    for name, ok, detail in checks.results:
        if not ok:
            print(f"FAILED: {name}: {detail}")
    passed = len(checks.results) - checks.failed
    print(f"test-install: {passed} passed, {checks.failed} failed", flush=True)
    return 0 if checks.failed == 0 and checks.results else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.testbox", description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="leave the box running (stop it by its PID)")
    options = parser.parse_args(argv)
    return install_test(keep=options.keep)


if __name__ == "__main__":
    sys.exit(main())
