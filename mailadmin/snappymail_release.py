"""SnappyMail release handling without the database: fetch the tarball, check
its SHA-256, make admin credentials and the root-only credentials file's text.

The service (mailadmin.services.snappymail) drives these from the install job;
keeping the network and the randomness here keeps that module ORM + helper only.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import bcrypt

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
# A release is a few MB; refuse anything absurd before it fills memory.
MAX_TARBALL_BYTES = 200 * 1024 * 1024
CREDENTIALS_FILE = "/root/.snappymail"


class ReleaseError(Exception):
    """Fetching or verifying the release failed; the message is for the job log."""


def normalize_sha256(value: str) -> str:
    value = (value or "").strip().lower()
    if not SHA256_RE.match(value):
        raise ReleaseError("the SHA-256 must be 64 hexadecimal characters")
    return value


def _read_limited(stream) -> bytes:
    data = stream.read(MAX_TARBALL_BYTES + 1)
    if len(data) > MAX_TARBALL_BYTES:
        raise ReleaseError(f"the tarball is larger than {MAX_TARBALL_BYTES} bytes")
    return data


def fetch_tarball(source: str, timeout: float = 60.0) -> bytes:
    """source: https:// or http:// URL, file:// URL, or a local path."""
    source = (source or "").strip()
    if not source:
        raise ReleaseError(
            "no release configured: set MAILPANEL_SNAPPYMAIL_URL or give a local tarball"
        )
    scheme = urllib.parse.urlsplit(source).scheme.lower()
    if scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(source, timeout=timeout) as response:
                return _read_limited(response)
        except OSError as exc:  # URLError, HTTPError and timeouts are OSErrors
            raise ReleaseError(f"download failed: {exc}") from exc
    if scheme == "file":
        path = Path(urllib.request.url2pathname(urllib.parse.urlsplit(source).path))
    elif scheme == "":
        path = Path(source)
    else:
        raise ReleaseError(f"unsupported URL scheme {scheme!r}: use https, file or a path")
    try:
        with path.open("rb") as f:
            return _read_limited(f)
    except OSError as exc:
        raise ReleaseError(f"cannot read {path}: {exc.strerror or exc}") from exc


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def verify_sha256(data: bytes, expected: str) -> str:
    expected = normalize_sha256(expected)
    actual = sha256_hex(data)
    if not hmac.compare_digest(actual, expected):
        raise ReleaseError(f"SHA-256 mismatch: expected {expected}, got {actual}")
    return actual


@dataclass(frozen=True)
class Credentials:
    login: str
    password: str
    key: str

    def __repr__(self):  # never print the secrets by accident
        return f"Credentials(login={self.login!r}, password=***, key=***)"


PASSWORD_ALPHABET = string.ascii_letters + string.digits + "-_.!@#%^*+="


def generate_credentials() -> Credentials:
    """The FAQ's shape: admin_<8 hex>, a strong password, the admin panel key."""
    return Credentials(
        login="admin_" + secrets.token_hex(4),
        password="".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(24)),
        key=secrets.token_hex(16),
    )


def hash_admin_password(password: str) -> str:
    """bcrypt as PHP's password_hash() writes it ($2y$): password_verify()
    accepts it, and $2y$ and $2b$ are the same algorithm."""
    hashed = bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(rounds=12)).decode()
    return "$2y$" + hashed[4:]


def credentials_file_text(credentials: Credentials) -> str:
    """/root/.snappymail in the FAQ's format."""
    return (
        f"Username: {credentials.login}\n"
        f"Password: {credentials.password}\n"
        f"Secret key: {credentials.key}\n"
    )


def parse_credentials_file(text: str) -> dict[str, str]:
    fields = {}
    for line in text.splitlines():
        name, sep, value = line.partition(": ")
        if sep:
            fields[name.strip()] = value
    return fields
