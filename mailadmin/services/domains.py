"""Mail domains: the one place that creates, changes and deletes them."""

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.translation import gettext as _

from .. import dkim
from ..models import MailDomain
from . import audit, jobs
from ..validation import normalize_domain


def add_domain(actor, owner, name: str, dkim_enabled: bool = True) -> MailDomain:
    ascii_name = normalize_domain(name)
    if MailDomain.objects.filter(name=ascii_name).exists():
        # Same message whoever owns it: customers must not learn who hosts what.
        raise ValidationError(_("The domain %(name)s is already hosted on this server.") % {"name": name.strip()})
    private_pem = dkim.generate_private_pem() if dkim_enabled else ""
    with transaction.atomic():
        domain = MailDomain.objects.create(
            name=ascii_name, owner=owner, dkim_enabled=dkim_enabled, dkim_private_key=private_pem
        )
        audit.record(actor, "domain.add", ascii_name, ["name", "owner", "dkim_enabled"])
        jobs.request_apply(actor, domain=domain)
    return domain


def delete_domain(actor, domain: MailDomain) -> None:
    name = domain.name
    with transaction.atomic():
        domain.delete()
        audit.record(actor, "domain.delete", name)
        jobs.request_apply(actor, domain_name=name)


def update_domain(actor, domain: MailDomain, **changes) -> MailDomain:
    """Set plain fields (dkim_enabled, suspended, hosted_elsewhere, catchall)."""
    allowed = {"dkim_enabled", "suspended", "hosted_elsewhere", "catchall"}
    unknown = set(changes) - allowed
    if unknown:
        raise ValueError(f"not a domain setting: {sorted(unknown)}")
    changed = [f for f, v in changes.items() if getattr(domain, f) != v]
    if not changed:
        return domain
    for field, value in changes.items():
        setattr(domain, field, value)
    if domain.dkim_enabled and not domain.dkim_private_key:
        domain.dkim_private_key = dkim.generate_private_pem()
        changed.append("dkim_private_key")
    with transaction.atomic():
        domain.save(update_fields=[*changed, "updated_at"])
        audit.record(actor, "domain.update", domain.name, changed)
        # Send-only and suspended domains are listed in server-wide files.
        server_wide = bool({"hosted_elsewhere", "suspended"} & set(changed))
        jobs.request_apply(actor, domain=domain, whole_server=server_wide)
    return domain


def regenerate_dkim(actor, domain: MailDomain) -> MailDomain:
    """A new key waits as pending: the old one keeps signing until the owner
    confirms the new record is published (else mail fails DKIM in between)."""
    domain.dkim_pending_private_key = dkim.generate_private_pem()
    with transaction.atomic():
        domain.save(update_fields=["dkim_pending_private_key", "updated_at"])
        audit.record(actor, "dkim.regenerate", domain.name, ["dkim_pending_private_key"])
    return domain


def confirm_dkim(actor, domain: MailDomain) -> MailDomain:
    if not domain.dkim_pending_private_key:
        raise ValidationError(_("There is no new DKIM key waiting for confirmation."))
    domain.dkim_private_key = domain.dkim_pending_private_key
    domain.dkim_pending_private_key = ""
    with transaction.atomic():
        domain.save(update_fields=["dkim_private_key", "dkim_pending_private_key", "updated_at"])
        audit.record(actor, "dkim.confirm", domain.name, ["dkim_private_key"])
        jobs.request_apply(actor, domain=domain)
    return domain


def cancel_dkim(actor, domain: MailDomain) -> MailDomain:
    domain.dkim_pending_private_key = ""
    domain.save(update_fields=["dkim_pending_private_key", "updated_at"])
    audit.record(actor, "dkim.cancel", domain.name, ["dkim_pending_private_key"])
    return domain
