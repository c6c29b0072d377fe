"""Domain ownership: a customer's new domain stays pending (left out of the
mail config) until the TXT record `_mailpanel-verify.<domain>` carries its
token. Checked by the "Verify" button and periodically (`mail domain
verify-pending`, run by a systemd timer), through the panel's DNS client with
the resolvers from settings; the same record is in the DNS records list, so
"Check now" shows it too."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.translation import gettext as _

from ..checks import dns as dnscheck
from ..dnsrecords import ownership_record
from ..models import MailDomain, acts_as_admin, is_admin
from . import audit, jobs
from .dns_checks import check_record_sets
from .domains import claim_problem

logger = logging.getLogger(__name__)


@dataclass
class VerifyOutcome:
    domain: MailDomain
    verified: bool
    verdict: dnscheck.Verdict | None = None  # None when no lookup was needed
    problem: str = ""  # why it was not verified, in words for the person


def lookup(domains) -> dict[int, dnscheck.Verdict]:
    """The ownership record of each pending domain, looked up concurrently."""
    work = [(d.pk, [ownership_record(d.name, d.verify_token)]) for d in domains if d.pending]
    return {pk: verdicts[0] for pk, verdicts in check_record_sets(work).items()}


def mark_verified(actor, domain: MailDomain, *, check_rules: bool = True) -> MailDomain:
    """The domain goes live: rendered by the next apply. The customer rules are
    checked again (a new admin address or hostname since it was added) unless
    an admin approves it by hand."""
    if not domain.pending:
        return domain
    if check_rules and not is_admin(domain.owner):
        if problem := claim_problem(domain.owner, domain.name, exclude_pk=domain.pk):
            raise ValidationError(problem)
    with transaction.atomic():
        updated = MailDomain.objects.filter(pk=domain.pk, pending=True).update(pending=False)
        if not updated:
            return domain
        domain.pending = False
        audit.record(actor, "domain.verify", domain.name, ["pending"])
        # A send-only domain is listed in a server-wide file.
        jobs.request_apply(actor, domain=domain, whole_server=domain.hosted_elsewhere)
    return domain


def verify_domain(actor, domain: MailDomain, *, skip_dns: bool = False) -> VerifyOutcome:
    """Look the record up now; verify when it is there. Admins may skip the lookup."""
    if not domain.pending:
        return VerifyOutcome(domain, True)
    if skip_dns and not acts_as_admin(actor):
        raise ValidationError(_("Only an administrator can verify a domain without its DNS record."))
    verdict = None
    if not skip_dns:
        verdict = lookup([domain])[domain.pk]
        if verdict.status != dnscheck.OK:
            return VerifyOutcome(domain, False, verdict, verdict.fix)
    try:
        mark_verified(actor, domain, check_rules=not skip_dns)
    except ValidationError as exc:
        return VerifyOutcome(domain, False, verdict, " ".join(exc.messages))
    return VerifyOutcome(domain, True, verdict)


def verify_pending(actor=None) -> dict[str, int]:
    """The periodic job: every pending domain whose record is now published goes live."""
    domains = list(MailDomain.objects.filter(pending=True).select_related("owner").order_by("name"))
    verdicts = lookup(domains)
    counts = {"pending": len(domains), "verified": 0, "refused": 0}
    for domain in domains:
        if verdicts[domain.pk].status != dnscheck.OK:
            continue
        try:
            mark_verified(actor, domain)
        except ValidationError as exc:
            counts["refused"] += 1
            logger.warning("pending domain %s has its record but may not go live: %s", domain.name, exc.messages)
        else:
            counts["verified"] += 1
    return counts
