"""Panel user names: one spelling per account.

Login, throttling and creation all compare names by `username_key` (NFKC,
strip, casefold), so "ａｄｍｉｎ", " admin" and "ADMIN" are the one account
"admin": they log in to it, count towards its lockout, and cannot be created
beside it. New names are stored as their key."""

import unicodedata

from django.contrib.auth import get_user_model
from django.db.models import Q

MAX_LENGTH = 150  # auth.User.username


def username_key(value: str) -> str:
    # NFKC before strip turns odd spaces (U+3000, U+2003) into spaces; NFKC
    # again after casefold because folding can leave a non-normalised string.
    folded = unicodedata.normalize("NFKC", value).strip().casefold()
    return unicodedata.normalize("NFKC", folded)


def find_user(name: str):
    """The one user `name` spells, or None.

    Names made before creation normalised them may differ only by case
    ("Alice" and "alice"): the exact spelling picks one of them, and a
    spelling that matches several picks none, so login never reaches a
    different account than the one typed."""
    key = username_key(name)
    if not key or len(key) > MAX_LENGTH:
        return None
    spelled = unicodedata.normalize("NFKC", name).strip()
    candidates = list(
        get_user_model()._default_manager.filter(
            Q(username=spelled) | Q(username=key) | Q(username__iexact=spelled)
        )
    )
    for user in candidates:
        if user.username == spelled:
            return user
    same = [user for user in candidates if username_key(user.username) == key]
    return same[0] if len(same) == 1 else None


def name_taken(key: str) -> bool:
    """Whether any user's name has this key. Reads every name: the iexact
    shortcut misses width and casefold-only variants of old names, and users
    are added rarely."""
    names = get_user_model()._default_manager.values_list("username", flat=True)
    return any(username_key(name) == key for name in names.iterator())
