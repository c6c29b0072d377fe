"""Login. Throttling is django-axes (see mailadmin/login_throttle.py): its
backend refuses a locked-out (user, address) before the password is checked,
and its middleware answers with the lockout page."""

from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required

login_view = login_not_required(
    auth_views.LoginView.as_view(
        template_name="registration/login.html", redirect_authenticated_user=True
    )
)
