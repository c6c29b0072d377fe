"""Hold, don't bounce: what happens after a sender passes its limit.

Exim accepts the sender's further mail and freezes it (the ratelimit ACL,
mailconf.render.exim). check_held() — periodic, `mail held check` from a
systemd timer — asks the helper which senders have held mail; for a sender
seen for the first time it records a SendHold, which suspends its sending
(held_senders: everything it sends is held, whatever its rate), and mails the
domain's owner and the admins ONE message through panel SMTP: how many were
held, the top recipients and where the mail came from.

resolve() is the one action that ends it: a new password for the mailbox
(unless the admin or owner says it was not stolen), its IMAP sessions ended
(doveadm kick), then the held mail released or deleted, then the suspension
lifted — in that order, in a job (services/jobs.py), so that the mail goes
only once the new password is live and no check in between mistakes the
mail being released for a new incident.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.mail import EmailMessage
from django.db import transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _

from ..helper_client import HelperError, call_helper
from ..models import JobKind, MailAccount, MailDomain, SendHold, acts_as_admin
from . import accounts, audit, jobs

logger = logging.getLogger(__name__)

RELEASE, DELETE = "release", "delete"
TASK = "mailadmin.tasks.finish_hold"
DOMAIN_STAR = "*"  # the key of a domain's local submissions (its mapped Unix users)


def visible_holds(user):
    """The holds of the user's domains (admins: all), newest first."""
    domains = MailDomain.objects.visible_to(user)
    return SendHold.objects.filter(domain__in=domains).select_related("domain", "domain__owner")


def split_key(key: str) -> tuple[str, str]:
    local, _sep, domain = key.rpartition("@")
    return local, domain


# --- the periodic check ---------------------------------------------------------


def check_held(log=None) -> list[SendHold]:
    """Record new holds (and apply their suspension), refresh the counts of
    known ones, then send each hold's one notification if not sent yet.
    Returns the holds recorded now."""
    log = log or (lambda line: None)
    senders = call_helper({"op": "held_senders"}).get("senders", [])
    created = []
    for entry in senders:
        local, name = split_key(entry["sender_key"])
        domain = MailDomain.objects.filter(name=name).first()
        if domain is None or not local:
            log(f"held mail from {entry['sender_key']}: no such domain here")
            continue
        summary = {key: entry.get(key) for key in ("recipients", "sources", "first", "last")}
        reason = (entry.get("reasons") or ["hour"])[0]
        with transaction.atomic():
            hold, new = SendHold.objects.get_or_create(
                domain=domain,
                local_part=local,
                defaults={"reason": reason, "held_count": entry["count"], "summary": summary},
            )
            if new:
                audit.record(None, "send_hold.start", entry["sender_key"], ["held_count"])
                jobs.request_apply(None, domain=domain)
                created.append(hold)
                log(f"held: {entry['sender_key']} ({entry['count']} messages, {reason})")
            elif (hold.held_count, hold.summary) != (entry["count"], summary):
                hold.held_count, hold.summary = entry["count"], summary
                hold.save(update_fields=["held_count", "summary"])
    for hold in SendHold.objects.filter(notified_at=None).select_related("domain", "domain__owner"):
        if notify(hold):
            log(f"notified about {hold.sender_key}")
    return created


def notification_recipients(hold: SendHold) -> list[str]:
    owner = hold.domain.owner
    admins = get_user_model().objects.filter(is_active=True, is_staff=True).exclude(email="")
    addresses = [owner.email] if owner.email else []
    addresses += [email for email in admins.order_by("pk").values_list("email", flat=True)]
    return list(dict.fromkeys(a.strip().lower() for a in addresses if a.strip()))


