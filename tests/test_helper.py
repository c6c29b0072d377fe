"""The privileged helper (deploy/mailpanel_helper.py), run as a real process
with --root under tmp_path. No Django: the helper knows nothing of it."""

import argparse
import base64
import errno
import grp
import hashlib
import importlib.util
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
HELPER = REPO / "deploy" / "mailpanel_helper.py"

sys.path.insert(0, str(REPO))
from mailconf.params import CodeParams  # noqa: E402
from mailconf.render.exim import IP_ZONE_CODES  # noqa: E402
from mailconf.render.snappymail import render_default_domain  # noqa: E402
from mailconf.snapshot import Layout, Snapshot, SnappyMail  # noqa: E402

# Data files in their grammar (mailconf/grammar.py): the helper takes nothing else.
PASSWD_A = b"alice:{BLF-CRYPT}$2b$04$" + b"a" * 53 + b"::::::\n"
PASSWD_A2 = b"alice:{BLF-CRYPT}$2b$04$" + b"b" * 53 + b"::::::\n"
PASSWD_B = b"bob:{BLF-CRYPT}$2b$04$" + b"c" * 53 + b"::::::userdb_quota_rule=*:storage=5M\n"
RELAY_OLD = b"auth: login\nhost: old.example\nport: 587\ntls: starttls\n"
RELAY_NEW = b"auth: plain\nhost: new.example\nport: 465\ntls: ssl\n"
DNSBL = ("zen.spamhaus.org=" + ",".join(IP_ZONE_CODES) + "\n").encode()
DNSBL2 = ("bl.example.net=" + ",".join(IP_ZONE_CODES) + "\n").encode()
ALIASES = b"*: alice@example.org\n"
CREDENTIALS = b"Username: admin_0123abcd\nPassword: s3cret-Pa55\nSecret key: 0123456789abcdef\n"
DEFAULT_JSON = render_default_domain(Snapshot(), Layout())
ADMIN_HASH = "$2y$04$" + "x" * 53


def _dkim_pem():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


DKIM = _dkim_pem()


def code(hostname="mail.example.org", sieve=False, snappymail=False, **kw):
    """A request's "code" parameters (mailconf.params.CodeParams)."""
    sm = SnappyMail(True, "admin_0123abcd", ADMIN_HASH, "k3y-" + "a" * 20) if snappymail else SnappyMail()
    return CodeParams(hostname=hostname, sieve_enabled=sieve, snappymail=sm, **kw).to_json()


CODE_FILES = (
    "/etc/dovecot/dovecot.conf",
    "/etc/exim4/exim4.conf",
    "/etc/nftables.d/mailpanel.nft",
    "/var/lib/snappymail/data/_data_/_default_/configs/application.ini",
)

needs_exim = pytest.mark.skipif(shutil.which("exim") is None, reason="exim missing")
needs_validators = pytest.mark.skipif(
    any(shutil.which(p, path="/usr/sbin:/usr/bin:/sbin:/bin") is None for p in ("exim", "doveconf", "nft", "php")),
    reason="exim, doveconf, nft or php missing",
)


def _can_chown():
    if os.geteuid() != 0:
        return False
    try:
        grp.getgrnam("Debian-exim")
        grp.getgrnam("mailpanel-webmail")  # scripts/webmail-user.sh
    except KeyError:
        return False
    return True


CAN_CHOWN = _can_chown()


