"""A mail node's worker (MAILPANEL_TASK_BACKEND=rq): takes the apply jobs of
the queue node-<name> in order, renders only that node's domains and writes
through this machine's helper (MAILPANEL_HELPER, MAILPANEL_ROOT); meanwhile a
heartbeat says the node is alive and puts pending jobs whose enqueue was lost
back on the queue. deploy/systemd/mailpanel-node-worker@.service runs it."""

import os
import threading
from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import close_old_connections, connection

from ...models import MailNode
from ...services import jobs, nodes


class Command(BaseCommand):
    help = "Run a mail node's apply worker (queue node-<name>) with its heartbeat."

    def add_arguments(self, parser):
        parser.add_argument("node", nargs="?", default="", help="the node's name (default: MAILPANEL_NODE)")
        parser.add_argument("--burst", action="store_true", help="stop when the queue is empty")

    def handle(self, *args, **options):
        import django_rq
        from django_tasks_rq.backend import Job
        from rq import SimpleWorker

        if settings.MAILPANEL_TASK_BACKEND != "rq":
            raise CommandError("node_worker needs MAILPANEL_TASK_BACKEND=rq (the database backend runs db_worker)")
        name = options["node"] or settings.MAILPANEL_NODE
        node = MailNode.objects.filter(name=name).first()
        if node is None:
            raise CommandError(f"no mail node {name!r} (mail node add {name or 'NAME'})")

        class NodeWorker(SimpleWorker):
            """Jobs run in this process, one after the other (no fork: the
            database connection is not shared with a child); connections
            past their age are closed between jobs, as Django does between
            requests."""

            def execute_job(self, job, queue):
                close_old_connections()
                try:
                    super().execute_job(job, queue)
                finally:
                    close_old_connections()

        queue = django_rq.get_queue(node.queue_name, job_class=Job)
        stop = threading.Event()
        interval = float(settings.MAILPANEL_NODE_HEARTBEAT_SECONDS)
        nodes.beat(node)
        # One worker per node: an apply of this node still "running" lost its
        # worker (killed mid-job); a full apply converges and closes it.
        if nodes.orphaned_applies(node):
            self.stdout.write(f"{node.queue_name}: an apply did not finish: applying everything")
            jobs.request_apply(None, node=node)
        requeued = nodes.requeue_pending(node)
        if requeued:
            self.stdout.write(f"{node.queue_name}: pending jobs queued again: {requeued}")
        worker = NodeWorker(
            [queue], connection=queue.connection, job_class=Job, name=f"{node.queue_name}.{os.getpid()}"
        )

        def idle() -> bool:
            return queue.is_empty() and worker.get_state() in ("idle", "started", "suspended")

        heart = threading.Thread(target=_heartbeat, args=(node, interval, stop, idle), daemon=True)
        heart.start()
        self.stdout.write(f"{node.queue_name}: worker {worker.name} started")
        try:
            worker.work(burst=options["burst"], with_scheduler=False, logging_level="WARNING")
        finally:
            stop.set()
            heart.join(timeout=5)


def _heartbeat(node, interval, stop, idle) -> None:
    # A pending job is lost only when nothing is queued and the worker waits,
    # and it is older than the stale window (one enqueued a moment ago is on
    # its way); a busy node's waiting jobs are on its queue.
    while not stop.wait(interval):
        try:
            nodes.beat(node)
            if idle():
                nodes.requeue_pending(node, older_than=timedelta(seconds=settings.MAILPANEL_NODE_STALE_SECONDS))
        except Exception:  # the database away for a moment: the next beat tries again
            nodes.logger.exception("heartbeat of node %s failed", node.name)
        finally:
            connection.close()
