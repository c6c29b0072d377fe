"""The helper as an attacker who controls the panel's user would drive it.

Every request here is one that a compromised gunicorn or worker (user
`mailpanel`) could send through sudo. The real helper runs as root (owners
and modes set for real where the users exist) on a temporary root that
already holds a complete, valid configuration. For each hostile request:
it is refused or made harmless, a marker file its payload would create never
appears, no answer carries a byte of a file outside the request, and the live
tree stays byte-identical.
"""

import base64
import fcntl
import hashlib
import io
import json
import os
import socket
import stat
import subprocess
import sys
import tarfile
import time
import uuid
from pathlib import Path

import pytest

from tests import mailstack
from tests.test_helper import (
    ALIASES,
    CAN_CHOWN,
    CREDENTIALS,
    DEFAULT_JSON,
    DKIM,
    DNSBL,
    HELPER,
    PASSWD_A,
    RELAY_OLD,
    code,
    load_helper_module,
    needs_validators,
    write_item,
)

from mailconf.params import CodeParams
from mailconf.snapshot import Alias, Domain, Mailbox, ServerIdentity, Snapshot

pytestmark = [
    needs_validators,
    pytest.mark.skipif(os.geteuid() != 0, reason="the helper's sandbox needs root"),
]

MARKER = Path("/tmp/mailpanel-pwned-" + uuid.uuid4().hex)
SECRET = Path("/tmp/mailpanel-secret-" + uuid.uuid4().hex)
SECRET_TEXT = "SECRET-" + uuid.uuid4().hex
TOUCH = "/usr/bin/touch " + str(MARKER)
DOMAIN = "/etc/exim4/domains/example.org/"
APP_INI = "/var/lib/snappymail/data/_data_/_default_/configs/application.ini"


@pytest.fixture(scope="module", autouse=True)
def secret_file():
    SECRET.write_text(SECRET_TEXT + "\n")
    SECRET.chmod(0o600)
    yield
    SECRET.unlink()
    MARKER.unlink(missing_ok=True)


def run(root, request, timeout=30, raw=None, extra=()):
    argv = [sys.executable, str(HELPER), "--root", str(root), "--service-command", "true", *extra]
    if not CAN_CHOWN:
        argv.append("--no-chown")
    data = raw if raw is not None else json.dumps(request).encode()
    proc = subprocess.run(argv, input=data, capture_output=True, timeout=timeout)
    return proc.returncode, proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")


def tree_state(root: Path) -> dict:
    """Every file, folder and link under root: its kind, mode and content."""
    state = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        key = str(path.relative_to(root))
        if stat.S_ISREG(st.st_mode):
            state[key] = ("file", st.st_mode, st.st_uid, hashlib.sha256(path.read_bytes()).hexdigest())
        elif stat.S_ISLNK(st.st_mode):
            state[key] = ("link", os.readlink(path))
        else:
            state[key] = ("other", st.st_mode, st.st_uid)
    return state


@pytest.fixture
def live(tmp_path):
    """A root holding a whole valid configuration, applied by the helper."""
    root = tmp_path / "root"
    root.mkdir()
    request = {
        "op": "apply",
        "code": code(snappymail=True),
        "write": [
            write_item(DOMAIN + "passwd", PASSWD_A),
            write_item(DOMAIN + "aliases", ALIASES),
            write_item(DOMAIN + "dkim.pem", DKIM),
            write_item(DOMAIN + "smtp_relay.conf", RELAY_OLD),
            write_item("/etc/exim4/dnsbl.conf", DNSBL),
            write_item("/root/.snappymail", CREDENTIALS),
            write_item("/var/lib/snappymail/data/_data_/_default_/domains/default.json", DEFAULT_JSON),
        ],
    }
    status, output = run(root, request)
    assert status == 0, output
    return root


