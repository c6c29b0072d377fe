"""Exim: the standalone /etc/exim4/exim4.conf and the files it reads at run time.

Pure: snapshot + layout in, {production path: FileSpec} out, byte-for-byte
deterministic. Every path inside a file goes through ``layout.path()``.

Files and formats (all root:<exim group> 0640; only exim4.conf reloads Exim,
the rest are read at run time by lookups — SPEC §5.5):

``/etc/exim4/domains/<d>/``  one folder per domain that is hosted or send-only.
    The folder's existence makes ``<d>`` a local domain (``dsearch``), unless
    ``<d>`` is listed in ``/etc/exim4/send_only_domains``. Suspended domains get
    no folder at all: not local, no DKIM signing, their users cannot log in.
``dkim.pem``        PEM private key; only when DKIM is on.
``dkim_selector``   its selector, one DNS label and a line break (``mail`` by
                    default), read with ``${readfile}`` into ``dkim_selector``:
                    a rotation changes data, never exim4.conf.
``passwd``          Dovecot passwd-file, shared by Exim (lsearch: is this local
                    part a mailbox?) and Dovecot (passdb + userdb)::

                        alice:{BLF-CRYPT}$2y$...::::::userdb_quota_rule=*:storage=100M

                    (the extra field only when the quota is not 0 = unlimited).
``aliases``         lsearch ``local_part: target, target``; the key ``*`` is the
                    catch-all, used only when no alias, forward or mailbox
                    matches.
``forwards``        lsearch ``mailbox: target, target``. A mailbox that keeps a
                    local copy lists ITSELF among its targets (Exim routes a
                    redirect's own address past the router that generated it, so
                    that copy goes to the Maildir); a forward-only mailbox
                    (``Mailbox.forward_only``) does not. So the forward-only flag
                    lives in this file as data, no separate list.
``smtp_relay.conf`` lsearch, one ``key: value`` per line: ``host``, ``port``,
                    ``auth`` (login|plain), ``tls`` (starttls|ssl|none) in clear
                    (validated), ``user`` and ``pass`` as base64 of their UTF-8
                    bytes (lsearch strips blanks and has no escapes; base64 makes
                    every byte but NUL/CR/LF survive; exim decodes with
                    ``${base64d:}`` and doubles ``^`` for ``client_send``).
                    ``user`` is absent for an unauthenticated relay. With
                    PLAIN, neither may start with ``^`` (see
                    ``relay_credentials_problem``).
``local_senders``   lsearch, one ``unixuser:`` per line: the Unix users whose
                    local submissions (web apps, cron) may use this domain's
                    relay and DKIM key; absent = none (see MP_SENDER_DIR).
``send_limits``     lsearch, ``key: hour=N day=N rcpt=N`` (each field
                    optional, 0 = no limit): key ``*`` is the domain's own
                    limits (also those of its mapped local submissions), a
                    local part a mailbox's; a missing field falls back to the
                    domain's, then the server's; absent = no overrides.
``held_senders``    lsearch, ``key:`` per line: mailboxes (local part) or the
                    domain's local submissions (``*``) whose sending is
                    suspended: Exim accepts their mail and freezes it.
``moved_to``        lsearch, ``host: H`` and ``port: N``: the domain is moving to
                    another node, which already accepts it; this node still
                    accepts its mail and forwards all of it there (router
                    ``moved_domain``) until the move is confirmed.
``/etc/exim4/send_limits``  the server-wide defaults, one ``*:`` line in
    the same format; always rendered (empty = no limits).
``/etc/exim4/smtp_relay.conf``  the global relay, same format; always
    rendered (empty when there is none) so no lookup ever hits a missing file.
``/etc/exim4/send_only_domains``  lsearch, one ``domain:`` per line (§1.7).
``/etc/exim4/dnsbl.conf``  one ``zone=code,code,…`` per line, read with
    ``${readfile}``. IP zones list 127.0.0.2–127.0.0.255, domain zones (Spamhaus
    DBL/ZRD, queried with the sender's domain) 127.0.1.2–127.0.1.254; the
    127.255.255.x error answers (refused / open resolver / rate limited) and
    127.0.1.255 (DBL "IP queries prohibited") are never in a list, so they never
    reject mail (HestiaCP #4366).

Delivery: every local delivery goes to Dovecot over LMTP (one path; sieve and
quota are Dovecot's: over quota = 452, Exim defers, nothing lost).

Taint (exim ≥ 4.94): file names are never built from ``$sender_address_domain``
or ``$domain``. The untainted folder name comes from a ``dsearch`` of the domains
folder, keyed by the sender domain lower-cased with ``${tr}`` (dsearch is
case-sensitive, and ``${lc:`` contains a colon that would split colon lists),
with ``/`` mapped to ``_`` (a slash in a dsearch key is a lookup DEFER). A
dsearch of a missing folder is a PANIC, so every one is guarded by ``exists``
(no domain yet = no ``/etc/exim4/domains``).
"""

