"""Dovecot: a standalone /etc/dovecot/dovecot.conf (Debian's conf.d is not read).

Pure: code parameters + layout in, {production path: FileSpec} out.

- passdb and userdb: passwd-file ``/etc/exim4/domains/%d/passwd``, the same file
  Exim reads (see render/exim.py for its format); ``auth_username_format = %Lu``
  so ``Alice@Example.org`` logs in as ``alice@example.org``.
- Mail: ``mail_home = <mail_root>/<domain>/<local part>``, Maildir in
  ``~/Maildir``, sieve scripts in ``~/sieve`` with the active one linked from
  ``~/.dovecot.sieve``. All mail files belong to ``layout.mail_user``.
- Local delivery: Exim's ``dovecot_lmtp`` transport over the LMTP socket. The
  quota plugin with ``quota_full_tempfail`` makes an over-quota mailbox answer
  4xx (Exim keeps the message queued; nothing is lost); the sieve plugin runs
  in LMTP when ``params.sieve_enabled``.
- Exim's ``dovecot`` authenticators use the auth-client socket
  (``layout.dovecot_auth_socket``), mode 0660 group exim.
- The auth process reads root:<exim group> 0640 passwd files: it gets the exim
  group as an extra group. With ``layout.dovecot_run_as`` (development) every
  process runs as that one user, login processes are not chrooted and sockets
  are 0666.

Two dialects, chosen by ``layout.dovecot_version`` (what the machine runs:
Debian 12 ships 2.3, Debian 13 ships 2.4, whose configuration format is not
compatible): the same behaviour written in each one's words. 2.4 differences
that matter here: ``dovecot_config_version``/``dovecot_storage_version`` must
come first; ``%{user | domain}`` replaces ``%d``; passdb/userdb are named
filters with ``passwd_file_path``; the per-user quota is the
``quota_storage_size`` setting (the shared passwd file keeps 2.3's
``userdb_quota_rule=*:storage=<N>M`` field, which 2.4 ignores as a setting but
still hands to ``userdb_fields`` as ``%{passwd_file:quota_rule}``); ssl and
sieve settings are renamed; Exim's authenticator needs the ``auth-legacy``
listener type (Exim does not speak 2.4's auth protocol).
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import tls
from .. import validate as v
from ..params import CodeParams
from ..peers import DOVEADM_PASSWORD_FILE, NO_PEERS, MailPeers
from ..snapshot import FileSpec, Layout
from ..tls import SniName

DOVECOT_CONF = "/etc/dovecot/dovecot.conf"
DOVECOT_VERSIONS = ("2.3", "2.4")
# The oldest 2.4 whose defaults and storage format we write for: any 2.4.x
# reads it (Debian 13 ships 2.4.1).
DOVECOT_24_CONFIG_VERSION = "2.4.0"
DOMAINS_DIR = "/etc/exim4/domains"

# Dovecot's default plus the RFC 5322 atext characters our local parts may
# use (mailconf/validate.py); never '/', so %d and %n cannot leave their folder.
USERNAME_CHARS = (
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ01234567890.-_@+=&'*?^`{}~$"
)


def render_dovecot(params: CodeParams, layout: Layout, sni: tuple[SniName, ...] = (),
                   peers: MailPeers = NO_PEERS) -> dict[str, FileSpec]:
    """dovecot.conf, a code file: the helper renders it itself from params.
    ``sni``: the names with a certificate of their mail domain (the helper
    passes those of the SNI index whose files it loaded, mailconf/tls.py);
    each gets a ``local_name`` block on 993 and 4190 alike. ``peers``: root's
    mail peers (mailconf/peers.py, read by the helper); with peers on other
    machines, the doveadm listener they copy mail to (TLS only, on this
    node's own address, the shared password read from root's file)."""
    return {
        DOVECOT_CONF: FileSpec(
            content=_dovecot_conf(params, layout, sni, peers).encode(),
            owner="root",
            group="root",
            mode=0o644,
            service="dovecot",
        )
    }


@dataclass(frozen=True)
class _Values:
    """Everything both dialects write, validated once."""

    hostname: str
    protocols: str
    listen: str
    base_dir: str
    state_dir: str
    log_path: str
    internal_user: str
    internal_group: str
    login_user: str
    cert: str  # "" = no TLS
    key: str
    sieve: bool
    imap_port: int
    imaps_port: int
    sieve_port: int
    mail_root: str
    domains_dir: str
    mail_user: str
    mail_group: str
    exim_group: str
    rootless: bool
    auth_listener: str
    lmtp_listener: str
    local_names: tuple[tuple[str, str, str], ...] = ()  # (SNI name, cert, key)
    submission_host: str = ""  # Exim on this host, for Sieve's vacation replies and redirects
    doveadm_address: str = ""  # "" = no doveadm listener (no peers on other machines)
    doveadm_port: int = 0
    doveadm_password_file: str = ""
    client_ca_file: str = ""  # verifies the peers' certificates (doveadm's tcps:)


def _dovecot_conf(params: CodeParams, layout: Layout, sni: tuple[SniName, ...] = (),
                  peers: MailPeers = NO_PEERS) -> str:
    if layout.dovecot_version not in DOVECOT_VERSIONS:
        raise ValueError(
            f"Dovecot version {layout.dovecot_version!r} is not one of {', '.join(DOVECOT_VERSIONS)}"
        )
    values = _values(params, layout, sni, peers)
    lines = _conf_24(values) if layout.dovecot_version == "2.4" else _conf_23(values)
    return "\n".join(line.rstrip("\n") for line in lines) + "\n"


def _values(params: CodeParams, layout: Layout, sni: tuple[SniName, ...] = (),
            peers: MailPeers = NO_PEERS) -> _Values:
    def p(production_path: str, what: str = "path") -> str:
        return v.path(layout.path(v.path(production_path, what)), what)

    def listener(production_path: str) -> str:
        # Inside base_dir a listener is named relative to it, so it replaces
        # Dovecot's default listener of that name instead of duplicating it.
        base = v.path(layout.dovecot_base_dir, "Dovecot base dir").rstrip("/") + "/"
        production_path = v.path(production_path, "Dovecot socket")
        if production_path.startswith(base):
            return production_path[len(base):]
        return p(production_path)

    run_as, _, run_group = layout.dovecot_run_as.partition(":")
    if run_as:
        run_as = v.name(run_as, "Dovecot user")
        run_group = v.name(run_group or run_as, "Dovecot group")
    mail_user = run_as or v.name(layout.mail_user, "mail user")
    tls_on = bool(layout.tls_certificate)
    sieve = params.sieve_enabled
    doveadm = peers.listener
    if doveadm is not None and not tls_on:
        # The mail copy crosses the network: never without TLS.
        raise ValueError("the doveadm listener for the mail peers needs this node's TLS certificate")
    return _Values(
        hostname=v.hostname(params.hostname, "server host name"),
        protocols="imap lmtp sieve" if sieve else "imap lmtp",
        listen=", ".join(sorted({v.ip(x) for x in layout.dovecot_listen})) or "*, ::",
        base_dir=p(layout.dovecot_base_dir, "Dovecot base dir"),
        state_dir=p(layout.dovecot_state_dir, "Dovecot state dir"),
        log_path=p(layout.dovecot_log_path, "Dovecot log") if layout.dovecot_log_path else "",
        internal_user=run_as or "dovecot",
        internal_group=run_group,
        login_user=run_as or "dovenull",
        cert=p(layout.tls_certificate, "TLS certificate") if tls_on else "",
        key=p(layout.tls_privatekey or layout.tls_certificate, "TLS key") if tls_on else "",
        sieve=sieve,
        imap_port=v.port(layout.imap_port, "IMAP port"),
        imaps_port=v.port(layout.imaps_port, "IMAPS port") if tls_on else 0,
        sieve_port=v.port(layout.sieve_port, "ManageSieve port") if sieve else 0,
        mail_root=p(layout.mail_root, "mail root"),
        domains_dir=p(DOMAINS_DIR),
        mail_user=mail_user,
        mail_group=run_group or mail_user,
        exim_group=v.name(layout.exim_group, "exim group"),
        rootless=bool(run_as),
        auth_listener=listener(layout.dovecot_auth_socket),
        lmtp_listener=listener(layout.dovecot_lmtp_socket),
        submission_host=_submission_host(layout),
        local_names=tuple(
            (pair.name, *(p(path, "TLS certificate") for path in tls.domain_cert_paths(pair.domain)))
            for pair in sorted({tls.check_pair(x) for x in sni})
        ) if tls_on else (),
        doveadm_address=v.ip(doveadm.address, "doveadm listen address") if doveadm else "",
        doveadm_port=v.port(doveadm.port, "doveadm port") if doveadm else 0,
        doveadm_password_file=p(DOVEADM_PASSWORD_FILE) if doveadm else "",
        client_ca_file=p(layout.relay_ca_bundle, "CA bundle") if doveadm else "",
    )


SPECIAL_MAILBOXES = (("Drafts", "\\Drafts"), ("Junk", "\\Junk"), ("Sent", "\\Sent"), ("Trash", "\\Trash"))


def _local_names(c: _Values, cert_setting: str, key_setting: str) -> list[str]:
    """One block per SNI name with its domain's certificate (the same words
    as the global ssl settings of the dialect); a client naming nothing or
    another name gets the server's."""
    w = []
    for name, cert, key in c.local_names:
        w += [f"local_name {name} {{", f"  {cert_setting}{cert}", f"  {key_setting}{key}", "}"]
    return w


