"""Exim's queue in the panel: a page of it, one message, actions — through
the helper (the spool is root's and Exim's to read).

Admins see every message and act on them. A customer sees the messages of
their own domains (sent from one, or addressed to one) and of those only what
is theirs: every recipient when they sent it, else only their own recipients
(who else got mail from a stranger is not theirs to know). Only admins act on
messages one by one and read a body; a customer releases or deletes their
held mail through services/holds.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from django.core.exceptions import PermissionDenied

from ..helper_client import call_helper
from ..models import MailDomain, acts_as_admin, is_admin
from . import audit

PAGE_SIZE = 50
ACTIONS = ("deliver", "freeze", "thaw", "delete", "bounce")
# Exim 4.96 and 4.97+ message ids (the helper checks again).
MESSAGE_ID_RE = re.compile(r"[0-9A-Za-z]{6}-(?:[0-9A-Za-z]{6}-[0-9A-Za-z]{2}|[0-9A-Za-z]{11}-[0-9A-Za-z]{4})")


@dataclass(frozen=True)
class QueueFilter:
    sender: str = ""
    recipient: str = ""
    domain: str = ""  # IDNA, lower case
    frozen: bool | None = None
    held: bool | None = None


@dataclass
class QueuePage:
    messages: list[dict]
    total: int
    number: int
    pages: int
    frozen: int | None = None  # None: not counted (an unfiltered page)
    held: int | None = None
    domains: list[str] = field(default_factory=list)  # a customer's scope

    @property
    def has_previous(self) -> bool:
        return self.number > 1

    @property
    def has_next(self) -> bool:
        return self.number < self.pages


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()


def own_domains(user) -> list[str] | None:
    """None for admins (everything), else the names of the user's domains."""
    if is_admin(user):
        return None
    return sorted(MailDomain.objects.visible_to(user).values_list("name", flat=True))


def is_theirs(message: dict, domains: list[str] | None) -> bool:
    if domains is None:
        return True
    wanted = set(domains)
    return domain_of(message["sender"]) in wanted or any(domain_of(r) in wanted for r in message["recipients"])


def as_seen_by(message: dict, domains: list[str] | None) -> dict:
    """The message with only what `domains` may see of its recipients."""
    if domains is None or domain_of(message["sender"]) in set(domains):
        return message
    return {**message, "recipients": [r for r in message["recipients"] if domain_of(r) in set(domains)]}


def list_page(user, filters: QueueFilter, number: int = 1) -> QueuePage:
    domains = own_domains(user)
    request = {"op": "queue_list", "offset": 0, "limit": PAGE_SIZE}
    for name in ("sender", "recipient"):
        if getattr(filters, name):
            request[name] = getattr(filters, name)
    for name in ("frozen", "held"):
        if getattr(filters, name) is not None:
            request[name] = getattr(filters, name)
    scope = domains
    if filters.domain:
        scope = [filters.domain] if domains is None or filters.domain in domains else []
    if scope == []:  # no domain of theirs: nothing to read
        return QueuePage([], 0, 1, 1, 0, 0, [])
    if scope is not None:
        request["domains"] = scope
    number = max(1, number)
    request["offset"] = (number - 1) * PAGE_SIZE
    answer = call_helper(request)
    total = answer["total"]
    pages = max(1, -(-total // PAGE_SIZE))
    if number > pages:  # past the end (the queue shrank): the last page
        number = pages
        request["offset"] = (number - 1) * PAGE_SIZE
        answer = call_helper(request)
    messages = [as_seen_by(m, domains) for m in answer["messages"] if is_theirs(m, domains)]
    return QueuePage(messages, total, number, pages, answer.get("frozen"), answer.get("held"), domains or [])


def show(user, message_id: str, body: bool = False) -> dict | None:
    """{"message": …, "body": …} or None when there is no such message the
    user may see (a customer asking for another's message gets None too)."""
    if not MESSAGE_ID_RE.fullmatch(message_id or ""):
        return None
    domains = own_domains(user)
    answer = call_helper({"op": "queue_show", "id": message_id, "body": bool(body and domains is None)})
    if not answer.get("found") or not is_theirs(answer["message"], domains):
        return None
    return {
        "message": as_seen_by(answer["message"], domains),
        "body": answer.get("body"),
        "body_truncated": answer.get("body_truncated", False),
    }


def act(actor, action: str, ids: list[str]) -> dict:
    """Admins only: deliver now (thaws), freeze, thaw, delete (silently) or
    bounce (the sender is told) these messages."""
    if not acts_as_admin(actor):
        raise PermissionDenied
    if action not in ACTIONS:
        raise ValueError(f"unknown queue action {action!r}")
    ids = sorted({i for i in ids if MESSAGE_ID_RE.fullmatch(i)})
    if not ids:
        return {"ids": [], "output": ""}
    answer = call_helper({"op": "queue_action", "action": action, "ids": ids})
    audit.record(actor, f"queue.{action}", ", ".join(ids)[:300], [])
    return answer
