"""Server-wide mail settings that change Exim's configuration: the Spamhaus DQS
key, the DNSBL zone list and the internal lookup switch.

Each change is one audit entry (field names only) and one apply request. The DQS
key is a secret: it is stored encrypted, validated without echoing it, and only
ever described as "set" (see dqs_status) — it reaches Exim's dnsbl.conf and
nothing else.
"""

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.translation import gettext as _

from ..dnsbl import configured_zones, normalize_dqs_key, normalize_zone
from ..models import ServerSettings
from . import audit, jobs
from .outcome import Change


def dqs_status(server: ServerSettings) -> str:
    """What a page or the CLI may say about the key: nothing that helps guess it."""
    if server.dqs_key:
        return _("A DQS key is set: Spamhaus zones are queried through DQS.")
    return _("No DQS key: the public Spamhaus zones are used.")


def _save(actor, server: ServerSettings, action: str, fields: list[str]) -> Change[ServerSettings]:
    with transaction.atomic():
        server.save(update_fields=[*fields, "updated_at"])
        audit.record(actor, action, "server", fields)
        job = jobs.request_apply(actor)
    return Change(server, job, tuple(fields))


def set_dqs_key(actor, key: str) -> Change[ServerSettings]:
    clean = normalize_dqs_key(key)
    server = ServerSettings.load()
    server.dqs_key = clean
    return _save(actor, server, "server.dqs.set", ["dqs_key"])


def clear_dqs_key(actor) -> Change[ServerSettings]:
    server = ServerSettings.load()
    server.dqs_key = ""
    return _save(actor, server, "server.dqs.clear", ["dqs_key"])


def zone_list(server: ServerSettings) -> list[str]:
    """The zones as the admin configured them (the DQS key is applied only
    for the queries: mailadmin.dnsbl.queried_zones)."""
    return configured_zones(server.dnsbl_zones)


def add_zone(actor, value: str) -> Change[ServerSettings]:
    zone = normalize_zone(value)
    server = ServerSettings.load()
    zones = zone_list(server)
    if zone in zones:
        raise ValidationError(_("%(zone)s is already in the list.") % {"zone": zone})
    server.dnsbl_zones = "\n".join([*zones, zone])
    return _save(actor, server, "server.dnsbl.add", ["dnsbl_zones"])


def remove_zone(actor, value: str) -> Change[ServerSettings]:
    zone = (value or "").strip().lower().rstrip(".")
    server = ServerSettings.load()
    zones = zone_list(server)
    if zone not in zones:
        raise ValidationError(_("%(zone)s is not in the list.") % {"zone": zone or "—"})
    zones.remove(zone)
    server.dnsbl_zones = "\n".join(zones)
    return _save(actor, server, "server.dnsbl.remove", ["dnsbl_zones"])


def set_internal_lookup(actor, enabled: bool) -> Change[ServerSettings]:
    server = ServerSettings.load()
    if server.internal_lookup == enabled:
        return Change(server)
    server.internal_lookup = enabled
    return _save(actor, server, "server.internal_lookup", ["internal_lookup"])