from __future__ import annotations

import base64

from .. import tls
from .. import validate as v
from ..grammar import DKIM_SELECTOR_RE
from ..params import CodeParams, code_params
from ..snapshot import Domain, FileSpec, Layout, Relay, Snapshot

EXIM_CONF = "/etc/exim4/exim4.conf"
DOMAINS_DIR = "/etc/exim4/domains"
GLOBAL_RELAY = "/etc/exim4/smtp_relay.conf"
SEND_ONLY = "/etc/exim4/send_only_domains"
NO_SUBADDRESSING = "/etc/exim4/no_subaddressing"
SEND_LIMITS = "/etc/exim4/send_limits"
# The ACL variable a held message carries in its spool header (-aclm): why it
# was held ("hour", "day", "suspended"); the sender key is in acl_m_mp_sender.
HELD_VARIABLE = "acl_m_mp_held"
SENDER_VARIABLE = "acl_m_mp_sender"
ROLE_LOCAL_PARTS = ("abuse", "postmaster")
DNSBL = "/etc/exim4/dnsbl.conf"
DKIM_SELECTOR = "mail"

# Spamhaus zone codes and the relay credential rule live with the validators
# (mailconf.validate): the helper's grammars need them without the renderers.
from ..validate import (  # noqa: E402,F401  (re-exported)
    DOMAIN_ZONE_CODES,
    DOMAIN_ZONE_LABELS,
    IP_ZONE_CODES,
    relay_credentials_problem,
)

_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ/"
_LOWER = "abcdefghijklmnopqrstuvwxyz_"


def render_exim(snapshot: Snapshot, layout: Layout) -> dict[str, FileSpec]:
    """Every file Exim reads: the config (code) and its run-time data."""
    return {
        **render_exim_conf(code_params(snapshot), layout),
        **render_exim_data(snapshot, layout),
    }


def render_exim_conf(params: CodeParams, layout: Layout) -> dict[str, FileSpec]:
    """exim4.conf, a code file: the helper renders it itself from params."""
    group = v.name(layout.exim_group, "exim group")
    content = _exim_conf(params, layout).encode()
    return {EXIM_CONF: FileSpec(content, "root", group, 0o640, "exim4")}


def render_exim_data(snapshot: Snapshot, layout: Layout) -> dict[str, FileSpec]:
    """The data files Exim reads at run time through lookups (see grammar.py)."""
    files: dict[str, bytes] = {
        GLOBAL_RELAY: _relay_file(snapshot.global_relay),
        DNSBL: _dnsbl_file(snapshot.dnsbl_zones),
        SEND_LIMITS: _limits_file({"*": snapshot.send_limits}),
    }
    send_only: list[str] = []
    seen: set[str] = set()
    for domain in sorted(snapshot.domains, key=lambda d: d.name):
        name = v.domain(domain.name)
        if name in seen:
            raise ValueError(f"duplicate domain: {name}")
        seen.add(name)
        if domain.suspended:
            continue
        folder = f"{DOMAINS_DIR}/{name}"
        if domain.dkim_enabled and domain.dkim_private_pem:
            files[f"{folder}/dkim.pem"] = v.pem(domain.dkim_private_pem).encode()
            files[f"{folder}/dkim_selector"] = f"{_selector(domain)}\n".encode()
        if domain.relay is not None:
            files[f"{folder}/smtp_relay.conf"] = _relay_file(domain.relay)
        if domain.local_senders:
            users = sorted({v.name(u, "local sender (Unix user)") for u in domain.local_senders})
            files[f"{folder}/local_senders"] = "".join(f"{u}:\n" for u in users).encode()
        limits = _limits_file(
            {"*": domain.send_limits, **{_sender_key(b.local_part): b.send_limits for b in domain.mailboxes}}
        )
        if limits:
            files[f"{folder}/send_limits"] = limits
        if domain.moved_to and not domain.hosted_elsewhere:
            files[f"{folder}/moved_to"] = _moved_to_file(domain)
        if domain.held_senders:
            held = sorted({_sender_key(k) if k != "*" else k for k in domain.held_senders})
            files[f"{folder}/held_senders"] = "".join(f"{k}:\n" for k in held).encode()
        if domain.hosted_elsewhere:
            send_only.append(name)
            if not any(path.startswith(folder + "/") for path in files):
                # dsearch needs the folder to exist only for signing/relay; an
                # empty folder would be dropped by most file stores, so keep a
                # marker-free domain out of the tree entirely.
                continue
        else:
            files.update(_account_files(domain, folder))
    files[SEND_ONLY] = "".join(f"{d}:\n" for d in send_only).encode()
    files[NO_SUBADDRESSING] = "".join(
        f"{v.domain(d.name)}:\n" for d in sorted(snapshot.domains, key=lambda d: d.name)
        if not d.subaddressing and not d.suspended and not d.hosted_elsewhere
    ).encode()
    group = v.name(layout.exim_group, "exim group")
    return {path: FileSpec(files[path], "root", group, 0o640) for path in sorted(files)}


