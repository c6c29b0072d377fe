"""DNS blacklists and Spamhaus DQS, in one place: the zones as an admin
configures them, the zone names queried (the DQS key applied), the names a
person or a log may see (the key masked), and what a DQS key and a zone look
like. Pure: no ORM, no network.

Spamhaus refuses queries to its public zones that come through large shared
resolvers; a DQS key turns zen.spamhaus.org into <key>.zen.dq.spamhaus.net.
The key is a secret: it is in the zone name Exim queries and nowhere else."""

import re

from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _

from .validation import normalize_domain

# Public Spamhaus zones that have a DQS twin: <key>.<name>.dq.spamhaus.net.
SPAMHAUS_DQS_ZONES = ("zen", "sbl", "xbl", "pbl", "dbl", "zrd")
DQS_SUFFIX = "dq.spamhaus.net"
# A Spamhaus DQS key: 26 letters and digits, one per customer account.
DQS_KEY_LENGTH = 26
_DQS_KEY = re.compile(r"^[A-Za-z0-9]{26}$")
MASK = "<DQS key>"


def configured_zones(text: str) -> list[str]:
    """The zones as the admin configured them, one a line (the public names,
    in order, each once)."""
    zones = []
    for line in text.splitlines():
        zone = line.strip().lower().rstrip(".")
        if zone and zone not in zones:
            zones.append(zone)
    return zones


def dqs_zone(zone: str, dqs_key: str) -> str:
    """A public Spamhaus zone → the key's DQS zone; other zones unchanged."""
    name, _dot, rest = zone.partition(".")
    if dqs_key and rest == "spamhaus.org" and name in SPAMHAUS_DQS_ZONES:
        return f"{dqs_key.lower()}.{name}.{DQS_SUFFIX}"
    return zone


def queried_zones(text: str, dqs_key: str) -> tuple[str, ...]:
    """The zones Exim and the diagnostics query: the DQS key applied."""
    zones: list[str] = []
    for zone in configured_zones(text):
        queried = dqs_zone(zone, dqs_key)
        if queried not in zones:
            zones.append(queried)
    return tuple(zones)


def masked(zone: str, dqs_key: str) -> str:
    """A queried zone as a page or a log may show it."""
    key = (dqs_key or "").lower()
    return zone.replace(key, MASK) if key else zone


def normalize_dqs_key(value: str) -> str:
    """The key as pasted → lower case. The error never repeats what was typed
    (it may be a real key with one character missing)."""
    key = (value or "").strip()
    if not key:
        raise ValidationError(_("Paste the DQS key from your Spamhaus account."))
    if not _DQS_KEY.match(key):
        if len(key) != DQS_KEY_LENGTH:
            raise ValidationError(
                _("A Spamhaus DQS key is 26 letters and digits; what you entered has %(count)s characters.")
                % {"count": len(key)}
            )
        raise ValidationError(_("A Spamhaus DQS key has only letters and digits (no spaces, dots or dashes)."))
    return key.lower()


def normalize_zone(value: str) -> str:
    zone = normalize_domain(value)
    if zone == DQS_SUFFIX or zone.endswith("." + DQS_SUFFIX):
        # A DQS zone name carries the key: it would be shown in the zone list.
        raise ValidationError(
            _(
                "Add the public Spamhaus zone (zen.spamhaus.org) and paste the DQS key "
                "in its own field: a DQS zone name contains the key."
            )
        )
    return zone
