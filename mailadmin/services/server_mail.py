"""Server-wide mail settings that change Exim's configuration: the Spamhaus DQS
key, the DNSBL zone list and the internal lookup switch.

Each change is one audit entry (field names only) and one apply request. The DQS
key is a secret: it is stored encrypted, validated without echoing it, and only
ever described as "set" (see dqs_status) — it reaches Exim's dnsbl.conf and
nothing else.
"""

import re

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.translation import gettext as _

from ..models import ServerSettings
from ..validation import normalize_domain
from . import audit, jobs

# A Spamhaus DQS key: 26 letters and digits, one per customer account.
_DQS_KEY = re.compile(r"^[A-Za-z0-9]{26}$")
DQS_KEY_LENGTH = 26


def normalize_dqs_key(value: str) -> str:
    """The key as pasted → lower case. The error never repeats what was typed
    (it may be a real key with one character missing)."""
    key = (value or "").strip()
    if not key:
        raise ValidationError(_("Paste the DQS key from your Spamhaus account."))
    if not _DQS_KEY.match(key):
        if len(key) != DQS_KEY_LENGTH:
            raise ValidationError(
                _(
                    "A Spamhaus DQS key is 26 letters and digits; what you entered has "
                    "%(count)s characters."
                )
                % {"count": len(key)}
            )
        raise ValidationError(
            _("A Spamhaus DQS key has only letters and digits (no spaces, dots or dashes).")
        )
    return key.lower()


def dqs_status(server: ServerSettings) -> str:
    """What a page or the CLI may say about the key: nothing that helps guess it."""
    if server.dqs_key:
        return _("A DQS key is set: Spamhaus zones are queried through DQS.")
    return _("No DQS key: the public Spamhaus zones are used.")


def _save(actor, server: ServerSettings, action: str, fields: list[str]) -> ServerSettings:
    with transaction.atomic():
        server.save(update_fields=[*fields, "updated_at"])
        audit.record(actor, action, "server", fields)
        jobs.request_apply(actor)
    return server


def set_dqs_key(actor, key: str) -> ServerSettings:
    clean = normalize_dqs_key(key)
    server = ServerSettings.load()
    server.dqs_key = clean
    return _save(actor, server, "server.dqs.set", ["dqs_key"])


def clear_dqs_key(actor) -> ServerSettings:
    server = ServerSettings.load()
    server.dqs_key = ""
    return _save(actor, server, "server.dqs.clear", ["dqs_key"])


def zone_list(server: ServerSettings) -> list[str]:
    """The zones as the admin configured them (the public names; the DQS key is
    applied only when rendering, in services.apply.dnsbl_zones)."""
    zones = []
    for line in server.dnsbl_zones.splitlines():
        zone = line.strip().lower().rstrip(".")
        if zone and zone not in zones:
            zones.append(zone)
    return zones


def normalize_zone(value: str) -> str:
    zone = normalize_domain(value)
    if zone.endswith(".dq.spamhaus.net") or zone == "dq.spamhaus.net":
        # A DQS zone name carries the key: it would be shown in this list.
        raise ValidationError(
            _(
                "Add the public Spamhaus zone (zen.spamhaus.org) and paste the DQS key "
                "in its own field: a DQS zone name contains the key."
            )
        )
    return zone


def add_zone(actor, value: str) -> ServerSettings:
    zone = normalize_zone(value)
    server = ServerSettings.load()
    zones = zone_list(server)
    if zone in zones:
        raise ValidationError(_("%(zone)s is already in the list.") % {"zone": zone})
    server.dnsbl_zones = "\n".join([*zones, zone])
    return _save(actor, server, "server.dnsbl.add", ["dnsbl_zones"])


def remove_zone(actor, value: str) -> ServerSettings:
    zone = (value or "").strip().lower().rstrip(".")
    server = ServerSettings.load()
    zones = zone_list(server)
    if zone not in zones:
        raise ValidationError(_("%(zone)s is not in the list.") % {"zone": zone or "—"})
    zones.remove(zone)
    server.dnsbl_zones = "\n".join(zones)
    return _save(actor, server, "server.dnsbl.remove", ["dnsbl_zones"])


def set_internal_lookup(actor, enabled: bool) -> ServerSettings:
    server = ServerSettings.load()
    if server.internal_lookup == enabled:
        return server
    server.internal_lookup = enabled
    return _save(actor, server, "server.internal_lookup", ["internal_lookup"])
