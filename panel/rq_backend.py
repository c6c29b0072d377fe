"""The task backend for MAILPANEL_TASK_BACKEND=rq: django-tasks-rq, with the
node-<name> queues (panel/rq.py) besides the listed ones."""

from dataclasses import replace

from django_tasks_rq.backend import RQBackend

from panel.rq import NODE_QUEUE


class NodeRQBackend(RQBackend):
    def validate_task(self, task) -> None:
        if NODE_QUEUE.fullmatch(task.queue_name):
            task = replace(task, queue_name="default")  # checked as a listed queue
        super().validate_task(task)
