"""The one table of files the panel manages, read by the helper and the tests.

Two kinds, because root must never write a program it did not write itself:

- CODE: a file a daemon runs as configuration that can execute things or read
  any file (Exim: ${run}, perl_startup, .include; Dovecot: service executables,
  !include; nft: include; PHP ini: ${VAR}). The helper renders it itself from
  CodeParams (mailconf.params) with mailconf.render, then validates it with the
  named program, unprivileged and without network. A request that carries such
  a file's content is refused.
- DATA: a file read at run time through a lookup that never expands its values
  (Exim lsearch/dsearch/readfile results, Dovecot passwd-file, PEM, JSON). The
  helper accepts its content only when every line parses under the named
  grammar (mailconf.grammar).

| file                                   | kind | check                  | reload   |
|----------------------------------------|------|------------------------|----------|
| /etc/exim4/exim4.conf                  | code | exim -bV               | exim4    |
| /etc/dovecot/dovecot.conf              | code | doveconf -n            | dovecot  |
| /etc/nftables.d/mailpanel.nft          | code | nft -c                 | firewall |
| SnappyMail configs/application.ini     | code | PHP parse_ini_file     |          |
| /etc/mailpanel/webmail-php-fpm.conf    | code | php-fpm -t             | webmail-php |
| /etc/mailpanel/roundcube/config.inc.php | code | php -l                | (read per request) |
| /etc/nginx/snippets/mailpanel-webmail.conf | code | nginx -t (in a server) | nginx |
| /etc/nginx/conf.d/mailpanel-webmail.conf | code | nginx -t             | nginx    |
| /etc/nginx/conf.d/mailpanel-tls-sites.conf | code | nginx -t (keys: see helper) | nginx |
| /etc/exim4/smtp_relay.conf             | data | relay                  |          |
| /etc/exim4/dnsbl.conf                  | data | dnsbl                  |          |
| /etc/exim4/send_only_domains           | data | domain_list            |          |
| /etc/exim4/no_subaddressing            | data | domain_list            |          |
| /etc/exim4/send_limits                 | data | send_limits            |          |
| /etc/exim4/domains/<d>/dkim.pem        | data | dkim_key               |          |
| /etc/exim4/domains/<d>/dkim_selector   | data | dkim_selector          |          |
| /etc/exim4/domains/<d>/smtp_relay.conf | data | relay                  |          |
| /etc/exim4/domains/<d>/passwd          | data | passwd                 |          |
| /etc/exim4/domains/<d>/aliases         | data | aliases                |          |
| /etc/exim4/domains/<d>/forwards        | data | forwards               |          |
| /etc/exim4/domains/<d>/send_limits     | data | send_limits            |          |
| /etc/exim4/domains/<d>/held_senders    | data | held_senders           |          |
| /etc/exim4/domains/<d>/moved_to        | data | moved_to               |          |
| SnappyMail domains/default.json        | data | snappymail_domain      |          |
| SnappyMail domains/<d>.json            | data | snappymail_domain      |          |
| /root/.snappymail                      | data | snappymail_credentials |          |

Owner, group and mode come from this table, never from a request.
"""

CODE, DATA = "code", "data"

SNAPPYMAIL_DIR = "/var/lib/snappymail"
SNAPPYMAIL_DATA = SNAPPYMAIL_DIR + "/data/_data_/_default_"
DOMAINS_DIR = "/etc/exim4/domains"
# The webmail's PHP-FPM user (mailconf.snapshot.Layout.webmail_php_user;
# deploy/install.sh creates it): SnappyMail's data/ and Roundcube's state are
# its own, nothing else on the host is.
WEBMAIL_USER = "mailpanel-webmail"
ROUNDCUBE_CONFIG = "/etc/mailpanel/roundcube/config.inc.php"
# Roundcube's des_key (session and password encryption): made by the helper on
# this host the first time Roundcube's config is written, read by the config
# (root:WEBMAIL_USER 0640), never sent by the panel nor read back.
ROUNDCUBE_DES_KEY = "/etc/mailpanel/roundcube/des_key"

