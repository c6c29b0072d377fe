"""Login. Throttling is django-axes (see mailadmin/login_throttle.py): its
backend refuses a locked-out (user, address) before the password is checked,
and its middleware answers with the lockout page.

The one form also signs in a mailbox owner with the mailbox's address and
password (mailbox_session): a panel user of that name is tried first, as
always, and its failure is the one failure this attempt counts; a mailbox
that matches then clears the count, as a successful login does."""

from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError
from django.shortcuts import redirect

from .. import mailbox_session


class LoginForm(AuthenticationForm):
    mailbox = None  # the MailAccount, when the name and password were a mailbox's

    def clean(self):
        try:
            return super().clean()
        except ValidationError:
            name, password = self.cleaned_data.get("username"), self.cleaned_data.get("password")
            locked = getattr(self.request, "axes_locked_out", False)
            if locked or not name or not password or "@" not in name:
                raise
            account = mailbox_session.find_account(name)
            if not mailbox_session.check_password(account, password):
                raise
            mailbox_session.forget_failures(self.request, name)
            self.mailbox = account
            return self.cleaned_data


class LoginView(auth_views.LoginView):
    form_class = LoginForm
    template_name = "registration/login.html"
    redirect_authenticated_user = True

    def form_valid(self, form):
        if form.mailbox is not None:
            mailbox_session.log_in(self.request, form.mailbox)
            return redirect("mailadmin:mailbox_home")
        mailbox_session.log_out_mailbox(self.request)  # one identity per session
        return super().form_valid(form)


login_view = login_not_required(LoginView.as_view())
