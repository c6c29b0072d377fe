"""DKIM key rotation: a guided flow in which no signature ever breaks.

1. ``start_rotation``: the next key is made under a new selector and waits;
   nothing signs with it. The records list shows its record beside the
   current one.
2. ``advance``: the panel's DNS client (the resolvers from settings) looks
   the next record up; only when it is there does signing switch (an apply
   writes the domain's dkim.pem and dkim_selector). The old public key stays
   in the records list for the grace period (ServerSettings.dkim_grace_days),
   for mail signed with it that receivers have not checked yet.
3. ``advance`` after the grace: the old public key is forgotten and the page
   says which record to delete; ``dismiss_retired`` once it is gone.

The state lives in the domain's fields, so the flow resumes wherever it
stopped: the page's button, ``mail dkim advance`` and its timer all call
``advance``. Time comes in as ``now`` (tests set the clock; nothing sleeps).
Receivers look keys up by the selector in each signature, so two keys under
two selectors never confuse them; one selector re-used for a new key would.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext as _

from .. import dkim
from ..checks import dns as dnscheck
from ..dnsrecords import REQUIRED, Record, dkim_value
from ..models import MailDomain, ServerSettings
from . import audit, jobs
from .dns_checks import check_record_sets

logger = logging.getLogger(__name__)

OFF, SIGNING, WAITING_DNS, GRACE = "off", "signing", "waiting_dns", "grace"


# --- the state, as the page, the CLI and --json see it -----------------------------


@dataclass
class DkimStatus:
    state: str  # off | signing | waiting_dns | grace
    selector: str
    bits: int | None
    created_at: datetime | None
    age_days: int | None
    too_old: bool
    max_age_months: int
    grace_days: int
    next_selector: str = ""
    next_bits: int | None = None
    next_created_at: datetime | None = None
    old_selector: str = ""
    old_until: datetime | None = None
    # The grace is over: this record should be deleted (the owner dismisses it).
    retired_record: str = ""
    records: list[Record] = field(default_factory=list)

    def as_dict(self) -> dict:
        data = asdict(self)
        data["records"] = [r.as_dict() for r in self.records]
        for key in ("created_at", "next_created_at", "old_until"):
            data[key] = data[key].isoformat() if data[key] else None
        return data


def _add_months(when: datetime, months: int) -> datetime:
    month = when.month - 1 + months
    year, month = when.year + month // 12, month % 12 + 1
    for day in (when.day, 30, 29, 28):  # the 31st of a shorter month: its last day
        try:
            return when.replace(year=year, month=month, day=day)
        except ValueError:
            continue
    raise AssertionError("unreachable")


def too_old(created_at: datetime | None, max_age_months: int, now: datetime) -> bool:
    return bool(created_at and max_age_months and _add_months(created_at, max_age_months) <= now)


def _record(domain: MailDomain, selector: str, public_key: str, purpose: str) -> Record:
    return Record(f"{selector}._domainkey.{domain.name}", "TXT", dkim_value(public_key), purpose, REQUIRED, "")


def next_record(domain: MailDomain) -> Record:
    return _record(domain, domain.dkim_pending_selector, dkim.public_key_b64(domain.dkim_pending_private_key), "dkim_next")


def status(domain: MailDomain, now: datetime | None = None, server: ServerSettings | None = None) -> DkimStatus:
    now = now or timezone.now()
    server = server or ServerSettings.load_public()
    on = bool(domain.dkim_enabled and domain.dkim_private_key)
    out = DkimStatus(
        state=OFF,
        selector=domain.dkim_selector,
        bits=dkim.key_bits(domain.dkim_private_key) if domain.dkim_private_key else None,
        created_at=domain.dkim_created_at,
        age_days=(now - domain.dkim_created_at).days if domain.dkim_created_at else None,
        too_old=on and too_old(domain.dkim_created_at, server.dkim_max_age_months, now),
        max_age_months=server.dkim_max_age_months,
        grace_days=server.dkim_grace_days,
    )
    if domain.dkim_old_selector and not domain.dkim_old_public_key:
        out.retired_record = f"{domain.dkim_old_selector}._domainkey.{domain.name}"
    if not on:
        return out
    out.state = SIGNING
    out.records.append(_record(domain, domain.dkim_selector, dkim.public_key_b64(domain.dkim_private_key), "dkim"))
    if domain.dkim_old_public_key:
        out.state = GRACE
        out.old_selector, out.old_until = domain.dkim_old_selector, domain.dkim_old_until
        out.records.append(_record(domain, domain.dkim_old_selector, domain.dkim_old_public_key, "dkim_old"))
    if domain.dkim_pending_private_key:
        out.state = WAITING_DNS
        out.next_selector = domain.dkim_pending_selector
        out.next_bits = dkim.key_bits(domain.dkim_pending_private_key)
        out.next_created_at = domain.dkim_pending_created_at
        out.records.append(next_record(domain))
    return out


KEY_TOO_OLD = "old"  # a diagnostics status: a warning, not a broken record


def key_age_check(domain: MailDomain, now=None) -> dict | None:
    """The diagnostics row for a signing key older than the admin's limit."""
    current = status(domain, now)
    if not current.too_old:
        return None
    return {
        "name": f"{current.selector}._domainkey.{domain.name}",
        "type": "TXT",
        "purpose": "dkim_age",
        "level": "recommended",
        "status": KEY_TOO_OLD,
        "expected": "",
        "found": [],
        "fix": _("Rotate the key on the domain page (DKIM key) or with `mail dkim rotate %(name)s`.")
        % {"name": domain.name},
        "detail": _("The DKIM key is %(days)d days old, older than %(months)d months.")
        % {"days": current.age_days, "months": current.max_age_months},
        "cloudflare": False,
    }


