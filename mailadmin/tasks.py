"""Background tasks (django.tasks). Thin: each runs one service's job function;
the slow DNS checks live in tasks_dns.py."""

from django.tasks import task

from .services import apply, certificates, domain_move, domains, holds, housekeeping as housekeeping_service, password_reset, snappymail


@task()
def apply_config(job_id: int) -> None:
    apply.run_apply_job(job_id)


@task()
def retire_domain_mail(name: str) -> None:
    """On a deleted domain's node (its queue): its Maildirs moved aside."""
    outcome = domains.retire_mail(None, name)
    if outcome.error:
        raise RuntimeError(outcome.error)


@task()
def issue_certificate(node: str, domain: str = "", force: bool = False, renewal: bool = False,
                      job_id: int | None = None) -> dict:
    """On a node's queue (RQ): the ACME order for one of its domains, or
    (domain "") its own host name, through this machine's helper and webroot.
    job_id: the order started from the domain's page, whose job records it."""
    if job_id is not None:
        job = certificates.run_order_job(job_id, force, node)
        return {"issued": job.state == "done", "waiting": False, "error": certificates.order_error(job)}
    return certificates.issue_on_node(node, domain, force, renewal)


@task()
def domain_move_arrived(move_id: int) -> None:
    """On the new node: it has the moving domain's files; the copy follows."""
    domain_move.arrived(move_id)


@task()
def domain_move_copy(move_id: int, after: str = "") -> None:
    """On the old node: dsync to the new node, then it forwards."""
    domain_move.copy(move_id, after)


@task()
def domain_move_finish(move_id: int, after: str = "") -> None:
    """On the old node, once confirmed: the final copy, then it lets go."""
    domain_move.finish(move_id, after)


@task()
def install_snappymail(job_id: int, source: str = "", sha256: str = "") -> None:
    snappymail.run_install_job(job_id, source, sha256)


@task()
def send_password_reset(email: str, language: str) -> None:
    password_reset.send_reset_mail(email, language)


@task()
def housekeeping() -> dict:
    """Daily (mailpanel-housekeeping.timer runs `manage.py housekeeping`)."""
    deleted = housekeeping_service.prune()
    deleted["deleted mail folders"] = len(housekeeping_service.purge_deleted_mail())
    return deleted


@task()
def finish_hold(job_id: int, hold_id: int, action: str, kick: bool) -> None:
    """A held sender's mail released or deleted (services/holds.py)."""
    holds.run_finish_job(job_id, hold_id, action, kick)
