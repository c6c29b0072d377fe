"""DMARC aggregate reports for the owner: where they go, reading them, what
the page shows.

The owner picks a local part; the panel makes that mailbox with a random
password it keeps encrypted (DmarcMailbox) and nobody else knows, and the
DMARC record we suggest gets rua=mailto:<it> (dnsrecords). A periodic job
(`mail dmarc read`, its systemd timer) logs in over IMAP
(mailadmin.dmarc_mailbox), parses each new mail (mailadmin.dmarc_reports:
hostile until parsed) and stores one row per source IP and outcome. Each
source is marked as this server, its relay, or other — the ones to look at.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Case, IntegerField, Sum, When
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from .. import dmarc_reports as dr
from ..dmarc_mailbox import MailboxError, ReportsMailbox
from ..models import (
    Job,
    DmarcMailbox,
    DmarcReport,
    DmarcRow,
    JobKind,
    MailAccount,
    MailAlias,
    MailDomain,
    RelaySettings,
    ServerSettings,
)
from . import accounts, audit, jobs
from .outcome import Change
from .dns_checks import addresses_of, all_nodes_ips

logger = logging.getLogger(__name__)

QUOTA_MB = 200  # reports are small; a flood fills this, not the disk
MAILS_PER_RUN = 200  # per domain; the next run takes the rest
SERVER, RELAY, OTHER = "server", "relay", "other"


# --- where the reports go ------------------------------------------------------------


def set_mailbox(actor, domain: MailDomain, local_part: str) -> Change[DmarcMailbox]:
    """Reports go to <local_part>@<domain>, a mailbox the panel makes for them.
    Choosing the current one again gives it a new password (if someone
    changed it, reading starts working again)."""
    if domain.hosted_elsewhere:
        raise ValidationError(
            {"local_part": _("Mail for this domain is hosted elsewhere: reports cannot be delivered here.")}
        )
    local = accounts.normalize_local_part(local_part)
    current = DmarcMailbox.objects.filter(domain=domain).select_related("account").first()
    password = secrets.token_urlsafe(32)
    if current is not None and current.account.local_part == local:
        change = accounts.set_password(actor, current.account, password)
        current.password, current.problem = password, ""
        current.save(update_fields=["password", "problem"])
        audit.record(actor, "dmarc.mailbox", domain.name, ["password"])
        return Change(current, change.job, ("password",))
    taken = (MailAccount.objects.filter(domain=domain, local_part=local).exists()
             or MailAlias.objects.filter(domain=domain, local_part=local).exists())
    if taken:
        raise ValidationError(
            {"local_part": _(
                "%(address)s is already a mailbox or alias. Choose a new name: the panel makes the "
                "reports mailbox itself, and only the panel reads it."
            ) % {"address": f"{local}@{domain.unicode_name}"}}
        )
    with transaction.atomic():
        if current is not None:
            accounts.delete_account(actor, current.account)  # its DmarcMailbox goes with it
        change = accounts.add_account(actor, domain, local, password, quota_mb=QUOTA_MB)
        mailbox = DmarcMailbox.objects.create(domain=domain, account=change.object, password=password)
        audit.record(actor, "dmarc.mailbox", domain.name, ["account", "password"])
    return Change(mailbox, change.job, ("account", "password"))


def clear_mailbox(actor, domain: MailDomain) -> Change[None]:
    """No more reports: the mailbox goes (the reports read stay)."""
    current = DmarcMailbox.objects.filter(domain=domain).select_related("account").first()
    if current is None:
        raise ValidationError(_("Reports are not being collected for this domain."))
    with transaction.atomic():
        change = accounts.delete_account(actor, current.account)
        audit.record(actor, "dmarc.clear", domain.name, ["account"])
    return Change(None, change.job, ("account",))


# --- reading ---------------------------------------------------------------------------


@dataclass
class ReadOutcome:
    mails: int = 0
    reports: int = 0
    duplicates: int = 0
    refused: list[str] = field(default_factory=list)
    error: str = ""  # the mailbox could not be read at all


def imap_address() -> tuple[str, int]:
    host, _sep, port = settings.MAILPANEL_DMARC_IMAP.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port or 143)


def known_sources(domain: MailDomain) -> dict[str, str]:
    """{address: SERVER | RELAY} for this server and the relay the domain's mail leaves through."""
    relay = RelaySettings.objects.filter(domain=domain).first() or RelaySettings.objects.filter(domain=None).first()
    known = {}
    if relay is not None:
        known.update(dict.fromkeys(addresses_of([relay.host]), RELAY))
    known.update(dict.fromkeys(all_nodes_ips(ServerSettings.load_public()), SERVER))
    return {str(ipaddress.ip_address(ip)): kind for ip, kind in known.items()}


def covers(policy_domain: str, name: str) -> bool:
    return policy_domain == name or policy_domain.endswith("." + name)


def store(domain: MailDomain, report: dr.AggregateReport, known: dict[str, str]) -> bool:
    """False when this report (org, id) was stored before."""
    try:
        with transaction.atomic():
            row, created = DmarcReport.objects.get_or_create(
                domain=domain, org_name=report.org_name, report_id=report.report_id,
                defaults={"begin": report.begin, "end": report.end},
            )
            if not created:
                return False
            DmarcRow.objects.bulk_create(
                [
                    DmarcRow(
                        report=row, domain=domain, day=report.day, source_ip=r.source_ip,
                        source=known.get(r.source_ip, OTHER), count=r.count, disposition=r.disposition,
                        dkim_aligned=r.dkim_aligned, spf_aligned=r.spf_aligned,
                    )
                    for r in report.rows
                ],
                batch_size=1000,
            )
    except IntegrityError:  # the same report stored by a parallel run
        return False
    return True


