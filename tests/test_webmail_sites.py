"""The webmail sites (issue #15): SnappyMail at https://<host name>/webmail/
through a PHP-FPM master of its own, http://webmail.<domain>/ sent there.
Rendered by the helper as code files (mailconf/render/webmail.py), checked
by nginx -t and php-fpm -t as nobody without network, and served by a real
nginx and a real PHP-FPM on 127.0.0.1 from the rendered files."""

import contextlib
import dataclasses
import grp
import http.client
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from mailconf import grammar, managed
from mailconf.managed import ROUNDCUBE_CONFIG, ROUNDCUBE_DES_KEY
from mailconf.params import CodeParams
from mailconf.render import render_code
from mailconf.render.roundcube import php_string, render_config, render_roundcube
from mailconf.render.snappymail import default_domain_path, domain_config_path, render_snappymail_data
from mailconf.render.webmail import PID_FILE, WEBMAIL_LOCATIONS, WEBMAIL_PHP_FPM, WEBMAIL_REDIRECT, render_webmail
from mailconf.managed import WEBMAIL_USER
from mailconf.snapshot import Domain, Layout, ServerIdentity, Snapshot, SnappyMail
from tests import mailstack
from tests.test_helper import (  # noqa: F401
    CAN_CHOWN, code, helper, load_helper_module, reload_log, root, write_item, write_layout,
)

HOSTNAME = "mail.example.net"
INSTALLED = SnappyMail(True, "admin_0123abcd", "$2y$04$" + "x" * 53, "k3y-" + "a" * 20)
PARAMS = CodeParams(hostname=HOSTNAME, snappymail=INSTALLED)
FILES = (WEBMAIL_PHP_FPM, WEBMAIL_LOCATIONS, WEBMAIL_REDIRECT)


def php_fpm_binary():
    found = sorted(p for p in Path("/usr/sbin").glob("php-fpm[0-9]*"))
    return str(found[-1]) if found else None


needs_nginx = pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx missing")
needs_php_fpm = pytest.mark.skipif(php_fpm_binary() is None, reason="php-fpm missing")


# --- rendering ----------------------------------------------------------------------------


def test_nothing_is_rendered_unless_the_installer_set_up_the_sites_and_snappymail_is_installed():
    assert render_webmail(PARAMS, Layout()) == {}  # webmail_sites off: no unit, no include
    # the pool alone before SnappyMail: its unit has its file, nginx serves nothing yet
    assert list(render_webmail(CodeParams(hostname=HOSTNAME), Layout(webmail_sites=True))) == [WEBMAIL_PHP_FPM]
    files = render_code(PARAMS, Layout(webmail_sites=True))
    assert set(FILES) <= set(files)


def test_every_file_is_a_code_file_of_the_table_with_its_owner_mode_and_service():
    rows = {row[0]: row for row in managed.MANAGED_FILES}
    for path, spec in render_webmail(PARAMS, Layout(webmail_sites=True)).items():
        _path, owner, group, mode, kind, _check, service = rows[path]
        assert (kind, owner, group, mode, service) == (managed.CODE, spec.owner, spec.group, spec.mode, spec.service)
    assert render_webmail(PARAMS, Layout(webmail_sites=True)) == render_webmail(PARAMS, Layout(webmail_sites=True))


def test_the_pool_is_locked_to_snappymails_folder_and_has_no_shell():
    pool = render_webmail(PARAMS, Layout(webmail_sites=True))[WEBMAIL_PHP_FPM].content.decode()
    assert "php_admin_value[open_basedir] = /var/lib/snappymail/:/tmp/" in pool
    assert "shell_exec" in pool and "proc_open" in pool and "php_admin_flag[allow_url_fopen] = off" in pool
    assert "php_admin_value[upload_max_filesize] = 25M" in pool and "clear_env = yes" in pool
    assert "listen = /run/mailpanel-webmail/php-fpm.sock" in pool and "listen.mode = 0660" in pool


def test_only_index_php_runs_and_data_is_never_served():
    locations = render_webmail(PARAMS, Layout(webmail_sites=True))[WEBMAIL_LOCATIONS].content.decode()
    assert "location ^~ /webmail/data/ { deny all; }" in locations
    assert "location = /webmail/index.php {" in locations
    assert "location ~ \\.php$ { deny all; }" in locations
    assert locations.count("fastcgi_pass") == 1


