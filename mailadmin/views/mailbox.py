"""Mailbox self-service: a mailbox owner, signed in with the address and its
password (mailbox_session), sees their own mailbox and nothing else —
password, out-of-office reply, forwarding, quota used, and the settings and
profile for their mail programs. Every view takes the mailbox from the
session (`mailbox_required`), never from the URL; the one id a URL carries
(a forward to delete) is looked up among that mailbox's own forwards.

Changing the password and the out-of-office reply ask for the current
password; a wrong one counts as a failed login (django-axes).
"""

from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from ..forms_mailbox import ForwardForm, KeepCopyForm, PasswordChangeForm, VacationForm
from ..mailbox_session import confirm_password, keep_after_password_change, log_out, mailbox_required
from ..services import client_config as client_service
from ..services import mailbox as service
from .autoconfig import mobileconfig_response
from .shell import Section, done, respond

PAGE = "mailadmin/mailbox/page.html"


def _url(account) -> str:
    return reverse("mailadmin:mailbox_home")


def password_context(request, account, form=None) -> dict:
    return {"password_form": form or PasswordChangeForm()}


def vacation_context(request, account, form=None) -> dict:
    if form is None:
        saved = service.vacation_of(account)
        form = VacationForm(
            initial={"enabled": saved.enabled, "subject": saved.subject, "body": saved.body, "start": saved.start, "end": saved.end}
        )
    return {"vacation_form": form, "sieve_available": service.sieve_available()}


def forwarding_context(request, account, form=None) -> dict:
    return {"forwards": list(account.forwards.order_by("target")), "forward_form": form or ForwardForm()}


def page_context(request, account) -> dict:
    return {
        "account": account,
        "address": service.address(account),
        "usage": service.usage(account),
        "client_settings": client_service.client_settings(account.domain),
        **password_context(request, account),
        **vacation_context(request, account),
        **forwarding_context(request, account),
    }


def _section(name, context) -> Section:
    return Section.of(PAGE, name, lambda request, account, **kw: {
        "account": account, **context(request, account, **kw)
    }, _url, page_context)


PASSWORD = _section("mailbox-password", password_context)
VACATION = _section("mailbox-vacation", vacation_context)
FORWARDING = _section("mailbox-forwarding", forwarding_context)


HOME = Section("mailbox", PAGE, PAGE, page_context, _url)


@require_GET
@mailbox_required
def mailbox_home(request, account):
    return respond(request, HOME, account)


def _locked_or_wrong(confirmed) -> str:
    if confirmed is None:
        return _("Too many wrong passwords. Wait a while and try again.")
    return _("That is not the mailbox's current password.")


@require_POST
@mailbox_required
def mailbox_password(request, account):
    form = PasswordChangeForm(request.POST)
    if form.is_valid():
        confirmed = confirm_password(request, account, form.cleaned_data["password"])
        if not confirmed:
            form.add_error("password", _locked_or_wrong(confirmed))
        else:
            try:
                change = service.change_password(account, form.cleaned_data["new_password"])
            except ValidationError as exc:
                form.add_error("new_password", exc.message_dict.get("password", exc.messages))
            else:
                keep_after_password_change(request, change.object)
                return done(request, PASSWORD, account, notice=_("Password changed. Use the new one in your mail programs."))
    return respond(request, PASSWORD, account, status=400, form=form)


@require_POST
@mailbox_required
def mailbox_vacation(request, account):
    form = VacationForm(request.POST)
    try:
        service.require_sieve()  # before the password is checked: nothing to confirm
    except ValidationError as exc:
        form.add_error(None, exc)
    if form.is_valid():
        data = form.cleaned_data
        confirmed = confirm_password(request, account, data["password"])
        if not confirmed:
            form.add_error("password", _locked_or_wrong(confirmed))
        else:
            try:
                change = service.save_vacation(
                    account, data["password"], enabled=data["enabled"], subject=data["subject"],
                    body=data["body"], start=data["start"], end=data["end"],
                )
            except ValidationError as exc:
                form.add_error(None, exc)
            else:
                notice = _("The out-of-office reply is on.") if change.object.enabled else _("The out-of-office reply is off.")
                return done(request, VACATION, account, notice=notice)
    return respond(request, VACATION, account, status=400, form=form)


@require_POST
@mailbox_required
def mailbox_forward_add(request, account):
    form = ForwardForm(request.POST)
    if form.is_valid():
        try:
            service.add_forward(account, form.cleaned_data["target"], form.cleaned_data["keep_copy"])
        except ValidationError as exc:
            form.add_error("target", exc.message_dict.get("target", exc.messages))
        else:
            return done(request, FORWARDING, account, notice=_("Forward added."))
    return respond(request, FORWARDING, account, status=400, form=form)


@require_POST
@mailbox_required
def mailbox_forward_delete(request, account, forward_id):
    forward = get_object_or_404(account.forwards, pk=forward_id)
    service.delete_forward(account, forward)
    return done(request, FORWARDING, account, notice=_("Forward removed."))


@require_POST
@mailbox_required
def mailbox_keep_copy(request, account):
    form = KeepCopyForm(request.POST)
    form.is_valid()  # a missing box is False
    try:
        service.set_keep_copy(account, form.cleaned_data.get("keep_copy", False))
    except ValidationError as exc:
        return done(request, FORWARDING, account, error=" ".join(exc.messages))
    return done(request, FORWARDING, account, notice=_("Saved."))


@require_GET
@mailbox_required
def mailbox_mobileconfig(request, account):
    return mobileconfig_response(account)


@require_POST
@mailbox_required
def mailbox_logout(request, account):
    log_out(request)
    return redirect("login")
