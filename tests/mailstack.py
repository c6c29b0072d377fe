"""Run the real mail daemons from rendered output, on 127.0.0.1 only.

No Django here: tests build a Snapshot by hand, ``render_tree()`` writes
``render_all()`` under a temporary root, and the context managers start the
real Exim / Dovecot binaries from that tree on free loopback ports:

    layout = render_tree(snapshot, tmp_path)
    with dovecot_daemon(layout), exim_daemon(layout) as exim:
        exim.send("a@x.example", ["alice@hosted.example"], message)

``smtp_sink()`` is an aiosmtpd server that records AUTH credentials as bytes
and the messages it receives (optionally STARTTLS / implicit TLS with a
certificate from ``mail_pki()``). ``dkim_verify()`` checks a DKIM-Signature
without DNS.

Must run as root (Exim's delivery and Dovecot's privilege separation need it);
``require_root()`` skips otherwise.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime
import grp
import hashlib
import ipaddress
import os
import pwd
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from mailconf.render import render_all
from mailconf.snapshot import Layout, Snapshot

EXIM = shutil.which("exim") or "/usr/sbin/exim"
DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
DOVEADM = shutil.which("doveadm") or "/usr/bin/doveadm"
LOOPBACK = "127.0.0.1"


def require_root() -> None:
    import pytest

    if os.geteuid() != 0:
        pytest.skip("the real-daemon tests run as root")
    if not os.path.exists(EXIM):
        pytest.skip("exim is not installed")


# -- ports ---------------------------------------------------------------------

_port_lock = threading.Lock()
_ports_given: set[int] = set()


def free_port() -> int:
    """A TCP port free on 127.0.0.1, never handed out twice in this process."""
    with _port_lock:
        for _ in range(100):
            with socket.socket() as s:
                s.bind((LOOPBACK, 0))
                port = s.getsockname()[1]
            if port not in _ports_given:
                _ports_given.add(port)
                return port
    raise RuntimeError("no free port")


def wait_for_banner(port: int, prefix: bytes, timeout: float = 10.0, tls: bool = False) -> bytes:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((LOOPBACK, port), timeout=2) as sock:
                if tls:
                    ctx = ssl.create_default_context()
                    ctx.check_hostname = False
                    ctx.verify_mode = ssl.CERT_NONE
                    sock = ctx.wrap_socket(sock)
                data = sock.recv(4096)
                if data.startswith(prefix):
                    return data
                last = RuntimeError(f"unexpected banner {data!r}")
        except OSError as exc:
            last = exc
        time.sleep(0.01)
    raise TimeoutError(f"no {prefix!r} banner on port {port}: {last}")


# -- the rendered tree -----------------------------------------------------------


def _chown(path: str, owner: str, group: str) -> None:
    if os.geteuid() != 0:
        return
    try:
        uid = pwd.getpwnam(owner).pw_uid
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        return
    os.chown(path, uid, gid)


def chown_to(path, owner: str, group: str) -> None:
    """chown as root (tests that run the daemons' users' own processes)."""
    _chown(str(path), owner, group)


def ensure_webmail_user() -> None:
    """The webmail's PHP-FPM user (mailconf.managed.WEBMAIL_USER), as
    scripts/webmail-user.sh (make's system-packages-test) and install.sh make it."""
    from mailconf.managed import WEBMAIL_USER

    try:
        pwd.getpwnam(WEBMAIL_USER)
    except KeyError:
        script = Path(__file__).resolve().parent.parent / "scripts" / "webmail-user.sh"
        subprocess.run(["bash", str(script)], check=True)


def _make_traversable(path: Path) -> None:
    """pytest's tmp dirs are 0700; Exim (Debian-exim), Dovecot (dovecot,
    mail) drop root and must still reach the tree. Give o+x (not o+r) to the
    directories between / and ``path`` that belong to us."""
    for parent in [path, *path.parents]:
        try:
            st = parent.stat()
        except OSError:
            continue
        if st.st_uid == os.geteuid() and not st.st_mode & 0o001:
            parent.chmod((st.st_mode & 0o7777) | 0o011)


TLS_CERT = "/etc/exim4/tls/mail.crt"
TLS_KEY = "/etc/exim4/tls/mail.key"


def loopback_layout(root: Path, tls: bool = False, **overrides) -> Layout:
    """A Layout for tests: everything under ``root``, free loopback ports,
    logs in files. ``tls``: Exim and Dovecot get the test PKI's loopback
    certificate, Exim's second port is implicit TLS (like 465)."""
    smtp, smtps = free_port(), free_port()
    values = dict(
        root=str(root),
        smtp_ports=(smtp, smtps) if tls else (smtp,),
        smtp_listen=(LOOPBACK,),
        smtps_ports=(smtps,) if tls else (),
        tls_certificate=TLS_CERT if tls else "",
        tls_privatekey=TLS_KEY if tls else "",
        dovecot_listen=(LOOPBACK,),
        imap_port=free_port(),
        imaps_port=free_port(),
        sieve_port=free_port(),
        dovecot_log_path="/var/log/dovecot.log",
    )
    values.update(overrides)
    return Layout(**values)


# Trees live outside pytest's tmp dirs: every pytest session chmods
# /tmp/pytest-of-<user> back to 0700 when it starts, and other sessions run
# at the same time on a shared machine, which would cut Exim (Debian-exim)
# and Dovecot off from a tree in the middle of a test.
TREES = Path(os.environ.get("MAILSTACK_TREES", "/tmp/mailstack"))
_trees: list[Path] = []


def new_tree_root(tmp_path: Path) -> Path:
    """A fresh world-traversable directory for a rendered tree, linked from
    ``tmp_path/"mailstack-root"``; removed by ``remove_trees()`` (the
    fixture's teardown) or at exit."""
    import atexit
    import tempfile

    TREES.mkdir(mode=0o711, exist_ok=True)
    TREES.chmod(0o711)
    root = Path(tempfile.mkdtemp(prefix=f"{Path(tmp_path).name[:40]}-", dir=TREES))
    root.chmod(0o711)
    link = Path(tmp_path) / "mailstack-root"
    with contextlib.suppress(OSError):
        if link.is_symlink():
            link.unlink()
        link.symlink_to(root)
    if not _trees:
        atexit.register(remove_trees)
    _trees.append(root)
    return root


def remove_trees() -> None:
    while _trees:
        shutil.rmtree(_trees.pop(), ignore_errors=True)


def render_tree(snapshot: Snapshot, tmp_path: Path, **layout_overrides) -> Layout:
    """Render everything into a fresh tree (the layout root, linked from
    ``tmp_path/"mailstack-root"``) with the files' owners and modes, create
    the spool, log, run and mail directories, and put the test CA where the
    relay transport looks for it. Returns the Layout; pass ``layout=`` to
    re-render into the same tree (e.g. to change a relay at run time)."""
    layout = layout_overrides.pop("layout", None)
    if layout is None:
        layout = loopback_layout(new_tree_root(Path(tmp_path)), **layout_overrides)
    _make_traversable(Path(layout.root))
    write_rendered(render_all(snapshot, layout), layout)
    for production, owner, mode in (
        (layout.spool_dir, layout.exim_user, 0o750),
        (layout.log_dir, layout.exim_user, 0o750),
        (os.path.dirname(layout.exim_pid_file), layout.exim_user, 0o755),
        (layout.mail_root, layout.mail_user, 0o770),
        (layout.dovecot_base_dir, "root", 0o755),
        (layout.dovecot_state_dir, "root", 0o755),
        (os.path.dirname(layout.dovecot_log_path or "/var/log/x"), "root", 0o755),
    ):
        path = layout.path(production)
        os.makedirs(path, exist_ok=True)
        os.chmod(path, mode)
        _chown(path, owner, owner if owner != layout.exim_user else layout.exim_group)
    for production, source in ((layout.tls_certificate, mail_pki().server_cert),
                               (layout.tls_privatekey, mail_pki().server_key)):
        path = layout.path(production) if production else ""
        if path and not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            shutil.copyfile(source, path)
            os.chmod(path, 0o640)
            _chown(path, "root", layout.exim_group)
    ca_path = layout.path(layout.relay_ca_bundle)
    if not os.path.exists(ca_path):
        os.makedirs(os.path.dirname(ca_path), exist_ok=True)
        shutil.copyfile(mail_pki().ca_cert, ca_path)
        os.chmod(ca_path, 0o644)
    return layout


def write_rendered(files: dict, layout: Layout, *, prune: bool = True) -> None:
    """Write {production path: FileSpec} under the layout root; with prune,
    remove per-domain files no longer rendered (like the helper does)."""
    for production, spec in files.items():
        path = layout.path(production)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        for parent in Path(path).parents:
            if str(parent) == layout.root.rstrip("/"):
                break
            parent.chmod(0o755)
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(spec.content)
        os.chmod(tmp, spec.mode)
        _chown(tmp, spec.owner, spec.group)
        os.replace(tmp, path)
    if prune:
        domains = Path(layout.path("/etc/exim4/domains"))
        wanted = {layout.path(p) for p in files}
        if domains.is_dir():
            for path in sorted(domains.rglob("*"), reverse=True):
                if path.is_file() and str(path) not in wanted:
                    path.unlink()
                elif path.is_dir() and not any(path.iterdir()):
                    path.rmdir()


def exim_conf(layout: Layout) -> str:
    return layout.path("/etc/exim4/exim4.conf")


def dovecot_conf(layout: Layout) -> str:
    return layout.path("/etc/dovecot/dovecot.conf")


# -- exim command line -------------------------------------------------------------


def _exim(layout: Layout, *args: str, input: bytes | None = None, timeout: float = 30,
          dns: "FakeDNS | None" = None):
    cmd = [EXIM, "-C", exim_conf(layout), *args]
    return subprocess.run(
        dns.wrap(cmd) if dns else cmd,
        input=input,
        capture_output=True,
        timeout=timeout,
    )


def exim_bv(layout: Layout) -> str:
    """``exim -bV``: raises AssertionError with Exim's message when invalid."""
    proc = _exim(layout, "-bV")
    out = (proc.stdout + proc.stderr).decode(errors="replace")
    assert proc.returncode == 0, out
    return out


def exim_bt(layout: Layout, address: str, sender: str | None = None, dns=None) -> str:
    """``exim -bt``: the routing of ``address`` (stdout + stderr)."""
    args = ["-bt", address]
    if sender is not None:
        args[:0] = ["-f", sender]
    proc = _exim(layout, *args, dns=dns)
    return (proc.stdout + proc.stderr).decode(errors="replace")


def exim_bh(layout: Layout, ip: str, lines: list[str], dns=None) -> str:
    """``exim -bh IP``: an SMTP dialogue as from ``ip``, no delivery. Returns
    everything Exim printed (its replies and the ACL trace)."""
    data = ("\r\n".join(lines) + "\r\n").encode()
    proc = _exim(layout, "-bh", ip, input=data, dns=dns)
    return (proc.stdout + proc.stderr).decode(errors="replace")


def exim_submit(layout: Layout, sender: str, recipients: list[str], message: bytes, dns=None):
    """Command-line submission with foreground delivery (``-odf``): the call
    returns after the delivery attempt. Returns the CompletedProcess."""
    return _exim(layout, "-odf", "-f", sender, "--", *recipients, input=message, dns=dns)


def exim_queue_run(layout: Layout) -> None:
    _exim(layout, "-qff")


def main_log(layout: Layout) -> str:
    path = Path(layout.path(layout.log_dir)) / "mainlog"
    return path.read_text(errors="replace") if path.exists() else ""


@dataclasses.dataclass
class EximDaemon:
    layout: Layout
    process: subprocess.Popen

    @property
    def port(self) -> int:
        return self.layout.smtp_ports[0]

    def mainlog(self) -> str:
        return main_log(self.layout)

    def wait_for_log(self, pattern: str, count: int = 1, timeout: float = 10) -> str:
        rx = re.compile(pattern, re.M)
        deadline = time.monotonic() + timeout
        while True:
            log = self.mainlog()
            if len(rx.findall(log)) >= count:
                return log
            if time.monotonic() > deadline:
                raise TimeoutError(f"{pattern!r} x{count} not in mainlog:\n{log[-4000:]}")
            time.sleep(0.01)

    def smtp(self, **kw) -> smtplib.SMTP:
        return smtplib.SMTP(LOOPBACK, self.port, timeout=kw.pop("timeout", 10), **kw)

    def smtps(self, **kw) -> smtplib.SMTP_SSL:
        """Implicit TLS on the layout's first smtps port, trusting the test CA."""
        ctx = ssl.create_default_context(cafile=mail_pki().ca_cert)
        return smtplib.SMTP_SSL(LOOPBACK, self.layout.smtps_ports[0], context=ctx,
                                timeout=kw.pop("timeout", 10), **kw)

    def client_tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=mail_pki().ca_cert)

    def send(self, sender: str, recipients: list[str], message: bytes | str,
             login: tuple[str, str] | None = None) -> None:
        self.send_many([(sender, recipients, message)], login)

    def send_many(self, messages, login: tuple[str, str] | None = None) -> None:
        """[(sender, recipients, message), ...] over as few SMTP sessions as
        Exim delivers at once (10 per connection; more would only be queued).
        A session's QUIT costs ≈0.2 s here, a message ≈20 ms."""
        messages = list(messages)
        for start in range(0, len(messages), 10):
            with self.smtp() as s:
                if login:
                    s.login(*login)
                for sender, recipients, message in messages[start:start + 10]:
                    s.sendmail(sender, recipients, message)