def test_the_redirect_goes_to_the_host_name_only():
    redirect = render_webmail(PARAMS, Layout(webmail_sites=True))[WEBMAIL_REDIRECT].content.decode()
    assert f"return 301 https://{HOSTNAME}/webmail/;" in redirect
    assert "$host" not in redirect and "$http_host" not in redirect  # no target from the request


@pytest.mark.parametrize("field, value", [
    ("webmail_php_socket", "/run/x.sock; include /etc/shadow"),
    ("webmail_php_user", "www-data\nuser = root"),
    ("snappymail_dir", "/var/lib/snappy mail"),
    ("acme_webroot", "/var/www/a;b"),
    ("http_listen", ("0.0.0.0; include /etc/shadow",)),
    ("http_port", 0),
])
def test_a_hostile_layout_value_is_refused_not_written(field, value):
    with pytest.raises(ValueError):
        render_webmail(PARAMS, Layout(webmail_sites=True, **{field: value}))


def test_a_hostile_hostname_is_refused():
    with pytest.raises(ValueError):
        render_webmail(CodeParams(hostname="x.example; return 200", snappymail=INSTALLED), Layout(webmail_sites=True))


# --- the helper: validators and apply --------------------------------------------------------


@needs_nginx
@needs_php_fpm
def test_the_rendered_files_pass_their_validators_and_broken_ones_do_not():
    validators = load_helper_module().VALIDATORS
    files = render_webmail(PARAMS, Layout(webmail_sites=True))
    rows = {row[0]: row[5] for row in managed.MANAGED_FILES}
    for path, spec in files.items():
        assert validators[rows[path]](spec.content) == (True, ""), path
    for check, broken in (
        ("nginx", b"server { listen 80; no_such_directive on; }"),
        ("nginx-locations", b"location /webmail/ { alias /x/; "),
        ("php-fpm", b"[global]\nno_such_entry = 1\n"),
        ("nginx", b"include /etc/shadow;"),  # as nobody: unreadable, and not shown
    ):
        ok, output = validators[check](broken)
        assert ok is False and output and "\n" not in output, (check, output)
        assert "root:" not in output


@needs_nginx
@needs_php_fpm
def test_the_helper_writes_the_sites_once_the_layout_says_so_and_reloads_nginx_and_php(helper, reload_log):
    status, answer = helper.apply(code=code(snappymail=True))
    assert status == 0, answer
    assert not [p for p in answer["written"] if p in FILES]  # not set up by the installer
    assert "webmail-php" not in answer["reloads"]
    write_layout(helper, webmail_sites=True)
    status, answer = helper.apply(code=code(snappymail=True, hostname="mx.example.org"))
    assert status == 0, answer
    assert set(FILES) <= set(answer["written"])
    assert {"nginx", "webmail-php"} <= set(answer["reloads"])
    assert b"https://mx.example.org/webmail/" in helper.live(WEBMAIL_REDIRECT).read_bytes()
    assert oct(helper.live(WEBMAIL_PHP_FPM).stat().st_mode & 0o7777) == "0o644"
    status, answer = helper.apply(code=code(snappymail=True, hostname="mx.example.org"))
    assert status == 0 and answer["written"] == []
    status, answer = helper.apply(code=code(hostname="mx.example.org"))  # SnappyMail uninstalled
    assert status == 0 and sorted(answer["removed"]) == sorted([
        "/var/lib/snappymail/data/_data_/_default_/configs/application.ini", WEBMAIL_LOCATIONS, WEBMAIL_REDIRECT])
    assert helper.live(WEBMAIL_PHP_FPM).exists()


# --- served: real nginx and PHP-FPM on 127.0.0.1 ---------------------------------------------

