"""A minimal ManageSieve (RFC 5804) client: enough for AUTHENTICATE PLAIN,
PUTSCRIPT, SETACTIVE, LISTSCRIPTS. Standard library only: tests/test_sieve.py
uses it against the Dovecot this machine runs, tests/box_checks.py inside the
Debian 13 box."""

from __future__ import annotations

import base64
import socket


class ManageSieve:
    def __init__(self, port: int, host: str = "127.0.0.1"):
        self.sock = socket.create_connection((host, port), timeout=10)
        self.file = self.sock.makefile("rb")
        self.greeting = self.response()

    def response(self) -> list[bytes]:
        """Lines up to and including the final OK / NO / BYE."""
        lines = []
        while True:
            line = self.file.readline()
            if not line:
                raise ConnectionError(b"connection closed after " + b"".join(lines))
            lines.append(line.rstrip(b"\r\n"))
            if line[:2] in (b"OK", b"NO") or line[:3] == b"BYE":
                return lines

    def command(self, line: str, literal: bytes | None = None) -> list[bytes]:
        data = line.encode()
        if literal is not None:
            data += b" {%d+}\r\n" % len(literal) + literal
        self.sock.sendall(data + b"\r\n")
        return self.response()

    def authenticate(self, user: str, password: str) -> list[bytes]:
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        return self.command(f'AUTHENTICATE "PLAIN" "{token}"')

    def close(self):
        try:
            self.command("LOGOUT")
        except OSError:
            pass
        self.file.close()
        self.sock.close()