@contextlib.contextmanager
def exim_daemon(layout: Layout, timeout: float = 10, dns=None) -> Iterator[EximDaemon]:
    """Exim in the foreground (``-bdf``) on the layout's ports; waits for the
    220 banner, stops with SIGTERM. ``dns``: a FakeDNS it resolves with."""
    exim_bv(layout)
    cmd = [EXIM, "-C", exim_conf(layout), "-bdf"]
    # Exim's children inherit stdout/stderr: a file, never an unread pipe.
    output = Path(layout.path(layout.log_dir)) / "daemon.out"
    with open(output, "ab") as out:
        proc = subprocess.Popen(
            dns.wrap(cmd) if dns else cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    daemon = EximDaemon(layout, proc)
    try:
        try:
            wait_for_banner(daemon.port, b"220", timeout)
        except TimeoutError:
            proc.kill()
            proc.wait()
            raise TimeoutError(
                f"exim did not start:\n{output.read_text()}\n{daemon.mainlog()}"
            ) from None
        yield daemon
    finally:
        if proc.poll() is None:
            # the whole session: the daemon and any delivery it forked
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


# -- dovecot ---------------------------------------------------------------------


@dataclasses.dataclass
class DovecotDaemon:
    layout: Layout
    process: subprocess.Popen

    def log(self) -> str:
        if not self.layout.dovecot_log_path:
            return ""
        path = Path(self.layout.path(self.layout.dovecot_log_path))
        return path.read_text(errors="replace") if path.exists() else ""

    def maildir(self, address: str) -> Path:
        local, _, domain = address.partition("@")
        return Path(self.layout.path(self.layout.mail_root)) / domain / local / "Maildir"

    def messages(self, address: str, folder: str = "") -> list[bytes]:
        """Every message file in the account's Maildir (``folder`` "" = INBOX,
        else e.g. "Junk"), oldest first."""
        base = self.maildir(address)
        if folder:
            base = base / f".{folder}"
        files = [*(base / "new").glob("*"), *(base / "cur").glob("*")]
        return [f.read_bytes() for f in sorted(files, key=lambda f: f.stat().st_mtime_ns)]

    def wait_for_messages(self, address: str, count: int = 1, folder: str = "",
                          timeout: float = 10) -> list[bytes]:
        deadline = time.monotonic() + timeout
        while True:
            msgs = self.messages(address, folder)
            if len(msgs) >= count:
                return msgs
            if time.monotonic() > deadline:
                raise TimeoutError(f"{count} message(s) for {address} not delivered:\n{self.log()[-3000:]}")
            time.sleep(0.01)


@contextlib.contextmanager
def dovecot_daemon(layout: Layout, timeout: float = 10) -> Iterator[DovecotDaemon]:
    """Dovecot in the foreground from the rendered config; waits for the
    IMAP greeting and Exim's two sockets; stops with SIGTERM to its process
    group (``doveadm -c FILE stop`` works too, but takes ≈3 s)."""
    conf = dovecot_conf(layout)
    check = subprocess.run(["doveconf", "-n", "-c", conf], capture_output=True)
    assert check.returncode == 0, check.stderr.decode(errors="replace")
    cmd = [DOVECOT, "-F", "-c", conf]
    if layout.dovecot_run_as and os.geteuid() == 0:
        # rootless mode, as a developer would run it: drop to that user first
        user, _, group = layout.dovecot_run_as.partition(":")
        cmd = ["setpriv", f"--reuid={user}", f"--regid={group or user}", "--clear-groups", *cmd]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    daemon = DovecotDaemon(layout, proc)
    try:
        try:
            wait_for_banner(layout.imap_port, b"* OK", timeout)
            # Exim talks to the sockets, not to IMAP: wait for them too.
            for sock in (layout.dovecot_auth_socket, layout.dovecot_lmtp_socket):
                deadline = time.monotonic() + timeout
                while not os.path.exists(layout.path(sock)):
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"no socket {sock}")
                    time.sleep(0.01)
        except TimeoutError:
            proc.kill()
            out = proc.communicate()[0].decode(errors="replace")
            raise TimeoutError(f"dovecot did not start:\n{out}\n{daemon.log()}") from None
        yield daemon
    finally:
        if proc.poll() is None:
            # `doveadm -c FILE stop` takes ≈3 s here and SIGTERM to the master
            # ≈1 s (it waits for its children); SIGTERM to the whole process
            # group stops a throwaway instance in ≈0.05 s.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if proc.stdout:
            proc.stdout.close()