INDEX_PHP = """<?php
header("Content-Type: text/plain");
$domains = __DIR__ . "/data/_data_/_default_/domains/";
$domain = json_decode(file_get_contents($domains . "default.json"), true);
echo "imap=" . $domain["IMAP"]["host"] . ":" . $domain["IMAP"]["port"] . "\\n";
// SnappyMail reads domains/<the login's domain>.json before default.json
$hosted = json_decode(file_get_contents($domains . "example.org.json"), true, 8, JSON_THROW_ON_ERROR);
foreach (["IMAP", "SMTP", "Sieve"] as $block) {
    echo "hosted_" . $block . "=" . $hosted[$block]["host"] . ":" . $hosted[$block]["port"]
        . " type " . $hosted[$block]["type"] . " name " . var_export($hosted[$block]["ssl"]["verify_peer_name"], true) . "\\n";
}
echo "passwd=" . var_export(@file_get_contents("/etc/passwd") !== false, true) . "\\n";
echo "shell=" . var_export(function_exists("shell_exec"), true) . "\\n";
echo "upload=" . ini_get("upload_max_filesize") . "\\n";
echo "script=" . $_SERVER["SCRIPT_NAME"] . "\\n";
"""


@contextlib.contextmanager
def started(argv, ready, what, timeout=10):
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"{what} did not start: {proc.communicate()[0].decode(errors='replace')}")
            time.sleep(0.02)
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()


def get(port, path, host=HOSTNAME):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": host})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read().decode(errors="replace")
    finally:
        conn.close()


@pytest.fixture
def site(tmp_path):
    """The three rendered files, a stand-in SnappyMail (index.php that reads
    the rendered default.json) and its data, nginx and PHP-FPM running."""
    mailstack.require_root()
    tree = mailstack.new_tree_root(tmp_path)
    http_port, https_port = mailstack.free_port(), mailstack.free_port()
    layout = Layout(root=str(tree), webmail_sites=True, http_port=http_port, http_listen=("127.0.0.1",))
    hosted = Snapshot(server=ServerIdentity(hostname=HOSTNAME), domains=(Domain("example.org"),),
                      sieve_enabled=True, snappymail=INSTALLED)
    files = {**render_webmail(PARAMS, layout), **render_snappymail_data(hosted, layout)}
    for production, spec in files.items():
        path = Path(layout.path(production))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(spec.content)
        path.chmod(spec.mode)
    snappymail = Path(layout.path(layout.snappymail_dir))
    (snappymail / "index.php").write_text(INDEX_PHP)
    (snappymail / "other.php").write_text("<?php echo 'other ran';")
    (snappymail / "data" / "secret.txt").write_text("not for the web")
    (snappymail / "static.txt").write_text("a static file")
    Path(layout.path("/run/mailpanel-webmail")).mkdir(parents=True)
    mailstack.ensure_webmail_user()
    subprocess.run(["chown", "-R", f"{WEBMAIL_USER}:{WEBMAIL_USER}", str(snappymail / "data")], check=True)
    for folder in (tree, *tree.rglob("*")):
        if folder.is_dir():
            folder.chmod(0o755)
    socket_path = Path(layout.path(layout.webmail_php_socket))
    with webmail_servers(layout, https_port, socket_path, redirect=True):
        yield {"http": http_port, "https": https_port, "socket": socket_path}


@contextlib.contextmanager
def webmail_servers(layout, port, socket, *, redirect=False):
    """The webmail's PHP-FPM master and nginx from the rendered files: the host
    name's server on 127.0.0.1:port (plain HTTP: no certificate needed) with
    the /webmail/ locations; with redirect, the webmail.<domain> server too."""
    tree = Path(layout.root)
    nginx_conf = tree / "nginx.conf"
    nginx_conf.write_text(f"""user www-data;
daemon off;
pid {tree}/nginx.pid;
error_log {tree}/nginx-error.log;
events {{}}
http {{
    include /etc/nginx/mime.types;
    client_body_temp_path {tree}/body; proxy_temp_path {tree}/proxy; fastcgi_temp_path {tree}/fastcgi;
    uwsgi_temp_path {tree}/uwsgi; scgi_temp_path {tree}/scgi;
    access_log off;
    {f"include {layout.path(WEBMAIL_REDIRECT)};" if redirect else ""}
    server {{
        listen 127.0.0.1:{port};
        server_name {HOSTNAME};
        include {layout.path(WEBMAIL_LOCATIONS)};
    }}
}}
""")
    ports = [port, layout.http_port] if redirect else [port]
    fpm = [php_fpm_binary(), "--nodaemonize", "--fpm-config", layout.path(WEBMAIL_PHP_FPM)]
    with started(fpm, socket.exists, "php-fpm"), started(
        ["nginx", "-c", str(nginx_conf), "-e", f"{tree}/nginx-error.log"],
        lambda: all(_listening(p) for p in ports), "nginx",
    ):
        yield