def _head(c: _Values) -> list[str]:
    w = [f"protocols = {c.protocols}", f"listen = {c.listen}", f"hostname = {c.hostname}",
         f"base_dir = {c.base_dir}", f"state_dir = {c.state_dir}"]
    if c.log_path:
        w.append(f"log_path = {c.log_path}")
    w.append(f"default_internal_user = {c.internal_user}")
    if c.internal_group:
        # the default stats/dict/hibernate listeners are chowned to this group
        w.append(f"default_internal_group = {c.internal_group}")
    w.append(f"default_login_user = {c.login_user}")
    w.append("")
    return w


def _namespace(c: _Values) -> list[str]:
    w = ["namespace inbox {", "  inbox = yes", "  separator = /"]
    for box, use in SPECIAL_MAILBOXES:
        w += [f"  mailbox {box} {{", "    auto = subscribe", f"    special_use = {use}", "  }"]
    return w + ["}", ""]


def _services(c: _Values, auth_listener_type: str = "") -> list[str]:
    chroot = "  chroot =\n" if c.rootless else ""
    if c.rootless:
        socket_perms = "    mode = 0666\n"
        auth_groups = ""
    else:
        socket_perms = f"    mode = 0660\n    group = {c.exim_group}\n"
        auth_groups = f"  extra_groups = {c.exim_group}\n"
    w = ["service imap-login {", chroot + "  inet_listener imap {", f"    port = {c.imap_port}", "  }",
         "  inet_listener imaps {", f"    port = {c.imaps_port}", "    ssl = yes", "  }", "}"]
    if c.sieve:
        w += ["service managesieve-login {", chroot + "  inet_listener sieve {",
              f"    port = {c.sieve_port}", "  }", "}",
              # Upstream's name (Debian patches in "(Debian)"): clients and the FAQ
              # expect "IMPLEMENTATION" "Dovecot Pigeonhole", and the distribution
              # is nobody's business on an open port.
              "protocol sieve {", "  managesieve_implementation_string = Dovecot Pigeonhole", "}"]
    if chroot:
        w += ["service anvil {", chroot.rstrip("\n"), "}"]
    listener_type = f"    type = {auth_listener_type}\n" if auth_listener_type else ""
    w += ["service auth {", auth_groups + f"  unix_listener {c.auth_listener} {{",
          listener_type + socket_perms + "  }", "}",
          "service lmtp {", f"  unix_listener {c.lmtp_listener} {{", socket_perms + "  }", "}", ""]
    return w