# -- per-domain files -------------------------------------------------------


def _account_files(domain: Domain, folder: str) -> dict[str, bytes]:
    name = domain.name
    passwd, aliases, forwards = [], [], []
    mailboxes = {}
    for box in domain.mailboxes:
        local = v.local_part(box.local_part.lower())
        if local in mailboxes:
            raise ValueError(f"duplicate mailbox: {local}@{name}")
        mailboxes[local] = box
    for local in sorted(mailboxes):
        box = mailboxes[local]
        line = f"{local}:{v.password_hash(box.password_hash)}::::::"
        if v.quota_mb(box.quota_mb):
            line += f"userdb_quota_rule=*:storage={box.quota_mb}M"
        passwd.append(line + "\n")
    alias_locals = set()
    for alias in sorted(domain.aliases, key=lambda a: a.local_part):
        local = v.local_part(alias.local_part.lower())
        if local in alias_locals:
            raise ValueError(f"duplicate alias: {local}@{name}")
        alias_locals.add(local)
        targets = sorted({v.address(t, "alias target") for t in alias.targets})
        if targets:
            aliases.append(f"{local}: {', '.join(targets)}\n")
    if domain.catchall:
        aliases.append(f"*: {v.address(domain.catchall, 'catch-all target')}\n")
    for fwd in sorted(domain.forwards, key=lambda f: f.local_part):
        local = v.local_part(fwd.local_part.lower())
        targets = {v.address(t, "forward target") for t in fwd.targets}
        if not targets:
            continue
        box = mailboxes.get(local)
        if box is None or not box.forward_only:
            # keep a local copy: the mailbox is one of its own targets
            targets.add(f"{local}@{name}")
        forwards.append(f"{local}: {', '.join(sorted(targets))}\n")
    files = {
        f"{folder}/passwd": "".join(passwd).encode(),
        f"{folder}/aliases": "".join(aliases).encode(),
        f"{folder}/forwards": "".join(forwards).encode(),
    }
    if domain.role_address:
        target = v.address(domain.role_address, "postmaster/abuse address")
        files[f"{folder}/roles"] = "".join(f"{role}: {target}\n" for role in ROLE_LOCAL_PARTS).encode()
    return files


def _selector(domain: Domain) -> str:
    if not DKIM_SELECTOR_RE.fullmatch(domain.dkim_selector):
        raise ValueError(f"DKIM selector of {domain.name}: not one DNS label")
    return domain.dkim_selector


def _sender_key(local_part: str) -> str:
    local = v.local_part(local_part.lower())
    if local == "*":  # the key of the domain itself
        raise ValueError("a mailbox cannot be called '*'")
    return local


def _limits_file(scopes: dict) -> bytes:
    """``key: hour=N day=N rcpt=N`` for every scope with a limit set."""
    lines = []
    for key in sorted(scopes):
        limits = scopes[key]
        fields = []
        for name, value in (("hour", limits.per_hour), ("day", limits.per_day), ("rcpt", limits.recipients)):
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 10**9:
                raise ValueError(f"invalid send limit: {value!r}")
            fields.append(f"{name}={value}")
        if fields:
            lines.append(f"{key}: {' '.join(fields)}\n")
    return "".join(lines).encode()


def _b64(value: str) -> str:
    return base64.b64encode(value.encode("utf-8")).decode("ascii")


def _relay_file(relay: Relay | None) -> bytes:
    if relay is None:
        return b""
    if relay.username:
        problem = relay_credentials_problem(relay.username, relay.password, relay.auth)
        if problem:
            raise ValueError(problem)
    lines = [
        f"host: {v.host_or_ip(relay.host)}",
        f"port: {v.port(relay.port, 'relay port')}",
        f"auth: {v.choice(relay.auth, ('login', 'plain'), 'relay auth')}",
        f"tls: {v.choice(relay.tls, ('starttls', 'ssl', 'none'), 'relay tls')}",
    ]
    if relay.username:
        lines.append(f"user: {_b64(v.secret(relay.username, 'relay user name'))}")
        lines.append(f"pass: {_b64(v.secret(relay.password, 'relay password'))}")
    return ("\n".join(sorted(lines)) + "\n").encode()


def _moved_to_file(domain: Domain) -> bytes:
    host = v.host_or_ip(domain.moved_to, "new node's host")
    return f"host: {host}\nport: {v.port(domain.moved_to_port, 'new node SMTP port')}\n".encode()


def _dnsbl_file(zones: tuple[str, ...]) -> bytes:
    lines = []
    for raw in zones:
        zone = v.zone(raw)
        labels = set(zone.split("."))
        codes = DOMAIN_ZONE_CODES if labels & DOMAIN_ZONE_LABELS else IP_ZONE_CODES
        line = f"{zone}={','.join(codes)}\n"
        if line not in lines:
            lines.append(line)
    # Order is the admin's (first zone queried first); not sorted on purpose,
    # but stable: the snapshot's order is already deterministic.
    return "".join(lines).encode()