# --- step 1: the next key ----------------------------------------------------------


def start_rotation(actor, domain: MailDomain, selector: str = "", bits: int = dkim.KEY_BITS, now=None) -> DkimStatus:
    """Make the next key under `selector` ("" = a dated one). Nothing signs
    with it until advance() sees its record."""
    now = now or timezone.now()
    if not (domain.dkim_enabled and domain.dkim_private_key):
        raise ValidationError(_("DKIM signing is off for this domain: turn it on first."))
    if domain.dkim_pending_private_key:
        raise ValidationError(
            _("A rotation is already under way (selector %(selector)s): finish or cancel it first.")
            % {"selector": domain.dkim_pending_selector}
        )
    if domain.dkim_old_public_key:
        raise ValidationError(
            _("The previous key (selector %(selector)s) is still published until %(date)s; rotate again after that.")
            % {"selector": domain.dkim_old_selector, "date": f"{domain.dkim_old_until:%Y-%m-%d %H:%M} UTC"}
        )
    taken = {domain.dkim_selector, domain.dkim_old_selector}
    selector = selector.strip().lower() or dkim.next_selector(now, taken)
    if not dkim.is_selector(selector):
        raise ValidationError(
            {"selector": _("A selector is one DNS label: letters a–z, digits and “-” (not first or last), at most 63.")}
        )
    if selector in taken:
        raise ValidationError(
            {"selector": _("The selector %(selector)s is or was in use: receivers may still hold its old key. Choose another.")
             % {"selector": selector}}
        )
    if bits not in dkim.KEY_SIZES:
        raise ValidationError({"bits": _("Choose a key size of 1024, 2048 or 4096 bits.")})
    pem = dkim.generate_private_pem(bits)
    with transaction.atomic():
        locked = MailDomain.objects.select_for_update().get(pk=domain.pk)
        if locked.dkim_pending_private_key:  # another request was quicker
            raise ValidationError(_("A rotation is already under way: reload the page."))
        domain.dkim_pending_private_key, domain.dkim_pending_selector = pem, selector
        domain.dkim_pending_created_at = now
        domain.save(update_fields=["dkim_pending_private_key", "dkim_pending_selector", "dkim_pending_created_at", "updated_at"])
        audit.record(actor, "dkim.rotate", domain.name, ["dkim_pending_private_key", "dkim_pending_selector"])
    return status(domain, now)


def cancel_rotation(actor, domain: MailDomain) -> DkimStatus:
    if not domain.dkim_pending_private_key:
        raise ValidationError(_("There is no rotation under way."))
    domain.dkim_pending_private_key, domain.dkim_pending_selector, domain.dkim_pending_created_at = "", "", None
    domain.save(update_fields=["dkim_pending_private_key", "dkim_pending_selector", "dkim_pending_created_at", "updated_at"])
    audit.record(actor, "dkim.cancel", domain.name, ["dkim_pending_private_key", "dkim_pending_selector"])
    return status(domain)


def dismiss_retired(actor, domain: MailDomain) -> DkimStatus:
    """The owner deleted the retired key's record: stop asking them to."""
    if domain.dkim_old_public_key or not domain.dkim_old_selector:
        raise ValidationError(_("There is no retired key to forget."))
    domain.dkim_old_selector, domain.dkim_old_until = "", None
    domain.save(update_fields=["dkim_old_selector", "dkim_old_until", "updated_at"])
    audit.record(actor, "dkim.dismiss", domain.name, ["dkim_old_selector"])
    return status(domain)


# --- steps 2 and 3: switch when the record is seen, retire after the grace ----------


@dataclass
class AdvanceOutcome:
    domain: MailDomain
    status: DkimStatus
    switched: bool = False
    retired: bool = False
    verdict: dnscheck.Verdict | None = None  # the next record's lookup, when one ran


def lookup_next_records(domains) -> dict[int, dnscheck.Verdict]:
    """The next key's record of each domain in a rotation, concurrently."""
    work = [(d.pk, [next_record(d)]) for d in domains if d.dkim_pending_private_key]
    return {pk: verdicts[0] for pk, verdicts in check_record_sets(work).items()}