def _conf_23(c: _Values) -> list[str]:
    mail_home = f"{c.mail_root}/%d/%n"
    w = ["# Generated by mailpanel (mailadmin/render/dovecot.py). Do not edit: the",
         "# next apply overwrites it.", ""]
    w += _head(c)
    if c.cert:
        w += ["ssl = yes", f"ssl_cert = <{c.cert}", f"ssl_key = <{c.key}", "ssl_min_protocol = TLSv1.2",
              # Plaintext AUTH only over TLS or from this host (webmail).
              "disable_plaintext_auth = yes"]
        w += _local_names(c, "ssl_cert = <", "ssl_key = <")
    else:
        w += ["ssl = no", "disable_plaintext_auth = no"]
    w += ["", "auth_mechanisms = plain login", "auth_username_format = %Lu",
          f"auth_username_chars = {USERNAME_CHARS}",
          "passdb {", "  driver = passwd-file", f"  args = username_format=%n {c.domains_dir}/%d/passwd", "}",
          "userdb {", "  driver = passwd-file", f"  args = username_format=%n {c.domains_dir}/%d/passwd",
          f"  default_fields = uid={c.mail_user} gid={c.mail_group} home={mail_home}", "}", "",
          f"mail_uid = {c.mail_user}", f"mail_gid = {c.mail_group}",
          # Pure renderer: the mail user's uid is unknown here; anything but root.
          "first_valid_uid = 1", f"mail_home = {mail_home}", "mail_location = maildir:~/Maildir",
          "mail_plugins = $mail_plugins quota"]
    w += _namespace(c)
    w += ["plugin {", "  quota = maildir:User quota"]
    if c.sieve:
        w.append("  sieve = file:~/sieve;active=~/.dovecot.sieve")
    w += ["}", ""]
    w += _services(c)
    w += ["protocol imap {", "  mail_plugins = $mail_plugins imap_quota", "}",
          "protocol lmtp {", f"  mail_plugins = $mail_plugins{' sieve' if c.sieve else ''}",
          f"  postmaster_address = postmaster@{c.hostname}", "}",
          "lmtp_rcpt_check_quota = yes",
          # user+tag@: Exim hands the tag on (rcpt_include_affixes); Dovecot
          # finds the user without it and keeps it for Sieve's :detail.
          "recipient_delimiter = +",
          # An LDA/LMTP setting, not a plugin one: inside plugin {} Dovecot ignores it
          # and answers 552 (Exim bounces) instead of 452 (Exim keeps it queued).
          "quota_full_tempfail = yes",
          f"submission_host = {c.submission_host}"]
    return w + _doveadm(c, "address", "ssl_client_ca_file")


