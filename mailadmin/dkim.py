"""DKIM keys: generation and the public half as a DNS value. Pure, no ORM."""

import base64
import functools

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

SELECTOR = "mail"
KEY_BITS = 2048


def generate_private_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()


@functools.lru_cache(maxsize=1024)
def public_key_b64(private_pem: str) -> str:
    """The p= value: base64 of the DER SubjectPublicKeyInfo.

    The key is one we generated, so skip cryptography's RSA consistency check:
    it costs ~100 ms a load, and every domain page shows this value twice."""
    key = serialization.load_pem_private_key(
        private_pem.encode(), password=None, unsafe_skip_rsa_key_validation=True
    )
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


def dns_value(private_pem: str) -> str:
    return f"v=DKIM1; k=rsa; p={public_key_b64(private_pem)}"