# -- test PKI --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PKI:
    ca_cert: str  # the CA tests trust (copied to layout.relay_ca_bundle)
    server_cert: str  # 127.0.0.1 / localhost, signed by ca_cert
    server_key: str
    other_ca_cert: str  # an unrelated CA
    other_server_cert: str  # 127.0.0.1 / localhost, signed by other_ca_cert
    other_server_key: str


_pki: PKI | None = None
_pki_lock = threading.Lock()


def mail_pki(directory: str | os.PathLike | None = None) -> PKI:
    """Two small CAs and a loopback server certificate from each (EC P-256,
    fast to make). Generated once per process."""
    global _pki
    with _pki_lock:
        if _pki is None:
            import tempfile

            directory = Path(directory or tempfile.mkdtemp(prefix="mailstack-pki-"))
            directory.chmod(0o755)
            ca, ca_key = _make_ca("mailpanel test CA")
            srv, srv_key = _make_server_cert(ca, ca_key)
            other, other_key = _make_ca("some other CA")
            osrv, osrv_key = _make_server_cert(other, other_key)
            files = {}
            for name, data in (
                ("ca.pem", _pem_cert(ca)),
                ("server.pem", _pem_cert(srv)),
                ("server.key", _pem_key(srv_key)),
                ("other-ca.pem", _pem_cert(other)),
                ("other-server.pem", _pem_cert(osrv)),
                ("other-server.key", _pem_key(osrv_key)),
            ):
                path = directory / name
                path.write_bytes(data)
                path.chmod(0o644)
                files[name] = str(path)
            _pki = PKI(
                files["ca.pem"], files["server.pem"], files["server.key"],
                files["other-ca.pem"], files["other-server.pem"], files["other-server.key"],
            )
        return _pki




