"""A stored password belongs to the endpoint it was typed for. Pure: no ORM.

The relay and panel SMTP forms never show a stored password back, so a blank
password field means "the stored one". That shortcut holds only for the exact
endpoint the password was stored for: host, port, TLS mode, authentication
mechanism and user name. With anything else the password must be typed again —
otherwise "Test relay" (or a saved relay) would hand a password an admin stored
to a server the person at the keyboard chose.

No separate record of "the endpoint of the password" is kept: the stored row's
own host/port/TLS/mechanism/user are that endpoint, because every save that
changes one of them either carries a newly typed password or is refused here.
"""

from dataclasses import dataclass

from django.utils.translation import gettext as _


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    tls: str
    auth: str  # "" where the client picks the mechanism (panel SMTP)
    username: str

    @classmethod
    def of(cls, host, port, tls, auth, username) -> "Endpoint":
        # Host names are case-insensitive; everything else is compared as stored.
        return cls(str(host or "").lower().rstrip("."), int(port or 0), tls or "", auth or "", username or "")


def retype_problem(typed: Endpoint, stored: Endpoint | None) -> str:
    """Why the stored password may not be sent to `typed` ("" when it may).
    `stored` is the endpoint of the stored password, None when there is none
    (the caller then says "enter the password")."""
    if stored is None or typed == stored:
        return ""
    if (typed.host, typed.port, typed.tls, typed.auth) == (stored.host, stored.port, stored.tls, stored.auth):
        return _("Type the password again: the user name changed.")
    return _("Type the password again: the server changed.")
