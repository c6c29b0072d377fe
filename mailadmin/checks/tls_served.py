"""Does the server present a certificate for the name a mail program asks
for? Connects to the server's implicit-TLS and STARTTLS ports with that name
as SNI (what a client configured with mail.<domain> sends) and compares the
names on the certificate it gets. No ORM: the caller passes the target, the
ports (from the Layout) and the name.

The chain is not verified here (a self-signed certificate still has names to
compare; its expiry is checks.certificate's), only which certificate Exim and
Dovecot choose for the name: "different" is the "wrong certificate for my
name" clients complain about.
"""

from __future__ import annotations

import ssl
from dataclasses import asdict, dataclass

from cryptography import x509
from django.utils.translation import gettext as _

from .certificate import _matches, _names
from .smtp import Refused, Session

OK, DIFFERENT, UNKNOWN = "ok", "different", "unknown"


@dataclass(frozen=True)
class Port:
    port: int
    starttls: bool  # SMTP STARTTLS first (587), else TLS at once (993, 465)


@dataclass
class ServedName:
    port: int
    status: str
    names: tuple[str, ...] = ()
    detail: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def _context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # we read the names; trust is not the question here
    return context


def presented_names(host: str, port: Port, name: str, timeout: float) -> tuple[str, ...]:
    """The DNS names of the certificate host:port presents for SNI `name`."""
    session = Session(host, port.port, timeout=timeout)
    try:
        session.connect()
        if port.starttls:
            code, _text = session.greeting()
            if code != 220:
                raise Refused(_("The server did not greet (it answered %(code)s).") % {"code": code})
            if "STARTTLS" not in [e.split()[0].upper() for e in session.ehlo("mailpanel.invalid") if e]:
                raise Refused(_("The server does not offer STARTTLS."))
            code, _text = session.command("STARTTLS", "STARTTLS")
            if code != 220:
                raise Refused(_("The server refused STARTTLS (it answered %(code)s).") % {"code": code})
        session.start_tls(_context(), server_name=name)
        der = session.sock.getpeercert(binary_form=True)
        return _names(x509.load_der_x509_certificate(der))
    finally:
        if session.sock is not None:
            session.sock.close()


def check_port(host: str, port: Port, name: str, timeout: float) -> ServedName:
    try:
        names = presented_names(host, port, name, timeout)
    except (OSError, ssl.SSLError, Refused, ValueError) as exc:
        return ServedName(port.port, UNKNOWN, detail=str(exc) or type(exc).__name__)
    if _matches(name, names):
        return ServedName(port.port, OK, names)
    return ServedName(
        port.port, DIFFERENT, names,
        _("Asked for %(name)s, the server presents a certificate for %(names)s: mail programs set up with "
          "%(name)s warn or refuse.") % {"name": name, "names": ", ".join(names) or "—"},
    )


def summarize(results: list[ServedName]) -> str:
    statuses = {r.status for r in results}
    for status in (DIFFERENT, UNKNOWN):
        if status in statuses:
            return status
    return OK if statuses else UNKNOWN