def assert_harmless(live, status, output, before):
    assert status == 2, output  # refused: nothing touched
    assert not MARKER.exists(), "the payload ran"
    assert SECRET_TEXT not in output and "root:" not in output
    assert tree_state(live) == before


def b64(content: bytes) -> str:
    return base64.b64encode(content).decode()


# -- code files: content is refused whatever it holds ------------------------------

CODE_CONTENT = {
    "/etc/exim4/exim4.conf": f"perl_at_start = true\nperl_startup = system('{TOUCH}')\n"
    f"primary_hostname = ${{run{{{TOUCH}}}}}\n.include {SECRET}\n",
    "/etc/dovecot/dovecot.conf": f"service imap {{\n  executable = {TOUCH}\n}}\n!include {SECRET}\n",
    "/etc/nftables.d/mailpanel.nft": f'flush ruleset\ninclude "{SECRET}"\n',
    APP_INI: '[security]\nadmin_login = "${HOME}"\n',
}


@pytest.mark.parametrize("path", sorted(CODE_CONTENT))
def test_code_file_content_is_refused_before_anything_runs(live, path):
    before = tree_state(live)
    status, output = run(live, {"op": "apply", "write": [write_item(path, CODE_CONTENT[path].encode())]})
    assert_harmless(live, status, output, before)
    assert '"rule": "code file"' in output


@pytest.mark.parametrize("path", sorted(CODE_CONTENT))
def test_code_files_cannot_be_removed_by_request(live, path):
    before = tree_state(live)
    status, output = run(live, {"op": "apply", "remove": [path]})
    assert_harmless(live, status, output, before)


# -- code parameters: typed, validated again by the helper -------------------------

GOOD = code(snappymail=True)


def params(**changes):
    value = json.loads(json.dumps(GOOD))
    for key, new in changes.items():
        if key.startswith("sm_"):
            value["snappymail"][key[3:]] = new
        else:
            value[key] = new
    return value


HOSTILE_PARAMS = {
    "newline in hostname": params(hostname="mail.example.org\nperl_at_start = true"),
    "expansion in hostname": params(hostname="${run{" + TOUCH + "}}"),
    "readfile in hostname": params(hostname="${readfile{" + str(SECRET) + "}}"),
    "blank in hostname": params(hostname="mail.example.org perl_startup"),
    "trailing newline in hostname": params(hostname="mail.example.org\n"),
    "string for a switch": params(internal_lookup="yes"),
    "number for a switch": params(sieve_enabled=1),
    "unknown parameter": dict(GOOD, exim_user="root"),
    "missing parameter": {k: v for k, v in GOOD.items() if k != "hostname"},
    "layout smuggled in": dict(GOOD, log_dir="/etc/cron.d"),
    "newline in SnappyMail login": params(sm_admin_login='a"\n[security]\nadmin_password = "x'),
    "NUL in SnappyMail login": params(sm_admin_login="admin\x00"),
    "expansion in admin key": params(sm_admin_key="${HOME}-key-abcdef"),
    "plaintext admin password": params(sm_admin_password_hash="hunter2"),
    "hash with a newline": params(sm_admin_password_hash="$2y$04$" + "x" * 53 + "\n"),
    "code not an object": ["hostname", "mail.example.org"],
}


@pytest.mark.parametrize("case", sorted(HOSTILE_PARAMS))
def test_hostile_code_parameters_are_refused(live, case):
    before = tree_state(live)
    status, output = run(live, {"op": "apply", "code": HOSTILE_PARAMS[case]})
    assert_harmless(live, status, output, before)
    assert '"rule": "bad parameter"' in output


def test_parameters_must_arrive_normalised():
    # The same parser the helper uses: what the panel's form normalises
    # arrives normalised; anything else did not come from the form.
    assert CodeParams.from_json(code(hostname="mx.example.org")).hostname == "mx.example.org"
    with pytest.raises(ValueError):
        CodeParams.from_json(code(hostname="MX.Example.ORG"))


