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

VALID_EXIM = b"primary_hostname = mail.example.org\n"
INVALID_EXIM = b"primary_hostname = mail.example.org\nno_such_option = 1\n"

needs_exim = pytest.mark.skipif(shutil.which("exim") is None, reason="exim missing")


def _can_chown():
    if os.geteuid() != 0:
        return False
    try:
        grp.getgrnam("Debian-exim")
        grp.getgrnam("www-data")
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

    def apply(self, write=(), remove=(), reload=(), **kwargs):
        request = {"op": "apply", "write": list(write), "remove": list(remove)}
        if reload:
            request["reload"] = list(reload)
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
        [write_item("/etc/exim4/domains/example.org/passwd", b"alice:{PLAIN}x\n")]
    )

    assert code == 0, answer
    assert answer["ok"] is True
    assert answer["written"] == ["/etc/exim4/domains/example.org/passwd"]
    live = helper.live("/etc/exim4/domains/example.org/passwd")
    assert live.read_bytes() == b"alice:{PLAIN}x\n"
    assert stat.S_IMODE(live.stat().st_mode) == 0o640
    folder = live.parent
    assert stat.S_IMODE(folder.stat().st_mode) == 0o750
    if CAN_CHOWN:
        gid = grp.getgrnam("Debian-exim").gr_gid
        assert (live.stat().st_uid, live.stat().st_gid) == (0, gid)
        assert (folder.stat().st_uid, folder.stat().st_gid) == (0, gid)
    assert [p.name for p in folder.iterdir()] == ["passwd"]  # no temp left


def test_each_managed_file_gets_its_own_owner_and_mode(helper):
    files = {
        "/etc/exim4/smtp_relay.conf": (b"host: relay.example\n", "Debian-exim", 0o640),
        "/etc/dovecot/dovecot.conf": (b"protocols = imap\n", "root", 0o644),
        "/root/.snappymail": (b"Username: admin_0123abcd\n", "root", 0o600),
        "/var/lib/snappymail/data/_data_/_default_/domains/default.json": (
            b'{"Sieve": {"enabled": true}}',
            "www-data",
            0o640,
        ),
    }
    if not shutil.which("doveconf"):
        del files["/etc/dovecot/dovecot.conf"]
    code, answer = helper.apply([write_item(p, c) for p, (c, _, _) in files.items()])

    assert code == 0, answer
    for path, (content, group, mode) in files.items():
        st = helper.live(path).stat()
        assert helper.live(path).read_bytes() == content
        assert stat.S_IMODE(st.st_mode) == mode, path
        if CAN_CHOWN:
            assert st.st_gid == grp.getgrnam(group).gr_gid, path


def test_owner_and_mode_cannot_come_from_the_request(helper):
    item = write_item("/etc/exim4/dnsbl.conf", b"zen.spamhaus.org\n")
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
    good = write_item("/etc/exim4/dnsbl.conf", b"zen.spamhaus.org\n")

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
        [write_item("/etc/exim4/domains/example.org/dkim.pem", b"KEY")]
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

    code, answer = helper.apply([write_item("/etc/exim4/dnsbl.conf", b"zen\n")])

    assert code == 2 and answer["rule"] == "symlink"
    assert target.read_text() == "root:x:0:0::/root:/bin/sh\n"


def test_refuses_unknown_service(helper, reload_log):
    code, answer = helper.run({"op": "reload", "services": ["exim4", "sshd"]})

    assert code == 2
    assert answer["rule"] == "unknown service" and "'sshd'" in answer["error"]
    assert not reload_log[1].exists()  # exim4 was not reloaded either


