"""The webmail sites: SnappyMail (or Roundcube, the admin's choice:
mailconf/render/roundcube.py) at https://<host name>/webmail/ through a
PHP-FPM master of its own, and webmail.<domain> on port 80 sending people
there.

Three code files (nginx and PHP-FPM configuration runs programs and reads
any file), rendered by the helper from CodeParams and its own Layout:

- /etc/mailpanel/webmail-php-fpm.conf: a PHP-FPM master and one pool that
  runs SnappyMail's index.php and nothing else: `open_basedir` on
  SnappyMail's folder and /tmp, no shell functions, no URL fopen, upload
  limits, an environment of its own (clear_env).
- /etc/nginx/snippets/mailpanel-webmail.conf: the /webmail/ locations, for
  the host name's server block (its certificate is the one that is valid):
  index.php only, SnappyMail's data/ never served.
- /etc/nginx/conf.d/mailpanel-webmail.conf: http://webmail.<anything>/ →
  https://<host name>/webmail/ (a fixed target: no open redirect), ACME
  challenges answered from the installer's webroot.

webmail.<domain> over HTTPS needs a certificate for every domain, which this
server does not get yet; until then the host name serves the webmail.

Rendered only where `layout.webmail_sites` says the host has the PHP-FPM
unit and the include (the installer's choice, in the helper's Layout); the
nginx files only once SnappyMail is installed. Pure: same parameters, same
bytes.
"""

from __future__ import annotations

from .. import validate as v
from ..params import CodeParams
from ..snapshot import FileSpec, Layout
from . import roundcube

WEBMAIL_PHP_FPM = "/etc/mailpanel/webmail-php-fpm.conf"
WEBMAIL_LOCATIONS = "/etc/nginx/snippets/mailpanel-webmail.conf"
WEBMAIL_REDIRECT = "/etc/nginx/conf.d/mailpanel-webmail.conf"
WEBMAIL_PATH = "/webmail/"
PID_FILE = "/run/mailpanel-webmail/php-fpm.pid"
UPLOAD_MB = 25  # an attachment; the request around it may be a little larger

# Functions a webmail never needs and an attacker always wants.
DISABLED_FUNCTIONS = (
    "exec", "passthru", "shell_exec", "system", "proc_open", "popen", "pcntl_exec", "mail",
)


def _folder(layout: Layout) -> str:
    return v.path(layout.path(layout.snappymail_dir).rstrip("/"), "SnappyMail folder")


def _socket(layout: Layout) -> str:
    return v.path(layout.path(layout.webmail_php_socket), "PHP-FPM socket")


def render_php_fpm(layout: Layout) -> bytes:
    folder = _folder(layout)
    socket = _socket(layout)
    lines = [
        "; Written by mailpanel: PHP-FPM for the webmail only. Changes here are replaced on the next apply.",
        "[global]",
        f"pid = {v.path(layout.path(PID_FILE), 'PHP-FPM pid file')}",
        "error_log = syslog",
        "syslog.ident = mailpanel-webmail-php",
        "daemonize = no",
        "",
        *pool_lines(layout, "snappymail", socket, [f"{folder}/", "/tmp/"]),
    ]
    return "\n".join(lines).encode("ascii")


def pool_lines(layout: Layout, name: str, socket: str, basedir: list[str], env=()) -> list[str]:
    """One pool of the webmail's master: the webmail's own user, a socket only
    nginx's user may use, open_basedir, no shell, upload limits, its own
    environment (clear_env, then `env`: (name, value) pairs)."""
    user = v.name(layout.webmail_php_user, "PHP-FPM user")
    web_server = v.name(layout.web_server_user, "web server user")
    return [
        f"[{name}]",
        f"user = {user}",
        f"group = {user}",
        f"listen = {socket}",
        # nginx's user alone may talk to the pool; PHP runs as the webmail's own.
        f"listen.owner = {web_server}",
        f"listen.group = {web_server}",
        "listen.mode = 0660",
        "pm = ondemand",
        "pm.max_children = 16",
        "pm.process_idle_timeout = 60s",
        "pm.max_requests = 500",
        "security.limit_extensions = .php",
        "clear_env = yes",
        *(f"env[{key}] = {value}" for key, value in env),
        f"php_admin_value[open_basedir] = {':'.join(basedir)}",
        "php_admin_value[upload_tmp_dir] = /tmp",
        "php_admin_value[sys_temp_dir] = /tmp",
        f"php_admin_value[upload_max_filesize] = {UPLOAD_MB}M",
        f"php_admin_value[post_max_size] = {UPLOAD_MB + 1}M",
        "php_admin_value[memory_limit] = 256M",
        "php_admin_value[max_execution_time] = 120",
        # Debian's php.ini leaves session GC to a cron job; Roundcube's own
        # clean-up (expired sessions, caches, temp files) runs in it.
        "php_admin_value[session.gc_probability] = 1",
        "php_admin_value[session.gc_divisor] = 100",
        f"php_admin_value[disable_functions] = {','.join(DISABLED_FUNCTIONS)}",
        "php_admin_flag[allow_url_fopen] = off",
        "php_admin_flag[allow_url_include] = off",
        "php_admin_flag[expose_php] = off",
        "php_admin_flag[display_errors] = off",
        "php_admin_flag[log_errors] = on",
        "",
    ]