def _doveadm(c: _Values, listen_setting: str, ca_setting: str, listener_name: str = "") -> list[str]:
    """Mail copies between nodes (doveadm sync over TCP): this node's
    listener for its peers (TLS, its own address; the firewall lets only the
    peers in) and, as their client, the CA that verifies their certificates.
    The shared password stays in root's file; this file only names it."""
    if not c.doveadm_address:
        return []
    name = f" {listener_name}" if listener_name else ""
    return ["", "# Mail copies from and to the other mail nodes (doveadm sync, tcps:).",
            "service doveadm {", f"  inet_listener{name} {{", f"    {listen_setting} = {c.doveadm_address}",
            f"    port = {c.doveadm_port}", "    ssl = yes", "  }", "}",
            f"doveadm_port = {c.doveadm_port}", f"doveadm_password = <{c.doveadm_password_file}",
            f"{ca_setting} = {c.client_ca_file}"]


def _submission_host(layout: Layout) -> str:
    """Where Sieve's vacation replies and redirects go: this host's Exim over
    SMTP on loopback (its ACL lets localhost relay), not Debian's sendmail
    binary, which reads whatever Exim configuration the host has."""
    port = next((p for p in layout.smtp_ports if p not in layout.smtps_ports), 0)
    port = v.port(port, "SMTP port for Dovecot's submission_host")
    listen = [v.ip(x) for x in layout.smtp_listen]
    host = "127.0.0.1" if not listen or "127.0.0.1" in listen else listen[0]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# The passwd files' quota field (render/exim.py, shared with Exim) is 2.3's