def load_helper_module():
    spec = importlib.util.spec_from_file_location("mailpanel_helper", HELPER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def b64(content: bytes) -> str:
    return base64.b64encode(content).decode()


def write_item(path, content):
    return {"path": path, "content_b64": b64(content)}


class Helper:
    """Runs the helper against one root folder."""

    def __init__(self, root: Path, service_command: str | None):
        self.root = root
        self.service_command = service_command

    def argv(self, service_command=None):
        argv = [sys.executable, str(HELPER), "--root", str(self.root)]
        command = service_command or self.service_command
        if command:
            argv += ["--service-command", command]
        if not CAN_CHOWN:
            argv.append("--no-chown")
        return argv

    def run(self, request, *, raw=None, service_command=None):
        data = raw if raw is not None else json.dumps(request).encode()
        proc = subprocess.run(
            self.argv(service_command), input=data, capture_output=True, timeout=60
        )
        assert proc.stderr == b"", proc.stderr.decode()
        return proc.returncode, json.loads(proc.stdout)

    def apply(self, write=(), remove=(), reload=(), code=None, **kwargs):
        request = {"op": "apply", "write": list(write), "remove": list(remove)}
        if reload:
            request["reload"] = list(reload)
        if code is not None:
            request["code"] = code
        return self.run(request, **kwargs)

    def live(self, path) -> Path:
        return self.root / path.lstrip("/")


def service_script(tmp_path, name, body):
    """A --service-command stand-in: logs each call, then runs body."""
    log = tmp_path / (name + ".log")
    script = tmp_path / name
    script.write_text("#!/bin/sh\n" 'echo "$*" >> %s\n' % log + textwrap.dedent(body))
    script.chmod(0o755)
    return str(script), log


@pytest.fixture
def root(tmp_path):
    path = tmp_path / "root"
    path.mkdir()
    return path


@pytest.fixture
def reload_log(tmp_path):
    return service_script(tmp_path, "service-ok", "exit 0\n")


@pytest.fixture
def helper(root, reload_log):
    return Helper(root, reload_log[0])


# -- writing


def test_writes_allowlisted_file_with_mode_from_its_table(helper):
    code, answer = helper.apply(
        [write_item("/etc/exim4/domains/example.org/passwd", PASSWD_A)]
    )

    assert code == 0, answer
    assert answer["ok"] is True
    assert answer["written"] == ["/etc/exim4/domains/example.org/passwd"]
    live = helper.live("/etc/exim4/domains/example.org/passwd")
    assert live.read_bytes() == PASSWD_A
    assert stat.S_IMODE(live.stat().st_mode) == 0o640
    folder = live.parent
    assert stat.S_IMODE(folder.stat().st_mode) == 0o750
    if CAN_CHOWN:
        gid = grp.getgrnam("Debian-exim").gr_gid
        assert (live.stat().st_uid, live.stat().st_gid) == (0, gid)
        assert (folder.stat().st_uid, folder.stat().st_gid) == (0, gid)
    assert [p.name for p in folder.iterdir()] == ["passwd"]  # no temp left


@needs_validators
def test_each_managed_file_gets_its_own_owner_and_mode(helper):
    data = {
        "/etc/exim4/smtp_relay.conf": (RELAY_OLD, "Debian-exim", 0o640),
        "/root/.snappymail": (CREDENTIALS, "root", 0o600),
        "/var/lib/snappymail/data/_data_/_default_/domains/default.json": (
            DEFAULT_JSON, "mailpanel-webmail", 0o640,
        ),
    }
    rendered = {  # code files: the helper renders them from the parameters
        "/etc/exim4/exim4.conf": ("Debian-exim", 0o640),
        "/etc/dovecot/dovecot.conf": ("root", 0o644),
        "/etc/nftables.d/mailpanel.nft": ("root", 0o644),
        "/var/lib/snappymail/data/_data_/_default_/configs/application.ini": ("mailpanel-webmail", 0o640),
    }
    status, answer = helper.apply(
        [write_item(p, c) for p, (c, _, _) in data.items()], code=code(snappymail=True)
    )

    assert status == 0, answer
    assert sorted(answer["validation"]) == sorted(rendered)
    assert all(result["ok"] for result in answer["validation"].values())
    for path, (content, group, mode) in data.items():
        assert helper.live(path).read_bytes() == content
    expected = {path: (group, mode) for path, (_, group, mode) in data.items()} | rendered
    for path, (group, mode) in expected.items():
        st = helper.live(path).stat()
        assert stat.S_IMODE(st.st_mode) == mode, path
        if CAN_CHOWN:
            assert st.st_gid == grp.getgrnam(group).gr_gid, path
    assert b"primary_hostname = mail.example.org" in helper.live("/etc/exim4/exim4.conf").read_bytes()


def test_owner_and_mode_cannot_come_from_the_request(helper):
    item = write_item("/etc/exim4/dnsbl.conf", DNSBL)
    item["mode"] = "0666"

    code, answer = helper.apply([item])

    assert code == 2
    assert answer["refused"] is True and "mode" in answer["error"]
    assert not helper.live("/etc/exim4/dnsbl.conf").exists()


# -- refusals


@pytest.mark.parametrize(
    "path, rule",
    [
        ("../etc/exim4/exim4.conf", ".."),
        ("/etc/exim4/../passwd", ".."),
        ("/etc/exim4/domains/../x/dkim.pem", ".."),
        ("/etc/passwd", "outside allowlist"),
        ("/etc/exim4/domains/example.org/authorized_keys", "outside allowlist"),
        ("/etc/exim4/domains/example.org/sub/passwd", "outside allowlist"),
        ("/etc/exim4//exim4.conf", "non-normalised"),
        ("/etc/exim4/./exim4.conf", "non-normalised"),
        ("etc/exim4/exim4.conf", "non-normalised"),
        ("/etc/exim4/domains/Example.ORG/passwd", "bad domain folder name"),
        ("/etc/exim4/domains/-example.org/passwd", "bad domain folder name"),
        ("/etc/exim4/domains/exa_mple.org/passwd", "bad domain folder name"),
        ("/etc/exim4/domains/localhost/passwd", "bad domain folder name"),
        ("/etc/exim4/domains/*/passwd", "bad domain folder name"),
    ],
)
def test_refuses_paths_naming_the_rule(helper, path, rule):
    good = write_item("/etc/exim4/dnsbl.conf", DNSBL)

    code, answer = helper.apply([good, write_item(path, b"x")])

    assert code == 2
    assert answer == {
        "ok": False,
        "refused": True,
        "rule": rule,
        "error": answer["error"],
    }
    assert repr(path) in answer["error"]
    # the whole request is refused, the good file included
    assert not helper.live("/etc/exim4/dnsbl.conf").exists()


def test_refuses_removing_outside_allowlist(helper):
    code, answer = helper.apply(remove=["/etc/passwd"])

    assert code == 2 and answer["rule"] == "outside allowlist"


def test_refuses_symlinked_domain_folder_pointing_outside(helper, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    domains = helper.live("/etc/exim4/domains")
    domains.mkdir(parents=True)
    (domains / "example.org").symlink_to(outside)

    code, answer = helper.apply(
        [write_item("/etc/exim4/domains/example.org/dkim.pem", DKIM)]
    )

    assert code == 2
    assert answer["rule"] == "symlink"
    assert "/etc/exim4/domains/example.org" in answer["error"]
    assert list(outside.iterdir()) == []


def test_refuses_a_live_file_that_is_a_symlink(helper, tmp_path):
    target = tmp_path / "shadow"
    target.write_text("root:x:0:0::/root:/bin/sh\n")
    exim_dir = helper.live("/etc/exim4")
    exim_dir.mkdir(parents=True)
    (exim_dir / "dnsbl.conf").symlink_to(target)

    code, answer = helper.apply([write_item("/etc/exim4/dnsbl.conf", DNSBL)])

    assert code == 2 and answer["rule"] == "symlink"
    assert target.read_text() == "root:x:0:0::/root:/bin/sh\n"


def test_refuses_unknown_service(helper, reload_log):
    code, answer = helper.run({"op": "reload", "services": ["exim4", "sshd"]})

    assert code == 2
    assert answer["rule"] == "unknown service" and "'sshd'" in answer["error"]
    assert not reload_log[1].exists()  # exim4 was not reloaded either


def test_refuses_unknown_service_in_apply(helper):
    code, answer = helper.apply(
        [write_item("/etc/exim4/dnsbl.conf", DNSBL)], reload=["apache2"]
    )

    assert code == 2 and answer["rule"] == "unknown service"
    assert not helper.live("/etc/exim4/dnsbl.conf").exists()


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"[]",
        b'{"write": []}',
        b'{"op": "rm -rf"}',
        b'{"op": ["state"]}',
    ],
)
def test_refuses_garbage(helper, raw):
    code, answer = helper.run(None, raw=raw)

    assert code == 2 and answer["refused"] is True


