"""Password reset mails: the request only counts and enqueues; the worker
looks the address up and sends.

So the answer does the same work whether the address belongs to a user or
not (the same queries, no SMTP conversation whose length would tell), and a
slow mail server holds a task worker, not a web worker. The limits count only
the requests they let through, each one row: a flood of requests from one
client adds RESETS_PER_CLIENT rows an hour, not one per request.

Links are built from settings.MAILPANEL_BASE_URL, never from the request: the
Host header is whatever the client sent, and a reset link pointing at a forged
host hands the token to whoever owns that host."""

from datetime import timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth import forms as auth_forms
from django.db import transaction
from django.utils import timezone, translation

from ..models import PasswordResetRequest

RESET_WINDOW = timedelta(hours=1)
RESETS_PER_ADDRESS = 3
RESETS_PER_CLIENT = 10
TASK = "mailadmin.tasks.send_password_reset"
EMAIL_TEMPLATE = "registration/password_reset_email.txt"
SUBJECT_TEMPLATE = "registration/password_reset_subject.txt"


class BaseUrlPasswordResetForm(auth_forms.PasswordResetForm):
    def save(self, *args, **kwargs):
        base = urlsplit(settings.MAILPANEL_BASE_URL)
        kwargs.update(
            domain_override=base.netloc,
            use_https=base.scheme == "https",
            request=None,
            extra_email_context={
                **(kwargs.get("extra_email_context") or {}),
                "base_url": settings.MAILPANEL_BASE_URL.rstrip("/"),
            },
        )
        return super().save(*args, **kwargs)


def normalize_email(value: str) -> str:
    return value.strip().lower()


def request_reset(email: str, client: str | None) -> bool:
    """Counts the request and enqueues the mail if it is within the limits.
    Never looks at users: the caller answers the same either way."""
    email = normalize_email(email)
    with transaction.atomic():
        recent = PasswordResetRequest.objects.filter(at__gte=timezone.now() - RESET_WINDOW)
        if recent.filter(email=email).count() >= RESETS_PER_ADDRESS:
            return False
        if client is not None and recent.filter(ip=client).count() >= RESETS_PER_CLIENT:
            return False
        PasswordResetRequest.objects.create(email=email, ip=client)
        language = translation.get_language() or settings.LANGUAGE_CODE
        transaction.on_commit(lambda: _enqueue(email, language))
    return True


def _enqueue(email: str, language: str) -> None:
    from django.utils.module_loading import import_string

    import_string(TASK).enqueue(email, language)


def send_reset_mail(email: str, language: str) -> None:
    """In the worker: Django's own reset form finds the active users with that
    address and a usable password, and mails each a link (none: no mail)."""
    form = BaseUrlPasswordResetForm({"email": email})
    if not form.is_valid():
        return
    with translation.override(language):
        form.save(email_template_name=EMAIL_TEMPLATE, subject_template_name=SUBJECT_TEMPLATE)