def _make_ca(name: str):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                          content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _make_server_cert(ca, ca_key):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(LOOPBACK))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _pem_cert(cert) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


def _pem_key(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def server_ssl_context(wrong_ca: bool = False) -> ssl.SSLContext:
    pki = mail_pki()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if wrong_ca:
        ctx.load_cert_chain(pki.other_server_cert, pki.other_server_key)
    else:
        ctx.load_cert_chain(pki.server_cert, pki.server_key)
    return ctx


# -- SMTP sink ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AuthAttempt:
    mechanism: str
    username: bytes
    password: bytes


@dataclasses.dataclass(frozen=True)
class ReceivedMessage:
    sender: str
    recipients: tuple[str, ...]
    data: bytes
    auth: AuthAttempt | None  # the successful AUTH of that session, if any
    tls: bool


class SmtpSink:
    """Records what a relay / remote MX would see. Thread-safe."""

    def __init__(self, port: int, mechanisms: tuple[str, ...], credentials,
                 host: str = LOOPBACK, implicit_tls: bool = False):
        self.host = host
        self.port = port
        self.implicit_tls = implicit_tls
        self.mechanisms = mechanisms
        self.credentials = credentials  # None = accept any; else {(user, pw)} as bytes
        self.auth_attempts: list[AuthAttempt] = []
        self.messages: list[ReceivedMessage] = []
        self._cond = threading.Condition()

    # aiosmtpd hooks
    def authenticate(self, server, session, envelope, mechanism, auth_data):
        from aiosmtpd.smtp import AuthResult, LoginPassword

        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        attempt = AuthAttempt(mechanism, bytes(auth_data.login), bytes(auth_data.password))
        ok = self.credentials is None or (attempt.username, attempt.password) in self.credentials
        with self._cond:
            self.auth_attempts.append(attempt)
            self._cond.notify_all()
        if ok:
            session.mailpanel_auth = attempt
        return AuthResult(success=ok, handled=False)

    async def handle_DATA(self, server, session, envelope):
        msg = ReceivedMessage(
            sender=envelope.mail_from,
            recipients=tuple(envelope.rcpt_tos),
            data=bytes(envelope.original_content or envelope.content),
            auth=getattr(session, "mailpanel_auth", None),
            tls=self.implicit_tls or session.ssl is not None,
        )
        with self._cond:
            self.messages.append(msg)
            self._cond.notify_all()
        return "250 OK"

    def wait_for_messages(self, count: int = 1, timeout: float = 10) -> list[ReceivedMessage]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.messages) >= count, timeout):
                raise TimeoutError(f"sink got {len(self.messages)} of {count} message(s)")
            return list(self.messages)


