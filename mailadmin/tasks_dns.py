"""Background jobs for the slow checks (DNS of many domains, diagnostics).

Started with jobs.start_job(JobKind.DNS_CHECK | JobKind.DIAGNOSE, actor, domain,
"mailadmin.tasks_dns.<task>", ...). Progress lines go to ApplyJob.log as they
come, so the page's job partial (templates/mailadmin/_job.html) shows them live;
the outcome goes to ApplyJob.result for the diagnostics page to render."""

import logging

from django.tasks import task

from .models import MailDomain
from .services import dns_checks, jobs

logger = logging.getLogger(__name__)


def _run_job(job_id: int, work) -> None:
    # Check errors may quote a DNSBL zone, which can carry the DQS key.
    jobs.run_job(job_id, lambda job, log: work(job, log.extend), crash_detail=False)


def run_dns_check_job(job_id: int, domain_ids=None) -> None:
    def work(job, progress):
        domains = MailDomain.objects.order_by("name")
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


@task()
def dns_check(job_id: int, domain_ids: list[int] | None = None) -> None:
    run_dns_check_job(job_id, domain_ids)


@task()
def diagnose(job_id: int, what: str = "server", domain_id: int | None = None, connect: bool = False) -> None:
    run_diagnose_job(job_id, what, domain_id, connect)
