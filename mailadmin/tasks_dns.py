"""Background jobs for the slow checks (DNS of many domains, diagnostics,
the relay test), all on the "checks" queue: its own worker serves it, so an
apply (queue "default") never waits behind them.

Started with jobs.start_job(JobKind.DNS_CHECK | JobKind.DIAGNOSE, actor, domain,
"mailadmin.tasks_dns.<task>", ...). Progress lines go to Job.log as they
come, so the page's job partial (templates/mailadmin/_job.html) shows them live;
the outcome goes to Job.result for the diagnostics page to render."""

import contextlib
import logging

from django.tasks import task
from django.utils import translation

from .models import MailDomain
from .services import certificates, dns_checks, jobs, relay_test as relay_test_service
from .services.user_checks import QUEUE

logger = logging.getLogger(__name__)


def _run_job(job_id: int, work) -> None:
    # Check errors may quote a DNSBL zone, which can carry the DQS key.
    jobs.run_job(job_id, lambda job, log: work(job, log.extend), crash_detail=False)


def run_dns_check_job(job_id: int, domain_ids=None) -> None:
    def work(job, progress):
        domains = MailDomain.objects.select_related("dmarc_mailbox__account", "owner").order_by("name")
        if domain_ids is not None:
            domains = domains.filter(pk__in=domain_ids)
        results = dns_checks.check_domains(list(domains), on_progress=progress)
        counts: dict[str, int] = {}
        for row in results.values():
            counts[row.summary] = counts.get(row.summary, 0) + 1
        progress([f"checked {len(results)} domains: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))])
        return {"checked": len(results), "summaries": counts}

    _run_job(job_id, work)


def run_diagnose_job(job_id: int, what: str = "server", domain_id: int | None = None, connect: bool = False) -> None:
    def work(job, progress):
        if what == "domain":
            domain = MailDomain.objects.get(pk=domain_id)
            return {"what": "domain", "domain": dns_checks.diagnose_domain(domain, connect, progress)}
        return {"what": "server", "server": dns_checks.server_diagnostics(progress)}

    _run_job(job_id, work)


# `language`: the page's language when the check was started (user_checks.start_check),
# so verdicts and fixes read as they would have in the request.


@task(queue_name=QUEUE)
def dns_check(job_id: int, domain_ids: list[int] | None = None, language: str = "") -> None:
    with _language(language):
        run_dns_check_job(job_id, domain_ids)


@task(queue_name=QUEUE)
def diagnose(
    job_id: int, what: str = "server", domain_id: int | None = None, connect: bool = False, language: str = ""
) -> None:
    with _language(language):
        run_diagnose_job(job_id, what, domain_id, connect)


@task(queue_name=QUEUE)
def relay_test(job_id: int, language: str = "") -> None:
    with _language(language):
        relay_test_service.run_relay_test_job(job_id)


@task(queue_name=QUEUE)
def order_certificate(job_id: int, force: bool = False, language: str = "") -> None:
    """One server: a domain's certificate ordered from its page (the
    checks queue, like the other network actions customers start)."""
    with _language(language):
        certificates.run_order_job(job_id, force)


def _language(language: str):
    return translation.override(language) if language else contextlib.nullcontext()
