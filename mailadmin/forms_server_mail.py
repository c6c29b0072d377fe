"""Forms of the server mail sections: panel SMTP, Spamhaus DQS, DNSBL zones,
internal lookup. Validation lives in the services (the CLI shares it); the
forms carry the input and map the services' errors onto fields."""

from django import forms
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from .models import PanelSmtpSecurity, ServerSettings
from .dnsbl import normalize_dqs_key, normalize_zone
from .services import panel_smtp
from .validation import normalize_address


class PanelSmtpForm(forms.Form):
    enabled = forms.BooleanField(label=_("Send the panel's mail through this SMTP server"), required=False)
    # Not stripped: the validator trims blanks and refuses line breaks and tabs.
    host = forms.CharField(label=_("SMTP host"), max_length=253, required=False, strip=False)
    port = forms.IntegerField(label=_("Port"), initial=587, required=False)
    security = forms.ChoiceField(
        label=_("Security"), choices=PanelSmtpSecurity.choices, initial=PanelSmtpSecurity.STARTTLS
    )
    username = forms.CharField(label=_("User name"), max_length=255, required=False)
    # Never rendered back: blank = keep the stored password (same endpoint only).
    password = forms.CharField(
        label=_("Password"),
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
    )
    from_email = forms.CharField(label=_("From address"), max_length=254, required=False)

    def __init__(self, *args, server: ServerSettings, **kwargs):
        if not args and "data" not in kwargs:
            kwargs.setdefault(
                "initial",
                {
                    "enabled": server.panel_smtp_enabled,
                    "host": server.panel_smtp_host,
                    "port": server.panel_smtp_port,
                    "security": server.panel_smtp_security,
                    "username": server.panel_smtp_username,
                    "from_email": server.panel_smtp_from,
                },
            )
        super().__init__(*args, **kwargs)
        self.server = server
        self.stored_endpoint = panel_smtp.stored_endpoint(server)
        if self.stored_endpoint is not None:
            self.fields["password"].help_text = _(
                "A password is stored. Leave blank to keep it; another host, port, "
                "security or user name needs it typed again."
            )

    def clean(self):
        data = super().clean()
        if not data.get("enabled") or self.errors:
            return data
        try:
            data.update(
                panel_smtp.validate_settings(
                    host=data.get("host"),
                    port=data.get("port"),
                    security=data.get("security"),
                    username=data.get("username"),
                    password=data.get("password"),
                    from_email=data.get("from_email"),
                    stored=self.stored_endpoint,
                )
            )
        except ValidationError as exc:
            for name, messages in exc.message_dict.items():
                self.add_error(name if name in self.fields else None, messages)
        return data


    def save(self, actor) -> bool:
        """Hand the parsed values to the service; what it refuses lands on
        the fields. The page and the CLI both save through here."""
        data = self.cleaned_data
        try:
            panel_smtp.save_settings(
                actor,
                host=data["host"],
                port=data["port"],
                security=data["security"],
                username=data["username"],
                password=data["password"],
                from_email=data["from_email"],
            )
        except ValidationError as exc:
            for name, errors in exc.message_dict.items():
                self.add_error(name if name in self.fields else None, errors)
            return False
        return True


class PanelSmtpTestForm(forms.Form):
    to = forms.CharField(label=_("Send a test mail to"), max_length=254)

    def clean_to(self):
        return normalize_address(self.cleaned_data["to"])


class DqsKeyForm(forms.Form):
    key = forms.CharField(
        label=_("Spamhaus DQS key"),
        max_length=200,
        strip=True,
        # A password field: the browser neither shows nor autofills it back.
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        error_messages={"required": _("Paste the DQS key from your Spamhaus account.")},
    )

    def clean_key(self):
        return normalize_dqs_key(self.cleaned_data["key"])


class DnsblZoneForm(forms.Form):
    zone = forms.CharField(label=_("DNSBL zone"), max_length=253, strip=False)

    def clean_zone(self):
        return normalize_zone(self.cleaned_data["zone"])


class InternalLookupForm(forms.Form):
    internal_lookup = forms.BooleanField(
        label=_("Internal lookup: deliver mail for domains hosted here locally"), required=False
    )
