"""Network checks that people start from the panel (relay test, DNS "Check
now", a domain's diagnostics): a per-user rate limit, then a job on the
"checks" task queue, which its own worker serves (an apply never waits behind
a customer's checks). A mail log search counts against the same limit.

The limit counts the jobs the user started in the last
MAILPANEL_USER_CHECKS_WINDOW seconds: a sliding window over rows every check
writes anyway, shared by all gunicorn workers, with the user's row locked
while counting so parallel requests cannot all slip under it. django-ratelimit
was the candidate library, but it needs a shared cache with atomic increment
(memcached, Redis); its own system check refuses the caches this one-box
server has (LocMemCache: per process; DatabaseCache: increment not atomic).
Admins are not limited: they run the server.
"""

import math
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone, translation
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from ..models import Job, JobKind, JobState, is_admin
from . import jobs

QUEUE = "checks"
CHECK_KINDS = (JobKind.DIAGNOSE, JobKind.DNS_CHECK, JobKind.LOG_SEARCH, JobKind.CERTIFICATE_ORDER)


class TooManyChecks(Exception):
    def __init__(self, retry_after: int):
        self.retry_after = retry_after
        minutes = max(1, round(settings.MAILPANEL_USER_CHECKS_WINDOW / 60))
        super().__init__(
            ngettext(
                "You started %(count)s checks in the last %(minutes)s minute.",
                "You started %(count)s checks in the last %(minutes)s minutes.",
                minutes,
            )
            % {"count": settings.MAILPANEL_USER_CHECKS_LIMIT, "minutes": minutes}
            + " "
            + _("Wait %(seconds)s seconds and try again.") % {"seconds": retry_after}
        )


def start_check(actor, kind: str, domain, task_path: str, *, result=None, **task_kwargs) -> Job:
    """jobs.start_job for a check, refused with TooManyChecks over the limit.
    The task also gets the request's language (its verdicts are shown on the page)."""
    with transaction.atomic():
        if not is_admin(actor):
            _check_limit(actor)
        language = translation.get_language() or ""
        return jobs.start_job(kind, actor, domain, task_path, result=result, language=language, **task_kwargs)


def start_node_check(actor, kind: str, domain, enqueue) -> Job:
    """A check that runs on the domain's node (RQ), not on the checks queue:
    the same limit and job row; enqueue(job) once the row is committed."""
    with transaction.atomic():
        if not is_admin(actor):
            _check_limit(actor)
        job = Job.objects.create(kind=kind, requested_by=actor if getattr(actor, "pk", None) else None, domain=domain)
        transaction.on_commit(lambda: enqueue(job))
        return job


def record_log_search(actor) -> Job:
    """A "where is my mail?" search (the helper reads up to 512 MB of logs
    for it): the same per-user limit as the checks, counted on a row that is
    done at once (it runs in the request, not on the checks queue)."""
    with transaction.atomic():
        if not is_admin(actor):
            _check_limit(actor)
        now = timezone.now()
        return Job.objects.create(kind=JobKind.LOG_SEARCH, state=JobState.DONE,
                                  requested_by=actor if getattr(actor, "pk", None) else None,
                                  started_at=now, finished_at=now)


def _check_limit(actor) -> None:
    # Serialises this user's starts (PostgreSQL row lock; SQLite writers are
    # serialised already): the count below cannot go stale before the insert.
    list(get_user_model().objects.select_for_update().filter(pk=actor.pk).values_list("pk"))
    window = timedelta(seconds=settings.MAILPANEL_USER_CHECKS_WINDOW)
    now = timezone.now()
    recent = Job.objects.filter(
        requested_by=actor, kind__in=CHECK_KINDS, created_at__gt=now - window
    ).order_by("-created_at")
    limit = settings.MAILPANEL_USER_CHECKS_LIMIT
    times = list(recent.values_list("created_at", flat=True)[:limit])
    if len(times) >= limit:
        # the oldest of the last `limit` checks leaves the window first
        retry_after = math.ceil((times[-1] + window - now).total_seconds())
        raise TooManyChecks(max(1, retry_after))
