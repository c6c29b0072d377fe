"""Outbound port 25 (SPEC §4.1, FAQ "我无法发送电子邮件"). No ORM.

Connect, read the greeting, say QUIT. Many hosting providers block outbound
port 25: the connection is then refused or (more often) silently dropped,
which shows up as a timeout."""

from __future__ import annotations

import socket
import time
from dataclasses import asdict, dataclass

from django.utils.translation import gettext as _

OK, REFUSED, TIMEOUT, ERROR = "ok", "refused", "timeout", "error"


@dataclass
class Port25Result:
    target: str
    status: str  # ok | refused | timeout | error
    banner: str = ""
    detail: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == OK

    def as_dict(self) -> dict:
        return asdict(self)


def parse_target(target: str, default_port: int = 25) -> tuple[str, int]:
    """'host:port', 'host', '[v6]:port'."""
    target = target.strip()
    if target.startswith("["):
        host, _sep, rest = target[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    if target.count(":") == 1:
        host, port = target.split(":")
        return host, int(port)
    return target, default_port


def fixes() -> list[str]:
    """The two ways out the FAQ gives when port 25 is blocked."""
    return [
        _("Ask your hosting provider to open outbound port 25 for this server."),
        _("Or send through an SMTP relay (SMTP2GO, Brevo, Amazon SES…): set a global relay in the server settings."),
    ]


def _read_greeting(sock, deadline: float) -> str:
    """The 220 reply, multi-line aware ('220-…' continues, '220 …' ends)."""
    data = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        sock.settimeout(remaining)
        chunk = sock.recv(1024)
        if not chunk:
            raise ConnectionResetError(_("the server closed the connection"))
        data += chunk
        lines = data.split(b"\r\n")
        for line in lines[:-1]:
            if len(line) < 4 or line[3:4] != b"-":
                return data.decode("utf-8", "replace").strip()
        if len(data) > 8192:
            return data.decode("utf-8", "replace").strip()


def check_port25(target: str, timeout: float) -> Port25Result:
    host, port = parse_target(target)
    started = time.monotonic()
    deadline = started + timeout
    label = f"{host}:{port}"
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            banner = _read_greeting(sock, deadline)
            try:
                sock.settimeout(max(0.2, deadline - time.monotonic()))
                sock.sendall(b"QUIT\r\n")
            except OSError:
                pass
    except ConnectionRefusedError:
        return Port25Result(label, REFUSED, detail=_("connection refused"), seconds=time.monotonic() - started)
    except (TimeoutError, socket.timeout):
        return Port25Result(
            label,
            TIMEOUT,
            detail=_("no answer within %(seconds)s s") % {"seconds": timeout},
            seconds=time.monotonic() - started,
        )
    except OSError as exc:
        return Port25Result(label, ERROR, detail=str(exc) or type(exc).__name__, seconds=time.monotonic() - started)
    elapsed = time.monotonic() - started
    if not banner.startswith("220"):
        return Port25Result(
            label, ERROR, banner, _("the server did not greet with 220"), elapsed
        )
    return Port25Result(label, OK, banner, seconds=elapsed)
