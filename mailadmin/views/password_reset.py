"""Password reset for panel users, by mail through panel SMTP.

Links are built from settings.MAILPANEL_BASE_URL, never from the request: the
Host header is whatever the client sent, and a reset link pointing at a forged
host hands the token to whoever owns that host."""

from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth import forms as auth_forms
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.utils.decorators import method_decorator


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


@method_decorator(login_not_required, name="dispatch")
class PasswordResetView(auth_views.PasswordResetView):
    form_class = BaseUrlPasswordResetForm
    email_template_name = "registration/password_reset_email.txt"
    subject_template_name = "registration/password_reset_subject.txt"
    template_name = "registration/password_reset_form.html"


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
