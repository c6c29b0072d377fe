"""Password reset for panel users, by mail through panel SMTP.

Links are built from settings.MAILPANEL_BASE_URL, never from the request: the
Host header is whatever the client sent, and a reset link pointing at a forged
host hands the token to whoever owns that host."""

from datetime import timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth import forms as auth_forms
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.http import HttpResponseRedirect
from django.utils import timezone
from django.utils.decorators import method_decorator

from ..client_address import client_address
from ..models import PasswordResetRequest


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


RESET_WINDOW = timedelta(hours=1)
RESETS_PER_ADDRESS = 3
RESETS_PER_IP = 10


def reset_allowed(email: str, ip: str | None) -> bool:
    """At most a few reset mails an hour per address and per client, so the form
    cannot be used to flood someone's mailbox."""
    recent = PasswordResetRequest.objects.filter(at__gte=timezone.now() - RESET_WINDOW)
    if recent.filter(email=email).count() >= RESETS_PER_ADDRESS:
        return False
    return ip is None or recent.filter(ip=ip).count() < RESETS_PER_IP


@method_decorator(login_not_required, name="dispatch")
class PasswordResetView(auth_views.PasswordResetView):
    form_class = BaseUrlPasswordResetForm
    email_template_name = "registration/password_reset_email.txt"
    subject_template_name = "registration/password_reset_subject.txt"
    template_name = "registration/password_reset_form.html"

    def form_valid(self, form):
        email = form.cleaned_data["email"].strip().lower()
        ip = client_address(self.request)  # behind a proxy, REMOTE_ADDR is the proxy for everyone
        allowed = reset_allowed(email, ip)
        PasswordResetRequest.objects.create(email=email, ip=ip)
        if not allowed:
            # Same answer as a sent mail: the page must not tell what happened.
            return HttpResponseRedirect(self.get_success_url())
        return super().form_valid(form)


password_reset = PasswordResetView.as_view()
# The other three are login_not_required in Django already.
password_reset_done = auth_views.PasswordResetDoneView.as_view(
    template_name="registration/password_reset_done.html"
)
password_reset_confirm = auth_views.PasswordResetConfirmView.as_view(
    template_name="registration/password_reset_confirm.html"
)
password_reset_complete = auth_views.PasswordResetCompleteView.as_view(
    template_name="registration/password_reset_complete.html"
)