@contextlib.contextmanager
def smtp_sink(
    *,
    mechanisms: tuple[str, ...] = ("LOGIN", "PLAIN"),
    credentials=None,
    starttls: bool = False,
    implicit_tls: bool = False,
    wrong_ca: bool = False,
    port: int | None = None,
    host: str = LOOPBACK,
) -> Iterator[SmtpSink]:
    """An aiosmtpd server on 127.0.0.1 that accepts AUTH LOGIN/PLAIN (limit
    with ``mechanisms``) — any credentials, or only ``credentials`` (a set of
    (user bytes, password bytes)) — and records attempts and messages.
    ``starttls`` offers STARTTLS, ``implicit_tls`` is SMTPS; the certificate is
    for 127.0.0.1/localhost from the test CA (``wrong_ca``: from another CA).
    ``host``/``port``: e.g. ("127.0.0.77", 25) as a fake remote MX (root)."""
    import logging

    logging.getLogger("mail.log").setLevel(logging.CRITICAL)
    sink = SmtpSink(port or free_port(), tuple(m.upper() for m in mechanisms), credentials,
                    host, implicit_tls)
    # aiosmtpd also advertises every handler attribute named auth_* as a
    # mechanism, named as spelt: SmtpSink.auth_attempts shows up as "attempts".
    excluded = [m for m in ("LOGIN", "PLAIN") if m not in sink.mechanisms] + ["attempts"]
    kwargs = dict(
        authenticator=sink.authenticate,
        auth_require_tls=False,
        auth_exclude_mechanism=excluded,
    )
    if starttls:
        kwargs["tls_context"] = server_ssl_context(wrong_ca)
    controller = _SinkController(
        sink,
        hostname=host,
        port=sink.port,
        ssl_context=server_ssl_context(wrong_ca) if implicit_tls else None,
        **kwargs,
    )
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


