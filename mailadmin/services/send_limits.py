"""Sending limits: the server's defaults, a domain's, a mailbox's (SendLimit).

Admins set them (the panel, `mail limit set`); customers see the limits that
apply to their domains and mailboxes. A blank field inherits the wider scope
(mailbox → domain → server; the server's blank = no limit), 0 = no limit.
They reach Exim as data (mailconf: /etc/exim4/send_limits and each domain's
send_limits), which its ratelimit ACL reads through lookups; past a limit the
sender's mail is held, not bounced (services/holds.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils.translation import gettext as _

from mailconf import snapshot as snap
from ..models import MailAccount, MailDomain, SendHold, SendLimit, acts_as_admin
from . import audit, jobs

FIELDS = ("per_hour", "per_day", "recipients")
MAX_LIMIT = 999_999_999  # the grammar's nine digits
_NUMBER_RE = re.compile(r"0|[1-9][0-9]{0,8}")  # ASCII digits only, no sign, no blanks inside


def normalize_limit(value, field_name: str) -> int | None:
    """"" / None = inherit; otherwise a whole number from 0 (no limit) up."""
    if value is None or (isinstance(value, str) and not value.strip(" ")):
        return None
    if isinstance(value, str) and _NUMBER_RE.fullmatch(value.strip(" ")):
        number = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        number = -1
    if not 0 <= number <= MAX_LIMIT:
        raise ValidationError(
            {field_name: _("A limit is a whole number from 0 (no limit) to %(max)d, or blank to inherit.")
             % {"max": MAX_LIMIT}}
        )
    return number


def _scope_filter(domain: MailDomain | None, account: MailAccount | None) -> dict:
    return {"domain": domain, "account": account}


def stored(domain: MailDomain | None = None, account: MailAccount | None = None) -> SendLimit:
    """The stored limits of one scope, or an unsaved empty row."""
    scope = _scope_filter(domain, account)
    return SendLimit.objects.filter(**scope).first() or SendLimit(**scope)


def set_limits(actor, *, domain: MailDomain | None = None, account: MailAccount | None = None,
               **values) -> SendLimit:
    """Set the given fields of one scope (others unchanged); a field given as
    None inherits again. Admins only. Returns the stored row (unsaved and
    empty when every field inherits)."""
    if not acts_as_admin(actor):
        raise PermissionDenied
    if domain is not None and account is not None:
        raise ValueError("one scope: a domain or an account")
    unknown = set(values) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown limit fields: {sorted(unknown)}")
    errors, clean = {}, {}
    for name, value in values.items():
        try:
            clean[name] = normalize_limit(value, name)
        except ValidationError as exc:
            errors.update(exc.message_dict)
    if errors:
        raise ValidationError(errors)
    row = stored(domain, account)
    changed = [name for name, value in clean.items() if getattr(row, name) != value]
    if not changed:
        return row
    for name in changed:
        setattr(row, name, clean[name])
    owner = account.domain if account is not None else domain
    target = (f"{account.local_part}@{owner.name}" if account is not None
              else owner.name if owner is not None else "server")
    with transaction.atomic():
        if all(getattr(row, name) is None for name in FIELDS):
            if row.pk:
                row.delete()
            row = stored(domain, account)
        else:
            row.save()
        audit.record(actor, "send_limit.set", target, changed)
        jobs.request_apply(actor, domain=owner, whole_server=owner is None)
    return row


@dataclass(frozen=True)
class Effective:
    """One field's limit as Exim applies it, and where it comes from."""

    value: int | None  # None or 0: no limit
    source: str  # "mailbox" | "domain" | "server" | ""

    @property
    def unlimited(self) -> bool:
        return not self.value


def _resolve(rows: dict[str, SendLimit | None]) -> dict[str, Effective]:
    out = {}
    for name in FIELDS:
        out[name] = Effective(None, "")
        for source in ("mailbox", "domain", "server"):
            row = rows.get(source)
            if row is not None and getattr(row, name) is not None:
                out[name] = Effective(getattr(row, name), source)
                break
    return out


def effective(domain: MailDomain, account: MailAccount | None = None) -> dict[str, Effective]:
    """What applies to a mailbox (or, without one, to the domain's local
    submissions and its mailboxes without their own limits)."""
    rows = {"server": stored(), "domain": stored(domain=domain)}
    if account is not None:
        rows["mailbox"] = stored(account=account)
    return _resolve(rows)


def domain_rows(domain: MailDomain) -> list[dict]:
    """The domain (its local submissions, key "*") and each mailbox: its own
    limits and what applies, in three queries."""
    server, own = stored(), stored(domain=domain)
    by_account = {row.account_id: row for row in SendLimit.objects.filter(account__domain=domain)}
    rows = [{"key": "*", "account": None, "own": own,
             "effective": _resolve({"server": server, "domain": own})}]
    for account in domain.accounts.order_by("local_part"):
        mine = by_account.get(account.pk)
        rows.append({
            "key": account.local_part,
            "account": account,
            "own": mine,
            "effective": _resolve({"server": server, "domain": own, "mailbox": mine}),
        })
    return rows


def overrides() -> list[dict]:
    """Every domain or mailbox with limits of its own (for the admin's list)."""
    rows = []
    for row in SendLimit.objects.exclude(domain=None, account=None).select_related(
        "domain", "account", "account__domain"
    ):
        if row.account_id:
            scope, domain = f"{row.account.local_part}@{row.account.domain.name}", row.account.domain
        else:
            scope, domain = row.domain.name, row.domain
        rows.append({"scope": scope, "domain": domain, **{name: getattr(row, name) for name in FIELDS}})
    return sorted(rows, key=lambda r: r["scope"])


def _limits(row: dict | None) -> snap.SendLimits:
    if row is None:
        return snap.SendLimits()
    return snap.SendLimits(per_hour=row["per_hour"], per_day=row["per_day"], recipients=row["recipients"])


@dataclass
class SendingSnapshot:
    """What build_snapshot needs from this module, in three queries."""

    server: snap.SendLimits = field(default_factory=snap.SendLimits)
    by_domain: dict[int, snap.SendLimits] = field(default_factory=dict)
    by_account: dict[int, snap.SendLimits] = field(default_factory=dict)
    held: dict[int, tuple[str, ...]] = field(default_factory=dict)  # domain id → held local parts

    def domain(self, domain_id: int) -> snap.SendLimits:
        return self.by_domain.get(domain_id, snap.SendLimits())

    def account(self, account_id: int) -> snap.SendLimits:
        return self.by_account.get(account_id, snap.SendLimits())


def sending_snapshot(only_domains=None) -> SendingSnapshot:
    values = ("domain_id", "account_id", "per_hour", "per_day", "recipients")
    limits = SendLimit.objects.values(*values)
    holds = SendHold.objects.values_list("domain_id", "local_part")
    if only_domains is not None:
        names = sorted(only_domains)
        limits = limits.filter(
            Q(domain__name__in=names) | Q(account__domain__name__in=names)
            | Q(domain__isnull=True, account__isnull=True)
        )
        holds = holds.filter(domain__name__in=names)
    out = SendingSnapshot()
    for row in limits:
        if row["account_id"] is not None:
            out.by_account[row["account_id"]] = _limits(row)
        elif row["domain_id"] is not None:
            out.by_domain[row["domain_id"]] = _limits(row)
        else:
            out.server = _limits(row)
    held: dict[int, list[str]] = {}
    for domain_id, local_part in holds:
        held.setdefault(domain_id, []).append(local_part)
    out.held = {domain_id: tuple(sorted(parts)) for domain_id, parts in held.items()}
    return out
