"""Plain data the renderers work from.

`build_snapshot()` in `mailadmin.services.apply` turns the database into these
frozen dataclasses; renderers in `mailconf.render` turn them into files. Nothing
here touches the ORM, the clock or the disk.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Relay:
    host: str
    port: int = 587
    username: str = ""
    password: str = ""
    auth: str = "login"  # "login" | "plain"
    tls: str = "starttls"  # "starttls" | "ssl" | "none"


@dataclass(frozen=True)
class SendLimits:
    """How much one sender may send: messages per hour, per day, recipients
    per message. None = inherit the wider scope's value (mailbox → domain →
    server; the server's None = no limit); 0 = no limit at this scope."""

    per_hour: int | None = None
    per_day: int | None = None
    recipients: int | None = None


@dataclass(frozen=True)
class Mailbox:
    local_part: str
    password_hash: str  # a Dovecot-verifiable hash such as "{BLF-CRYPT}$2b$..."
    quota_mb: int = 0  # 0 = unlimited
    forward_only: bool = False  # forwards exist and no local copy is kept
    send_limits: SendLimits = field(default_factory=SendLimits)


@dataclass(frozen=True)
class Alias:
    local_part: str
    targets: tuple[str, ...]


@dataclass(frozen=True)
class Forward:
    local_part: str  # the mailbox whose mail is forwarded
    targets: tuple[str, ...]


@dataclass(frozen=True)
class Domain:
    name: str  # IDNA / punycode, lower case
    dkim_enabled: bool = True
    dkim_private_pem: str = ""
    dkim_selector: str = "mail"  # one DNS label: <selector>._domainkey.<name>
    suspended: bool = False
    hosted_elsewhere: bool = False  # send-only: DKIM signing, no local delivery
    relay: Relay | None = None
    mailboxes: tuple[Mailbox, ...] = ()
    aliases: tuple[Alias, ...] = ()
    forwards: tuple[Forward, ...] = ()
    catchall: str = ""  # full address, or "" for none
    # Unix users (web apps on this host) an admin allowed to send as this
    # domain: only their local submissions get its relay and DKIM key.
    local_senders: tuple[str, ...] = ()
    # postmaster@ and abuse@ go here unless a mailbox or alias has that name
    # (RFC 5321 §4.5.1, RFC 2142); "" = nowhere (they bounce).
    role_address: str = ""
    subaddressing: bool = True  # user+tag@ delivers to user, the tag kept for Sieve
    # The domain's own limits (its mailboxes inherit them; local submissions
    # by its mapped Unix users are limited by them).
    send_limits: SendLimits = field(default_factory=SendLimits)
    # Senders whose mail Exim holds (accepts and freezes) until someone acts:
    # local parts of mailboxes, "*" for the local submissions of local_senders.
    held_senders: tuple[str, ...] = ()
    # Moving to another node: this (old) node forwards the domain's incoming
    # mail there (host name or IP address, SMTP port) until the move is
    # confirmed; "" = deliver here.
    moved_to: str = ""
    moved_to_port: int = 25


@dataclass(frozen=True)
class ServerIdentity:
    hostname: str = "localhost.localdomain"
    ipv4: str = ""
    ipv6: str = ""
    nat_ipv4: str = ""


@dataclass(frozen=True)
class SnappyMail:
    installed: bool = False
    admin_login: str = ""
    admin_password_hash: str = ""  # bcrypt/argon2 that PHP password_verify accepts
    admin_key: str = ""


# What https://<host name>/webmail/ may serve; the first is the default.
WEBMAIL_APPS = ("snappymail", "roundcube")


@dataclass(frozen=True)
class Snapshot:
    server: ServerIdentity = field(default_factory=ServerIdentity)
    domains: tuple[Domain, ...] = ()  # sorted by name
    global_relay: Relay | None = None
    dnsbl_zones: tuple[str, ...] = ()  # final zone names, DQS key already applied
    internal_lookup: bool = True  # True: dnslookup serves !+local_domains
    sieve_enabled: bool = False
    sieve_external: bool = False
    snappymail: SnappyMail = field(default_factory=SnappyMail)
    send_limits: SendLimits = field(default_factory=SendLimits)  # server-wide defaults
    webmail: str = "snappymail"  # which one /webmail/ serves: WEBMAIL_APPS


