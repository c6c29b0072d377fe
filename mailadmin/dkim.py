"""DKIM keys: generation, selectors and the public half as a DNS value. Pure, no ORM."""

import base64
import functools

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailconf.grammar import DKIM_SELECTOR_RE

SELECTOR = "mail"
KEY_BITS = 2048
KEY_SIZES = (1024, 2048, 4096)  # 1024 for DNS hosts that cannot take a long TXT record


def generate_private_pem(bits: int = KEY_BITS) -> str:
    if bits not in KEY_SIZES:
        raise ValueError(f"DKIM key size {bits}: not one of {KEY_SIZES}")
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()


def _load(private_pem: str):
    # The key is one we generated, so skip cryptography's RSA consistency check:
    # it costs ~100 ms a load, and every domain page shows this value twice.
    return serialization.load_pem_private_key(
        private_pem.encode(), password=None, unsafe_skip_rsa_key_validation=True
    )


@functools.lru_cache(maxsize=1024)
def public_key_b64(private_pem: str) -> str:
    """The p= value: base64 of the DER SubjectPublicKeyInfo."""
    der = _load(private_pem).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


@functools.lru_cache(maxsize=1024)
def key_bits(private_pem: str) -> int:
    return _load(private_pem).key_size


def dns_value(private_pem: str) -> str:
    return public_dns_value(public_key_b64(private_pem))


def public_dns_value(public_key: str) -> str:
    return f"v=DKIM1; k=rsa; p={public_key}"


def is_selector(value: str) -> bool:
    """One DNS label, lower case: what the helper's grammar and Exim take."""
    return bool(DKIM_SELECTOR_RE.fullmatch(value))


def next_selector(today, taken) -> str:
    """A fresh selector for a rotation: s<YYYYMMDD>, then …b, …c the same day.
    Dated names never collide with another provider's "mail" or "default"."""
    base = f"s{today:%Y%m%d}"
    for suffix in ("", *"bcdefghijklmnopqrstuvwxyz"):
        if base + suffix not in taken:
            return base + suffix
    raise ValueError("no free selector left for today")
