"""The SMTP relay form (global relay and a domain's own relay). It parses what
was typed; services.relay decides the rest (a customer's host must be public,
when a stored password may be kept, what Exim can send). The CLI binds it too."""

from django import forms
from django.core.exceptions import ValidationError
from django.core.validators import ProhibitNullCharactersValidator
from django.utils.translation import gettext_lazy as _

from .models import RelayAuth, RelayTls
from .services.relay import PRESETS, normalize_region, preset_values, stored_endpoint
from .validation import normalize_hostname, validate_config_value


class RelayForm(forms.Form):
    preset = forms.ChoiceField(
        label=_("Provider"),
        choices=[(key, preset.label) for key, preset in PRESETS.items()],
        initial="custom",
        required=False,
    )
    region = forms.CharField(
        label=_("Region"),
        max_length=40,
        required=False,
        help_text=_("Amazon SES and Oracle Cloud only, for example us-east-1 or us-ashburn-1."),
    )
    host = forms.CharField(label=_("Host"), max_length=253, required=False)
    port = forms.IntegerField(
        label=_("Port"),
        initial=587,
        required=False,
        help_text=_("587 with STARTTLS; 465 means implicit TLS."),
    )
    tls = forms.ChoiceField(label=_("Encryption"), choices=RelayTls.choices, initial=RelayTls.STARTTLS)
    confirm_no_tls = forms.BooleanField(
        label=_("Yes, send the user name and password unencrypted"), required=False
    )
    username = forms.CharField(
        label=_("User name"),
        max_length=255,
        required=False,
        strip=False,
        help_text=_("Leave empty for a relay that needs no authentication."),
    )
    # Never rendered back: blank keeps the stored password (for the same endpoint
    # only, see secret_endpoint). Not stripped: leading and trailing blanks are
    # part of a password.
    password = forms.CharField(
        label=_("Password"),
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
    )
    auth = forms.ChoiceField(
        label=_("Authentication"), choices=RelayAuth.choices, initial=RelayAuth.LOGIN
    )

    def __init__(self, *args, stored=None, **kwargs):
        """stored: the RelaySettings row being edited (or None)."""
        # Unique ids: the relay form shares its page with other forms.
        kwargs.setdefault("auto_id", "relay-%s")
        super().__init__(*args, **kwargs)
        self.stored = stored
        self.stored_endpoint = stored_endpoint(stored)
        has_password = self.stored_endpoint is not None
        for name in ("username", "password"):
            # One message for NUL, line breaks and control characters alike
            # (validate_config_value), not Django's separate NUL message.
            field = self.fields[name]
            field.validators = [
                x for x in field.validators if not isinstance(x, ProhibitNullCharactersValidator)
            ]
        if has_password:
            self.fields["password"].help_text = _(
                "A password is stored. Leave empty to keep it; another host, port, "
                "encryption, authentication or user name needs it typed again."
            )

    @classmethod
    def from_relay(cls, row, **kwargs) -> "RelayForm":
        if row is None:
            return cls(**kwargs)
        initial = {
            "preset": row.preset or "custom",
            "host": row.host,
            "port": row.port,
            "tls": row.tls,
            "username": row.username,
            "auth": row.auth,
            "confirm_no_tls": row.tls == RelayTls.NONE,
        }
        return cls(initial=initial, stored=row, **kwargs)

    def clean_region(self):
        region = self.cleaned_data.get("region", "").strip()
        return normalize_region(region) if region else ""

    def clean_username(self):
        return validate_config_value(self.cleaned_data.get("username", ""), _("The user name"))

    def clean_password(self):
        return validate_config_value(self.cleaned_data.get("password", ""), _("The password"))

    def clean_port(self):
        port = self.cleaned_data.get("port")
        if port is None:
            return 587
        if not 1 <= port <= 65535:
            raise ValidationError(_("A port is a number from 1 to 65535."))
        return port

    def clean(self):
        data = super().clean()
        preset = data.get("preset") or "custom"
        data["preset"] = preset
        # Only blanks are trimmed: a line break or tab is refused by the validator.
        host = (self.data.get(self.add_prefix("host")) or "").strip(" ")
        # A preset fills what the user left empty (without JavaScript the
        # "Fill in" button does the same visibly).
        if preset != "custom" and not host and "region" not in self.errors:
            try:
                filled = preset_values(preset, data.get("region", ""))
            except ValidationError as exc:
                self.add_error("region", exc)
                filled = {}
            host = filled.get("host", "")
        if not host:
            if "host" not in self.errors and "region" not in self.errors:
                self.add_error("host", _("Enter the relay's host name or IP address."))
        else:
            try:
                data["host"] = normalize_hostname(host)
            except ValidationError as exc:
                self.add_error("host", exc)
        tls, port = data.get("tls"), data.get("port")
        if tls == RelayTls.NONE and not data.get("confirm_no_tls"):
            self.add_error(
                "confirm_no_tls",
                _("Without encryption the password crosses the network readable by anyone: tick the box to confirm."),
            )
        if port == 465 and tls == RelayTls.STARTTLS:
            self.add_error(
                "tls",
                _("Port 465 uses implicit TLS: choose “implicit TLS”, or port 587 for STARTTLS."),
            )
        return data

    def service_values(self) -> dict:
        """Arguments for services.relay.set_relay (password None = keep)."""
        data = self.cleaned_data
        return {
            "host": data["host"],
            "port": data["port"],
            "tls": data["tls"],
            "username": data["username"],
            "password": data["password"] or None,
            "auth": data["auth"],
            "preset": data["preset"],
        }

    def redisplay(self, **overrides) -> "RelayForm":
        """An unbound form showing what the user typed (the password is never
        shown back) with some fields replaced: "Fill in" and "Switch to PLAIN"."""
        initial = {
            name: self.data.get(self.add_prefix(name), "")
            for name in ("preset", "region", "host", "port", "tls", "username", "auth")
        }
        initial["confirm_no_tls"] = bool(self.data.get(self.add_prefix("confirm_no_tls")))
        initial.update(overrides)
        form = RelayForm(initial=initial, stored=self.stored, prefix=self.prefix, auto_id=self.auto_id)
        form.preset_error = ""
        return form

    def prefilled_with_preset(self) -> "RelayForm":
        """The "Fill in" action: the preset's host/port/mechanism/encryption
        with everything else the user typed."""
        preset = self.data.get(self.add_prefix("preset")) or "custom"
        try:
            values = preset_values(preset, self.data.get(self.add_prefix("region"), ""))
        except ValidationError as exc:
            form = self.redisplay()
            form.preset_error = " ".join(exc.messages)
            return form
        return self.redisplay(**values)
