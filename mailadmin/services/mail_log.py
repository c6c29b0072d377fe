"""“Where is my mail?”: Exim's main log and Dovecot's delivery log, searched
by the helper (the logs are root's) for a Message-ID, an Exim id, a sender or
a recipient, with every line of the messages found joined in: reception,
routing, the remote answer, the final delivery or Sieve action.

Admins see every line. A customer sees only lines about their own domains
(pure: visible_lines): a message is theirs when it was sent from or to one
of their domains; of it they see the reception and the lines without an
address, delivery lines of their own addresses, and every delivery line when
they sent it (where their mail went is theirs to know). Lines of no message
(a refused RCPT, say) follow the same rule by their F=<> and RCPT <>;
Dovecot's lines are shown when every user(...) they name is theirs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _

from ..helper_client import call_helper
from . import user_checks
from .mail_queue import MESSAGE_ID_RE, domain_of, own_domains

DEFAULT_DAYS = 3
MAX_DAYS = 14
MAX_LINES = 500

_EXIM_LINE = re.compile(
    r"^\S+ \S+ (?:\[\d+\] )?(?P<id>" + MESSAGE_ID_RE.pattern + r") (?P<rest>.*)$"
)
_EXIM_EVENT = re.compile(r"(?P<marker><=|=>|->|>>|\*>|\*\*|==) (?P<address>\S+)(?: <(?P<original>[^>\s]+)>)?")
_ADDRESS = re.compile(r"[^\s<>()\[\]=,;:\"']+@[A-Za-z0-9.-]+\.[A-Za-z0-9-]+")
_SMTP_ENVELOPE = re.compile(r"F=<(?P<sender>[^>\s]*)> .*\bRCPT <(?P<recipient>[^>\s]+)>")
_DOVECOT_USER = re.compile(r"\b[a-z0-9-]+\((?P<user>[^)\s]+@[^)\s]+)\)")


@dataclass(frozen=True)
class LogLine:
    source: str  # "exim" | "dovecot"
    text: str
    message_id: str = ""  # Exim's id, when the line is about one message


def parse(entries: list[dict]) -> list[LogLine]:
    lines = []
    for entry in entries:
        text = entry.get("line", "")
        match = _EXIM_LINE.match(text) if entry.get("source") == "exim" else None
        lines.append(LogLine(entry.get("source", ""), text, match["id"] if match else ""))
    return lines


def _event(line: LogLine) -> tuple[str, list[str]]:
    """(marker, addresses) of an Exim message line: "<=" and the sender,
    a delivery marker and the address(es), or ("", []) for other lines."""
    match = _EXIM_LINE.match(line.text)
    event = _EXIM_EVENT.match(match["rest"]) if match else None
    if not event:
        return "", []
    addresses = [a.rstrip(":") for a in (event["address"], event["original"]) if a and "@" in a]
    return event["marker"], addresses


def visible_lines(lines: list[LogLine], domains: list[str] | None) -> list[LogLine]:
    """What a customer with these domains may see (None: an admin, all)."""
    if domains is None:
        return list(lines)
    wanted = set(domains)

    def ours(address: str) -> bool:
        return domain_of(address) in wanted

    senders: dict[str, str] = {}
    recipients: dict[str, list[str]] = {}
    for line in lines:
        marker, addresses = _event(line)
        if not line.message_id or not marker:
            continue
        if marker == "<=":
            senders[line.message_id] = addresses[0] if addresses else ""
        else:
            recipients.setdefault(line.message_id, []).extend(addresses)
    theirs = {
        message_id
        for message_id in {*senders, *recipients}
        if ours(senders.get(message_id, "")) or any(ours(a) for a in recipients.get(message_id, ()))
    }
    shown = []
    for line in lines:
        if line.source == "dovecot":
            users = [m["user"] for m in _DOVECOT_USER.finditer(line.text)]
            if users and all(ours(u) for u in users):
                shown.append(line)
            continue
        if line.message_id:
            if line.message_id not in theirs:
                continue
            marker, addresses = _event(line)
            if marker and marker != "<=" and not ours(senders.get(line.message_id, "")):
                if not addresses or not all(ours(a) for a in addresses):
                    continue
            shown.append(line)
            continue
        # no message yet (a refused RCPT, say): the same rule, by F=<> and RCPT <>
        smtp = _SMTP_ENVELOPE.search(line.text)
        if smtp:
            if ours(smtp["sender"]) or ours(smtp["recipient"]):
                shown.append(line)
            continue
        addresses = _ADDRESS.findall(line.text)
        if addresses and all(ours(a) for a in addresses):
            shown.append(line)
    return shown


def clean_query(query: str) -> str:
    """A search term: no control characters (checked before stripping), at
    least 3 characters, at most 320."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in query or ""):
        raise ValidationError(_("No control characters, please."))
    term = (query or "").strip(" ")
    if not 3 <= len(term) <= 320:
        raise ValidationError(_("Search for 3 to 320 characters."))
    return term


def search(user, query: str, days: int = DEFAULT_DAYS) -> tuple[list[LogLine], bool]:
    """(lines the user may see, whether the helper cut its answer). A
    customer over the per-user limit of checks gets user_checks.TooManyChecks."""
    if not 1 <= days <= MAX_DAYS:
        raise ValidationError(_("Search the last 1 to %(max)d days.") % {"max": MAX_DAYS})
    term = clean_query(query)
    user_checks.record_log_search(user)
    answer = call_helper(
        {"op": "log_search", "terms": [term], "days": days, "limit": MAX_LINES}
    )
    lines = parse(answer.get("lines", []))
    return visible_lines(lines, own_domains(user)), bool(answer.get("truncated"))
