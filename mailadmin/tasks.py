"""Background tasks (django.tasks). Thin: claim the job, call one service."""

from django.tasks import task

from .services import apply


@task()
def apply_config(job_id: int) -> None:
    apply.run_apply_job(job_id)


@task()
def install_snappymail(job_id: int, source: str = "", sha256: str = "") -> None:
    from .services import snappymail

    snappymail.run_install_job(job_id, source, sha256)
