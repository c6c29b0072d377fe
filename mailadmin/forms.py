import re

from django import forms
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from .models import NODE_NAME_PATTERN, MailDomain, MailNode, ServerSettings
from .validation import normalize_address, normalize_domain, normalize_hostname, normalize_unix_users, normalize_ip


class DomainAddForm(forms.Form):
    name = forms.CharField(label=_("Domain"), max_length=300)
    # A user name, not a <select>: with hundreds of customers a select of all of
    # them costs more than the rest of the page.
    owner = forms.CharField(label=_("Owner (user name)"), max_length=150, required=False)
    dkim_enabled = forms.BooleanField(label=_("Sign outgoing mail with DKIM"), required=False, initial=True)

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user
        if user.is_staff:
            self.fields["owner"].initial = user.username
        else:
            del self.fields["owner"]

    def clean_name(self):
        name = normalize_domain(self.cleaned_data["name"])
        if MailDomain.objects.filter(name=name).exists():
            raise ValidationError(_("This domain is already hosted on this server."))
        return name

    def clean_owner(self):
        username = self.cleaned_data.get("owner", "").strip()
        if not username:
            return None
        try:
            return get_user_model().objects.get(username=username, is_active=True)
        except get_user_model().DoesNotExist:
            raise ValidationError(_("There is no user %(name)s.") % {"name": username})

    def owner_or_self(self):
        return self.cleaned_data.get("owner") or self.user


class DomainSettingsForm(forms.ModelForm):
    class Meta:
        model = MailDomain
        fields = ["dkim_enabled", "hosted_elsewhere", "subaddressing", "role_address", "mta_sts_enforce"]

    def clean_role_address(self):
        value = self.cleaned_data["role_address"]
        return normalize_address(value) if value.strip() else ""


class LocalSendersForm(forms.Form):
    """Admins only: which Unix users on this host may send as the domain."""

    local_senders = forms.CharField(required=False, max_length=512, strip=False)

    def clean_local_senders(self):
        return normalize_unix_users(self.cleaned_data["local_senders"])


class PlainIPAddressField(forms.GenericIPAddressField):
    """Django's field drops an IPv6 zone index (fe80::1%eth0 → fe80::1) and
    strips line breaks; here both are an error the admin sees."""

    def to_python(self, value):
        if value in self.empty_values:
            return ""
        return normalize_ip(value)


class ServerIdentityForm(forms.ModelForm):
    class Meta:
        model = ServerSettings
        fields = ["hostname", "ipv4", "ipv6", "nat_ipv4"]
        field_classes = {"ipv4": PlainIPAddressField, "ipv6": PlainIPAddressField, "nat_ipv4": PlainIPAddressField}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["hostname"].strip = False  # normalize_hostname trims blanks, refuses the rest

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


class UserLimitsForm(forms.Form):
    """What a customer may add; empty = no limit. Admins are never limited."""

    max_domains = forms.IntegerField(label=_("Mail domains"), min_value=0, max_value=1_000_000, required=False)
    max_mailboxes = forms.IntegerField(label=_("Mailboxes"), min_value=0, max_value=1_000_000, required=False)
    max_quota_mb = forms.IntegerField(
        label=_("Mailbox space in total (MB)"), min_value=0, max_value=1024 * 1024 * 1024, required=False
    )


class MailNodeForm(forms.ModelForm):
    """A mail node's name (its queue node-<name> and systemd instance),
    host name and public addresses; blank = the server settings'."""

    class Meta:
        model = MailNode
        fields = ["name", "hostname", "ipv4", "ipv6"]
        field_classes = {"ipv4": PlainIPAddressField, "ipv6": PlainIPAddressField}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["hostname"].strip = False
        self.fields["name"].strip = False  # "b\n" is not "b": refused, not trimmed

    def clean_name(self):
        name = self.cleaned_data["name"]
        if not re.fullmatch(NODE_NAME_PATTERN, name):
            raise ValidationError(
                _("A node name is 1 to 32 lower-case letters, digits and inner hyphens (it names a queue and a service).")
            )
        return name

    def clean_hostname(self):
        value = self.cleaned_data["hostname"]
        return normalize_hostname(value) if value else ""