def notification(hold: SendHold) -> EmailMessage:
    summary = hold.summary or {}
    sender = _("the web applications mapped to %(domain)s") % {"domain": hold.domain.unicode_name} \
        if hold.local_part == DOMAIN_STAR else f"{hold.local_part}@{hold.domain.unicode_name}"
    lines = [
        _("%(sender)s passed its sending limit. Its mail is held on the server: nothing was "
          "sent and nothing was lost. Its sending stays suspended until you act.") % {"sender": sender},
        "",
        _("Messages held so far: %(count)d") % {"count": hold.held_count},
        "",
        _("Most frequent recipients:"),
        *(f"  {address} ({count})" for address, count in summary.get("recipients") or []),
        "",
        _("Where the mail came from (IP address or local user):"),
        *(f"  {source} ({count})" for source, count in summary.get("sources") or []),
        "",
    ]
    if hold.local_part != DOMAIN_STAR:
        lines.append(_("If this was not you, the password was probably stolen: set a new one, then "
                       "release or delete the held mail here:"))
    else:
        lines.append(_("Check the web applications of this domain, then release or delete the held "
                       "mail here:"))
    lines.append(settings.MAILPANEL_BASE_URL.rstrip("/") + reverse("mailadmin:hold_detail", args=[hold.pk]))
    return EmailMessage(
        subject=_("Mail from %(sender)s is held: sending limit passed") % {"sender": sender},
        body="\n".join(lines) + "\n",
        to=notification_recipients(hold),
    )


def notify(hold: SendHold) -> bool:
    """Send the hold's one mail; True when it went out (or had nobody to
    go to). A failure leaves notified_at empty: the next check tries again."""
    message = notification(hold)
    if message.to:
        try:
            message.send()
        except Exception:  # any mail failure: logged, retried next time
            logger.exception("held-mail notification for %s failed", hold.sender_key)
            return False
    SendHold.objects.filter(pk=hold.pk).update(notified_at=timezone.now())
    return True


# --- the one action --------------------------------------------------------------


def resolve(actor, hold: SendHold, action: str, password: str = "", keep_password: bool = False):
    """Start ending a hold: the mailbox gets `password` (unless keep_password),
    then a job kicks its sessions, releases or deletes the held mail and
    lifts the suspension. Admins and the domain's owner. Returns the job."""
    if action not in (RELEASE, DELETE):
        raise ValueError(f"unknown hold action {action!r}")
    if not (acts_as_admin(actor) or hold.domain.owner_id == getattr(actor, "pk", None)):
        raise ValidationError(_("No such held sender."))
    account = None
    if hold.local_part != DOMAIN_STAR:
        account = MailAccount.objects.filter(domain=hold.domain, local_part=hold.local_part).select_related("domain").first()
    if account is not None and not keep_password:
        if not password:
            raise ValidationError({"password": _("Enter a new password, or confirm that the password was not stolen.")})
        accounts.set_password(actor, account, password)
    audit.record(actor, f"send_hold.{action}", hold.sender_key, ["password_hash"] if account and not keep_password else [])
    return jobs.start_job(
        JobKind.HOLD_RELEASE, actor, hold.domain, TASK,
        hold_id=hold.pk, action=action, kick=account is not None,
    )


def run_finish_job(job_id: int, hold_id: int, action: str, kick: bool) -> None:
    """The job: the new password live, sessions ended, the mail released or
    deleted, then the suspension lifted."""
    from .apply import apply_now

    def work(job, log):
        hold = SendHold.objects.select_related("domain").filter(pk=hold_id).first()
        if hold is None:
            log("this hold was ended already")
            return {}
        name = hold.domain.name
        apply_now(log, domains={name})
        if kick:
            answer = call_helper({"op": "kick_mailbox", "address": hold.sender_key})
            log(_("IMAP sessions ended") if answer.get("kicked") else _("no IMAP session was open"))
        queue_action = "deliver" if action == RELEASE else "delete"
        answer = call_helper({"op": "queue_action", "action": queue_action, "sender_key": hold.sender_key})
        count = len(answer.get("ids", []))
        log((_("%(count)d held messages released") if action == RELEASE else _("%(count)d held messages deleted"))
            % {"count": count})
        with transaction.atomic():  # a failed apply keeps the hold (and the suspension with it)
            hold.delete()
            apply_now(log, domains={name})
        log(_("sending of %(sender)s is no longer suspended") % {"sender": hold.sender_key})
        return {"messages": count, "action": action}

    jobs.run_job(job_id, work, expected=(HelperError,))