def test_refuses_unknown_service_in_apply(helper):
    code, answer = helper.apply(
        [write_item("/etc/exim4/dnsbl.conf", b"zen\n")], reload=["apache2"]
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


@needs_exim
def test_invalid_exim_config_is_not_swapped(helper):
    assert helper.apply([write_item("/etc/exim4/exim4.conf", VALID_EXIM)])[0] == 0

    code, answer = helper.apply(
        [
            write_item("/etc/exim4/exim4.conf", INVALID_EXIM),
            write_item("/etc/exim4/dnsbl.conf", b"zen.spamhaus.org\n"),
        ],
        reload=["exim4"],
    )

    assert code == 1
    assert answer["ok"] is False and answer["stage"] == "validate"
    result = answer["validation"]["/etc/exim4/exim4.conf"]
    assert result["ok"] is False
    assert "no_such_option" in result["output"]
    assert helper.live("/etc/exim4/exim4.conf").read_bytes() == VALID_EXIM
    assert not helper.live("/etc/exim4/dnsbl.conf").exists()  # all or nothing
    assert sorted(p.name for p in helper.live("/etc/exim4").iterdir()) == ["exim4.conf"]
    assert answer["reloads"] == {}


@needs_exim
def test_valid_exim_config_is_swapped_and_exim_reloaded(helper, reload_log):
    helper.apply([write_item("/etc/exim4/exim4.conf", VALID_EXIM)])
    new = VALID_EXIM + b"smtp_banner = $smtp_active_hostname ESMTP\n"

    code, answer = helper.apply(
        [write_item("/etc/exim4/exim4.conf", new)], reload=["exim4"]
    )

    assert code == 0, answer
    assert answer["validation"]["/etc/exim4/exim4.conf"]["ok"] is True
    assert answer["reloads"] == {"exim4": {"ok": True, "output": ""}}
    assert helper.live("/etc/exim4/exim4.conf").read_bytes() == new
    assert reload_log[1].read_text() == "reload exim4\n"


@pytest.mark.parametrize(
    "path, content, program",
    [
        (
            "/etc/dovecot/dovecot.conf",
            b"protocols = imap\nno_such_setting = 1\n",
            "doveconf",
        ),
        ("/etc/nftables.d/mailpanel.nft", b"table inet mailpanel {\n", "nft"),
        (
            "/var/lib/snappymail/data/_data_/_default_/configs/application.ini",
            b'[security]\nadmin_login = "admin\n',
            "php",
        ),
        ("/var/lib/snappymail/data/_data_/_default_/domains/default.json", b"{", None),
    ],
)
def test_other_validators_keep_invalid_candidates_out(helper, path, content, program):
    if program and not shutil.which(program, path="/usr/sbin:/usr/bin:/sbin:/bin"):
        pytest.skip(program + " missing")

    code, answer = helper.apply([write_item(path, content)])

    assert code == 1 and answer["stage"] == "validate", answer
    assert answer["validation"][path]["ok"] is False
    assert answer["validation"][path]["output"]
    assert not helper.live(path).exists()
    # no temp file left, and the folders made for the candidate are gone again
    assert [p.name for p in helper.root.iterdir()] == ["run"]


def test_valid_candidates_for_other_validators_are_swapped(helper):
    files = {
        "/etc/nftables.d/mailpanel.nft": (
            b"table inet mailpanel {\n  chain input {\n"
            b"    type filter hook input priority 0; policy accept;\n"
            b"    tcp dport 4190 accept\n  }\n}\n",
            "nft",
        ),
        "/var/lib/snappymail/data/_data_/_default_/configs/application.ini": (
            b'[security]\nadmin_login = "admin_0123abcd"\n'
            b'[admin_panel]\nkey = "k\\$1"\n',
            "php",
        ),
        "/var/lib/snappymail/data/_data_/_default_/domains/default.json": (
            b'{"Sieve": {"host": "localhost", "port": 4190, "type": 0}}',
            None,
        ),
    }
    files = {
        p: c
        for p, (c, program) in files.items()
        if program is None
        or shutil.which(program, path="/usr/sbin:/usr/bin:/sbin:/bin")
    }

    code, answer = helper.apply([write_item(p, c) for p, c in files.items()])

    assert code == 0, answer
    for path, content in files.items():
        assert helper.live(path).read_bytes() == content


# -- reload failure: back to the last good files


def test_failing_reload_restores_previous_files_and_reloads_again(helper, tmp_path):
    old_relay = b"host: old.example\n"
    helper.apply(
        [
            write_item("/etc/exim4/smtp_relay.conf", old_relay),
            write_item("/etc/exim4/domains/gone.example/passwd", b"bob:{PLAIN}y\n"),
        ]
    )
    failing, log = service_script(
        tmp_path, "service-fails", 'echo "Job for $2.service failed." >&2\nexit 1\n'
    )

    code, answer = helper.apply(
        [
            write_item("/etc/exim4/smtp_relay.conf", b"host: new.example\n"),
            write_item("/etc/exim4/domains/new.example/dkim.pem", b"KEY"),
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
    assert helper.live("/etc/exim4/domains/gone.example/passwd").read_bytes() == (
        b"bob:{PLAIN}y\n"
    )
    restored = helper.live("/etc/exim4/domains/gone.example/passwd").stat()
    assert stat.S_IMODE(restored.st_mode) == 0o640
    assert not helper.live("/etc/exim4/domains/new.example").exists()


def test_a_failed_swap_puts_back_the_files_already_swapped(tmp_path, monkeypatch):
    module = load_helper_module()
    root = tmp_path / "root"
    root.mkdir()
    tree = module.Tree(str(root), chown=CAN_CHOWN)
    options = argparse.Namespace(service_command="true")
    first = {"op": "apply", "write": [write_item("/etc/exim4/dnsbl.conf", b"old\n")]}
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
            write_item("/etc/exim4/dnsbl.conf", b"new\n"),
            write_item("/etc/exim4/domains/example.org/passwd", b"a\n"),
            write_item("/etc/exim4/send_only_domains", b"example.org\n"),
        ],
        "reload": ["exim4"],
    }

    code, answer = module.op_apply(request, tree, options)

    assert code == 1
    assert answer["stage"] == "swap" and "disk on fire" in answer["error"]
    assert answer["restore_errors"] == []
    assert (root / "etc/exim4/dnsbl.conf").read_bytes() == b"old\n"
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
    secret = b"Username: admin_0123abcd\nPassword: s3cret-Pa55\n"
    helper.apply(
        [
            write_item("/root/.snappymail", secret),
            write_item("/etc/exim4/dnsbl.conf", b"zen.spamhaus.org\n"),
            write_item("/etc/exim4/domains/example.org/passwd", b"alice:{PLAIN}pw\n"),
            write_item(
                "/etc/exim4/domains/xn--bcher-kva.example/aliases", b"*: alice\n"
            ),
        ]
    )
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
            "/etc/exim4/dnsbl.conf": hashlib.sha256(b"zen.spamhaus.org\n").hexdigest(),
            "/etc/exim4/domains/example.org/passwd": hashlib.sha256(
                b"alice:{PLAIN}pw\n"
            ).hexdigest(),
            "/etc/exim4/domains/xn--bcher-kva.example/aliases": hashlib.sha256(
                b"*: alice\n"
            ).hexdigest(),
            "/root/.snappymail": hashlib.sha256(secret).hexdigest(),
        },
    }


