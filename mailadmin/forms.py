from django import forms
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from .models import MailDomain, ServerSettings
from .validation import normalize_domain, normalize_hostname


class DomainAddForm(forms.Form):
    name = forms.CharField(label=_("Domain"), max_length=300)
    owner = forms.ModelChoiceField(
        label=_("Owner"), queryset=get_user_model().objects.none(), required=False
    )
    dkim_enabled = forms.BooleanField(label=_("Sign outgoing mail with DKIM"), required=False, initial=True)

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user
        if user.is_staff:
            self.fields["owner"].queryset = get_user_model().objects.filter(is_active=True).order_by("username")
            self.fields["owner"].initial = user.pk
        else:
            del self.fields["owner"]

    def clean_name(self):
        name = normalize_domain(self.cleaned_data["name"])
        if MailDomain.objects.filter(name=name).exists():
            raise ValidationError(_("This domain is already hosted on this server."))
        return name

    def owner_or_self(self):
        return self.cleaned_data.get("owner") or self.user


class DomainSettingsForm(forms.ModelForm):
    class Meta:
        model = MailDomain
        fields = ["dkim_enabled", "hosted_elsewhere"]


class ServerIdentityForm(forms.ModelForm):
    class Meta:
        model = ServerSettings
        fields = ["hostname", "ipv4", "ipv6", "nat_ipv4"]

    def clean_hostname(self):
        return normalize_hostname(self.cleaned_data["hostname"])


class UserAddForm(forms.Form):
    username = forms.RegexField(
        label=_("User name"), max_length=150, regex=r"^[\w.@+-]+$",
        error_messages={"invalid": _("Letters, digits and @ . + - _ only.")},
    )
    email = forms.EmailField(label=_("Email"), required=False)
    is_admin = forms.BooleanField(label=_("Administrator"), required=False)
    password = forms.CharField(label=_("Password"), widget=forms.PasswordInput, min_length=8)

    def clean_username(self):
        username = self.cleaned_data["username"]
        if get_user_model().objects.filter(username__iexact=username).exists():
            raise ValidationError(_("This user name is taken."))
        return username