def advance(actor, domain: MailDomain, now=None, verdict: dnscheck.Verdict | None = None) -> AdvanceOutcome:
    """One step, if its time has come. `verdict`: the next record's lookup
    when the caller made it (advance_all looks many up at once)."""
    now = now or timezone.now()
    outcome = AdvanceOutcome(domain, status(domain, now))
    if domain.dkim_old_public_key and domain.dkim_old_until and domain.dkim_old_until <= now:
        outcome.retired = _retire(actor, domain)
    if domain.dkim_pending_private_key and domain.dkim_enabled:
        if verdict is None:
            verdict = lookup_next_records([domain])[domain.pk]
        outcome.verdict = verdict
        if verdict.status == dnscheck.OK:
            outcome.switched = _switch(actor, domain, now)
    outcome.status = status(domain, now)
    return outcome


def advance_all(actor=None, now=None) -> dict[str, int]:
    """The periodic job: every domain with a step due."""
    now = now or timezone.now()
    due = list(
        MailDomain.objects.filter(dkim_enabled=True)
        .filter(Q(dkim_pending_selector__gt="") | Q(dkim_old_public_key__gt="", dkim_old_until__lte=now))
        .order_by("name")
    )
    verdicts = lookup_next_records(due)
    counts = {"in_rotation": len(due), "switched": 0, "retired": 0}
    for domain in due:
        outcome = advance(actor, domain, now, verdicts.get(domain.pk))
        counts["switched"] += outcome.switched
        counts["retired"] += outcome.retired
    return counts


def _switch(actor, domain: MailDomain, now) -> bool:
    """The next key signs from the next apply on; the old public key stays
    published until now + the grace period."""
    grace = timedelta(days=ServerSettings.load_public().dkim_grace_days)
    with transaction.atomic():
        locked = MailDomain.objects.select_for_update().get(pk=domain.pk)
        if locked.dkim_pending_selector != domain.dkim_pending_selector or not locked.dkim_pending_private_key:
            return False  # switched (or cancelled) by another run meanwhile
        domain.dkim_old_selector = locked.dkim_selector
        domain.dkim_old_public_key = dkim.public_key_b64(locked.dkim_private_key)
        domain.dkim_old_until = now + grace
        domain.dkim_private_key, domain.dkim_selector = locked.dkim_pending_private_key, locked.dkim_pending_selector
        domain.dkim_created_at = locked.dkim_pending_created_at or now
        domain.dkim_pending_private_key, domain.dkim_pending_selector, domain.dkim_pending_created_at = "", "", None
        fields = ["dkim_private_key", "dkim_selector", "dkim_created_at", "dkim_old_selector",
                  "dkim_old_public_key", "dkim_old_until", "dkim_pending_private_key",
                  "dkim_pending_selector", "dkim_pending_created_at"]
        domain.save(update_fields=[*fields, "updated_at"])
        audit.record(actor, "dkim.switch", domain.name, ["dkim_private_key", "dkim_selector"])
        jobs.request_apply(actor, domain=domain)
    logger.info("DKIM of %s now signs with selector %s", domain.name, domain.dkim_selector)
    return True


def _retire(actor, domain: MailDomain) -> bool:
    """The grace is over: the old public key leaves the records list; its
    selector stays until the owner has deleted the record."""
    updated = MailDomain.objects.filter(pk=domain.pk, dkim_old_selector=domain.dkim_old_selector).exclude(
        dkim_old_public_key=""
    ).update(dkim_old_public_key="")
    domain.dkim_old_public_key = ""
    if updated:
        audit.record(actor, "dkim.retire", domain.name, ["dkim_old_public_key"])
    return bool(updated)


# --- the admin's policy --------------------------------------------------------------

MAX_GRACE_DAYS = 365
MAX_AGE_MONTHS = 120


def set_policy(actor, grace_days: int, max_age_months: int) -> ServerSettings:
    """How long an old key stays published; when a key counts as too old (0 = never)."""
    errors = {}
    if not 1 <= grace_days <= MAX_GRACE_DAYS:
        errors["dkim_grace_days"] = _("Between 1 and %(most)d days.") % {"most": MAX_GRACE_DAYS}
    if not 0 <= max_age_months <= MAX_AGE_MONTHS:
        errors["dkim_max_age_months"] = _("Between 0 (never warn) and %(most)d months.") % {"most": MAX_AGE_MONTHS}
    if errors:
        raise ValidationError(errors)
    server = ServerSettings.load()
    changed = [
        name for name, value in (("dkim_grace_days", grace_days), ("dkim_max_age_months", max_age_months))
        if getattr(server, name) != value
    ]
    if changed:
        server.dkim_grace_days, server.dkim_max_age_months = grace_days, max_age_months
        server.save(update_fields=[*changed, "updated_at"])
        audit.record(actor, "dkim.policy", "server", changed)
    return server
