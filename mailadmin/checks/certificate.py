"""The TLS certificate the mail server presents (Exim's tls_certificate,
Dovecot's ssl_cert): when it expires and whether it names the server's host
name. Reads the certificate file, the public half (no private key). No ORM."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from cryptography import x509
from cryptography.x509.oid import NameOID

OK, SOON, EXPIRED, WRONG_NAME, UNKNOWN = "ok", "soon", "expired", "wrong_name", "unknown"
SOON_DAYS = 14  # certbot renews 30 days ahead: 14 left means renewal is failing


@dataclass
class CertificateStatus:
    status: str
    not_after: str = ""  # ISO 8601, UTC
    days_left: int | None = None
    names: tuple[str, ...] = ()
    detail: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def _names(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        return tuple(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        return tuple(a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME))


def _matches(hostname: str, names: tuple[str, ...]) -> bool:
    hostname = hostname.lower().rstrip(".")
    for name in (n.lower() for n in names):
        if name == hostname or (name.startswith("*.") and hostname.partition(".")[2] == name[2:]):
            return True
    return False


def certificate_status(path: str, hostname: str, now: datetime | None = None) -> CertificateStatus:
    """The first certificate of a PEM file (the leaf of a fullchain)."""
    now = now or datetime.now(timezone.utc)
    try:
        with open(path, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read(256 * 1024))
    except (OSError, ValueError) as exc:
        return CertificateStatus(UNKNOWN, detail=getattr(exc, "strerror", None) or str(exc))
    not_after = cert.not_valid_after_utc
    days_left = (not_after - now).days
    names = _names(cert)
    status = OK
    if not_after <= now:
        status = EXPIRED
    elif not _matches(hostname, names):
        status = WRONG_NAME
    elif days_left < SOON_DAYS:
        status = SOON
    return CertificateStatus(status, not_after.isoformat(timespec="minutes"), days_left, names)