def test_refuses_bad_base64_and_unknown_fields(helper):
    code, answer = helper.run(
        {
            "op": "apply",
            "write": [{"path": "/etc/exim4/dnsbl.conf", "content_b64": "***"}],
        }
    )
    assert code == 2 and "base64" in answer["error"]

    code, answer = helper.run({"op": "apply", "write": [], "chmod": "777"})
    assert code == 2 and "chmod" in answer["error"]


# -- validation before swap


def write_layout(helper, **fields):
    """The helper's own Layout file (root's choice, never the request's)."""
    path = helper.live("/etc/mailpanel/layout.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(fields))
    path.chmod(0o644)


@needs_validators
def test_a_code_file_the_daemon_refuses_is_not_swapped(helper):
    assert helper.apply(code=code())[0] == 0
    live = {path: helper.live(path).read_bytes() for path in CODE_FILES[:3]}
    # Our renderer with a layout Exim refuses: the daemon's parser has the last word.
    write_layout(helper, exim_user="no-such-user-mp")

    status, answer = helper.apply(
        [write_item("/etc/exim4/dnsbl.conf", DNSBL)], code=code(hostname="mx.example.org")
    )

    assert status == 1
    assert answer["ok"] is False and answer["stage"] == "validate"
    result = answer["validation"]["/etc/exim4/exim4.conf"]
    assert result["ok"] is False
    assert "no-such-user-mp was not found" in result["output"]
    assert "\n" not in result["output"] and len(result["output"]) <= 300
    for path, content in live.items():
        assert helper.live(path).read_bytes() == content
    assert not helper.live("/etc/exim4/dnsbl.conf").exists()  # all or nothing
    assert sorted(p.name for p in helper.live("/etc/exim4").iterdir()) == ["exim4.conf"]
    assert answer["reloads"] == {}


@needs_validators
def test_changed_parameters_rewrite_only_the_code_files_they_touch_and_reload_those(
    helper, reload_log
):
    status, answer = helper.apply(code=code())
    assert status == 0, answer
    assert sorted(answer["written"]) == sorted(CODE_FILES[:3])  # SnappyMail not installed
    reload_log[1].unlink()

    status, answer = helper.apply(code=code(sieve=True, sieve_external=True))

    assert status == 0, answer
    # sieve: Dovecot's protocols and the firewall's 4190 rule, not Exim
    assert sorted(answer["written"]) == ["/etc/dovecot/dovecot.conf", "/etc/nftables.d/mailpanel.nft"]
    assert set(answer["reloads"]) == {"dovecot", "firewall"}
    assert sorted(reload_log[1].read_text().split("\n")) == ["", "reload dovecot", "reload firewall"]
    assert b"protocols = imap lmtp sieve" in helper.live("/etc/dovecot/dovecot.conf").read_bytes()

    status, answer = helper.apply(code=code(sieve=True, sieve_external=True))
    assert status == 0 and answer["written"] == [] and answer["reloads"] == {}


@needs_validators
def test_uninstalled_snappymail_loses_its_application_ini(helper):
    ini = "/var/lib/snappymail/data/_data_/_default_/configs/application.ini"
    assert helper.apply(code=code(snappymail=True))[0] == 0
    assert b'admin_login = "admin_0123abcd"' in helper.live(ini).read_bytes()

    status, answer = helper.apply(code=code())

    assert status == 0 and answer["removed"] == [ini]
    assert not helper.live(ini).exists()


@pytest.mark.parametrize(
    "check, content, program",
    [
        ("exim", b"primary_hostname = x\nno_such_option = 1\n", "exim"),
        ("doveconf", b"protocols = imap\nno_such_setting = 1\n", "doveconf"),
        ("nft", b"table inet mailpanel {\n", "nft"),
        ("php-ini", b'[security]\nadmin_login = "admin\n', "php"),
    ],
)
def test_each_validator_refuses_a_broken_file_and_says_where(check, content, program):
    if not shutil.which(program, path="/usr/sbin:/usr/bin:/sbin:/bin"):
        pytest.skip(program + " missing")
    validators = load_helper_module().VALIDATORS

    ok, output = validators[check](content)

    assert ok is False and output and "\n" not in output
    assert validators[check](content)[0] is False


# -- reload failure: back to the last good files


def test_failing_reload_restores_previous_files_and_reloads_again(helper, tmp_path):
    old_relay = RELAY_OLD
    helper.apply(
        [
            write_item("/etc/exim4/smtp_relay.conf", old_relay),
            write_item("/etc/exim4/domains/gone.example/passwd", PASSWD_B),
        ]
    )
    failing, log = service_script(
        tmp_path, "service-fails", 'echo "Job for $2.service failed." >&2\nexit 1\n'
    )

    code, answer = helper.apply(
        [
            write_item("/etc/exim4/smtp_relay.conf", RELAY_NEW),
            write_item("/etc/exim4/domains/new.example/dkim.pem", DKIM),
        ],
        remove=["/etc/exim4/domains/gone.example/passwd"],
        reload=["exim4", "dovecot"],
        service_command=failing,
    )

    assert code == 1
    assert answer["ok"] is False and answer["stage"] == "reload"
    assert "exim4" in answer["error"] and "restored" in answer["error"]
    assert answer["reloads"] == {
        "exim4": {"ok": False, "output": "Job for exim4.service failed."}
    }
    assert set(answer["restored"]) == {
        "/etc/exim4/smtp_relay.conf",
        "/etc/exim4/domains/new.example/dkim.pem",
        "/etc/exim4/domains/gone.example/passwd",
    }
    assert answer["written"] == [] and answer["removed"] == []
    assert "exim4" in answer["reloads_after_restore"]
    # stopped at the first failure, reloaded it again after the restore
    assert log.read_text() == "reload exim4\nreload exim4\n"
    assert helper.live("/etc/exim4/smtp_relay.conf").read_bytes() == old_relay
    assert helper.live("/etc/exim4/domains/gone.example/passwd").read_bytes() == PASSWD_B
    restored = helper.live("/etc/exim4/domains/gone.example/passwd").stat()
    assert stat.S_IMODE(restored.st_mode) == 0o640
    assert not helper.live("/etc/exim4/domains/new.example").exists()


def test_a_failed_swap_puts_back_the_files_already_swapped(tmp_path, monkeypatch):
    module = load_helper_module()
    root = tmp_path / "root"
    root.mkdir()
    tree = module.Tree(str(root), chown=CAN_CHOWN)
    options = argparse.Namespace(service_command="true")
    first = {"op": "apply", "write": [write_item("/etc/exim4/dnsbl.conf", DNSBL)]}
    assert module.op_apply(first, tree, options)[0] == 0
    real_replace, calls = module.Tree.replace, []

    def replace_then_fail(self, dirpath, tmp, name):
        calls.append(name)
        if len(calls) == 3:
            raise OSError(errno.EIO, "disk on fire")
        real_replace(self, dirpath, tmp, name)

    monkeypatch.setattr(module.Tree, "replace", replace_then_fail)
    request = {
        "op": "apply",
        "write": [
            write_item("/etc/exim4/dnsbl.conf", DNSBL2),
            write_item("/etc/exim4/domains/example.org/passwd", PASSWD_A),
            write_item("/etc/exim4/send_only_domains", b"example.org:\n"),
        ],
        "reload": ["exim4"],
    }

    code, answer = module.op_apply(request, tree, options)

    assert code == 1
    assert answer["stage"] == "swap" and "disk on fire" in answer["error"]
    assert answer["restore_errors"] == []
    assert (root / "etc/exim4/dnsbl.conf").read_bytes() == DNSBL
    assert not (root / "etc/exim4/domains").exists()
    assert sorted(p.name for p in (root / "etc/exim4").iterdir()) == ["dnsbl.conf"]


def test_reload_op_runs_the_service_command(helper, reload_log):
    code, answer = helper.run(
        {"op": "reload", "services": ["dovecot", "php-fpm", "firewall"]}
    )

    assert code == 0
    assert set(answer["reloads"]) == {"dovecot", "php-fpm", "firewall"}
    assert (
        reload_log[1].read_text() == "reload dovecot\nreload php-fpm\nreload firewall\n"
    )


def test_reload_op_reports_failure(helper, tmp_path):
    failing, _ = service_script(tmp_path, "service-fails", "exit 3\n")

    code, answer = helper.run(
        {"op": "reload", "services": ["exim4"]}, service_command=failing
    )

    assert code == 1
    assert answer["reloads"]["exim4"] == {"ok": False, "output": "exited with status 3"}


def test_production_reload_commands():
    helper = load_helper_module()
    tree = helper.Tree("/srv/test-root", chown=False)

    firewall = helper.reload_command("firewall", tree, None)
    php = helper.reload_command("php-fpm", tree, None)

    assert firewall[1:] == ["-f", "/srv/test-root/etc/nftables.d/mailpanel.nft"]
    assert os.path.basename(firewall[0]) == "nft"
    assert php[1:] == ["reload", "php8.2-fpm"]
    assert os.path.basename(php[0]) == "systemctl"
    assert helper.reload_command("exim4", tree, "/bin/echo -n") == [
        "/bin/echo",
        "-n",
        "reload",
        "exim4",
    ]


# -- state


def test_state_returns_hashes_of_managed_files_and_never_their_content(helper):
    secret = CREDENTIALS
    assert helper.apply(
        [
            write_item("/root/.snappymail", secret),
            write_item("/etc/exim4/dnsbl.conf", DNSBL),
            write_item("/etc/exim4/domains/example.org/passwd", PASSWD_A),
            write_item("/etc/exim4/domains/xn--bcher-kva.example/aliases", ALIASES),
        ]
    )[0] == 0
    # not managed: ignored
    (helper.live("/etc/exim4") / "exim4.conf.template").write_text("x")
    (helper.live("/etc/exim4/domains") / "NotADomain").mkdir()
    (helper.live("/etc/exim4/domains/NotADomain") / "passwd").write_text("x")
    (helper.live("/etc/exim4/domains/example.org") / "notes.txt").write_text("x")

    proc = subprocess.run(
        Helper(helper.root, None).argv(),
        input=b'{"op": "state"}',
        capture_output=True,
        timeout=30,
    )

    assert proc.returncode == 0
    assert b"s3cret" not in proc.stdout
    answer = json.loads(proc.stdout)
    assert answer == {
        "ok": True,
        "files": {
            "/etc/exim4/dnsbl.conf": hashlib.sha256(DNSBL).hexdigest(),
            "/etc/exim4/domains/example.org/passwd": hashlib.sha256(PASSWD_A).hexdigest(),
            "/etc/exim4/domains/xn--bcher-kva.example/aliases": hashlib.sha256(
                ALIASES
            ).hexdigest(),
            "/root/.snappymail": hashlib.sha256(secret).hexdigest(),
        },
    }


def test_state_of_an_empty_root_is_empty(helper):
    assert helper.run({"op": "state"}) == (0, {"ok": True, "files": {}})


# -- removal


def test_removing_a_domains_files_removes_its_empty_folder(helper):
    files = {"dkim.pem": DKIM, "passwd": PASSWD_A, "aliases": ALIASES,
             "forwards": b"alice: bob@example.net\n", "smtp_relay.conf": RELAY_OLD}
    assert helper.apply(
        [write_item("/etc/exim4/domains/example.org/" + f, c) for f, c in files.items()]
        + [write_item("/etc/exim4/domains/keep.example/passwd", PASSWD_B)]
    )[0] == 0

    code, answer = helper.apply(
        remove=["/etc/exim4/domains/example.org/" + f for f in files]
    )

    assert code == 0, answer
    assert sorted(answer["removed"]) == sorted(
        "/etc/exim4/domains/example.org/" + f for f in files
    )
    assert answer["removed_dirs"] == ["/etc/exim4/domains/example.org"]
    assert not helper.live("/etc/exim4/domains/example.org").exists()
    assert helper.live("/etc/exim4/domains/keep.example/passwd").exists()


def test_removing_a_missing_file_is_not_an_error(helper):
    code, answer = helper.apply(remove=["/etc/exim4/domains/example.org/dkim.pem"])

    assert code == 0 and answer["removed"] == []


def test_removing_one_file_keeps_the_domain_folder(helper):
    assert helper.apply(
        [
            write_item("/etc/exim4/domains/example.org/dkim.pem", DKIM),
            write_item("/etc/exim4/domains/example.org/passwd", PASSWD_A),
        ]
    )[0] == 0

    code, answer = helper.apply(remove=["/etc/exim4/domains/example.org/dkim.pem"])

    assert code == 0 and "removed_dirs" not in answer
    assert helper.live("/etc/exim4/domains/example.org/passwd").exists()


# -- crashes and concurrency


def test_reapply_after_helper_killed_mid_apply_converges(helper, tmp_path):
    helper.apply([write_item("/etc/exim4/domains/example.org/passwd", PASSWD_A)])
    started = tmp_path / "reload-started"
    slow, _ = service_script(tmp_path, "service-slow", "touch %s\nsleep 30\n" % started)
    request = {
        "op": "apply",
        "write": [
            write_item("/etc/exim4/domains/example.org/passwd", PASSWD_A2),
            write_item("/etc/exim4/dnsbl.conf", DNSBL),
        ],
        "reload": ["exim4"],
    }
    proc = subprocess.Popen(
        Helper(helper.root, slow).argv(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    proc.stdin.write(json.dumps(request).encode())
    proc.stdin.close()
    deadline = time.monotonic() + 20
    while not started.exists():
        assert time.monotonic() < deadline, "the helper never reached the reload"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    # a temp file as a kill during the write phase would leave it
    stale = (
        helper.live("/etc/exim4/domains/example.org")
        / ".passwd.mailpanel-tmp-0123456789ab"
    )
    stale.write_bytes(b"half")

    code, answer = helper.run(request)  # the lock died with the killed helper

    assert code == 0, answer
    assert helper.live("/etc/exim4/domains/example.org/passwd").read_bytes() == PASSWD_A2
    assert helper.live("/etc/exim4/dnsbl.conf").read_bytes() == DNSBL
    assert not stale.exists()
    code, answer = helper.apply(remove=["/etc/exim4/domains/example.org/passwd"])
    assert answer["removed_dirs"] == ["/etc/exim4/domains/example.org"]


def test_sigterm_lets_a_running_apply_finish(helper, tmp_path):
    started = tmp_path / "reload-started"
    slow, _ = service_script(
        tmp_path, "service-slow", "touch %s\nsleep 0.5\n" % started
    )
    request = {
        "op": "apply",
        "write": [write_item("/etc/exim4/dnsbl.conf", DNSBL)],
        "reload": ["exim4"],
    }
    proc = subprocess.Popen(
        Helper(helper.root, slow).argv(), stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    proc.stdin.write(json.dumps(request).encode())
    proc.stdin.close()
    deadline = time.monotonic() + 20
    while not started.exists():
        assert time.monotonic() < deadline, "the helper never reached the reload"
        time.sleep(0.02)

    proc.send_signal(signal.SIGTERM)

    assert proc.wait(timeout=30) == 0
    assert json.loads(proc.stdout.read())["ok"] is True
    proc.stdout.close()


def test_two_applies_never_interleave(helper, tmp_path):
    events = tmp_path / "events"
    slow, _ = service_script(
        tmp_path,
        "service-slow",
        'echo "start $2" >> %s\nsleep 0.5\necho "end $2" >> %s\n' % (events, events),
    )
    argv = Helper(helper.root, slow).argv()
    procs = []
    for service in ("exim4", "dovecot"):
        request = {"op": "reload", "services": [service]}
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        proc.stdin.write(json.dumps(request).encode())
        proc.stdin.close()
        procs.append(proc)
    for proc in procs:
        assert proc.wait(timeout=30) == 0
        proc.stdout.close()

    lines = events.read_text().split("\n")[:4]
    assert [line.split()[0] for line in lines] == ["start", "end", "start", "end"]
    assert lines[0].split()[1] == lines[1].split()[1]


# -- the Django side's client, in a child process with minimal settings


def run_client(code: str, helper_command: str) -> subprocess.CompletedProcess:
    pytest.importorskip("django")
    script = textwrap.dedent("""
        import json, sys
        from django.conf import settings
        settings.configure(MAILPANEL_HELPER=%r, MAILPANEL_HELPER_TIMEOUT=30)
        sys.path.insert(0, %r)
        from mailadmin.helper_client import HelperError, call_helper
        """ % (helper_command, str(REPO))) + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, timeout=60, cwd="/"
    )


def test_client_returns_the_answer(helper):
    command = " ".join(Helper(helper.root, None).argv())
    proc = run_client(
        'print(json.dumps(call_helper({"op": "state"})))',
        command,
    )

    assert proc.returncode == 0, proc.stderr.decode()
    assert json.loads(proc.stdout) == {"ok": True, "files": {}}


def test_client_raises_helper_error_on_refusal_failure_and_garbage(helper, tmp_path):
    failing, _ = service_script(tmp_path, "service-fails", "exit 1\n")
    code = """
        refused = {"op": "apply", "remove": ["/etc/passwd"]}
        for request in (refused, {"op": "reload", "services": ["exim4"]}):
            try:
                call_helper(request)
            except HelperError as e:
                print(e.refused, e.returncode, e.answer.get("rule"), e.message)
        """
    command = " ".join(Helper(helper.root, failing).argv())
    proc = run_client(code, command)
    lines = proc.stdout.decode().splitlines()
    assert lines[0].startswith("True 2 outside allowlist helper refused the request:")
    assert lines[1].startswith("False 1 None helper failed: reload failed: exim4")

    proc = run_client(
        """
        try:
            call_helper({"op": "state"})
        except HelperError as e:
            print(e.message)
        """,
        "echo not-json",
    )
    assert proc.stdout.decode().startswith("helper gave no JSON answer")



def test_rewritten_file_gets_a_newer_mtime_even_within_the_same_second(helper):
    """Dovecot notices a passwd-file change by mtime (whole seconds) or size only."""
    path = "/etc/exim4/domains/example.org/passwd"
    assert helper.apply([write_item(path, PASSWD_A)])[0] == 0
    before = helper.live(path).stat().st_mtime
    assert helper.apply([write_item(path, PASSWD_A2)])[0] == 0
    assert int(helper.live(path).stat().st_mtime) > int(before)


def test_sync_domains_writes_only_what_changed_and_prunes_the_rest_of_those_folders(helper):
    keep = "/etc/exim4/domains/example.org/passwd"
    stale = "/etc/exim4/domains/example.org/smtp_relay.conf"
    other = "/etc/exim4/domains/other.example/passwd"
    assert helper.apply([write_item(keep, PASSWD_A), write_item(stale, RELAY_OLD), write_item(other, PASSWD_B)])[0] == 0
    code, answer = helper.run(
        {"op": "apply", "write": [write_item(keep, PASSWD_A)], "sync_domains": ["example.org"]}
    )
    assert code == 0, answer
    assert answer["written"] == [] and answer["removed"] == [stale]
    assert helper.live(keep).exists() and helper.live(other).exists()
    assert not helper.live(stale).exists()
    assert answer["server_files"] == []


def test_sync_domains_refuses_a_write_outside_the_synced_folders(helper):
    code, answer = helper.run(
        {"op": "apply", "write": [write_item("/etc/exim4/domains/other.example/passwd", PASSWD_A)],
         "sync_domains": ["example.org"]}
    )
    assert code == 2 and answer["refused"]
    assert not helper.live("/etc/exim4/domains/other.example/passwd").exists()


def test_quota_usage_sums_dovecot_maildirsize_files_and_reads_nothing_else(helper, tmp_path):
    maildirs = helper.root / "var/mail/vhosts/example.org"
    (maildirs / "info/Maildir").mkdir(parents=True)
    (maildirs / "info/Maildir/maildirsize").write_text("104857600S\n1200 1\n3400 2\n-200 -1\n")
    (maildirs / "empty/Maildir").mkdir(parents=True)  # no maildirsize yet: unknown, not zero
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "maildirsize").write_text("1S\n999 9\n")
    (maildirs / "sneaky").mkdir()
    (maildirs / "sneaky/Maildir").symlink_to(outside)
    code, answer = helper.run({"op": "quota_usage", "domain": "example.org"})
    assert code == 0, answer
    assert answer["usage"] == {"info": {"bytes": 4400, "messages": 2}}


def test_quota_usage_refuses_a_path_instead_of_a_domain(helper):
    code, answer = helper.run({"op": "quota_usage", "domain": "../../etc"})
    assert code == 2 and answer["refused"]


# -- a deleted domain's mail


def test_move_mail_away_leaves_the_name_empty_and_purge_removes_it_later(helper):
    maildirs = helper.root / "var/mail/vhosts"
    (maildirs / "example.org/info/Maildir/cur").mkdir(parents=True)
    (maildirs / "example.org/info/Maildir/cur/1.msg").write_text("old mail")
    (maildirs / "keep.example/a/Maildir").mkdir(parents=True)

    code, answer = helper.run({"op": "move_mail_away", "domain": "example.org"})

    assert code == 0, answer
    moved = answer["moved_to"]
    assert moved.startswith("/var/mail/vhosts/.deleted/example.org-")
    assert not (maildirs / "example.org").exists()
    assert (helper.live(moved) / "info/Maildir/cur/1.msg").read_text() == "old mail"
    assert stat.S_IMODE((maildirs / ".deleted").stat().st_mode) == 0o700
    assert (maildirs / "keep.example/a/Maildir").is_dir()
    # a second delete of the same name the same second gets its own folder
    (maildirs / "example.org").mkdir()
    second = helper.run({"op": "move_mail_away", "domain": "example.org"})[1]["moved_to"]
    assert second != moved and helper.live(second).is_dir()
    assert helper.run({"op": "move_mail_away", "domain": "none.example"}) == (0, {"ok": True, "moved_to": None})

    assert helper.run({"op": "purge_deleted_mail", "older_than_days": 1}) == (0, {"ok": True, "purged": []})
    old = maildirs / ".deleted/gone.example-20200101000000"
    old.mkdir()
    code, answer = helper.run({"op": "purge_deleted_mail", "older_than_days": 1})
    assert code == 0 and answer["purged"] == ["gone.example-20200101000000"]
    assert not old.exists() and helper.live(moved).exists()


@pytest.mark.parametrize("domain", ["../etc", ".deleted", "example.org\n", "Example.org", "a/b.org"])
def test_move_mail_away_refuses_anything_but_a_domain_name(helper, domain):
    code, answer = helper.run({"op": "move_mail_away", "domain": domain})
    assert code == 2 and answer["refused"]


def test_move_mail_away_refuses_a_symlink_in_place_of_the_domain(helper, tmp_path):
    maildirs = helper.root / "var/mail/vhosts"
    maildirs.mkdir(parents=True)
    outside = tmp_path / "precious"
    outside.mkdir()
    (maildirs / "example.org").symlink_to(outside)
    code, answer = helper.run({"op": "move_mail_away", "domain": "example.org"})
    assert code == 1 and "not a folder" in answer["error"]
    assert outside.is_dir() and (maildirs / "example.org").is_symlink()