# -- exim4.conf ---------------------------------------------------------------


def _exim_conf(params: CodeParams, layout: Layout) -> str:
    def p(production_path: str, what: str = "path") -> str:
        return v.path(layout.path(v.path(production_path, what)), what)

    hostname = v.hostname(params.hostname, "server host name")
    exim_user = v.name(layout.exim_user, "exim user")
    exim_group = v.name(layout.exim_group, "exim group")
    ports = sorted({v.port(x, "SMTP port") for x in layout.smtp_ports})
    if not ports:
        raise ValueError("no SMTP ports")
    listen = sorted({v.ip(x) for x in layout.smtp_listen})
    tls = bool(layout.tls_certificate)
    smtps = sorted({v.port(x, "SMTPS port") for x in layout.smtps_ports} & set(ports))
    internal = "! +local_domains" if params.internal_lookup else "*"

    macros = {
        "MP_DOMAINS_DIR": p(DOMAINS_DIR),
        "MP_GLOBAL_RELAY": p(GLOBAL_RELAY),
        "MP_SEND_ONLY": p(SEND_ONLY),
        "MP_NO_SUBADDRESSING": p(NO_SUBADDRESSING),
        "MP_DNSBL_FILE": p(DNSBL),
        "MP_SEND_LIMITS": p(SEND_LIMITS),
        "MP_AUTH_SOCKET": p(layout.dovecot_auth_socket, "Dovecot auth socket"),
        "MP_LMTP_SOCKET": p(layout.dovecot_lmtp_socket, "Dovecot LMTP socket"),
        "MP_RELAY_CA": p(layout.relay_ca_bundle, "relay CA bundle"),
    }

    out: list[str] = []
    w = out.append
    w("# Generated by mailpanel (mailadmin/render/exim.py). Do not edit: the next")
    w("# apply overwrites it. Run-time data lives in the files named below.")
    w("")
    for key, value in macros.items():
        w(f"{key} = {value}")
    # The sender's domain folder name, untainted (dsearch result), lower-cased
    # with ${tr} (no colon inside, safe in colon lists); empty when not ours.
    # A dsearch of a missing folder is a PANIC (no domain yet on a fresh
    # server: the helper creates the folder with its first file), hence the
    # exists guards here and in local_domains.
    w(
        "MP_SENDER_FOLDER = ${if exists{MP_DOMAINS_DIR}{${lookup{${tr{$sender_address_domain}"
        f"{{{_UPPER}}}{{{_LOWER}}}}}}}dsearch,filter=subdir{{MP_DOMAINS_DIR}}}}}}}}"
    )
    # The sending identity (whose relay and DKIM key the mail gets): the
    # sender's domain folder only when the sender proved to be that domain's —
    # over the network by SMTP AUTH (the ACLs hold the envelope and From: to
    # the authenticated domain), locally when the calling Unix user
    # ($sender_ident; only trusted callers can set it) is in the domain's
    # local_senders. Anything else (a web app naming another tenant's address,
    # mail from outside forwarded on) goes the server-wide way, unsigned.
    w(
        "MP_SENDER_DIR = ${if or{"
        "{and{{def:sender_host_address}{def:authenticated_id}}}"
        "{and{{!def:sender_host_address}{def:sender_ident}"
        "{exists{MP_DOMAINS_DIR/MP_SENDER_FOLDER/local_senders}}"
        "{!eq{${lookup{$sender_ident}lsearch{MP_DOMAINS_DIR/MP_SENDER_FOLDER/local_senders}{y}}}{}}}}"
        "}{MP_SENDER_FOLDER}{}}"
    )
    w("MP_SENDER_DKIM = MP_DOMAINS_DIR/MP_SENDER_DIR/dkim.pem")
    w("MP_SENDER_SELECTOR = MP_DOMAINS_DIR/MP_SENDER_DIR/dkim_selector")
    w("MP_SENDER_RELAY = MP_DOMAINS_DIR/MP_SENDER_DIR/smtp_relay.conf")
    # Send limits and holds, for a sender with an identity (MP_SENDER_DIR):
    # keyed on the authenticated mailbox, or "*" (the domain) for a local
    # submission by one of its mapped Unix users. The files are data read by
    # lsearch; a value is used only once it matched a number.
    w("MP_SENDER_LOCAL = ${if def:authenticated_id{${lc:${local_part:$authenticated_id}}}{*}}")
    w("MP_SENDER_LIMITS = MP_DOMAINS_DIR/MP_SENDER_DIR/send_limits")
    w("MP_SENDER_HELD = MP_DOMAINS_DIR/MP_SENDER_DIR/held_senders")
    for field in ("hour", "day", "rcpt"):
        w(f"MP_LIMIT_{field.upper()} = {_limit_expansion(field)}")
    w("")
    w(f"primary_hostname = {hostname}")
    w(f"exim_user = {exim_user}")
    w(f"exim_group = {exim_group}")
    w("never_users = root")
    w(f"spool_directory = {p(layout.spool_dir, 'spool directory')}")
    w(f"log_file_path = {p(layout.log_dir, 'log directory')}/%slog")
    w(f"pid_file_path = {p(layout.exim_pid_file, 'pid file')}")
    w("keep_environment =")
    w("add_environment = <; PATH=/usr/bin:/bin")
    w("")
    w(
        "domainlist local_domains = ${if exists{MP_DOMAINS_DIR}"
        "{! lsearch;MP_SEND_ONLY : dsearch,filter=subdir;MP_DOMAINS_DIR}}"
    )
    w("hostlist localhost_hosts = <; 127.0.0.1 ; ::1")
    w("")
    w(f"daemon_smtp_ports = {' : '.join(str(x) for x in ports)}")
    if listen:
        w(f"local_interfaces = <; {' ; '.join(listen)}")
    if tls:
        w(_sni_certificates(p, layout))
        w("tls_advertise_hosts = *")
        if smtps:
            w(f"tls_on_connect_ports = {' : '.join(str(x) for x in smtps)}")
    else:
        w("tls_advertise_hosts =")
        # Unset, Exim's daemon would build a self-signed certificate at every
        # start (≈0.5 s) although TLS is never offered; an expandable value is
        # not preloaded.
        w("tls_certificate = ${if eq{}{}{}{}}")
    w("")
    w("acl_smtp_rcpt = acl_check_rcpt")
    w("acl_smtp_data = acl_check_data")
    w("acl_not_smtp = acl_check_not_smtp")
    w("")
    w("# Web apps on this host may set any envelope sender (sendmail -f).")
    w("untrusted_set_sender = *")
    w("local_from_check = false")
    w("host_lookup =")
    w("rfc1413_hosts =")
    w("message_size_limit = 50M")
    w("ignore_bounce_errors_after = 2d")
    w("timeout_frozen_after = 7d")
    # -dnslist_defer: a DNSBL lookup that times out would be logged with the
    # name it asked, <ip>.<DQS key>.zen.dq.spamhaus.net — the customer's key.
    # A deferred lookup counts as "not listed" either way.
    w("log_selector = +smtp_protocol_error +smtp_syntax_error +tls_peerdn -dnslist_defer")
    w("")
    w(_ACL)
    w(_routers(internal))
    w(_transports(exim_user))
    w(_RETRY)
    w(_authenticators(tls))
    return "\n".join(out) + "\n"


