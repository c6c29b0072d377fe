"""Roundcube, the admin's second choice of webmail: Debian's roundcube-core
(security updates come with apt) served at https://<host name>/webmail/
instead of SnappyMail when the server settings say so (`mail webmail set
roundcube`).

Its configuration is PHP, so a code file the helper renders from CodeParams
and its own Layout (mailconf.managed): /etc/mailpanel/roundcube/config.inc.php,
root:<webmail user> 0640. The pool gives Roundcube two folders
(RCUBE_CONFIG_PATH): Debian's /etc/roundcube for defaults.inc.php, then ours,
whose config.inc.php is read last and sets everything that matters. Debian's
own config.inc.php (dbconfig's database, its des_key) is root:www-data 0640,
so the webmail's user cannot read it; were it readable, ours would still
override every key it sets.

- IMAP: this host's Dovecot on 127.0.0.1, over TLS on the IMAPS port when the
  Layout has a certificate (else plain IMAP, development), the certificate's
  name checked against the host name (its issuer is not: self-signed until
  the installer's ACME run).
- SMTP: Exim's submission port with STARTTLS and AUTH as the user.
- ManageSieve (the managesieve plugin, filters and vacation) on the Layout's
  port, only while ManageSieve is on.
- des_key: read at run time from /etc/mailpanel/roundcube/des_key, which the
  helper makes on this host the first time it writes this file; the panel
  never has it.
- State (SQLite database, temp files) in the webmail user's own folder; logs
  to syslog.

Pure: same parameters, same bytes.
"""

from __future__ import annotations

from .. import validate as v
from ..managed import ROUNDCUBE_CONFIG, ROUNDCUBE_DES_KEY, WEBMAIL_USER
from ..params import CodeParams
from ..snapshot import FileSpec, Layout

ROUNDCUBE = "roundcube"
# Debian's configuration folder: defaults.inc.php, the plugins' (empty)
# config files, mimetypes.php. Read, never written.
DEBIAN_ETC = "/etc/roundcube"
# PEAR's and Debian's PHP libraries Roundcube includes (Net_SMTP, Net_Sieve,
# Mail_mime, Auth_SASL, Guzzle, Masterminds HTML5).
PHP_LIBRARIES = ("/usr/share/php", "/usr/share/javascript")
UPLOAD_MB = 25


