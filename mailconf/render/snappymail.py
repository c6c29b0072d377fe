"""SnappyMail's configuration: application.ini (admin login, password hash, admin
panel key) and the default domain's JSON (IMAP/SMTP/Sieve on this server).

Pure: same snapshot, same bytes. Nothing is rendered until SnappyMail is
installed, so an apply never creates a half SnappyMail tree (and an apply after
an uninstall removes these files, see services.apply.RENDERED_PREFIXES).
"""

from __future__ import annotations

import json

from .. import validate as v
from ..params import CodeParams, code_params
from ..snapshot import FileSpec, Layout, Snapshot

DATA_SUBDIR = "data/_data_/_default_"

# SnappyMail's MailSo\Net\Enumerations\ConnectionSecurityType
SECURITY_NONE = 0
SECURITY_AUTO = 9  # STARTTLS when the server offers it



def application_ini_path(layout: Layout) -> str:
    return f"{layout.snappymail_dir}/{DATA_SUBDIR}/configs/application.ini"


def default_domain_path(layout: Layout) -> str:
    return f"{layout.snappymail_dir}/{DATA_SUBDIR}/domains/default.json"


def ini_quote(value: str) -> str:
    """A double-quoted value PHP's parse_ini_file() gives back byte for byte.

    Inside double quotes PHP unescapes \\\\ and \\" and expands ${VAR} (environment
    and ini values), so a literal $ is written \\$. A newline or NUL cannot be
    represented on one ini line: refuse rather than change the file's meaning.
    """
    if any(c in value for c in "\n\r\x00"):
        raise ValueError("an application.ini value cannot contain a newline or NUL")
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return f'"{escaped}"'


def _ini(sections: list[tuple[str, list[tuple[str, str]]]]) -> bytes:
    lines = [
        "; SnappyMail configuration, written by mailpanel.",
        "; Changes here are replaced on the next apply: use the panel.",
        "",
    ]
    for name, items in sections:
        lines.append(f"[{name}]")
        for key, raw in items:
            lines.append(f"{key} = {raw}")
        lines.append("")
    return "\n".join(lines).encode("utf-8")


def render_application_ini(params: CodeParams) -> bytes:
    """A code file (PHP expands ${...} in ini values): rendered by the helper."""
    sm = params.snappymail
    v.snappymail_credentials(sm)
    return _ini(
        [
            (
                "security",
                [
                    ("allow_admin_panel", "On"),
                    ("admin_login", ini_quote(sm.admin_login)),
                    ("admin_password", ini_quote(sm.admin_password_hash)),
                    # Set explicitly: with none SnappyMail picks a random cipher and
                    # rewrites this file on its first request.
                    ("encrypt_cipher", ini_quote("aes-256-cbc-hmac-sha1")),
                ],
            ),
            (
                "admin_panel",
                [
                    ("key", ini_quote(sm.admin_key)),
                    # Updates come from the panel's install job (checksum verified).
                    ("allow_update", "Off"),
                ],
            ),
            ("login", [("determine_user_domain", "On")]),
            ("logs", [("hide_passwords", "On"), ("time_zone", ini_quote("UTC"))]),
        ]
    )


def _connect(host: str, port: int, security: int = SECURITY_NONE, **extra) -> dict:
    """SnappyMail's MailSo\\Net\\ConnectSettings as it serialises them."""
    return {
        "host": host,
        "port": port,
        "type": security,
        "timeout": 10,
        "shortLogin": False,  # Dovecot users are full addresses
        "lowerLogin": True,
        "stripLogin": "",
        "sasl": ["PLAIN", "LOGIN"],
        "ssl": {
            "verify_peer": False,
            "verify_peer_name": False,
            "allow_self_signed": True,
            "SNI_enabled": True,
            "disable_compression": True,
            "security_level": 1,
        },
        **extra,
    }


def render_default_domain(snapshot: Snapshot, layout: Layout) -> bytes:
    """domains/default.json in the format SnappyMail ≥ 2.20 reads (its
    RainLoop\\Model\\Domain::fromArray): IMAP, SMTP and Sieve blocks. The FAQ's
    legacy `sieve_use = On, sieve_host = "localhost", sieve_port = 4190,
    sieve_secure = "None"` is the Sieve block below with type 0 (no TLS)."""
    domain = {
        "IMAP": _connect("localhost", layout.imap_port),
        # Exim offers AUTH only over TLS once it has a certificate: auto-detect
        # takes STARTTLS when offered (no peer check: the certificate names the
        # public host, not localhost). Dovecot lets localhost log in without TLS.
        "SMTP": _connect(
            "localhost", 587, SECURITY_AUTO, useAuth=True, setSender=False, usePhpMail=False
        ),
        "Sieve": _connect(
            "localhost",
            layout.sieve_port,
            enabled=bool(snapshot.sieve_enabled),
            authLiteral=True,
        ),
        "whiteList": "",
    }
    return (json.dumps(domain, indent=4, sort_keys=True) + "\n").encode("utf-8")


def render_snappymail(snapshot: Snapshot, layout: Layout) -> dict[str, FileSpec]:
    """Both SnappyMail files: application.ini (code) and default.json (data)."""
    return {
        **render_snappymail_code(code_params(snapshot), layout),
        **render_snappymail_data(snapshot, layout),
    }


def render_snappymail_code(params: CodeParams, layout: Layout) -> dict[str, FileSpec]:
    if not params.snappymail.installed:
        return {}
    content = render_application_ini(params)
    return {application_ini_path(layout): FileSpec(content, "www-data", "www-data", 0o640)}


def render_snappymail_data(snapshot: Snapshot, layout: Layout) -> dict[str, FileSpec]:
    if not snapshot.snappymail.installed:
        return {}
    content = render_default_domain(snapshot, layout)
    return {default_domain_path(layout): FileSpec(content, "www-data", "www-data", 0o640)}