def render_locations(layout: Layout) -> bytes:
    folder = _folder(layout)
    socket = _socket(layout)
    lines = [
        "# Written by mailpanel: SnappyMail at /webmail/, included in the host name's server block.",
        "# Changes here are replaced on the next apply.",
        f"location = {WEBMAIL_PATH.rstrip('/')} {{ return 301 {WEBMAIL_PATH}; }}",
        f"location ^~ {WEBMAIL_PATH} {{",
        f"    alias {folder}/;",
        "    index index.php;",
        f"    client_max_body_size {UPLOAD_MB + 1}m;",
        "    # SnappyMail's settings, users' data and logs: never over HTTP.",
        f"    location ^~ {WEBMAIL_PATH}data/ {{ deny all; }}",
        f"    location = {WEBMAIL_PATH}index.php {{",
        f"        fastcgi_pass unix:{socket};",
        "        include /etc/nginx/fastcgi_params;",
        f"        fastcgi_param SCRIPT_FILENAME {folder}/index.php;",
        f"        fastcgi_param SCRIPT_NAME {WEBMAIL_PATH}index.php;",
        "        fastcgi_read_timeout 120s;",
        "    }",
        "    # Only index.php runs: any other PHP file is refused, never sent as text.",
        "    location ~ \\.php$ { deny all; }",
        "}",
        "",
    ]
    return "\n".join(lines).encode("ascii")


def render_redirect(params: CodeParams, layout: Layout) -> bytes:
    host = v.hostname(params.hostname, "server host name")
    port = v.port(layout.http_port, "HTTP port")
    addresses = [v.ip(ip, "HTTP listen address") for ip in layout.http_listen]
    listens = [f"    listen {f'[{ip}]' if ':' in ip else ip}:{port};" for ip in addresses]
    if not listens:
        listens = [f"    listen {port};", f"    listen [::]:{port};"]
    acme = v.path(layout.path(layout.acme_webroot), "ACME webroot")
    lines = [
        "# Written by mailpanel: http://webmail.<domain>/ goes to the webmail on the host name.",
        "# Changes here are replaced on the next apply.",
        "server {",
        *listens,
        "    server_name ~^webmail\\.;",
        f"    location /.well-known/acme-challenge/ {{ root {acme}; }}",
        f"    location / {{ return 301 https://{host}{WEBMAIL_PATH}; }}",
        "}",
        "",
    ]
    return "\n".join(lines).encode("ascii")


def render_webmail(params: CodeParams, layout: Layout) -> dict[str, FileSpec]:
    """The pool wherever the sites are set up, so its unit always has its
    file (an idle ondemand master until SnappyMail is there); the nginx
    files once SnappyMail is installed, or Roundcube (Debian's package, a
    second pool) is the chosen webmail."""
    if not layout.webmail_sites:
        return {}
    pool = render_php_fpm(layout)
    serves_roundcube = params.webmail == roundcube.ROUNDCUBE
    if serves_roundcube:
        pool += "\n".join(["", *pool_lines(layout, "roundcube", *roundcube.pool_settings(layout))]).encode("ascii")
    files = {WEBMAIL_PHP_FPM: FileSpec(pool, "root", "root", 0o644, "webmail-php")}
    locations = None
    if serves_roundcube:
        locations = "\n".join(roundcube.location_lines(layout, WEBMAIL_PATH, UPLOAD_MB)).encode("ascii")
    elif params.snappymail.installed:
        locations = render_locations(layout)
    if locations is not None:
        files[WEBMAIL_LOCATIONS] = FileSpec(locations, "root", "root", 0o644, "nginx")
        files[WEBMAIL_REDIRECT] = FileSpec(render_redirect(params, layout), "root", "root", 0o644, "nginx")
    return files
