"""Forms for mail accounts, aliases, forwards and the catch-all.

They parse input only; the rules (valid local parts, loops, duplicates,
password strength) live in mailadmin.services.accounts so the CLI applies the
same ones. Views pass the service's ValidationError({field: …}) back with
form.add_error(None, exc). Passwords are never rendered back (render_value
is off), everything else is kept on an error.
"""

from django import forms
from django.utils.translation import gettext_lazy as _

from .services.accounts import MAX_QUOTA_MB

QUOTA_HELP = _("In MB. 0 or empty = unlimited.")


class AccountAddForm(forms.Form):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("auto_id", "account_add_%s")  # several forms share the domain page
        super().__init__(*args, **kwargs)

    local_part = forms.CharField(label=_("Address"), max_length=64)
    password = forms.CharField(
        label=_("Password"),
        strip=False,
        max_length=200,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )
    quota_mb = forms.IntegerField(
        label=_("Quota (MB)"), min_value=0, max_value=MAX_QUOTA_MB, required=False, help_text=QUOTA_HELP
    )


class AccountEditForm(forms.Form):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("auto_id", "account_edit_%s")  # several forms share the domain page
        super().__init__(*args, **kwargs)

    password = forms.CharField(
        label=_("New password"),
        strip=False,
        max_length=200,
        required=False,
        help_text=_("Leave empty to keep the current password."),
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )
    quota_mb = forms.IntegerField(
        label=_("Quota (MB)"), min_value=0, max_value=MAX_QUOTA_MB, required=False, help_text=QUOTA_HELP
    )
    forward_only = forms.BooleanField(
        label=_("Forward only: keep no local copy"), required=False
    )


class AliasForm(forms.Form):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("auto_id", "alias_%s")  # several forms share the domain page
        super().__init__(*args, **kwargs)

    local_part = forms.CharField(label=_("Alias"), max_length=64)
    target = forms.CharField(label=_("Delivers to"), max_length=254)


class ForwardForm(forms.Form):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("auto_id", "forward_%s")  # several forms share the domain page
        super().__init__(*args, **kwargs)

    target = forms.CharField(label=_("Forward to"), max_length=254)
    forward_only = forms.BooleanField(label=_("Keep no local copy"), required=False)


class CatchallForm(forms.Form):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("auto_id", "catchall_%s")  # several forms share the domain page
        super().__init__(*args, **kwargs)

    catchall = forms.CharField(
        label=_("Catch-all address"),
        max_length=254,
        required=False,
        help_text=_("Mail to unknown addresses of this domain goes here. Empty = refuse it."),
    )


class PasswordStrengthForm(forms.Form):
    """The strength feedback while typing. `account` (the edit form's account)
    is a plain positive number or the request is a 400, not a lookup."""

    password = forms.CharField(required=False, strip=False)
    local_part = forms.CharField(required=False, max_length=64)
    account = forms.RegexField(regex=r"\A[1-9][0-9]{0,17}\Z", required=False, strip=False)
