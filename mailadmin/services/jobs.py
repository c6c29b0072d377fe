"""Enqueue background jobs. Quick successive edits coalesce into one apply:
while an apply job is still pending, later edits reuse it (the worker renders
whatever the database holds when the job starts)."""

from django.db import transaction

from ..models import ApplyJob, JobKind, JobState


def request_apply(actor=None, domain=None) -> ApplyJob:
    with transaction.atomic():
        job = (
            ApplyJob.objects.select_for_update()
            .filter(kind=JobKind.APPLY, state=JobState.PENDING)
            .order_by("id")
            .first()
        )
        if job is not None:
            return job
        job = ApplyJob.objects.create(
            kind=JobKind.APPLY,
            requested_by=actor if getattr(actor, "pk", None) else None,
            domain=domain,
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
