"""Run what a queue's db_worker would run, inside a test's transaction.

django_tasks_db's Worker.run() closes "old" database connections between
tasks, which would end a test's transaction; so this claims each ready task
of one queue and hands it to the library's own Worker.run_task, the same call
the worker makes. Tasks are enqueued on commit: post inside
`django_capture_on_commit_callbacks(execute=True)`."""

from django_tasks_db.management.commands.db_worker import Worker
from django_tasks_db.models import DBTaskResult


def run_queue(queue: str) -> list[str]:
    """Runs every ready task of `queue`; returns their task paths, in order."""
    worker = Worker(
        queue_names=[queue], interval=0, batch=True, backend_name="default", startup_delay=False,
        max_tasks=None, worker_id=f"test-{queue}", excluded_queue_names=[],
    )
    ran = []
    while (row := DBTaskResult.objects.ready().filter(queue_name=queue).first()) is not None:
        row.claim(worker.worker_id)
        worker.run_task(row)
        ran.append(row.task_path)
    return ran


def queued() -> list[tuple[str, str]]:
    """(queue, task path) of every task not yet run."""
    return list(DBTaskResult.objects.ready().values_list("queue_name", "task_path"))
