"""Enqueue background jobs. Quick successive edits coalesce into one apply:
while an apply job is still pending, later edits reuse it (the worker renders
whatever the database holds when the job starts)."""

from django.db import transaction

from ..models import ApplyJob, JobKind, JobState


def request_apply(actor=None, domain=None, *, domain_name=None, whole_server=False) -> ApplyJob:
    """A change to one domain's own files (relay, accounts, DKIM, a new or deleted
    domain) applies only that domain's folder; anything else, or whole_server=True
    (a flag that lands in a server-wide file), applies everything."""
    name = domain_name or (domain.name if domain is not None else None)
    scope = None if whole_server or name is None else [name]
    with transaction.atomic():
        job = (
            ApplyJob.objects.select_for_update()
            .filter(kind=JobKind.APPLY, state=JobState.PENDING)
            .order_by("id")
            .first()
        )
        if job is not None:
            merged = None if job.scope is None or scope is None else sorted({*job.scope, *scope})
            if merged != job.scope:
                job.scope = merged
                job.save(update_fields=["scope"])
            return job
        job = ApplyJob.objects.create(
            kind=JobKind.APPLY,
            requested_by=actor if getattr(actor, "pk", None) else None,
            domain=domain,
            scope=scope,
        )
    _enqueue_on_commit("mailadmin.tasks.apply_config", job.pk)
    return job


def start_job(kind: str, actor=None, domain=None, task_path: str = "", **task_kwargs) -> ApplyJob:
    """A one-off background job (installs, slow checks): never coalesced."""
    job = ApplyJob.objects.create(
        kind=kind, requested_by=actor if getattr(actor, "pk", None) else None, domain=domain
    )
    _enqueue_on_commit(task_path, job.pk, **task_kwargs)
    return job


def _enqueue_on_commit(task_path: str, job_id: int, **kwargs):
    from django.utils.module_loading import import_string

    def enqueue():
        import_string(task_path).enqueue(job_id, **kwargs)

    transaction.on_commit(enqueue)