def _sink_controller_class():
    from aiosmtpd.controller import Controller  # noqa: F401  (imported lazily)

    class SinkController(Controller):
        def _trigger_server(self):
            # aiosmtpd's start-up self-check would try a TLS handshake with
            # the server context; a plain connect is all it needs.
            with contextlib.suppress(OSError):
                with socket.create_connection((self.hostname, self.port), 1.0) as s:
                    if self.ssl_context:
                        ctx = ssl.create_default_context()
                        ctx.check_hostname = False
                        ctx.verify_mode = ssl.CERT_NONE
                        with ctx.wrap_socket(s) as t:
                            t.recv(1024)
                    else:
                        s.recv(1024)

    return SinkController


def _SinkController(sink, **kwargs):
    return _sink_controller_class()(sink, **kwargs)


# -- DKIM --------------------------------------------------------------------------


def dkim_public_key_der(private_pem: str) -> bytes:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _split_message(message: bytes) -> tuple[list[bytes], bytes]:
    message = message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    head, _, body = message.partition(b"\r\n\r\n")
    headers: list[bytes] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and headers:
            headers[-1] += b"\r\n" + line
        else:
            headers.append(line)
    return headers, body


def _relaxed_header(header: bytes) -> bytes:
    name, _, value = header.partition(b":")
    value = re.sub(rb"\r\n", b"", value)
    value = re.sub(rb"[ \t]+", b" ", value).strip()
    return name.strip().lower() + b":" + value


