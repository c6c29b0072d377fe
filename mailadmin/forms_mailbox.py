"""Forms of the mailbox self-service page. They parse; the rules (password
strength, forwarding targets and loops) are services.accounts' and the
Sieve text rules sieve_vacation's. Passwords are never rendered back."""

from django import forms
from django.core.exceptions import ValidationError
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from . import sieve_vacation


def _password_field(label, autocomplete):
    return forms.CharField(
        label=label, strip=False, max_length=200, widget=forms.PasswordInput(attrs={"autocomplete": autocomplete})
    )


class PasswordChangeForm(forms.Form):
    # "password" and "new_password": names django-axes masks when it records a failure
    password = _password_field(_("Current password"), "current-password")
    new_password = _password_field(_("New password"), "new-password")

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("auto_id", "mailbox_password_%s")
        super().__init__(*args, **kwargs)


class VacationForm(forms.Form):
    enabled = forms.BooleanField(label=_("Send an out-of-office reply"), required=False)
    subject = forms.CharField(label=_("Subject"), max_length=sieve_vacation.MAX_SUBJECT, required=False)
    body = forms.CharField(
        label=_("Message"), max_length=sieve_vacation.MAX_BODY, required=False, widget=forms.Textarea(attrs={"rows": 6})
    )
    start = forms.DateField(label=_("From"), required=False, widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(label=_("Until"), required=False, widget=forms.DateInput(attrs={"type": "date"}))
    password = _password_field(_("Your password"), "current-password")

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("auto_id", "mailbox_vacation_%s")
        super().__init__(*args, **kwargs)
        self.fields["password"].help_text = _("The mail server's filters are changed in your name: confirm with your password.")

    def clean_subject(self):
        subject = self.cleaned_data["subject"].strip()
        if sieve_vacation.has_control_characters(subject) or "\n" in subject or "\r" in subject:
            raise ValidationError(_("The subject is one line without control characters."))
        return subject

    def clean_body(self):
        body = self.cleaned_data["body"]
        if sieve_vacation.has_control_characters(body):
            raise ValidationError(_("The message cannot contain control characters."))
        return body

    def clean(self):
        data = super().clean()
        if data.get("enabled"):
            if not data.get("subject"):
                self.add_error("subject", _("Enter a subject for the reply."))
            if not (data.get("body") or "").strip():
                self.add_error("body", _("Enter the message people get."))
        start, end = data.get("start"), data.get("end")
        if start and end and end < start:
            self.add_error("end", _("The reply cannot end before it starts."))
        if data.get("enabled") and end and end < timezone.localdate():
            self.add_error("end", _("This date has passed: the reply would never be sent."))
        return data


class ForwardForm(forms.Form):
    target = forms.CharField(label=_("Forward to"), max_length=254)
    keep_copy = forms.BooleanField(label=_("Keep a copy in this mailbox"), required=False, initial=True)

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("auto_id", "mailbox_forward_%s")
        super().__init__(*args, **kwargs)


class KeepCopyForm(forms.Form):
    keep_copy = forms.BooleanField(required=False)