def test_state_of_an_empty_root_is_empty(helper):
    assert helper.run({"op": "state"}) == (0, {"ok": True, "files": {}})


# -- removal


def test_removing_a_domains_files_removes_its_empty_folder(helper):
    files = ["dkim.pem", "passwd", "aliases", "forwards", "smtp_relay.conf"]
    helper.apply(
        [write_item("/etc/exim4/domains/example.org/" + f, b"x") for f in files]
        + [write_item("/etc/exim4/domains/keep.example/passwd", b"y")]
    )

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
    helper.apply(
        [
            write_item("/etc/exim4/domains/example.org/dkim.pem", b"x"),
            write_item("/etc/exim4/domains/example.org/passwd", b"y"),
        ]
    )

    code, answer = helper.apply(remove=["/etc/exim4/domains/example.org/dkim.pem"])

    assert code == 0 and "removed_dirs" not in answer
    assert helper.live("/etc/exim4/domains/example.org/passwd").exists()


# -- crashes and concurrency


def test_reapply_after_helper_killed_mid_apply_converges(helper, tmp_path):
    helper.apply([write_item("/etc/exim4/domains/example.org/passwd", b"old\n")])
    started = tmp_path / "reload-started"
    slow, _ = service_script(tmp_path, "service-slow", "touch %s\nsleep 30\n" % started)
    request = {
        "op": "apply",
        "write": [
            write_item("/etc/exim4/domains/example.org/passwd", b"new\n"),
            write_item("/etc/exim4/dnsbl.conf", b"zen.spamhaus.org\n"),
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
    assert helper.live("/etc/exim4/domains/example.org/passwd").read_bytes() == b"new\n"
    assert helper.live("/etc/exim4/dnsbl.conf").read_bytes() == b"zen.spamhaus.org\n"
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
        "write": [write_item("/etc/exim4/dnsbl.conf", b"zen.spamhaus.org\n")],
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
    assert helper.apply([write_item(path, b"a:{PLAIN}1\n")])[0] == 0
    before = helper.live(path).stat().st_mtime
    assert helper.apply([write_item(path, b"a:{PLAIN}2\n")])[0] == 0
    assert int(helper.live(path).stat().st_mtime) > int(before)


def test_sync_domains_writes_only_what_changed_and_prunes_the_rest_of_those_folders(helper):
    keep = "/etc/exim4/domains/example.org/passwd"
    stale = "/etc/exim4/domains/example.org/smtp_relay.conf"
    other = "/etc/exim4/domains/other.example/passwd"
    assert helper.apply([write_item(keep, b"a\n"), write_item(stale, b"host: x\n"), write_item(other, b"b\n")])[0] == 0
    code, answer = helper.run(
        {"op": "apply", "write": [write_item(keep, b"a\n")], "sync_domains": ["example.org"]}
    )
    assert code == 0, answer
    assert answer["written"] == [] and answer["removed"] == [stale]
    assert helper.live(keep).exists() and helper.live(other).exists()
    assert not helper.live(stale).exists()
    assert answer["server_files"] == []


def test_sync_domains_refuses_a_write_outside_the_synced_folders(helper):
    code, answer = helper.run(
        {"op": "apply", "write": [write_item("/etc/exim4/domains/other.example/passwd", b"x\n")],
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