# "quota_rule=*:storage=<N>M"; 2.4 wants "<N>M" in quota_storage_size. The
# prefix is 10 characters; no field = 0 = unlimited.
QUOTA_RULE_PREFIX = "*:storage="
QUOTA_FROM_PASSWD_FILE = (
    f"%{{passwd_file:quota_rule | default('{QUOTA_RULE_PREFIX}0') | substr({len(QUOTA_RULE_PREFIX)})}}"
)
# 2.3's quota_grace was 10% of the limit (a delivery may overshoot that much
# once); 2.4's quota_storage_grace is a fixed 10M by default, which would let
# a 1.5 MB message into a 1 MB mailbox. 10% of N MiB is N * 102 KiB.
QUOTA_GRACE_FROM_PASSWD_FILE = (
    f"%{{passwd_file:quota_rule | default('{QUOTA_RULE_PREFIX}0M') | substr({len(QUOTA_RULE_PREFIX)}, -1) * 102}}k"
)


def _conf_24(c: _Values) -> list[str]:
    domain, local = "%{user | domain}", "%{user | username}"
    mail_home = f"{c.mail_root}/{domain}/{local}"
    passwd_file = f"{c.domains_dir}/{domain}/passwd"
    w = [f"dovecot_config_version = {DOVECOT_24_CONFIG_VERSION}",
         "# Generated by mailpanel (mailadmin/render/dovecot.py), Dovecot 2.4. Do",
         "# not edit: the next apply overwrites it.",
         f"dovecot_storage_version = {DOVECOT_24_CONFIG_VERSION}", ""]
    w += _head(c)
    if c.cert:
        w += ["ssl = yes", f"ssl_server_cert_file = {c.cert}", f"ssl_server_key_file = {c.key}",
              "ssl_min_protocol = TLSv1.2",
              # Plaintext AUTH only over TLS or from this host (webmail).
              "auth_allow_cleartext = no"]
        w += _local_names(c, "ssl_server_cert_file = ", "ssl_server_key_file = ")
    else:
        w += ["ssl = no", "auth_allow_cleartext = yes"]
    w += ["", "auth_mechanisms = plain login", "auth_username_format = %{user | lower}",
          f"auth_username_chars = {USERNAME_CHARS}",
          # The passwd file is per domain and keyed by the local part.
          "passdb passwd-file {", f"  passwd_file_path = {passwd_file}",
          "  auth_username_format = %{user | lower | username}", "}",
          "userdb passwd-file {", f"  passwd_file_path = {passwd_file}",
          "  auth_username_format = %{user | lower | username}",
          "  fields {", f"    uid:default = {c.mail_user}", f"    gid:default = {c.mail_group}",
          f"    home:default = {mail_home}",
          f"    quota_storage_size = {QUOTA_FROM_PASSWD_FILE}",
          f"    quota_storage_grace = {QUOTA_GRACE_FROM_PASSWD_FILE}", "  }", "}", "",
          f"mail_uid = {c.mail_user}", f"mail_gid = {c.mail_group}",
          # Pure renderer: the mail user's uid is unknown here; anything but root.
          "first_valid_uid = 1", f"mail_home = {mail_home}",
          "mail_driver = maildir", "mail_path = ~/Maildir",
          "mail_plugins {", "  quota = yes", "}"]
    w += _namespace(c)
    w += ['quota "User quota" {', "  driver = maildir", "}"]
    if c.sieve:
        w += ["sieve_script personal {", "  driver = file", "  path = ~/sieve",
              "  active_path = ~/.dovecot.sieve", "}"]
    w.append("")
    w += _services(c, auth_listener_type="auth-legacy")
    w += ["protocol imap {", "  mail_plugins {", "    imap_quota = yes", "  }", "}",
          "protocol lmtp {"]
    if c.sieve:
        w += ["  mail_plugins {", "    sieve = yes", "  }"]
    w += [f"  postmaster_address = postmaster@{c.hostname}", "}",
          "lmtp_rcpt_check_quota = yes",
          # user+tag@: Exim hands the tag on (rcpt_include_affixes); Dovecot
          # finds the user without it and keeps it for Sieve's :detail.
          "recipient_delimiter = +",
          # Over quota: 452 (Exim keeps the message queued), not 552 (bounce).
          "quota_full_tempfail = yes",
          f"submission_host = {c.submission_host}"]
    return w + _doveadm(c, "listen", "ssl_client_ca_file", "doveadm")
