"""`manage.py housekeeping`: delete rows past their retention (see
mailadmin/services/housekeeping.py). Run daily by mailpanel-housekeeping.timer;
--enqueue hands it to the task worker instead of running it here."""

from django.core.management.base import BaseCommand

from mailadmin import tasks


class Command(BaseCommand):
    help = "Delete login failures, reset requests, DNS check results and finished jobs past their retention."

    def add_arguments(self, parser):
        parser.add_argument("--enqueue", action="store_true", help="run it in the task worker")

    def handle(self, *args, enqueue=False, **options):
        if enqueue:
            result = tasks.housekeeping.enqueue()
            self.stdout.write(f"enqueued task {result.id}")
            return
        for table, count in sorted(tasks.housekeeping.call().items()):
            self.stdout.write(f"{table}: {count} deleted")