def read_domain(domain: MailDomain, log, now=None) -> ReadOutcome:
    """Every unread mail of the domain's reports mailbox; the outcome goes
    to the job log line by line and, summed up, to the owner's page."""
    mailbox = domain.dmarc_mailbox
    address = f"{mailbox.account.local_part}@{domain.name}"
    outcome, known = ReadOutcome(), None
    host, port = imap_address()
    try:
        with ReportsMailbox(host, port, address, mailbox.password, settings.MAILPANEL_DMARC_IMAP_TIMEOUT) as box:
            for uid in box.unread(MAILS_PER_RUN):
                outcome.mails += 1
                fetched = box.fetch(uid, dr.MAX_MESSAGE_BYTES)
                if fetched.raw is None:  # not fetched at all
                    reports = []
                    problems = [_("the mail is larger than %(mb)d MB") % {"mb": dr.MAX_MESSAGE_BYTES // 2**20}]
                else:
                    reports, problems = dr.read_message(fetched.raw)
                for report in reports:
                    if not covers(report.policy_domain, domain.name):
                        problems.append(_("the report is about %(other)s, not %(name)s") % {"other": report.policy_domain, "name": domain.name})
                        continue
                    if known is None:
                        known = known_sources(domain)
                    if store(domain, report, known):
                        outcome.reports += 1
                        log(f"{address}: report {report.org_name} {report.report_id}: {len(report.rows)} rows")
                    else:
                        outcome.duplicates += 1
                        log(f"{address}: report {report.org_name} {report.report_id} was read before")
                for problem in problems:
                    log(f"{address}: mail {uid.decode()} refused: {problem}")
                outcome.refused += problems
                if problems:
                    box.refused(uid)
                else:
                    box.done(uid)
    except MailboxError as exc:
        outcome.error = str(exc)
        log(f"{address}: {exc}")
    _note(mailbox, outcome, now or timezone.now())
    return outcome


def _note(mailbox: DmarcMailbox, outcome: ReadOutcome, now) -> None:
    """What the owner's page says about the last read."""
    if outcome.error:
        problem = _("The reports mailbox could not be read: %(why)s") % {"why": outcome.error}
    elif outcome.refused:
        problem = ngettext(
            "%(n)d report could not be read: %(why)s", "%(n)d reports could not be read; the first: %(why)s",
            len(outcome.refused),
        ) % {"n": len(outcome.refused), "why": outcome.refused[0]}
    else:
        problem = ""
    mailbox.read_at, mailbox.problem = now, problem[:300]
    mailbox.save(update_fields=["read_at", "problem"])


def read_reports(actor=None, domains=None, echo=None) -> Job:
    """Read now, as a job in the job log (the CLI and its timer call this)."""
    job = Job.objects.create(
        kind=JobKind.DMARC_REPORTS,
        requested_by=actor if getattr(actor, "pk", None) else None,
        domain=domains[0] if domains and len(domains) == 1 else None,
    )

    def work(job, log):
        chosen = DmarcMailbox.objects.select_related("domain", "account").order_by("domain__name")
        if domains is not None:
            chosen = chosen.filter(domain__in=domains)
        totals = {"mailboxes": 0, "mails": 0, "reports": 0, "duplicates": 0, "refused": 0, "errors": 0}
        for mailbox in chosen:
            domain = mailbox.domain
            domain.dmarc_mailbox = mailbox
            outcome = read_domain(domain, log)
            totals["mailboxes"] += 1
            totals["mails"] += outcome.mails
            totals["reports"] += outcome.reports
            totals["duplicates"] += outcome.duplicates
            totals["refused"] += len(outcome.refused)
            totals["errors"] += bool(outcome.error)
        log(", ".join(f"{key} {value}" for key, value in totals.items()))
        return totals

    return jobs.run_job(job.pk, work, echo=echo, crash_detail=False)


# --- what the page shows -----------------------------------------------------------------


def _messages_where(**condition):
    return Sum(Case(When(then="count", **condition), default=0, output_field=IntegerField()))


def source_rows(domain: MailDomain, days: int = 31, limit: int = 200, today=None) -> list[dict]:
    """Per day and source IP: messages, how many were DKIM- and SPF-aligned,
    and what receivers did with them; the newest day first."""
    since = (today or timezone.now().date()) - timedelta(days=days)
    rows = (
        DmarcRow.objects.filter(domain=domain, day__gte=since)
        .values("day", "source_ip", "source")
        .annotate(
            messages=Sum("count"),
            dkim=_messages_where(dkim_aligned=True),
            spf=_messages_where(spf_aligned=True),
            quarantined=_messages_where(disposition="quarantine"),
            rejected=_messages_where(disposition="reject"),
        )
        .order_by("-day", "-messages", "source_ip")[:limit]
    )
    return [{**row, "delivered": row["messages"] - row["quarantined"] - row["rejected"]} for row in rows]
