"""Secrets at rest: Fernet tokens keyed by settings.MAILPANEL_ENCRYPTION_KEY.

The setting is a comma-separated list of keys, newest first, so keys can be rotated
(MultiFernet encrypts with the first and decrypts with any).
"""

import functools

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.db import models


def _fernet():
    return _fernet_for(settings.MAILPANEL_ENCRYPTION_KEY)


@functools.lru_cache(maxsize=4)
def _fernet_for(key_setting: str) -> MultiFernet:
    # Building the ciphers per value cost 20 µs × 10,000 DKIM keys in a full render.
    keys = [k.strip() for k in key_setting.split(",") if k.strip()]
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
