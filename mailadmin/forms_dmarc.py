"""The DMARC reports section's form: which mailbox receives the reports."""

from django import forms
from django.utils.translation import gettext_lazy as _


class DmarcMailboxForm(forms.Form):
    local_part = forms.CharField(
        label=_("Reports mailbox"),
        max_length=64,
        initial="dmarc-reports",
        help_text=_("A new mailbox of this domain that the panel makes and reads; nobody else logs in to it."),
    )
