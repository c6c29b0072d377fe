"""Secrets at rest: Fernet tokens keyed by settings.MAILPANEL_ENCRYPTION_KEY.

The setting is a comma-separated list of keys, newest first, so keys can be rotated
(MultiFernet encrypts with the first and decrypts with any).
"""

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.db import models


def _fernet():
    keys = [k.strip() for k in settings.MAILPANEL_ENCRYPTION_KEY.split(",") if k.strip()]
    return MultiFernet([Fernet(k.encode()) for k in keys])


def encrypt(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        # Never fall back to showing the stored value: it is either ciphertext or garbage.
        raise ValueError("a stored secret cannot be decrypted with the configured keys")


class EncryptedTextField(models.TextField):
    """Stores Fernet ciphertext; Python code sees plaintext. Empty stays empty."""

    def from_db_value(self, value, expression, connection):
        if not value:
            return ""
        return decrypt(value)

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        if not value:
            return ""
        return encrypt(value)
