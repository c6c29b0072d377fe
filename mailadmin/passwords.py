"""Mail account passwords: a hash Dovecot verifies, and strength feedback.

Pure functions, no ORM. The stored form is Dovecot's `{BLF-CRYPT}` scheme:
bcrypt via the `bcrypt` package. Dovecot checks BLF-CRYPT through libc's
crypt(3) (libxcrypt on Debian), which accepts the `$2b$` prefix the package
writes — `doveadm pw -t '{BLF-CRYPT}$2b$…' -p …` says "(verified)".

Why not {ARGON2ID} via argon2-cffi: Dovecot verifies it with libsodium,
which only accepts parallelism p=1; argon2-cffi's default p=4 hashes would
never log in.

bcrypt reads at most 72 bytes; longer passwords are refused rather than
silently cut (a client sending 80 bytes would otherwise log in with a
different password than the one the user thinks they set).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import bcrypt
from django.conf import settings
from django.contrib.auth.password_validation import CommonPasswordValidator
from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

SCHEME = "{BLF-CRYPT}"
MIN_LENGTH = 8
MAX_BYTES = 72  # bcrypt's limit
DEFAULT_ROUNDS = 12  # ≈ 0.25 s per hash on this kind of machine


def _rounds() -> int:
    return int(getattr(settings, "MAILPANEL_BCRYPT_ROUNDS", DEFAULT_ROUNDS))


def hash_password(password: str) -> str:
    """The Dovecot passwd-file form: `{BLF-CRYPT}$2b$12$…` (no ':' or blanks)."""
    validate_password_bytes(password)
    digest = bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(rounds=_rounds()))
    return SCHEME + digest.decode("ascii")


def check_password(password: str, stored: str) -> bool:
    """What Dovecot will answer for this password (used by tests and the CLI)."""
    if not stored.startswith(SCHEME):
        return False
    try:
        return bcrypt.checkpw(password.encode("utf-8"), stored[len(SCHEME) :].encode("ascii"))
    except ValueError:
        return False


def validate_password_bytes(password: str) -> str:
    """What a password must be to be stored and typed at all (no policy)."""
    if not password:
        raise ValidationError(_("Enter a password."))
    if any(ord(c) < 32 or ord(c) == 127 for c in password):
        # NUL ends a SASL PLAIN field; line breaks cannot be typed in a client.
        raise ValidationError(_("A password cannot contain line breaks or control characters."))
    if len(password.encode("utf-8")) > MAX_BYTES:
        raise ValidationError(
            _("A password can be at most %(max)d bytes long (about %(max)d letters, fewer for Chinese characters).")
            % {"max": MAX_BYTES}
        )
    return password


@dataclass(frozen=True)
class Strength:
    score: int  # 0 (very weak) … 4 (strong)
    label: str
    hints: tuple[str, ...] = field(default=())

    @property
    def acceptable(self) -> bool:
        return self.score >= 2


_LABELS = (
    gettext_lazy("very weak"),
    gettext_lazy("weak"),
    gettext_lazy("fair"),
    gettext_lazy("good"),
    gettext_lazy("strong"),
)


def _is_common(password: str) -> bool:
    try:
        CommonPasswordValidator().validate(password)
    except ValidationError:
        return True
    return False


def password_strength(password: str, context: tuple[str, ...] = ()) -> Strength:
    """Feedback for the form: a score and what to do about it.

    `context` holds words the password must not be built from (the local part,
    the domain). Deliberately simple: length counts most, variety a little,
    well-known passwords and the account's own name make it very weak."""
    hints: list[str] = []
    length = len(password)
    classes = sum(
        bool(re.search(pattern, password))
        for pattern in (r"[a-z]", r"[A-Z]", r"[0-9]", r"[^A-Za-z0-9]")
    )
    if length < MIN_LENGTH:
        hints.append(_("Use at least %(min)d characters.") % {"min": MIN_LENGTH})
        score = 0
    else:
        score = 1
        if length >= 12:
            score += 1
        if length >= 16:
            score += 1
        if classes >= 3:
            score += 1
        if length < 12:
            hints.append(_("Longer is stronger: 12 characters or more."))
        if classes < 3:
            hints.append(_("Mix lower and upper case letters, digits and symbols."))
    lowered = password.lower()
    if password and _is_common(password):
        hints.insert(0, _("This is a well-known password."))
        score = 0
    elif any(word and len(word) >= 3 and word.lower() in lowered for word in context):
        hints.insert(0, _("Do not build the password from the address itself."))
        score = min(score, 1)
    elif length and len(set(password)) <= 2:
        hints.insert(0, _("Avoid repeating the same characters."))
        score = min(score, 1)
    score = max(0, min(4, score))
    return Strength(score=score, label=str(_LABELS[score]), hints=tuple(str(h) for h in hints))


def validate_new_password(password: str, context: tuple[str, ...] = ()) -> str:
    """Storable and not weak; the error says what to change."""
    validate_password_bytes(password)
    strength = password_strength(password, context)
    if not strength.acceptable:
        raise ValidationError(
            _("This password is too weak (%(label)s). %(hints)s")
            % {"label": strength.label, "hints": " ".join(strength.hints)}
        )
    return password