@dataclass(frozen=True)
class Layout:
    """Where things live. Production uses the defaults with root "/"; tests and
    `mail config render --out DIR` use root=DIR so the rendered files point
    inside DIR and the real daemons can run from there."""

    root: str = "/"
    spool_dir: str = "/var/spool/exim4"
    log_dir: str = "/var/log/exim4"
    mail_root: str = "/var/mail/vhosts"  # Maildirs: <mail_root>/<domain>/<local_part>/
    exim_user: str = "Debian-exim"
    exim_group: str = "Debian-exim"
    mail_user: str = "mail"  # owner of delivered mail
    smtp_ports: tuple[int, ...] = (25, 465, 587)
    smtp_listen: tuple[str, ...] = ()  # empty = all interfaces
    tls_certificate: str = ""  # empty = no TLS offered by our Exim
    tls_privatekey: str = ""
    relay_ca_bundle: str = "/etc/ssl/certs/ca-certificates.crt"
    dovecot_auth_socket: str = "/run/dovecot/auth-client"
    dovecot_base_dir: str = "/run/dovecot"
    imap_port: int = 143
    imaps_port: int = 993
    sieve_port: int = 4190
    snappymail_dir: str = "/var/lib/snappymail"
    # Added for the Exim/Dovecot renderers (defaults = Debian production).
    smtps_ports: tuple[int, ...] = (465,)  # tls_on_connect when a cert is set
    exim_pid_file: str = "/run/exim4/exim.pid"
    dovecot_listen: tuple[str, ...] = ()  # empty = all interfaces
    dovecot_state_dir: str = "/var/lib/dovecot"
    dovecot_log_path: str = ""  # empty = syslog
    dovecot_lmtp_socket: str = "/run/dovecot/lmtp"
    # Rootless Dovecot for development: "user" or "user:group" that every
    # Dovecot process runs as (also the mail owner); no chroot, no extra
    # groups, sockets 0666. Empty = normal root-started Dovecot.
    dovecot_run_as: str = ""
    # Which configuration dialect dovecot.conf is written in: "2.3" (Debian 12)
    # or "2.4" (Debian 13). Detected where the Layout is made (install.sh writes
    # it to /etc/mailpanel/layout.json for the helper), never by a renderer.
    dovecot_version: str = "2.3"
    # The webmail sites (mailconf/render/webmail.py): rendered only where the
    # installer set this, with the PHP-FPM unit that reads the pool file and
    # the include of the locations in the host name's nginx server.
    webmail_sites: bool = False
    webmail_php_socket: str = "/run/mailpanel-webmail/php-fpm.sock"
    # The webmail's PHP-FPM user: owns SnappyMail's data/ and Roundcube's
    # state (managed.WEBMAIL_USER; install.sh creates it).
    webmail_php_user: str = "mailpanel-webmail"
    webmail_roundcube_socket: str = "/run/mailpanel-webmail/roundcube.sock"
    web_server_user: str = "www-data"  # nginx's: the only one that may use the PHP-FPM sockets
    # Debian's roundcube-core: its INSTALL_PATH (public_html/ is the web root,
    # the rest links to /usr/share/roundcube) and its code.
    roundcube_dir: str = "/var/lib/roundcube"
    roundcube_code_dir: str = "/usr/share/roundcube"
    # Roundcube's SQLite database and temp folder, the webmail user's.
    roundcube_state_dir: str = "/var/lib/mailpanel-webmail/roundcube"
    submission_port: int = 587  # Exim's STARTTLS + AUTH port, for the webmails
    http_port: int = 80
    http_listen: tuple[str, ...] = ()  # empty = all interfaces
    acme_webroot: str = "/var/www/mailpanel-acme"
    # The per-name HTTPS sites of mail domains with their own certificate
    # (mailconf/render/tls_sites.py) and the panel they pass autoconfig and
    # MTA-STS requests to (install.sh's gunicorn).
    https_port: int = 443
    https_listen: tuple[str, ...] = ()  # empty = all interfaces
    panel_upstream: str = "127.0.0.1:8000"

    def path(self, production_path: str) -> str:
        """The path as it appears inside rendered files."""
        if self.root in ("", "/"):
            return production_path
        return posixpath.join(self.root, production_path.lstrip("/"))


@dataclass(frozen=True)
class FileSpec:
    content: bytes
    owner: str = "root"
    group: str = "root"
    mode: int = 0o644
    service: str = ""  # service to reload when this file changes ("" = none)
