"""Password reset for panel users, by mail through panel SMTP.

The request only counts and enqueues (services.password_reset); the worker
finds the user and sends the mail, so the answer is the same, and takes the
same work, whether the address exists or not."""

from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.http import HttpResponseRedirect
from django.utils.decorators import method_decorator

from ..client_address import client_address
from ..services import password_reset as reset_service


@method_decorator(login_not_required, name="dispatch")
class PasswordResetView(auth_views.PasswordResetView):
    form_class = reset_service.BaseUrlPasswordResetForm
    template_name = "registration/password_reset_form.html"

    def form_valid(self, form):
        # behind a proxy, REMOTE_ADDR is the proxy for everyone
        reset_service.request_reset(form.cleaned_data["email"], client_address(self.request))
        # Same answer whether a mail goes out, the address is unknown or a limit
        # was hit: the page must not tell what happened.
        return HttpResponseRedirect(self.get_success_url())


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
