"""Daily housekeeping: rows that only grow are deleted past their retention.

Run by `manage.py housekeeping` from mailpanel-housekeeping.timer (or as the
`mailadmin.tasks.housekeeping` task), which also purges deleted domains' mail
through the helper once it is MAILPANEL_KEEP_DELETED_MAIL_DAYS old. Each retention is a setting in days
(MAILPANEL_KEEP_*_DAYS), DMARC reports by the end of the days they cover.
What is never deleted: the latest DNS check result
of each domain (the records page shows it), a pending or running job (a
worker may still be on it), and the latest server diagnostics (the
diagnostics page shows it). Audit entries are kept: how long to keep who
changed what is the operator's decision.
"""

from datetime import timedelta

from django.apps import apps
from django.conf import settings
from django.db.models import OuterRef, Subquery
from django.utils import timezone

from ..helper_client import call_helper
from ..models import Job, DmarcReport, DnsCheckResult, JobKind, JobState, PasswordResetRequest

# Failed-login rows (django-axes).
LOGIN_MODELS = (
    ("axes", "AccessAttempt", "attempt_time"),
    ("axes", "AccessFailureLog", "attempt_time"),
    ("axes", "AccessLog", "attempt_time"),
)


def prune(now=None) -> dict[str, int]:
    """Deletes what is past retention; returns the number of rows per table."""
    now = now or timezone.now()

    def cutoff(setting: str):
        return now - timedelta(days=getattr(settings, setting))

    deleted = {}
    login_cutoff = cutoff("MAILPANEL_KEEP_LOGIN_FAILURES_DAYS")
    for app_label, model_name, time_field in LOGIN_MODELS:
        try:
            model = apps.get_model(app_label, model_name)
        except LookupError:  # not installed (yet, or any more)
            continue
        deleted[model._meta.label] = _delete(model.objects.filter(**{f"{time_field}__lt": login_cutoff}))

    deleted["mailadmin.PasswordResetRequest"] = _delete(
        PasswordResetRequest.objects.filter(at__lt=cutoff("MAILPANEL_KEEP_RESET_REQUESTS_DAYS"))
    )

    latest_of_domain = (
        DnsCheckResult.objects.filter(domain=OuterRef("domain")).order_by("-checked_at", "-id").values("pk")[:1]
    )
    deleted["mailadmin.DnsCheckResult"] = _delete(
        DnsCheckResult.objects.filter(checked_at__lt=cutoff("MAILPANEL_KEEP_DNS_RESULTS_DAYS")).exclude(
            pk=Subquery(latest_of_domain)
        )
    )

    # Report rows go with their report (cascade).
    deleted["mailadmin.DmarcReport"] = _delete(
        DmarcReport.objects.filter(end__lt=cutoff("MAILPANEL_KEEP_DMARC_DAYS"))
    )

    jobs_cutoff = cutoff("MAILPANEL_KEEP_JOBS_DAYS")
    latest_server_check = (
        Job.objects.filter(
            kind=JobKind.DIAGNOSE, domain__isnull=True, state=JobState.DONE, result__what="server"
        )
        .order_by("-id")
        .values_list("pk", flat=True)
        .first()
    )
    deleted["mailadmin.Job"] = _delete(
        Job.objects.filter(state__in=[JobState.DONE, JobState.FAILED], finished_at__lt=jobs_cutoff).exclude(
            pk=latest_server_check
        )
    )
    if apps.is_installed("django_tasks_db"):
        from django_tasks_db.models import DBTaskResult

        deleted["django_tasks_db.DBTaskResult"] = _delete(
            DBTaskResult.objects.finished().filter(finished_at__lt=jobs_cutoff)
        )
    return deleted


def purge_deleted_mail() -> list[str]:
    """Deleted domains' Maildirs past MAILPANEL_KEEP_DELETED_MAIL_DAYS go for
    good (the helper moved them aside on delete). Raises HelperError."""
    answer = call_helper(
        {"op": "purge_deleted_mail", "older_than_days": settings.MAILPANEL_KEEP_DELETED_MAIL_DAYS}
    )
    return answer.get("purged", [])


def _delete(queryset) -> int:
    """Rows of the queryset's own model (not counting what cascades)."""
    return queryset.delete()[1].get(queryset.model._meta.label, 0)
