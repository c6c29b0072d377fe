"""Forms for sending limits, the mail queue, held senders and the log search.
They parse only; the rules live in services/send_limits.py, mail_queue.py,
holds.py and mail_log.py (the CLI applies the same ones)."""

from django import forms
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from .services import mail_log, send_limits
from .validation import normalize_domain

LIMIT_HELP = _("Empty = as the wider scope; 0 = no limit.")


class SendLimitForm(forms.Form):
    """One scope's limits; an empty field inherits."""

    per_hour = forms.IntegerField(label=_("Messages per hour"), min_value=0, max_value=send_limits.MAX_LIMIT,
                                  required=False, help_text=LIMIT_HELP)
    per_day = forms.IntegerField(label=_("Messages per day"), min_value=0, max_value=send_limits.MAX_LIMIT,
                                 required=False, help_text=LIMIT_HELP)
    recipients = forms.IntegerField(label=_("Recipients per message"), min_value=0,
                                    max_value=send_limits.MAX_LIMIT, required=False, help_text=LIMIT_HELP)

    @classmethod
    def for_row(cls, row, **kwargs):
        return cls(initial={name: getattr(row, name) for name in send_limits.FIELDS}, **kwargs)


STATES = (
    ("", _("all")),
    ("frozen", _("frozen")),
    ("held", _("held by a sending limit")),
    ("active", _("waiting for delivery")),
)


def _no_control_characters(value: str) -> str:
    """Checked before any stripping: a line break is refused, not cut off."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise forms.ValidationError(_("No control characters, please."))
    return value.strip(" ")


class QueueFilterForm(forms.Form):
    sender = forms.CharField(label=_("Sender"), max_length=320, required=False, strip=False)
    recipient = forms.CharField(label=_("Recipient"), max_length=320, required=False, strip=False)
    domain = forms.CharField(label=_("Domain"), max_length=253, required=False, strip=False)
    state = forms.ChoiceField(label=_("State"), choices=STATES, required=False)

    def clean_sender(self):
        return _no_control_characters(self.cleaned_data["sender"])

    def clean_recipient(self):
        return _no_control_characters(self.cleaned_data["recipient"])

    def clean_domain(self):
        value = _no_control_characters(self.cleaned_data["domain"])
        if not value:
            return ""
        try:
            return normalize_domain(value)
        except ValidationError as exc:
            raise forms.ValidationError(exc.messages) from None


class QueueActionForm(forms.Form):
    action = forms.ChoiceField(choices=[(a, a) for a in ("deliver", "freeze", "thaw", "delete", "bounce")])


class HoldResolveForm(forms.Form):
    password = forms.CharField(
        label=_("New password for the mailbox"),
        strip=False,
        max_length=200,
        required=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )
    keep_password = forms.BooleanField(label=_("The password was not stolen: keep it"), required=False)
    action = forms.ChoiceField(
        choices=(("release", _("Release the held mail")), ("delete", _("Delete the held mail"))),
        widget=forms.RadioSelect,
        initial="release",
    )


class LogSearchForm(forms.Form):
    q = forms.CharField(label=_("Message-ID, sender or recipient"), max_length=320, strip=False)
    days = forms.TypedChoiceField(
        label=_("Over the last"),
        coerce=int,
        choices=[(d, _("%(days)d days") % {"days": d}) for d in (1, 3, 7, mail_log.MAX_DAYS)],
        initial=mail_log.DEFAULT_DAYS,
        required=False,
        empty_value=mail_log.DEFAULT_DAYS,
    )

    def clean_q(self):
        try:
            return mail_log.clean_query(self.cleaned_data["q"])
        except ValidationError as exc:
            raise forms.ValidationError(exc.messages) from None
