"""DKIM keys: generation and the public half as a DNS value. Pure, no ORM."""

import base64

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


def public_key_b64(private_pem: str) -> str:
    """The p= value: base64 of the DER SubjectPublicKeyInfo."""
    key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


def dns_value(private_pem: str) -> str:
    return f"v=DKIM1; k=rsa; p={public_key_b64(private_pem)}"