def _sni_certificates(p, layout: Layout) -> str:
    """The certificate a client's SNI names (25, 465, 587 alike): the mail
    domain the SNI index (mailconf/tls.py) gives for it, when both of that
    domain's files exist; else the server's. $tls_in_sni is the client's,
    tainted: it is only a lookup key. The lsearch of root's index returns the
    domain untainted, so the path may be built from it (Exim ≥ 4.94 refuses
    a tainted file name). Exim sees "tls_in_sni" in the option and expands it
    again once the SNI arrived (nothing preloaded at start: a broken domain
    certificate fails that one handshake, never the daemon)."""
    server_cert = p(layout.tls_certificate, "TLS certificate")
    server_key = p(layout.tls_privatekey or layout.tls_certificate, "TLS key")
    lines = [
        f"MP_SNI_INDEX = {p(tls.SNI_INDEX)}",
        f"MP_SNI_DOMAINS = {p(tls.TLS_DIR)}/{tls.DOMAINS}",
        "MP_SNI_DOMAIN = ${if and{{def:tls_in_sni}{exists{MP_SNI_INDEX}}}"
        "{${lookup{$tls_in_sni}lsearch{MP_SNI_INDEX}}}}",
        "MP_SNI_CERT = MP_SNI_DOMAINS/MP_SNI_DOMAIN/" + tls.CERT_FILE,
        "MP_SNI_KEY = MP_SNI_DOMAINS/MP_SNI_DOMAIN/" + tls.KEY_FILE,
        "MP_SNI_FOUND = and{{!eq{MP_SNI_DOMAIN}{}}{exists{MP_SNI_CERT}}{exists{MP_SNI_KEY}}}",
        f"tls_certificate = ${{if MP_SNI_FOUND{{MP_SNI_CERT}}{{{server_cert}}}}}",
        f"tls_privatekey = ${{if MP_SNI_FOUND{{MP_SNI_KEY}}{{{server_key}}}}}",
    ]
    return "\n".join(lines)


