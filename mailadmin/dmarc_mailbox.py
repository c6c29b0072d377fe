"""The DMARC reports mailbox over IMAP: unread mails in, flags out. No ORM.

Why IMAP and not the Maildir: the Maildirs belong to the mail user and the
panel is not root; IMAP on 127.0.0.1 is the door every mail client uses,
with the password of a mailbox the panel made for the reports itself
(services.dmarc_reports), so the panel gains no power over any other
mailbox. Dovecot counts a connection from this host as secure: no TLS is
needed on loopback (a remote server is spoken to over IMAPS, port 993).

A mail is fetched only after its size is known to be within the limit.
Read mails are marked \\Seen and \\Deleted (their rows are in the database);
refused ones \\Seen and \\Flagged, kept for whoever wants to look.
"""

from __future__ import annotations

import imaplib
import re
import socket
import ssl
from dataclasses import dataclass

_SIZE = re.compile(rb"RFC822\.SIZE (\d+)")


class MailboxError(Exception):
    """The mailbox could not be read; the message names no secret."""


@dataclass
class Fetched:
    uid: bytes
    size: int
    raw: bytes | None  # None: over the size limit, not fetched


class ReportsMailbox:
    def __init__(self, host: str, port: int, user: str, password: str, timeout: float = 30):
        self.host, self.port, self.user, self.password, self.timeout = host, port, user, password, timeout
        self.imap: imaplib.IMAP4 | None = None
        self.deleted = False

    def __enter__(self) -> "ReportsMailbox":
        try:
            if self.port == 993:
                self.imap = imaplib.IMAP4_SSL(self.host, self.port, ssl_context=ssl.create_default_context(),
                                              timeout=self.timeout)
            else:
                self.imap = imaplib.IMAP4(self.host, self.port, timeout=self.timeout)
        except (OSError, imaplib.IMAP4.error) as exc:
            raise MailboxError(f"cannot connect to IMAP at {self.host}:{self.port}: {type(exc).__name__}") from None
        try:
            self.imap.login(self.user, self.password)
        except imaplib.IMAP4.error:
            self._close()
            raise MailboxError(f"IMAP login as {self.user} failed (was its password changed?)") from None
        except OSError as exc:
            self._close()
            raise MailboxError(f"IMAP login as {self.user} failed: {type(exc).__name__}") from None
        self._ok(self.imap.select("INBOX"), "select INBOX")
        return self

    def __exit__(self, *exc):
        try:
            if self.deleted and exc[0] is None:
                self.imap.expunge()
            self.imap.logout()
        except (OSError, imaplib.IMAP4.error):
            pass
        self._close()

    def _close(self):
        try:
            if self.imap is not None:
                self.imap.shutdown()
        except OSError:
            pass

    @staticmethod
    def _ok(answer, what: str):
        status, data = answer
        if status != "OK":
            raise MailboxError(f"IMAP {what} failed")
        return data

    def _command(self, *args, what: str):
        try:
            return self._ok(self.imap.uid(*args), what)
        except (OSError, socket.timeout, imaplib.IMAP4.error) as exc:
            raise MailboxError(f"IMAP {what} failed: {type(exc).__name__}") from None

    def unread(self, limit: int) -> list[bytes]:
        data = self._command("SEARCH", None, "UNSEEN", what="search")
        return (data[0] or b"").split()[:limit]

    def fetch(self, uid: bytes, max_bytes: int) -> Fetched:
        data = self._command("FETCH", uid, "(RFC822.SIZE)", what="fetch size")
        match = _SIZE.search(b" ".join(d for d in data if isinstance(d, bytes)))
        if not match:
            raise MailboxError("IMAP fetch size: no size in the answer")
        size = int(match.group(1))
        if size > max_bytes:
            return Fetched(uid, size, None)
        data = self._command("FETCH", uid, "(BODY.PEEK[])", what="fetch")
        parts = [d[1] for d in data if isinstance(d, tuple) and len(d) == 2]
        if not parts:
            raise MailboxError("IMAP fetch: no message in the answer")
        return Fetched(uid, size, parts[0])

    def done(self, uid: bytes) -> None:
        self._command("STORE", uid, "+FLAGS", r"(\Seen \Deleted)", what="store")
        self.deleted = True

    def refused(self, uid: bytes) -> None:
        self._command("STORE", uid, "+FLAGS", r"(\Seen \Flagged)", what="store")