def _relaxed_body(body: bytes) -> bytes:
    lines = body.split(b"\r\n")
    lines = [re.sub(rb"[ \t]+", b" ", line).rstrip(b" \t") for line in lines]
    while lines and lines[-1] == b"":
        lines.pop()
    return b"".join(line + b"\r\n" for line in lines)


def _simple_body(body: bytes) -> bytes:
    while body.endswith(b"\r\n"):
        body = body[:-2]
    return body + b"\r\n"


def dkim_verify(message: bytes, public_key_der: bytes) -> dict[str, str]:
    """Verify the first DKIM-Signature of ``message`` (rsa-sha256, relaxed or
    simple canonicalization) against ``public_key_der``; returns its tags.
    Raises AssertionError when it does not verify. No DNS."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    headers, body = _split_message(message)
    sig_headers = [h for h in headers if h.split(b":", 1)[0].strip().lower() == b"dkim-signature"]
    assert sig_headers, "no DKIM-Signature header"
    sig = sig_headers[0]
    raw_value = sig.split(b":", 1)[1].decode()
    tags = {}
    for part in raw_value.split(";"):
        if "=" in part:
            k, _, val = part.partition("=")
            tags[k.strip()] = re.sub(r"\s+", "", val) if k.strip() in ("b", "bh", "h") else val.strip()
    assert tags.get("a") == "rsa-sha256", tags.get("a")
    header_canon, _, body_canon = tags.get("c", "simple/simple").partition("/")
    body_canon = body_canon or "simple"
    canon_body = _relaxed_body(body) if body_canon == "relaxed" else _simple_body(body)
    if "l" in tags:
        canon_body = canon_body[: int(tags["l"])]
    bh = base64.b64encode(hashlib.sha256(canon_body).digest()).decode()
    assert bh == tags["bh"], f"body hash mismatch: {bh} != {tags['bh']}"
    # headers in h=, each taken from the bottom up
    pool: dict[bytes, list[bytes]] = {}
    for h in headers:
        pool.setdefault(h.split(b":", 1)[0].strip().lower(), []).append(h)
    signed = b""
    for name in tags["h"].split(":"):
        name_b = name.strip().lower().encode()
        candidates = pool.get(name_b, [])
        if not candidates:
            continue
        h = candidates.pop()
        signed += (_relaxed_header(h) if header_canon == "relaxed" else h) + b"\r\n"
    # only the b= tag (not bh=) is emptied
    sig_stripped = re.sub(rb"((?:^|;)\s*b\s*=)[^;]*", rb"\1", sig)
    signed += _relaxed_header(sig_stripped) if header_canon == "relaxed" else sig_stripped
    key = serialization.load_der_public_key(public_key_der)
    try:
        key.verify(base64.b64decode(tags["b"]), signed, padding.PKCS1v15(), hashes.SHA256())
    except Exception as exc:  # cryptography raises InvalidSignature
        raise AssertionError(f"DKIM signature does not verify: {exc!r}") from None
    return tags


def make_message(sender: str, to: str, subject: str = "test", body: str = "Hello.\n",
                 extra_headers: str = "") -> bytes:
    return (
        f"From: {sender}\nTo: {to}\nSubject: {subject}\n"
        f"Message-ID: <{hashlib.sha1((sender + to + subject).encode()).hexdigest()}@test>\n"
        f"Date: Sat, 28 Nov 2026 00:00:00 +0000\n{extra_headers}\n{body}"
    ).encode()


# -- fake DNS ----------------------------------------------------------------------


class FakeDNS:
    """An authoritative-for-everything DNS server on 127.0.53.x:53 with fixed
    records; everything else is NXDOMAIN. ``wrap(cmd)`` runs a command in a
    private mount namespace whose /etc/resolv.conf points here (root only)."""

    def __init__(self, records: dict[tuple[str, str], list[str]], directory: Path):
        self.records = {(n.lower().rstrip("."), t.upper()): v for (n, t), v in records.items()}
        self.directory = Path(directory)
        self.address = ""
        self.queries: list[tuple[str, str]] = []
        self._server = None

    def resolve(self, request, handler):
        from dnslib import AAAA, MX, QTYPE, RCODE, RR, TXT, A

        reply = request.reply()
        qname = str(request.q.qname).lower().rstrip(".")
        qtype = QTYPE[request.q.qtype]
        self.queries.append((qname, qtype))
        values = self.records.get((qname, qtype))
        if values is None:
            if not any(n == qname for n, _ in self.records):
                reply.header.rcode = RCODE.NXDOMAIN
            return reply
        for value in values:
            if qtype == "A":
                rdata = A(value)
            elif qtype == "AAAA":
                rdata = AAAA(value)
            elif qtype == "MX":
                pref, _, host = value.partition(" ")
                rdata = MX(host, int(pref))
            elif qtype == "TXT":
                rdata = TXT(value)
            else:
                continue
            reply.add_answer(RR(qname, getattr(QTYPE, qtype), rdata=rdata, ttl=60))
        return reply

    def start(self) -> None:
        from dnslib.server import DNSLogger, DNSServer

        quiet = DNSLogger(log="-request,-reply,-truncated,-error,-recv,-send,-data", prefix=False)
        for third in range(1, 250):
            address = f"127.0.53.{(os.getpid() + third) % 250 + 1}"
            try:
                server = DNSServer(self, address=address, port=53, logger=quiet)
            except OSError:
                continue
            self.address = address
            self._server = server
            break
        else:
            raise RuntimeError("no free 127.0.53.x:53")
        # dnslib's start_thread() polls for shutdown every 0.5 s
        threading.Thread(
            target=self._server.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()
        self.resolv_conf = self.directory / "resolv.conf"
        self.resolv_conf.write_text(f"nameserver {self.address}\noptions timeout:1 attempts:1\n")
        self.resolv_conf.chmod(0o644)

    def stop(self) -> None:
        if self._server:
            self._server.server.shutdown()
            self._server.server.server_close()

    def wrap(self, cmd: list[str]) -> list[str]:
        return [
            "unshare", "-m", "sh", "-c",
            'mount --bind "$0" /etc/resolv.conf && exec "$@"',
            str(self.resolv_conf), *cmd,
        ]


@contextlib.contextmanager
def fake_dns(records: dict[tuple[str, str], list[str]], directory: Path) -> Iterator[FakeDNS]:
    """``records``: {("name", "A"|"AAAA"|"MX"|"TXT"): ["value", ...]}, MX
    values as "10 host"."""
    dns = FakeDNS(records, directory)
    dns.start()
    try:
        yield dns
    finally:
        dns.stop()


def password_hash(password: str, scheme: str = "SHA512-CRYPT") -> str:
    """A Dovecot-verifiable hash made by ``doveadm pw``."""
    out = subprocess.run(
        [DOVEADM, "pw", "-s", scheme, "-p", password], capture_output=True, text=True, check=True
    )
    return out.stdout.strip()