def php_string(value: str) -> str:
    """A single-quoted PHP literal that gives back exactly value: inside
    single quotes PHP knows only \\\\ and \\'. Control characters are refused
    (none of our values has one; a newline would be a new PHP line)."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError("a Roundcube setting cannot contain a control character")
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _php(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return php_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_php(x) for x in value) + "]"
    if isinstance(value, dict):
        return "[" + ", ".join(f"{php_string(k)} => {_php(x)}" for k, x in value.items()) + "]"
    raise TypeError(f"no PHP literal for {type(value).__name__}")


def config_dir(layout: Layout) -> str:
    return v.path(layout.path(ROUNDCUBE_CONFIG.rsplit("/", 1)[0]), "Roundcube config folder")


def state_dir(layout: Layout) -> str:
    return v.path(layout.path(layout.roundcube_state_dir).rstrip("/"), "Roundcube state folder")


def public_dir(layout: Layout) -> str:
    # Debian's package, where apt put it (not below the Layout's root).
    return v.path(layout.roundcube_dir.rstrip("/") + "/public_html", "Roundcube folder")


def render_config(params: CodeParams, layout: Layout) -> bytes:
    host = v.hostname(params.hostname, "server host name")
    tls = bool(layout.tls_certificate)
    imap_port = v.port(layout.imaps_port if tls else layout.imap_port, "IMAP port")
    submission = v.port(layout.submission_port, "submission port")
    state = state_dir(layout)
    des_key = v.path(layout.path(ROUNDCUBE_DES_KEY), "des_key file")
    # The certificate is the host name's; the connection is to this host.
    ssl = {"ssl": {"verify_peer": False, "verify_peer_name": True, "peer_name": host,
                   "allow_self_signed": True}}
    settings: list[tuple[str, object]] = [
        ("db_dsnw", f"sqlite:///{state}/roundcube.db?mode=0640"),
        ("imap_host", f"{'ssl://' if tls else ''}127.0.0.1:{imap_port}"),
        ("imap_conn_options", ssl),
        ("smtp_host", f"{'tls://' if tls else ''}127.0.0.1:{submission}"),
        ("smtp_conn_options", ssl),
        ("smtp_user", "%u"),
        ("smtp_pass", "%p"),
        ("smtp_helo_host", host),
        # Dovecot's users are full addresses, compared in lower case.
        ("login_lc", 2),
        ("username_domain", ""),
        ("plugins", ["managesieve"] if params.sieve_enabled else []),
        ("temp_dir", f"{state}/temp/"),
        ("log_dir", f"{state}/"),  # unused with syslog, but Roundcube resolves it
        ("log_driver", "syslog"),
        ("syslog_id", "mailpanel-roundcube"),
        ("enable_installer", False),
        ("product_name", "Webmail"),
        ("support_url", ""),
        ("skin", "elastic"),
        ("enable_spellcheck", False),
        ("ip_check", True),
        ("login_autocomplete", 0),
        ("max_message_size", f"{UPLOAD_MB}M"),
    ]
    if params.sieve_enabled:
        settings += [
            ("managesieve_host", "127.0.0.1"),
            ("managesieve_port", v.port(layout.sieve_port, "ManageSieve port")),
            # Dovecot takes a plaintext login from this host only.
            ("managesieve_usetls", False),
            ("managesieve_vacation", 1),
        ]
    lines = [
        "<?php",
        "// Written by mailpanel (mailconf/render/roundcube.py): Roundcube's whole configuration.",
        "// Changes here are replaced on the next apply.",
        "$config = [];",
        *(f"$config[{php_string(key)}] = {_php(value)};" for key, value in settings),
        "// Made on this host by the helper; never in the panel's hands.",
        f"$config['des_key'] = rtrim((string) @file_get_contents({php_string(des_key)}));",
        "",
    ]
    return "\n".join(lines).encode("utf-8")


def _socket(layout: Layout) -> str:
    return v.path(layout.path(layout.webmail_roundcube_socket), "Roundcube PHP-FPM socket")


def pool_settings(layout: Layout) -> tuple[str, list[str], list[tuple[str, str]]]:
    """Roundcube's pool in the webmail's PHP-FPM master (webmail.pool_lines):
    its socket, open_basedir on Roundcube's code, Debian's settings, ours and
    its state, and where it finds its configuration."""
    socket = _socket(layout)
    code = v.path(layout.roundcube_code_dir.rstrip("/"), "Roundcube code folder")
    install = v.path(layout.roundcube_dir.rstrip("/"), "Roundcube folder")
    ours = config_dir(layout)
    basedir = [f"{install}/", f"{code}/", f"{DEBIAN_ETC}/", f"{ours}/", f"{state_dir(layout)}/",
               *(f"{x}/" for x in PHP_LIBRARIES), "/tmp/"]
    # Debian's defaults.inc.php, then our config.inc.php (read last, it wins).
    env = [("RCUBE_CONFIG_PATH", f"{DEBIAN_ETC}:{ours}"), ("ROUNDCUBE_CONFIG_DIR", ours)]
    return socket, basedir, env


def location_lines(layout: Layout, path: str, upload_mb: int) -> list[str]:
    """/webmail/ served from Debian's public_html (index.php, skins, plugins'
    and program's static files); index.php is the only PHP that runs."""
    public = public_dir(layout)
    socket = _socket(layout)
    return [
        "# Written by mailpanel: Roundcube at /webmail/, included in the host name's server block.",
        "# Changes here are replaced on the next apply.",
        f"location = {path.rstrip('/')} {{ return 301 {path}; }}",
        f"location ^~ {path} {{",
        f"    alias {public}/;",
        "    index index.php;",
        f"    client_max_body_size {upload_mb + 1}m;",
        "    # Dot files, the plugins' sources, notes and settings: never over HTTP",
        "    # (what Roundcube's own .htaccess refuses).",
        "    location ~ /\\. { deny all; }",
        "    location ~ /(README|CHANGELOG|Changelog|SECURITY|LICENSE|INSTALL|UPGRADING|composer\\.|jsdeps\\.json|meta\\.json) { deny all; }",
        "    location ~ \\.(inc|dist|sh|sql|log|md|txt|orig)$ { deny all; }",
        f"    location = {path}index.php {{",
        f"        fastcgi_pass unix:{socket};",
        "        include /etc/nginx/fastcgi_params;",
        f"        fastcgi_param SCRIPT_FILENAME {public}/index.php;",
        f"        fastcgi_param SCRIPT_NAME {path}index.php;",
        "        fastcgi_read_timeout 120s;",
        "    }",
        "    location ~ \\.php$ { deny all; }",
        "}",
        "",
    ]


def render_roundcube(params: CodeParams, layout: Layout) -> dict[str, FileSpec]:
    """config.inc.php while Roundcube is the chosen webmail on a host whose
    installer set the sites up; removed by the helper when it is not."""
    if not layout.webmail_sites or params.webmail != ROUNDCUBE:
        return {}
    return {ROUNDCUBE_CONFIG: FileSpec(render_config(params, layout), "root", WEBMAIL_USER, 0o640)}