def _listening(port):
    import socket

    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
        return True
    return False


@needs_nginx
@needs_php_fpm
def test_snappymail_answers_through_its_own_php_fpm_with_the_domain_config_parsed(site):
    status, headers, body = get(site["https"], "/webmail/")
    assert status == 200, body
    lines = dict(line.split("=", 1) for line in body.strip().splitlines())
    assert lines["imap"] == "localhost:143"  # default.json, rendered, read and parsed by PHP
    # the hosted domain's own config: the host name (its certificate), TLS on each
    assert lines["hosted_IMAP"] == f"{HOSTNAME}:993 type 1 name true"
    assert lines["hosted_SMTP"] == f"{HOSTNAME}:587 type 2 name true"
    assert lines["hosted_Sieve"] == f"{HOSTNAME}:4190 type 2 name true"
    assert lines["passwd"] == "false"  # open_basedir
    assert lines["shell"] == "false"  # disable_functions
    assert lines["upload"] == "25M"
    assert lines["script"] == "/webmail/index.php"
    assert "X-Powered-By" not in headers
    stat = site["socket"].stat()
    assert oct(stat.st_mode & 0o777) == "0o660"


@needs_nginx
@needs_php_fpm
@pytest.mark.parametrize("path, status", [
    ("/webmail/data/secret.txt", 403),
    ("/webmail/data/_data_/_default_/domains/default.json", 403),
    ("/webmail/other.php", 403),
    ("/webmail/static.txt", 200),
    ("/webmail", 301),
])
def test_only_index_php_runs_and_snappymails_data_stays_private(site, path, status):
    got, headers, body = get(site["https"], path)
    assert got == status, body
    assert "not for the web" not in body and "other ran" not in body and "<?php" not in body


@needs_nginx
@needs_php_fpm
@pytest.mark.parametrize("host", ["webmail.example.org", "webmail.xn--mnchen-3ya.example", "webmail.evil.example"])
def test_http_webmail_of_any_domain_goes_to_the_host_name(site, host):
    status, headers, _body = get(site["http"], "/some/path?x=1", host=host)
    assert (status, headers["Location"]) == (301, f"https://{HOSTNAME}/webmail/")


# --- deployment ------------------------------------------------------------------------------

UNIT = Path(__file__).resolve().parent.parent / "deploy" / "systemd" / "mailpanel-webmail-php.service"


