"""ManageSieve: switch Dovecot's sieve plugin + managesieve service on or off,
and whether external mail clients may reach port 4190 (the firewall file).

Saving changes the database only; the apply job renders Dovecot's config (sieve
plugin, managesieve listener, the sieve plugin in LMTP: Exim delivers over
Dovecot's LMTP socket, so each account's active script runs), the nftables file
and SnappyMail's default domain.
"""

from ..models import Job, ServerSettings
from . import audit, jobs


def set_sieve(actor, enabled: bool, external: bool = False) -> Job:
    """External access needs ManageSieve itself: off switches both off."""
    external = bool(external and enabled)
    server = ServerSettings.load()
    changed = [
        name
        for name, value in (("sieve_enabled", bool(enabled)), ("sieve_external", external))
        if getattr(server, name) != value
    ]
    server.sieve_enabled = bool(enabled)
    server.sieve_external = external
    server.save(update_fields=["sieve_enabled", "sieve_external", "updated_at"])
    audit.record(actor, "sieve.set", "server", changed)
    return jobs.request_apply(actor)