# production path pattern, owner, group, mode, kind, check, service to reload.
# "{domain}" stands for one path component holding a mail domain.
# fmt: off
MANAGED_FILES = (
    ("/etc/exim4/exim4.conf", "root", "Debian-exim", 0o640, CODE, "exim", "exim4"),
    ("/etc/dovecot/dovecot.conf", "root", "root", 0o644, CODE, "doveconf", "dovecot"),
    ("/etc/nftables.d/mailpanel.nft", "root", "root", 0o644, CODE, "nft", "firewall"),
    (SNAPPYMAIL_DATA + "/configs/application.ini", WEBMAIL_USER, WEBMAIL_USER, 0o640, CODE, "php-ini", None),
    (ROUNDCUBE_CONFIG, "root", WEBMAIL_USER, 0o640, CODE, "php-lint", None),
    ("/etc/mailpanel/webmail-php-fpm.conf", "root", "root", 0o644, CODE, "php-fpm", "webmail-php"),
    ("/etc/nginx/snippets/mailpanel-webmail.conf", "root", "root", 0o644, CODE, "nginx-locations", "nginx"),
    ("/etc/nginx/conf.d/mailpanel-webmail.conf", "root", "root", 0o644, CODE, "nginx", "nginx"),
    ("/etc/nginx/conf.d/mailpanel-tls-sites.conf", "root", "root", 0o644, CODE, "nginx-tls", "nginx"),
    ("/etc/exim4/smtp_relay.conf", "root", "Debian-exim", 0o640, DATA, "relay", None),
    ("/etc/exim4/dnsbl.conf", "root", "Debian-exim", 0o640, DATA, "dnsbl", None),
    ("/etc/exim4/send_only_domains", "root", "Debian-exim", 0o640, DATA, "domain_list", None),
    ("/etc/exim4/no_subaddressing", "root", "Debian-exim", 0o640, DATA, "domain_list", None),
    ("/etc/exim4/send_limits", "root", "Debian-exim", 0o640, DATA, "send_limits", None),
    (DOMAINS_DIR + "/{domain}/dkim.pem", "root", "Debian-exim", 0o640, DATA, "dkim_key", None),
    (DOMAINS_DIR + "/{domain}/dkim_selector", "root", "Debian-exim", 0o640, DATA, "dkim_selector", None),
    (DOMAINS_DIR + "/{domain}/smtp_relay.conf", "root", "Debian-exim", 0o640, DATA, "relay", None),
    (DOMAINS_DIR + "/{domain}/passwd", "root", "Debian-exim", 0o640, DATA, "passwd", None),
    (DOMAINS_DIR + "/{domain}/aliases", "root", "Debian-exim", 0o640, DATA, "aliases", None),
    (DOMAINS_DIR + "/{domain}/forwards", "root", "Debian-exim", 0o640, DATA, "forwards", None),
    (DOMAINS_DIR + "/{domain}/roles", "root", "Debian-exim", 0o640, DATA, "aliases", None),
    (DOMAINS_DIR + "/{domain}/local_senders", "root", "Debian-exim", 0o640, DATA, "local_senders", None),
    (DOMAINS_DIR + "/{domain}/send_limits", "root", "Debian-exim", 0o640, DATA, "send_limits", None),
    (DOMAINS_DIR + "/{domain}/held_senders", "root", "Debian-exim", 0o640, DATA, "held_senders", None),
    (DOMAINS_DIR + "/{domain}/moved_to", "root", "Debian-exim", 0o640, DATA, "moved_to", None),
    (SNAPPYMAIL_DATA + "/domains/default.json", WEBMAIL_USER, WEBMAIL_USER, 0o640, DATA, "snappymail_domain", None),
    (SNAPPYMAIL_DATA + "/domains/{domain}.json", WEBMAIL_USER, WEBMAIL_USER, 0o640, DATA, "snappymail_domain", None),
    ("/root/.snappymail", "root", "root", 0o600, DATA, "snappymail_credentials", None),
)
# fmt: on

CODE_FILES = tuple(row[0] for row in MANAGED_FILES if row[4] == CODE)

# What a one-domain apply (the helper's "sync_domains") owns of a domain: its
# folder of Exim/Dovecot files and its SnappyMail domain config.
SNAPPYMAIL_DOMAINS = SNAPPYMAIL_DATA + "/domains/"


def synced_domain(path: str) -> str | None:
    """The domain whose one-domain apply owns this production path, or None
    for a server-wide file. The name is not validated here (the helper's
    check_path does)."""
    if path.startswith(DOMAINS_DIR + "/"):
        name = path[len(DOMAINS_DIR) + 1:].partition("/")[0]
        return name or None
    if path.startswith(SNAPPYMAIL_DOMAINS) and path.endswith(".json"):
        name = path[len(SNAPPYMAIL_DOMAINS):-len(".json")]
        return name if name and "/" not in name and name != "default" else None
    return None