def test_the_php_fpm_unit_passes_systemd_analyze_verify(tmp_path):
    from tests.test_deploy import _verifiable_copy

    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze missing (systemd is listed in deploy/apt-packages.txt)")
    proc = subprocess.run([analyze, "verify", str(_verifiable_copy(UNIT, tmp_path))], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stderr.strip() == "", proc.stdout + proc.stderr


def test_the_unit_runs_the_rendered_pool_file_and_its_socket_folder_is_the_rendered_one():
    text = UNIT.read_text()
    assert f"--fpm-config {WEBMAIL_PHP_FPM}" in text and f"ConditionPathExists={WEBMAIL_PHP_FPM}" in text
    folder = Path(Layout().webmail_php_socket).parent
    assert folder == Path(PID_FILE).parent and f"RuntimeDirectory={folder.name}" in text


def test_the_helper_starts_the_unit_on_its_first_file_and_reloads_nginx_plainly():
    helper_module = load_helper_module()
    argv = helper_module.reload_command("webmail-php", None, None)
    assert argv[1:] == ["reload-or-restart", "mailpanel-webmail-php"]
    assert helper_module.reload_command("nginx", None, None)[1:] == ["reload", "nginx"]


def test_install_sh_sets_the_sites_up_and_includes_the_locations_in_the_host_names_server():
    script = (Path(__file__).resolve().parent.parent / "deploy" / "install.sh").read_text()
    assert '"webmail_sites": True' in script
    assert "include /etc/nginx/snippets/mailpanel-webmail*.conf;" in script
    assert "/usr/local/sbin/mailpanel-php-fpm" in script


# --- Roundcube, the admin's second choice (mailconf/render/roundcube.py) ---------------------

ROUNDCUBE = CodeParams(hostname=HOSTNAME, sieve_enabled=True, webmail="roundcube")


def test_roundcube_is_rendered_only_while_it_is_the_chosen_webmail():
    assert ROUNDCUBE_CONFIG not in render_code(PARAMS, Layout(webmail_sites=True))
    assert render_code(ROUNDCUBE, Layout()).get(ROUNDCUBE_CONFIG) is None  # no sites set up here
    files = render_code(ROUNDCUBE, Layout(webmail_sites=True))
    config = files[ROUNDCUBE_CONFIG]
    assert (config.owner, config.group, config.mode) == ("root", WEBMAIL_USER, 0o640)
    pool = files[WEBMAIL_PHP_FPM].content.decode()
    assert "[snappymail]" in pool and "[roundcube]" in pool  # SnappyMail's pool stays, idle
    assert "env[RCUBE_CONFIG_PATH] = /etc/roundcube:/etc/mailpanel/roundcube" in pool
    assert pool.count("user = mailpanel-webmail") == 2 and "user = www-data" not in pool
    assert pool.count("listen.owner = www-data") == 2  # nginx alone talks to the pools
    locations = files[WEBMAIL_LOCATIONS].content.decode()
    assert "alias /var/lib/roundcube/public_html/;" in locations and "snappymail" not in locations
    assert locations.count("fastcgi_pass unix:/run/mailpanel-webmail/roundcube.sock;") == 1
    # SnappyMail not installed: Roundcube is served all the same
    assert WEBMAIL_LOCATIONS in render_code(CodeParams(hostname=HOSTNAME, webmail="roundcube"),
                                            Layout(webmail_sites=True))


def test_roundcubes_pool_reads_only_roundcube_its_settings_and_state():
    pool = render_webmail(ROUNDCUBE, Layout(webmail_sites=True))[WEBMAIL_PHP_FPM].content.decode()
    roundcube_pool = pool.split("[roundcube]", 1)[1]
    assert ("php_admin_value[open_basedir] = /var/lib/roundcube/:/usr/share/roundcube/:/etc/roundcube/:"
            "/etc/mailpanel/roundcube/:/var/lib/mailpanel-webmail/roundcube/:/usr/share/php/:"
            "/usr/share/javascript/:/tmp/") in roundcube_pool
    assert "shell_exec" in roundcube_pool and "php_admin_flag[allow_url_fopen] = off" in roundcube_pool
    assert "php_admin_value[upload_max_filesize] = 25M" in roundcube_pool and "clear_env = yes" in roundcube_pool


def roundcube_config_values(content: bytes, tmp_path, des_key: bytes | None = None) -> dict:
    """The $config PHP builds from the rendered file (Debian's PHP, no ini)."""
    path = tmp_path / "config.inc.php"
    path.write_bytes(content)
    code = "include $argv[1]; echo json_encode($config);"
    proc = subprocess.run(["php", "-n", "-r", code, str(path)], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


@pytest.mark.skipif(shutil.which("php") is None, reason="php-cli missing")
def test_roundcubes_config_is_php_that_gives_back_exactly_our_settings(tmp_path):
    layout = Layout(webmail_sites=True, root=str(tmp_path), tls_certificate="/etc/mailpanel/tls/fullchain.pem",
                    imaps_port=993, submission_port=587, sieve_port=4190)
    des_key = Path(layout.path(ROUNDCUBE_DES_KEY))
    des_key.parent.mkdir(parents=True)
    des_key.write_text("0123456789abcdefghijklmn\n")
    config = roundcube_config_values(render_roundcube(ROUNDCUBE, layout)[ROUNDCUBE_CONFIG].content, tmp_path)
    assert config["imap_host"] == "ssl://127.0.0.1:993" and config["smtp_host"] == "tls://127.0.0.1:587"
    assert config["imap_conn_options"]["ssl"] == {"verify_peer": False, "verify_peer_name": True,
                                                  "peer_name": HOSTNAME, "allow_self_signed": True}
    assert (config["smtp_user"], config["smtp_pass"]) == ("%u", "%p")
    assert config["plugins"] == ["managesieve"] and config["managesieve_port"] == 4190
    assert config["des_key"] == "0123456789abcdefghijklmn"  # read from the helper's file at run time
    assert config["db_dsnw"] == f"sqlite:///{tmp_path}/var/lib/mailpanel-webmail/roundcube/roundcube.db?mode=0640"
    assert config["enable_installer"] is False
    # ManageSieve off: no plugin, no Sieve settings; no certificate: plain IMAP on 143
    config = roundcube_config_values(render_config(CodeParams(hostname=HOSTNAME, webmail="roundcube"),
                                                   Layout(webmail_sites=True)), tmp_path)
    assert config["plugins"] == [] and "managesieve_host" not in config
    assert config["imap_host"] == "127.0.0.1:143"


@pytest.mark.skipif(shutil.which("php") is None, reason="php-cli missing")
@pytest.mark.parametrize("value", ["it's", "back\\slash\\", "\\'; system('id'); //", "${HOME} $x {$y}"])
def test_a_php_string_gives_back_the_value_byte_for_byte(value, tmp_path):
    path = tmp_path / "value.php"
    path.write_text(f"<?php $config = ['v' => {php_string(value)}];\n")
    proc = subprocess.run(["php", "-n", "-r", "include $argv[1]; echo $config['v'];", str(path)],
                          capture_output=True, text=True, check=True)
    assert proc.stdout == value


@pytest.mark.parametrize("value", ["two\nlines", "nul\x00", "tab\there"])
def test_a_php_string_refuses_control_characters(value):
    with pytest.raises(ValueError):
        php_string(value)


@pytest.mark.parametrize("webmail", ["squirrelmail", "roundcube\n", "", None, True])
def test_the_helper_parser_refuses_any_other_webmail(webmail):
    data = ROUNDCUBE.to_json() | {"webmail": webmail}
    with pytest.raises(ValueError):
        CodeParams.from_json(data)
    assert CodeParams.from_json(ROUNDCUBE.to_json()) == ROUNDCUBE


@pytest.mark.parametrize("field, value", [
    ("roundcube_dir", "/var/lib/round cube"),
    ("roundcube_state_dir", "/var/lib/x;y"),
    ("webmail_roundcube_socket", "/run/x.sock; include /etc/shadow"),
    ("web_server_user", "www-data\nuser = root"),
    ("submission_port", 0),
])
def test_a_hostile_roundcube_layout_value_is_refused(field, value):
    with pytest.raises(ValueError):
        render_code(ROUNDCUBE, Layout(webmail_sites=True, **{field: value}))


@needs_nginx
@needs_php_fpm
def test_roundcubes_files_pass_their_validators_and_broken_php_does_not():
    validators = load_helper_module().VALIDATORS
    rows = {row[0]: row[5] for row in managed.MANAGED_FILES}
    files = render_code(ROUNDCUBE, Layout(webmail_sites=True))
    for path in (WEBMAIL_PHP_FPM, WEBMAIL_LOCATIONS, ROUNDCUBE_CONFIG):
        assert validators[rows[path]](files[path].content) == (True, ""), path
    ok, output = validators["php-lint"](b"<?php $config['x'] = 'unterminated;\n")
    assert ok is False and output and "\n" not in output


@needs_php_fpm
def test_the_helper_makes_roundcubes_des_key_once_and_never_answers_it(helper, reload_log):
    write_layout(helper, webmail_sites=True)
    status, answer = helper.apply(code=code(hostname=HOSTNAME, sieve=True, webmail="roundcube"))
    assert status == 0, answer
    assert ROUNDCUBE_CONFIG in answer["written"] and "webmail-php" in answer["reloads"]
    key_file = helper.live(ROUNDCUBE_DES_KEY)
    key = key_file.read_bytes()
    assert len(key.rstrip(b"\n")) == 24 and key.endswith(b"\n")  # Roundcube's DES-EDE3 key length
    assert oct(key_file.stat().st_mode & 0o7777) == "0o640"
    if CAN_CHOWN:
        assert (key_file.stat().st_uid, grp.getgrgid(key_file.stat().st_gid).gr_name) == (0, WEBMAIL_USER)
    assert key.strip().decode() not in json.dumps(answer)
    # a new host name rewrites the config, never the key
    status, answer = helper.apply(code=code(hostname="mx.example.org", sieve=True, webmail="roundcube"))
    assert status == 0 and ROUNDCUBE_CONFIG in answer["written"] and key_file.read_bytes() == key
    # back to SnappyMail: Roundcube's config goes, its key stays for next time
    status, answer = helper.apply(code=code(hostname="mx.example.org", sieve=True))
    assert status == 0 and ROUNDCUBE_CONFIG in answer["removed"]
    assert key_file.read_bytes() == key


@needs_php_fpm
def test_a_request_cannot_write_roundcubes_config_or_key_as_data(helper):
    for path in (ROUNDCUBE_CONFIG, ROUNDCUBE_DES_KEY):
        status, answer = helper.apply([write_item(path, b"<?php system('id');\n")])
        assert status == 2, answer
    assert not helper.live(ROUNDCUBE_DES_KEY).exists() and not helper.live(ROUNDCUBE_CONFIG).exists()


# --- SnappyMail's per-domain configs through the one-domain apply ------------------------------


def test_each_hosted_domain_gets_a_snappymail_config_and_send_only_ones_do_not():
    snapshot = Snapshot(server=ServerIdentity(hostname=HOSTNAME), snappymail=INSTALLED, domains=(
        Domain("example.org"), Domain("away.example", hosted_elsewhere=True), Domain("off.example", suspended=True)))
    files = render_snappymail_data(snapshot, Layout())
    assert sorted(files) == [default_domain_path(Layout()), domain_config_path(Layout(), "example.org")]
    for spec in files.values():
        grammar.check("snappymail_domain", spec.content)
        assert (spec.owner, spec.group, spec.mode) == (WEBMAIL_USER, WEBMAIL_USER, 0o640)
    assert render_snappymail_data(dataclasses.replace(snapshot, snappymail=SnappyMail()), Layout()) == {}


@pytest.mark.parametrize("content", [
    b'{"IMAP": {"host": "x", "port": 1, "type": 1}}',  # blocks missing
    b'{"IMAP": {"host": "a b", "port": 993, "type": 1}, "SMTP": {"host": "h.example", "port": 587, "type": 2},'
    b' "Sieve": {"host": "h.example", "port": 4190, "type": 2}, "whiteList": ""}',  # not a host name
    b'{"IMAP": {"host": "h.example", "port": 993, "type": 7}, "SMTP": {"host": "h.example", "port": 587, "type": 2},'
    b' "Sieve": {"host": "h.example", "port": 4190, "type": 2}, "whiteList": ""}',  # no such security type
    b'{"IMAP": {"host": "h.example", "port": 993, "type": 1, "x": {"y": {"z": 1}}}, "SMTP": {"host": "h.example",'
    b' "port": 587, "type": 2}, "Sieve": {"host": "h.example", "port": 4190, "type": 2}, "whiteList": ""}',
])
def test_a_hostile_domain_config_is_refused_by_the_helper(helper, content):
    path = domain_config_path(Layout(), "example.org")
    status, answer = helper.apply([write_item(path, content)])
    assert status == 2 and answer["rule"] == "grammar", answer
    assert not helper.live(path).exists()


def test_a_one_domain_apply_writes_and_prunes_the_domains_snappymail_config(helper):
    domain_json = domain_config_path(Layout(), "example.org")
    other_json = domain_config_path(Layout(), "other.example")
    content = render_snappymail_data(Snapshot(server=ServerIdentity(hostname=HOSTNAME), snappymail=INSTALLED,
                                              domains=(Domain("example.org"),)), Layout())[domain_json].content
    status, answer = helper.run({"op": "apply", "write": [write_item(domain_json, content),
                                                          write_item(other_json, content)],
                                 "sync_domains": ["example.org", "other.example"]})
    assert status == 0 and sorted(answer["written"]) == sorted([domain_json, other_json]), answer
    state = helper.run({"op": "state"})[1]["files"]
    assert domain_json in state and other_json in state  # found by the full listing too
    # a one-domain apply of example.org touches only its own config
    status, answer = helper.run({"op": "apply", "write": [], "sync_domains": ["example.org"]})
    assert status == 0 and answer["removed"] == [domain_json] and helper.live(other_json).exists()
    # and may not write another domain's
    status, answer = helper.run({"op": "apply", "write": [write_item(other_json, content)],
                                 "sync_domains": ["example.org"]})
    assert status == 2 and answer["rule"] == "outside allowlist"
