"""What an admin sets per customer: limits (mail domains, mailboxes, total
quota) and suspension. The limits bind what a customer does; admins and the
CLI may go past them. Enforced here, called by the domain and account
services, so the panel and the CLI share one rule.

Suspension is the profile's own flag, not copied onto each domain: the mail
config leaves out every domain of a suspended owner (MailDomain.objects.live)
and the login backend refuses them, so lifting it restores exactly the
domains that were not suspended on their own."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Sum
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from ..models import MailAccount, MailDomain, ServerSettings, UserProfile, acts_as_admin
from . import audit, jobs
from .outcome import Change

LIMIT_FIELDS = ("max_domains", "max_mailboxes", "max_quota_mb")


def _locked_profile(owner) -> UserProfile | None:
    """Call inside a transaction: the row lock makes two quick adds queue up,
    so both cannot pass the same count."""
    return UserProfile.objects.select_for_update().filter(user=owner).first()


def check_domain_room(actor, owner) -> None:
    if acts_as_admin(actor):
        return
    profile = _locked_profile(owner)
    if profile is None or profile.max_domains is None:
        return
    if MailDomain.objects.filter(owner=owner).count() >= profile.max_domains:
        raise ValidationError(
            ngettext(
                "Your plan allows %(count)d mail domain. Delete one or ask an administrator for more.",
                "Your plan allows %(count)d mail domains. Delete one or ask an administrator for more.",
                profile.max_domains,
            )
            % {"count": profile.max_domains}
        )


def check_mailbox_room(actor, owner, quota_mb: int, account: MailAccount | None = None) -> None:
    """A new mailbox (account=None) or a quota change of `account`."""
    if acts_as_admin(actor):
        return
    profile = _locked_profile(owner)
    if profile is None:
        return
    owned = MailAccount.objects.filter(domain__owner=owner)
    if account is None and profile.max_mailboxes is not None and owned.count() >= profile.max_mailboxes:
        raise ValidationError(
            {
                "__all__": ngettext(
                    "Your plan allows %(count)d mailbox. Delete one or ask an administrator for more.",
                    "Your plan allows %(count)d mailboxes. Delete one or ask an administrator for more.",
                    profile.max_mailboxes,
                )
                % {"count": profile.max_mailboxes}
            }
        )
    if profile.max_quota_mb is None:
        return
    if quota_mb == 0:
        raise ValidationError(
            {
                "quota_mb": _(
                    "Your plan has %(total)d MB of mailbox space in total: give this mailbox a quota in MB."
                )
                % {"total": profile.max_quota_mb}
            }
        )
    if account is not None:
        owned = owned.exclude(pk=account.pk)
    used = owned.aggregate(total=Sum("quota_mb"))["total"] or 0
    if used + quota_mb > profile.max_quota_mb:
        raise ValidationError(
            {
                "quota_mb": _(
                    "Your plan has %(total)d MB of mailbox space in total and %(left)d MB are left."
                )
                % {"total": profile.max_quota_mb, "left": max(profile.max_quota_mb - used, 0)}
            }
        )


def set_limits(actor, user, **limits) -> UserProfile:
    """limits: any of LIMIT_FIELDS, each a number or None (no limit). Lowering
    a limit below what the customer has already takes nothing away; it stops
    them from adding more."""
    unknown = set(limits) - set(LIMIT_FIELDS)
    if unknown:
        raise ValueError(f"not a limit: {sorted(unknown)}")
    for field, value in limits.items():
        if value is not None and (not isinstance(value, int) or value < 0):
            raise ValidationError({field: _("A limit is a whole number from 0, or empty for no limit.")})
    with transaction.atomic():
        profile, _created = UserProfile.objects.select_for_update().get_or_create(user=user)
        changed = [f for f, v in limits.items() if getattr(profile, f) != v]
        if not changed:
            return profile
        for field in changed:
            setattr(profile, field, limits[field])
        profile.save(update_fields=[*changed, "updated_at"])
        audit.record(actor, "user.limits", user.username, changed)
    return profile


def set_suspended(actor, user, suspended: bool) -> Change[UserProfile]:
    """All of the user's domains leave (or rejoin) the mail config; they cannot log in."""
    if suspended and user.pk == getattr(actor, "pk", None):
        raise ValidationError(_("You cannot suspend your own account."))
    job = None
    with transaction.atomic():
        profile, _created = UserProfile.objects.select_for_update().get_or_create(user=user)
        if profile.suspended == suspended:
            return Change(profile)
        profile.suspended = suspended
        profile.save(update_fields=["suspended", "updated_at"])
        audit.record(actor, "user.suspend" if suspended else "user.unsuspend", user.username, ["suspended"])
        if MailDomain.objects.filter(owner=user).exists():
            job = jobs.request_apply(actor)  # several domains, and the send-only list: the whole server
    return Change(profile, job, ("suspended",))


def set_customers_add_domains(actor, allowed: bool) -> ServerSettings:
    """The admin's switch: may customers add mail domains at all?"""
    server = ServerSettings.load()
    if server.customers_add_domains != allowed:
        server.customers_add_domains = allowed
        with transaction.atomic():
            server.save(update_fields=["customers_add_domains", "updated_at"])
            audit.record(actor, "server.customers_add_domains", "server", ["customers_add_domains"])
    return server