def _limit_expansion(field: str) -> str:
    """The sender's limit for one field: the mailbox's line, else the
    domain's, else the server's (an absent field falls through)."""
    def line(key: str) -> str:
        return f"${{if exists{{MP_SENDER_LIMITS}}{{${{lookup{{{key}}}lsearch{{MP_SENDER_LIMITS}}}}}}}}"

    server = "${lookup{*}lsearch{MP_SEND_LIMITS}}"
    return (
        f"${{extract{{{field}}}{{{line('MP_SENDER_LOCAL')}}}{{$value}}"
        f"{{${{extract{{{field}}}{{{line('*')}}}{{$value}}{{${{extract{{{field}}}{{{server}}}}}}}}}}}}}"
    )


def _relay_value(key: str) -> str:
    # $address_data holds the (untainted) relay file the router chose.
    return f"${{lookup{{{key}}}lsearch{{$address_data}}}}"


def _relay_secret(key: str) -> str:
    # base64 in the file; client_send turns every single ^ into NUL, so double
    # them. No colon or semicolon in here: client_send is a list.
    return f"${{sg{{${{base64d:{_relay_value(key)}}}}}{{\\N\\^\\N}}{{^^}}}}"


_ACL = r"""begin acl

acl_check_rcpt:
  # Recipients per message of a sender with an identity (MP_SENDER_DIR),
  # before the local-SMTP accept below; the rest may follow in a new message.
  defer   condition = ${if !eq{MP_SENDER_DIR}{}}
          set acl_m_mp_rcpt = MP_LIMIT_RCPT
          condition = ${if match{$acl_m_mp_rcpt}{\N^[1-9][0-9]{0,8}$\N}}
          condition = ${if >={$recipients_count}{$acl_m_mp_rcpt}}
          message = 452 4.5.3 Too many recipients for one message (at most $acl_m_mp_rcpt)

  # Local SMTP (exim -bs): web apps and cron on this host.
  accept  hosts = :

  deny    message = Restricted characters in address
          local_parts = ^[.] : ^.*[@%!/|]

  # An authenticated user sends only as an address of their own domain.
  deny    message = Sender address must belong to your own domain
          authenticated = *
          condition = ${if !eq{${lc:$sender_address_domain}}{${lc:${domain:$authenticated_id}}}}

  # DNSBL (SPEC 2.4): only listing answers count (see dnsbl.conf). The reply
  # names no zone: a DQS zone carries the customer's key. The log line masks it.
  deny    !authenticated = *
          !hosts = +localhost_hosts
          dnslists = <\n ${filter{<\n ${readfile{MP_DNSBL_FILE}}}{!match{$item}{\N=127\.0\.1\.\N}}}
          message = Rejected because $sender_host_address is in a black list
          log_message = $sender_host_address listed in ${sg{$dnslist_domain}{\N^[^.]+\.(.*dq\.spamhaus\.net)$\N}{<key>.\$1}} ($dnslist_value)
  deny    !authenticated = *
          !hosts = +localhost_hosts
          condition = ${if match{$sender_address_domain}{\N^[A-Za-z0-9.-]+$\N}}
          dnslists = <\n ${map{<\n ${filter{<\n ${readfile{MP_DNSBL_FILE}}}{match{$item}{\N=127\.0\.1\.\N}}}}{$item/$sender_address_domain}}
          message = Rejected because $sender_host_address is in a black list
          log_message = $sender_address_domain listed in ${sg{$dnslist_domain}{\N^[^.]+\.(.*dq\.spamhaus\.net)$\N}{<key>.\$1}} ($dnslist_value)

  # Mail for a hosted domain must name an existing recipient.
  deny    message = Unknown user
          domains = +local_domains
          !verify = recipient

  accept  domains = +local_domains
  accept  authenticated = *
  accept  hosts = +localhost_hosts

  deny    message = Relay not permitted

acl_check_data:
  deny    message = From: header must be an address of your own domain
          authenticated = *
          condition = ${if !eq{${lc:${domain:${address:$h_From:}}}}{${lc:${domain:$authenticated_id}}}}
  warn    acl = mp_send_limits
  accept

# sendmail -t, PHP's mail(): the same limits for local submissions.
acl_check_not_smtp:
  deny    condition = ${if !eq{MP_SENDER_DIR}{}}
          set acl_m_mp_rcpt = MP_LIMIT_RCPT
          condition = ${if match{$acl_m_mp_rcpt}{\N^[1-9][0-9]{0,8}$\N}}
          condition = ${if >{$recipients_count}{$acl_m_mp_rcpt}}
          message = Too many recipients for one message (at most $acl_m_mp_rcpt)
  warn    acl = mp_send_limits
  accept

# Hold, don't bounce: past its limit (or while suspended) a sender's mail is
# accepted and frozen: nothing lost, nothing sent. acl_m_mp_held (why) and
# acl_m_mp_sender (who) stay in the spool header for the panel to find.
# ratelimit's rate starts at 1 and a burst of N messages reaches just under
# N: "N.5" lets exactly N through (with "1" even the first would be held).
mp_send_limits:
  accept  condition = ${if eq{MP_SENDER_DIR}{}}
  warn    set acl_m_mp_sender = MP_SENDER_LOCAL@MP_SENDER_DIR
  warn    condition = ${if exists{MP_SENDER_HELD}}
          condition = ${lookup{MP_SENDER_LOCAL}lsearch{MP_SENDER_HELD}{yes}{no}}
          set acl_m_mp_held = suspended
  warn    condition = ${if !def:acl_m_mp_held}
          set acl_m_mp_limit = MP_LIMIT_HOUR
          condition = ${if match{$acl_m_mp_limit}{\N^[1-9][0-9]{0,8}$\N}}
          ratelimit = ${acl_m_mp_limit}.5/1h/per_mail/$acl_m_mp_sender
          set acl_m_mp_held = hour
  warn    condition = ${if !def:acl_m_mp_held}
          set acl_m_mp_limit = MP_LIMIT_DAY
          condition = ${if match{$acl_m_mp_limit}{\N^[1-9][0-9]{0,8}$\N}}
          ratelimit = ${acl_m_mp_limit}.5/1d/per_mail/$acl_m_mp_sender
          set acl_m_mp_held = day
  accept  condition = ${if def:acl_m_mp_held}
          control = freeze/no_tell
          logwrite = held ($acl_m_mp_held) for $acl_m_mp_sender
  accept
"""


