"""CLI nouns. Each module has register(subparsers) and sets handler=func on its
verb parsers; a handler gets (command, options) and returns data for --json or None."""

from . import config, domain, server, user

NOUN_MODULES = [user, server, domain, config]