# -- data files: one grammar per file, nothing else --------------------------------

HOSTILE_DATA = {
    "alias to a pipe": (DOMAIN + "aliases", f"info: |{TOUCH}\n"),
    "alias to a file": (DOMAIN + "aliases", "info: /root/.ssh/authorized_keys\n"),
    "alias :include:": (DOMAIN + "aliases", f"info: :include:{SECRET}\n"),
    "alias :fail:": (DOMAIN + "aliases", "info: :fail: gone\n"),
    "alias quoted pipe": (DOMAIN + "aliases", 'info: "|/bin/sh"@example.org\n'),
    "alias run expansion": (DOMAIN + "aliases", "info: ${run{" + TOUCH + "}}@example.org\n"),
    "catch-all to a pipe": (DOMAIN + "aliases", f"*: |{TOUCH}\n"),
    "forward to a pipe": (DOMAIN + "forwards", f"alice: |{TOUCH}\n"),
    "forward :include:": (DOMAIN + "forwards", f"alice: :include:{SECRET}\n"),
    "two lines in one": (DOMAIN + "aliases", "info: a@example.org\rbob: |/bin/sh\n"),
    "passwd mail location": (DOMAIN + "passwd", PASSWD_A.decode().rstrip("\n") + "userdb_mail=maildir:/root\n"),
    "passwd uid 0": (DOMAIN + "passwd", PASSWD_A.decode().replace("::::::", "::::::userdb_uid=0")),
    "passwd home": (DOMAIN + "passwd", PASSWD_A.decode().replace("::::::", ":0:0::/root::")),
    "passwd plaintext": (DOMAIN + "passwd", "alice:{PLAIN}x::::::\n"),
    "passwd dotted-out user": (DOMAIN + "passwd", PASSWD_A.decode().replace("alice", "../../root")),
    "passwd NUL": (DOMAIN + "passwd", PASSWD_A.decode().replace("::::::", "::::::\x00")),
    "passwd no final newline": (DOMAIN + "passwd", PASSWD_A.decode().rstrip("\n")),
    "relay extra option": (DOMAIN + "smtp_relay.conf", RELAY_OLD.decode() + "hosts_require_tls: *\n"),
    "relay scope id": (DOMAIN + "smtp_relay.conf", "auth: login\nhost: fe80::1%x\nport: 25\ntls: none\n"),
    "relay host with options": (DOMAIN + "smtp_relay.conf", "auth: login\nhost: a.example byname\nport: 25\ntls: none\n"),
    "relay expansion": (DOMAIN + "smtp_relay.conf", "auth: login\nhost: ${run{/bin/true}}\nport: 25\ntls: none\n"),
    "relay user not base64": (DOMAIN + "smtp_relay.conf", RELAY_OLD.decode().replace("auth: login\n", "auth: login\n") + "pass: ${x}\nuser: a\n"),
    "dkim a certificate": (DOMAIN + "dkim.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
    "dkim key plus a line": (DOMAIN + "dkim.pem", DKIM.decode() + f".include {SECRET}\n"),
    "dkim a path": (DOMAIN + "dkim.pem", f"{SECRET}\n"),
    "dkim garbage DER": (DOMAIN + "dkim.pem", "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n"),
    "dnsbl expansion": ("/etc/exim4/dnsbl.conf", "${run{" + TOUCH + "}}=127.0.0.2\n"),
    "dnsbl other codes": ("/etc/exim4/dnsbl.conf", "zen.spamhaus.org=127.0.0.2\n"),
    "dnsbl negation": ("/etc/exim4/dnsbl.conf", DNSBL.decode().replace("zen", "!zen")),
    "send-only wildcard": ("/etc/exim4/send_only_domains", "*:\n"),
    "send-only regex": ("/etc/exim4/send_only_domains", "^.*:\n"),
    "snappymail json not JSON": ("/var/lib/snappymail/data/_data_/_default_/domains/default.json", "{"),
    "snappymail json host": (
        "/var/lib/snappymail/data/_data_/_default_/domains/default.json",
        DEFAULT_JSON.decode().replace('"localhost"', '"localhost; rm -rf /"', 1),
    ),
    "snappymail json nested": (
        "/var/lib/snappymail/data/_data_/_default_/domains/default.json",
        DEFAULT_JSON.decode().replace('"timeout": 10', '"timeout": {"a": {"b": 1}}', 1),
    ),
    "credentials extra line": ("/root/.snappymail", CREDENTIALS.decode() + "Shell: /bin/sh\n"),
    "relay global pipe": ("/etc/exim4/smtp_relay.conf", f"host: |{TOUCH}\n"),
    "moved_to expansion": (DOMAIN + "moved_to", "host: ${run{" + TOUCH + "}}\nport: 25\n"),
    "moved_to host list": (DOMAIN + "moved_to", "host: 192.0.2.7 : 127.0.0.1\nport: 25\n"),
    "moved_to extra option": (DOMAIN + "moved_to", "host: 192.0.2.7\nport: 25\nhosts_override: *\n"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_DATA))
def test_hostile_data_files_are_refused_by_their_grammar(live, case):
    path, content = HOSTILE_DATA[case]
    before = tree_state(live)
    status, output = run(live, {"op": "apply", "write": [write_item(path, content.encode())]})
    assert_harmless(live, status, output, before)
    assert '"rule": "grammar"' in output and TOUCH not in output


# -- paths -------------------------------------------------------------------------

HOSTILE_PATHS = [
    "/root/.snappymail\n",
    "/etc/exim4/domains/a\rb.org/passwd",
    "/etc/exim4/domains/example.org/passwd\x00",
    "/etc/exim4/domains/example.org\n/passwd",
    "/etc/exim4/domains/ex ample.org/passwd",
    "/etc/exim4/domains/example.org/../../../root/.ssh/authorized_keys",
    "/etc/exim4/domains/example.org/passwd/",
    "/etc/sudoers.d/mailpanel",
]


@pytest.mark.parametrize("path", HOSTILE_PATHS)
def test_hostile_paths_are_refused(live, path):
    before = tree_state(live)
    status, output = run(live, {"op": "apply", "write": [write_item(path, CREDENTIALS)]})
    assert_harmless(live, status, output, before)
    status, output = run(live, {"op": "apply", "remove": [path]})
    assert_harmless(live, status, output, before)
    status, output = run(live, {"op": "read", "path": path})
    assert_harmless(live, status, output, before)


def test_a_fifo_at_a_managed_path_neither_blocks_nor_is_written_through(live):
    fifo = live / "etc/exim4/domains/example.org/forwards"
    os.mkfifo(fifo)
    before = tree_state(live)
    start = time.monotonic()
    status, output = run(live, {"op": "state"}, timeout=20)
    assert status == 0, output
    assert "/etc/exim4/domains/example.org/forwards" not in json.loads(output)["files"]
    status, output = run(
        live, {"op": "apply", "write": [write_item(DOMAIN + "forwards", b"alice: a@example.net\n")]},
        timeout=20,
    )
    assert status == 1 and "not a regular file" in output
    assert time.monotonic() - start < 15
    assert tree_state(live) == before


def test_a_symlinked_managed_file_is_never_followed(live):
    (live / "etc/exim4/dnsbl.conf").unlink()
    (live / "etc/exim4/dnsbl.conf").symlink_to(SECRET)
    before = tree_state(live)
    status, output = run(live, {"op": "apply", "write": [write_item("/etc/exim4/dnsbl.conf", DNSBL)]})
    assert_harmless(live, status, output, before)
    assert SECRET.read_text() == SECRET_TEXT + "\n"
    status, output = run(live, {"op": "state"})
    assert status == 0 and SECRET_TEXT not in output


def test_a_lock_held_forever_is_given_up_with_a_message(live):
    lock = live / "run/mailpanel-helper.lock"
    fd = os.open(lock, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        before = tree_state(live)
        start = time.monotonic()
        status, output = run(
            live, {"op": "apply", "write": [write_item("/etc/exim4/dnsbl.conf", b"")]},
            extra=("--lock-timeout", "1"),
        )
        assert status == 1 and "another helper has held the lock" in output
        assert time.monotonic() - start < 10
        assert tree_state(live) == before
    finally:
        os.close(fd)


# -- tarballs ----------------------------------------------------------------------


def tarball(*members) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        index = tarfile.TarInfo("index.php")
        index.size = 5
        tar.addfile(index, io.BytesIO(b"<?php"))
        for name, kind, target in members:
            info = tarfile.TarInfo(name)
            if kind == "dir":
                info.type = tarfile.DIRTYPE
            elif kind == "link":
                info.type, info.linkname = tarfile.SYMTYPE, target
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
            else:
                info.size = len(target)
            tar.addfile(info, io.BytesIO(target.encode()) if kind == "file" else None)
    return buffer.getvalue()


HOSTILE_TARBALLS = {
    "link up three levels": [("a/b/c", "dir", ""), ("a/b/c/z", "link", "../../..")],
    "chain through another link": [
        ("a/b/c", "dir", ""), ("a/b/c/z", "link", "x"), ("a/b/c/x", "dir", ""),
        ("a/b/c/w", "link", "z/../../../etc"),
    ],
    "link to a link": [("l1", "link", "l2"), ("l2", "link", "index.php")],
    "file through a link": [("d", "dir", ""), ("l", "link", "d"), ("l/evil.php", "file", "<?php")],
    "absolute link": [("etc", "link", "/etc")],
    "newline in a name": [("ok\n.php", "file", "x")],
    "fifo": [("pipe", "fifo", "")],
}


@pytest.mark.parametrize("case", sorted(HOSTILE_TARBALLS))
def test_hostile_tarballs_are_refused(live, case):
    data = tarball(*HOSTILE_TARBALLS[case])
    before = tree_state(live)
    status, output = run(
        live, {"op": "install_tarball", "tarball_b64": b64(data), "sha256": hashlib.sha256(data).hexdigest()}
    )
    assert_harmless(live, status, output, before)


def test_a_plain_link_down_into_the_release_is_still_fine(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    data = tarball(("app", "dir", ""), ("app/v.php", "file", "<?php"), ("latest", "link", "app/v.php"))
    status, output = run(
        root, {"op": "install_tarball", "tarball_b64": b64(data), "sha256": hashlib.sha256(data).hexdigest()}
    )
    assert status == 0, output
    assert os.readlink(root / "var/lib/snappymail/latest") == "app/v.php"


# -- validators: nobody, no network, a private copy, the error line only -----------


def test_validators_run_as_nobody_without_network_on_a_private_copy():
    helper = load_helper_module()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    try:
        code_, out, err = helper.run_sandboxed(["/usr/bin/id", "-u"], b"", "x")
        assert (code_, out.strip()) == (0, "65534")
        code_, out, err = helper.run_sandboxed(["/bin/cat", str(SECRET)], b"", "x")
        assert code_ != 0 and SECRET_TEXT not in out + err
        probe = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2)"
        code_, out, err = helper.run_sandboxed(["/usr/bin/python3", "-I", "-c", probe], b"", "x")
        assert code_ != 0 and "unreachable" in err.lower()
        code_, out, err = helper.run_sandboxed(["/bin/cat", "{file}"], b"the candidate\n", "c.conf")
        assert (code_, out) == (0, "the candidate\n")
    finally:
        listener.close()


def test_validator_output_is_cut_to_the_error_line_and_never_echoes_another_file():
    helper = load_helper_module()
    ok, output = helper.VALIDATORS["exim"](f".include {SECRET}\nprimary_hostname = x\n".encode())
    assert ok is False and "failed to open included configuration file" in output
    assert SECRET_TEXT not in output and "\n" not in output
    ok, output = helper.VALIDATORS["doveconf"](f"!include {SECRET}\n".encode())
    assert ok is False and "Permission denied" in output and SECRET_TEXT not in output
    ok, output = helper.VALIDATORS["nft"](f'include "{SECRET}"\n'.encode())
    assert ok is False and SECRET_TEXT not in output
    # exim -bV does run perl_startup: in the sandbox that is nobody's Perl.
    marker = Path(str(MARKER) + "-validator")
    try:
        helper.VALIDATORS["exim"](f"perl_at_start = true\nperl_startup = system('/usr/bin/touch {marker}')\n".encode())
        assert marker.exists() and marker.stat().st_uid == 65534  # ran, but as nobody
    finally:
        marker.unlink(missing_ok=True)


# -- lookups never expand what the data files hold (real Exim) ---------------------


@pytest.mark.skipif(mailstack.EXIM is None, reason="exim missing")
def test_exim_never_expands_what_a_data_file_holds(tmp_path):
    # Local parts and targets may legally hold $ { } (RFC 5322 atext); Exim
    # reads them through lsearch/dsearch, whose results are not expanded again.
    bcrypt = "{BLF-CRYPT}$2b$04$" + "a" * 53
    snapshot = Snapshot(
        server=ServerIdentity(hostname="mail.example.org"),
        domains=(
            Domain(
                "example.org",
                dkim_enabled=False,
                mailboxes=(Mailbox("${run{x}}", bcrypt),),
                aliases=(Alias("probe", ("${primary_hostname}@elsewhere.example",)),),
            ),
        ),
    )
    layout = mailstack.render_tree(snapshot, tmp_path)
    routed = mailstack.exim_bt(layout, "probe@example.org")
    assert "${primary_hostname}@elsewhere.example" in routed
    assert "mail.example.org@elsewhere.example" not in routed
    mailbox = mailstack.exim_bt(layout, "${run{x}}@example.org")
    assert "router = local_mailbox" in mailbox and "transport = dovecot_lmtp" in mailbox


# -- root imports only a library root owns ------------------------------------------


def installed_copy(tmp_path) -> Path:
    """The helper and mailconf laid out as install.sh puts them, side by side."""
    import shutil

    base = tmp_path / "install"
    (base / "deploy").mkdir(parents=True)
    shutil.copy2(HELPER, base / "deploy/mailpanel_helper.py")
    shutil.copytree(HELPER.parent.parent / "mailconf", base / "mailconf",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for path in [base, *base.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return base


def run_copy(base, root):
    proc = subprocess.run(
        ["/usr/bin/python3", "-I", str(base / "deploy/mailpanel_helper.py"), "--root", str(root)],
        input=b'{"op": "state"}', capture_output=True, timeout=30,
    )
    return proc.returncode, (proc.stdout + proc.stderr).decode()


@pytest.mark.parametrize(
    "tamper",
    ["world-writable renderer", "file of another user", "group-writable folder", "planted bytecode"],
)
def test_the_helper_refuses_a_library_root_does_not_own(tmp_path, tamper):
    base = installed_copy(tmp_path)
    root = tmp_path / "root"
    root.mkdir()
    assert run_copy(base, root)[0] == 0  # Debian's own python3, isolated mode
    if tamper == "world-writable renderer":
        (base / "mailconf/render/exim.py").chmod(0o666)
    elif tamper == "file of another user":
        os.chown(base / "mailconf/grammar.py", 65534, 65534)
    elif tamper == "group-writable folder":
        (base / "mailconf").chmod(0o775)
    else:
        cache = base / "mailconf/__pycache__"
        cache.mkdir()
        os.chown(cache, 65534, 65534)

    status, output = run_copy(base, root)

    assert status != 0 and "refusing to run code root does not own" in output
    assert not (base / "mailconf/__pycache__/grammar.cpython-311.pyc").exists()


def installed_entry(tmp_path) -> Path:
    """The layout install.sh makes now: the command sudo runs in sbin/, the
    helper module and mailconf in lib/mailpanel-helper/ with their bytecode
    compiled there (Debian's python3)."""
    import shutil

    base = tmp_path / "usr-local"
    lib = base / "lib" / "mailpanel-helper"
    lib.mkdir(parents=True)
    (base / "sbin").mkdir()
    shutil.copy2(HELPER.parent / "mailpanel-helper", base / "sbin" / "mailpanel-helper")
    shutil.copy2(HELPER, lib / "mailpanel_helper.py")
    shutil.copytree(HELPER.parent.parent / "mailconf", lib / "mailconf",
                    ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(["/usr/bin/python3", "-I", "-m", "compileall", "-q", "--invalidation-mode",
                    "checked-hash", str(lib)], check=True)
    for path in [base, *base.rglob("*")]:
        path.chmod(0o755 if path.is_dir() or path.parent.name == "sbin" else 0o644)
    return base


def run_entry(base, root):
    proc = subprocess.run(
        [str(base / "sbin" / "mailpanel-helper"), "--root", str(root)],
        input=b'{"op": "state"}', capture_output=True, timeout=30,
    )
    return proc.returncode, (proc.stdout + proc.stderr).decode()


def test_the_installed_helper_imports_its_compiled_module_and_writes_no_bytecode(tmp_path):
    base = installed_entry(tmp_path)
    root = tmp_path / "root"
    root.mkdir()
    before = sorted(p.relative_to(base) for p in base.rglob("*"))
    status, output = run_entry(base, root)
    assert status == 0 and json.loads(output)["ok"] is True, output
    assert sorted(p.relative_to(base) for p in base.rglob("*")) == before
    pyc = list((base / "lib/mailpanel-helper/__pycache__").glob("mailpanel_helper.*.pyc"))
    assert len(pyc) == 1  # what makes a request cheap: the helper is not compiled per run
    # python -v: the module came from that bytecode, not from compiling its source
    proc = subprocess.run(
        ["/usr/bin/python3", "-IS", "-v", str(base / "sbin" / "mailpanel-helper"), "--root", str(root)],
        input=b'{"op": "state"}', capture_output=True, timeout=30,
    )
    assert f"matches {base / 'lib/mailpanel-helper/mailpanel_helper.py'}".encode() in proc.stderr


@pytest.mark.parametrize(
    "tamper",
    ["world-writable helper module", "bytecode of another user", "planted bytecode folder",
     "group-writable library folder", "renderer of another user", "module is a symlink"],
)
def test_the_installed_helper_refuses_a_library_root_does_not_own(tmp_path, tamper):
    base = installed_entry(tmp_path)
    lib = base / "lib" / "mailpanel-helper"
    root = tmp_path / "root"
    root.mkdir()
    if tamper == "world-writable helper module":
        (lib / "mailpanel_helper.py").chmod(0o666)
    elif tamper == "bytecode of another user":
        os.chown(next((lib / "__pycache__").glob("mailpanel_helper.*.pyc")), 65534, 65534)
    elif tamper == "planted bytecode folder":
        os.chown(lib / "mailconf" / "render" / "__pycache__", 65534, 65534)
    elif tamper == "group-writable library folder":
        lib.chmod(0o775)
    elif tamper == "renderer of another user":
        os.chown(lib / "mailconf" / "render" / "exim.py", 65534, 65534)
    else:
        real = tmp_path / "elsewhere.py"
        (lib / "mailpanel_helper.py").rename(real)
        (lib / "mailpanel_helper.py").symlink_to(real)

    status, output = run_entry(base, root)

    assert status != 0 and "refusing to run code root does not own" in output, output