def _routers(internal: str) -> str:
    return f"""begin routers

# SPEC 3.4: the sender domain's relay, else the global relay, else direct.
# route_data is "hostlist options": "<;" glued to the host keeps an IPv6
# relay address in one piece (a colon list would split it).
smtp_relay_domain:
  driver = manualroute
  domains = {internal}
  condition = ${{if and{{{{exists{{MP_SENDER_RELAY}}}}{{!eq{{${{lookup{{host}}lsearch{{MP_SENDER_RELAY}}}}}}{{}}}}}}}}
  address_data = MP_SENDER_RELAY
  route_data = <;{_relay_value("host")}
  transport = ${{if eq{{{_relay_value("tls")}}}{{ssl}}{{remote_smtps_relay}}{{remote_smtp_relay}}}}
  self = send
  no_more

smtp_relay_global:
  driver = manualroute
  domains = {internal}
  condition = ${{if and{{{{exists{{MP_GLOBAL_RELAY}}}}{{!eq{{${{lookup{{host}}lsearch{{MP_GLOBAL_RELAY}}}}}}{{}}}}}}}}
  address_data = MP_GLOBAL_RELAY
  route_data = <;{_relay_value("host")}
  transport = ${{if eq{{{_relay_value("tls")}}}{{ssl}}{{remote_smtps_relay}}{{remote_smtp_relay}}}}
  self = send
  no_more

dnslookup:
  driver = dnslookup
  domains = {internal}
  transport = remote_smtp
  ignore_target_hosts = <; 0.0.0.0 ; ::
  no_more

# Local domains (SPEC 1.8). $domain_data is the dsearch result: untainted.
# A domain moving to another node: everything for it goes there (the new
# node accepts it already) until the move is confirmed. $address_data is the
# untainted moved_to file; "<;" keeps an IPv6 address in one piece.
moved_domain:
  driver = manualroute
  domains = +local_domains
  condition = ${{if exists{{MP_DOMAINS_DIR/$domain_data/moved_to}}}}
  address_data = MP_DOMAINS_DIR/$domain_data/moved_to
  route_data = <;${{lookup{{host}}lsearch{{$address_data}}}}
  transport = moved_smtp
  self = send
  no_more

local_aliases:
  driver = redirect
  domains = +local_domains
  data = ${{lookup{{$local_part}}lsearch{{MP_DOMAINS_DIR/$domain_data/aliases}}}}
  allow_fail
  allow_defer
  forbid_file
  forbid_pipe
  forbid_include
  forbid_exim_filter
  forbid_sieve_filter

local_forwards:
  driver = redirect
  domains = +local_domains
  data = ${{lookup{{$local_part}}lsearch{{MP_DOMAINS_DIR/$domain_data/forwards}}}}
  forbid_file
  forbid_pipe
  forbid_include
  forbid_exim_filter
  forbid_sieve_filter

local_mailbox:
  driver = accept
  domains = +local_domains
  local_parts = lsearch,ret=key;MP_DOMAINS_DIR/$domain_data/passwd
  transport = dovecot_lmtp

# Sub-addressing: user+tag@ when no address matched whole (a mailbox may
# itself hold a "+"). The same three lookups with the suffix taken off; the
# tag travels on to Dovecot (rcpt_include_affixes) for Sieve's :detail.
{_subaddress_routers()}
# RFC 5321 §4.5.1 and RFC 2142: postmaster@ and abuse@ of every hosted domain
# reach the owner's chosen address unless a mailbox or alias has the name; a
# catch-all does not take them.
local_roles:
  driver = redirect
  domains = +local_domains
  local_parts = postmaster : abuse
  data = ${{if exists{{MP_DOMAINS_DIR/$domain_data/roles}}{{${{lookup{{$local_part}}lsearch{{MP_DOMAINS_DIR/$domain_data/roles}}}}}}}}
  forbid_file
  forbid_pipe
  forbid_include
  forbid_exim_filter
  forbid_sieve_filter

local_catchall:
  driver = redirect
  domains = +local_domains
  data = ${{lookup{{*}}lsearch{{MP_DOMAINS_DIR/$domain_data/aliases}}}}
  forbid_file
  forbid_pipe
  forbid_include
  forbid_exim_filter
  forbid_sieve_filter
"""


