"""SnappyMail's configuration: application.ini (admin login, password hash, admin
panel key), the default domain's JSON (IMAP/SMTP/Sieve on this server over
localhost) and one JSON per hosted mail domain (the same server by its host
name, over TLS, so the certificate's name matches).

Pure: same snapshot, same bytes. Nothing is rendered until SnappyMail is
installed, so an apply never creates a half SnappyMail tree (and an apply after
an uninstall removes these files, see services.apply.RENDERED_PREFIXES).
"""

from __future__ import annotations

import json

from .. import validate as v
from ..managed import WEBMAIL_USER
from ..params import CodeParams, code_params
from ..snapshot import FileSpec, Layout, Snapshot

DATA_SUBDIR = "data/_data_/_default_"

# SnappyMail's MailSo\Net\Enumerations\ConnectionSecurityType
SECURITY_NONE = 0
SECURITY_SSL = 1  # TLS from the first byte (993)
SECURITY_STARTTLS = 2
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


def domain_config_path(layout: Layout, domain: str) -> str:
    return f"{layout.snappymail_dir}/{DATA_SUBDIR}/domains/{domain}.json"


def _connect(host: str, port: int, security: int = SECURITY_NONE, *, check_name: bool = False,
             **extra) -> dict:
    """SnappyMail's MailSo\\Net\\ConnectSettings as it serialises them.
    check_name: the certificate must name the host (it is the host name's);
    its issuer is not checked (self-signed until the installer's ACME run)."""
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
            "verify_peer_name": check_name,
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


def render_domain_config(snapshot: Snapshot, layout: Layout) -> bytes:
    """domains/<domain>.json for a hosted mail domain: this server by its host
    name (the certificate's name), IMAP over TLS (993), SMTP submission with
    STARTTLS (587), Sieve with STARTTLS (4190; Dovecot refuses a plaintext
    login from anywhere but localhost). The same for every domain: their
    mail lives on this host."""
    host = v.hostname(snapshot.server.hostname, "server host name")
    domain = {
        "IMAP": _connect(host, v.port(layout.imaps_port, "IMAPS port"), SECURITY_SSL, check_name=True),
        "SMTP": _connect(host, v.port(layout.submission_port, "submission port"), SECURITY_STARTTLS,
                         check_name=True, useAuth=True, setSender=False, usePhpMail=False),
        "Sieve": _connect(host, v.port(layout.sieve_port, "ManageSieve port"), SECURITY_STARTTLS,
                          check_name=True, enabled=bool(snapshot.sieve_enabled), authLiteral=True),
        "whiteList": "",
    }
    return (json.dumps(domain, indent=4, sort_keys=True) + "\n").encode("utf-8")


def mail_domains(snapshot: Snapshot) -> list[str]:
    """The domains whose mailboxes live here (not suspended, not send-only)."""
    return [d.name for d in snapshot.domains if not d.suspended and not d.hosted_elsewhere]


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
    return {application_ini_path(layout): FileSpec(content, WEBMAIL_USER, WEBMAIL_USER, 0o640)}


def render_snappymail_data(snapshot: Snapshot, layout: Layout) -> dict[str, FileSpec]:
    if not snapshot.snappymail.installed:
        return {}
    files = {default_domain_path(layout): FileSpec(render_default_domain(snapshot, layout),
                                                   WEBMAIL_USER, WEBMAIL_USER, 0o640)}
    names = mail_domains(snapshot)
    if names:
        content = render_domain_config(snapshot, layout)
        for name in names:
            files[domain_config_path(layout, v.domain(name))] = FileSpec(content, WEBMAIL_USER, WEBMAIL_USER, 0o640)
    return files
