"""Login with a rate limit: too many failures for a user name or from one IP
within the window and further attempts are refused without checking the password."""

from datetime import timedelta

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.utils import timezone
from django.utils.translation import gettext as _

from ..models import LoginFailure

WINDOW = timedelta(minutes=15)


def _client_ip(request):
    return request.META.get("REMOTE_ADDR") or None


def _too_many_failures(username, ip) -> bool:
    since = timezone.now() - WINDOW
    recent = LoginFailure.objects.filter(at__gte=since)
    limit = settings.MAILPANEL_LOGIN_ATTEMPTS
    return (
        recent.filter(username=username).count() >= limit
        or (ip is not None and recent.filter(ip=ip).count() >= limit * 3)
    )


class RateLimitedLoginView(auth_views.LoginView):
    template_name = "registration/login.html"
    redirect_authenticated_user = True

    def post(self, request, *args, **kwargs):
        username = request.POST.get("username", "")[:150]
        ip = _client_ip(request)
        if _too_many_failures(username, ip):
            form = self.get_form()
            form.errors.clear()
            form.add_error(None, _("Too many failed logins. Wait 15 minutes and try again."))
            return self.render_to_response(self.get_context_data(form=form), status=429)
        response = super().post(request, *args, **kwargs)
        if response.status_code != 302:
            LoginFailure.objects.create(username=username, ip=ip)
        return response


login_view = login_not_required(RateLimitedLoginView.as_view())