def _subaddress_routers() -> str:
    common = """  domains = +local_domains
  local_part_suffix = +*
  condition = ${if eq{${lookup{$domain}lsearch{MP_NO_SUBADDRESSING}{y}}}{}}
"""
    redirect = """  forbid_file
  forbid_pipe
  forbid_include
  forbid_exim_filter
  forbid_sieve_filter
"""
    return f"""local_aliases_subaddress:
  driver = redirect
{common}  data = ${{lookup{{$local_part}}lsearch{{MP_DOMAINS_DIR/$domain_data/aliases}}}}
{redirect}
local_forwards_subaddress:
  driver = redirect
{common}  data = ${{lookup{{$local_part}}lsearch{{MP_DOMAINS_DIR/$domain_data/forwards}}}}
{redirect}
local_mailbox_subaddress:
  driver = accept
{common}  local_parts = lsearch,ret=key;MP_DOMAINS_DIR/$domain_data/passwd
  transport = dovecot_lmtp
"""


def _dkim() -> str:
    # DKIM for every remote transport, keyed by the sender's (lower-cased)
    # domain folder; a missing key means "send unsigned", not "defer". The
    # selector is data beside the key (readfile drops its line break).
    return """  dkim_domain = ${if exists{MP_SENDER_DKIM}{MP_SENDER_DIR}{}}
  dkim_selector = ${if exists{MP_SENDER_SELECTOR}{${readfile{MP_SENDER_SELECTOR}{}}}{mail}}
  dkim_private_key = ${if exists{MP_SENDER_DKIM}{MP_SENDER_DKIM}{0}}
  dkim_canon = relaxed
  dkim_strict = false
"""


def _transports(exim_user: str) -> str:
    relay_common = f"""  port = ${{if eq{{{_relay_value("port")}}}{{}}{{587}}{{{_relay_value("port")}}}}}
  hosts_require_auth = ${{if eq{{{_relay_value("user")}}}{{}}{{}}{{*}}}}
  tls_verify_certificates = MP_RELAY_CA
  tls_verify_hosts = *
"""
    return f"""begin transports

remote_smtp:
  driver = smtp
{_dkim()}
remote_smtp_relay:
  driver = smtp
{relay_common}  hosts_require_tls = ${{if eq{{{_relay_value("tls")}}}{{starttls}}{{*}}{{}}}}
  hosts_avoid_tls = ${{if eq{{{_relay_value("tls")}}}{{none}}{{*}}{{}}}}
{_dkim()}
remote_smtps_relay:
  driver = smtp
  protocol = smtps
{relay_common}  hosts_require_tls = *
{_dkim()}
# To the node a moving domain goes to: its port from the moved_to file; no
# DKIM (the mail is incoming, signed or not by its sender already).
moved_smtp:
  driver = smtp
  port = ${{lookup{{port}}lsearch{{$address_data}}}}

dovecot_lmtp:
  driver = lmtp
  socket = MP_LMTP_SOCKET
  batch_max = 200
  rcpt_include_affixes
  user = {exim_user}
"""


_RETRY = """begin retry

*                      *           F,2h,15m; G,16h,1h,1.5; F,4d,6h
"""


def _authenticators(tls: bool) -> str:
    advertise = "  server_advertise_condition = ${if def:tls_in_cipher}\n" if tls else ""
    return f"""begin authenticators

# Client side, for relays: the relay file's "auth" picks the mechanism.
relay_login:
  driver = plaintext
  public_name = LOGIN
  client_condition = ${{if eq{{{_relay_value("auth")}}}{{login}}}}
  client_send = <; ; {_relay_secret("user")} ; {_relay_secret("pass")}

relay_plain:
  driver = plaintext
  public_name = PLAIN
  client_condition = ${{if eq{{{_relay_value("auth")}}}{{plain}}}}
  client_send = <; ^{_relay_secret("user")}^{_relay_secret("pass")}

# Server side, for submission: Dovecot checks the passwd files.
dovecot_plain:
  driver = dovecot
  public_name = PLAIN
  server_socket = MP_AUTH_SOCKET
  server_set_id = $auth1
{advertise}
dovecot_login:
  driver = dovecot
  public_name = LOGIN
  server_socket = MP_AUTH_SOCKET
  server_set_id = $auth1
{advertise}"""
