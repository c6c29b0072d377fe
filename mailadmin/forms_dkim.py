"""The DKIM section's form: a rotation's selector and key size. The service
(services.dkim_rotation) decides; the CLI binds the same form."""

from django import forms
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from . import dkim


class DkimRotateForm(forms.Form):
    selector = forms.CharField(
        label=_("Selector of the new key"),
        required=False,
        max_length=63,
        help_text=_("Empty: a dated one such as s20260115. One DNS label: a–z, 0–9 and “-”."),
    )
    bits = forms.TypedChoiceField(
        label=_("Key size"),
        coerce=int,
        choices=[(bits, _("%(bits)d bits") % {"bits": bits}) for bits in dkim.KEY_SIZES],
        initial=dkim.KEY_BITS,
        help_text=_("2048 fits every DNS host; 1024 only for hosts that cannot take a long TXT record."),
    )

    def clean_selector(self):
        value = self.cleaned_data["selector"].lower()
        if value and not dkim.is_selector(value):
            raise ValidationError(
                _("A selector is one DNS label: letters a–z, digits and “-” (not first or last), at most 63.")
            )
        return value


class DkimPolicyForm(forms.Form):
    """Server-wide (admin): the limits are checked by the service."""

    dkim_grace_days = forms.IntegerField(
        label=_("Days an old key stays published after a switch"),
        help_text=_("Receivers may check a signature days after the mail was sent (queues, retries)."),
    )
    dkim_max_age_months = forms.IntegerField(
        label=_("Warn when a key is older than (months)"), help_text=_("0: never warn.")
    )
