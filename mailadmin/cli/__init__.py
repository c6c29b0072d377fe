"""CLI nouns. Each module has register(subparsers) and sets handler=func on its
verb parsers; a handler gets (command, options) and returns data for --json or None."""

from . import (
    account,
    cert,
    config,
    diagnose,
    dkim,
    dmarc,
    dns,
    dnsbl,
    domain,
    dqs,
    held,
    internal_lookup,
    limit,
    log,
    node,
    panel_smtp,
    queue,
    relay,
    server,
    sieve,
    snappymail,
    user,
    webmail,
)

# In the order `mail --help` lists them.
NOUN_MODULES = [
    user, server, node, domain, dkim, dmarc, config, account, relay, panel_smtp, dqs, dnsbl,
    internal_lookup, snappymail, webmail, sieve, dns, diagnose, limit, queue, held, log, cert,
]
