"""CLI nouns. Each module has register(subparsers) and sets handler=func on its
verb parsers; a handler gets (command, options) and returns data for --json or None."""

from . import config, domain, server, user
from . import account
from . import relay

NOUN_MODULES = [user, server, domain, config]
NOUN_MODULES.append(account)
NOUN_MODULES.append(relay)
from . import dnsbl, dqs, internal_lookup, panel_smtp  # noqa: E402

NOUN_MODULES += [panel_smtp, dqs, dnsbl, internal_lookup]
from . import sieve, snappymail  # noqa: E402

NOUN_MODULES += [snappymail, sieve]
from . import diagnose, dns  # noqa: E402

NOUN_MODULES += [dns, diagnose]
