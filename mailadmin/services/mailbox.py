"""Mailbox self-service: what a mailbox owner may change about their own
mailbox, and only that. The view has already checked who they are
(mailbox_session) and, where it is asked for, their current password.

Password and forwarding go through services.accounts like every other
change (same rules, audited under the mailbox's address, applied); the
out-of-office reply is a Sieve script put in place over ManageSieve with the
owner's own login (see mailadmin/managesieve.py for why), and remembered in
MailboxVacation so the page can show it.
"""

from __future__ import annotations

import datetime

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from .. import managesieve, quota, sieve_vacation
from ..mailbox_session import actor_for
from ..models import MailAccount, MailAlias, MailboxVacation, MailForward, ServerSettings
from . import accounts, audit
from .outcome import Change


def address(account: MailAccount) -> str:
    return accounts.address_of(account)


def usage(account: MailAccount) -> dict:
    """Bytes and messages Dovecot counted (None: unknown, never shown as
    zero), and the quota (0 = none)."""
    counted = quota.mailbox_usage(account.domain.name)
    mine = None if counted is None else counted.get(account.local_part, {"bytes": 0, "messages": 0})
    limit = account.quota_mb * 1024 * 1024
    return {
        "bytes": None if mine is None else mine["bytes"],
        "messages": None if mine is None else mine["messages"],
        "quota_mb": account.quota_mb,
        "percent": min(100, round(mine["bytes"] * 100 / limit)) if mine is not None and limit else None,
    }


# --- password and forwarding: the customer's rules, the mailbox as actor --------------


def change_password(account: MailAccount, new_password: str) -> Change[MailAccount]:
    return accounts.set_password(actor_for(account), account, new_password)


def add_forward(account: MailAccount, target: str, keep_copy: bool) -> Change[MailForward]:
    return accounts.add_forward(actor_for(account), account, target, forward_only=not keep_copy)


def delete_forward(account: MailAccount, forward: MailForward) -> Change[None]:
    return accounts.delete_forward(actor_for(account), forward)


def set_keep_copy(account: MailAccount, keep_copy: bool) -> Change[MailAccount]:
    return accounts.update_account(actor_for(account), account, forward_only=not keep_copy)


# --- out of office ----------------------------------------------------------------------


def sieve_available() -> bool:
    """Replies run in Dovecot's sieve plugin, which the ManageSieve switch turns on."""
    return ServerSettings.load_public().sieve_enabled


def require_sieve() -> None:
    if not sieve_available():
        raise ValidationError(_("Out-of-office replies need the mail server's filters (ManageSieve), which are off."))


def endpoint() -> managesieve.Endpoint:
    host, _sep, port = settings.MAILPANEL_MANAGESIEVE.rpartition(":")
    return managesieve.Endpoint(host.strip("[]"), int(port))


def vacation_of(account: MailAccount) -> MailboxVacation:
    return MailboxVacation.objects.filter(account=account).first() or MailboxVacation(account=account)


def reply_addresses(account: MailAccount) -> list[str]:
    """The mailbox and the aliases of its domain that deliver to it: mail to
    any of them gets the reply."""
    own = address(account)
    aliases = MailAlias.objects.filter(domain=account.domain, target=own).values_list("local_part", flat=True)
    return [own, *(f"{local}@{account.domain.name}" for local in sorted(aliases) if local != "*")]


SIEVE_PROBLEMS = {
    "unreachable": gettext_lazy("The mail server's filter service (ManageSieve) did not answer. Try again later."),
    "login": gettext_lazy("The mail server did not accept the password."),
    "refused": gettext_lazy("The mail server refused the reply. Shorten the message or remove unusual characters."),
}


def save_vacation(
    account: MailAccount,
    password: str,
    *,
    enabled: bool,
    subject: str,
    body: str,
    start: datetime.date | None,
    end: datetime.date | None,
) -> Change[MailboxVacation]:
    """Put the reply in place (or take it away) with the owner's password,
    then remember it. Nothing is stored when the mail server says no."""
    require_sieve()
    login = address(account)
    try:
        if enabled:
            script = sieve_vacation.vacation_script(subject, body, reply_addresses(account), start, end)
            managesieve.put_vacation(endpoint(), login, password, script)
        else:
            managesieve.remove_vacation(endpoint(), login, password)
    except managesieve.SieveError as exc:
        raise ValidationError(str(SIEVE_PROBLEMS[exc.reason])) from None
    with transaction.atomic():
        vacation = vacation_of(account)
        vacation.enabled, vacation.subject, vacation.body = enabled, subject, body
        vacation.start, vacation.end = start, end
        vacation.save()
        audit.record(actor_for(account), "mailbox.vacation", login, ["enabled", "subject", "body", "start", "end"])
    return Change(vacation, None, ("enabled",))
