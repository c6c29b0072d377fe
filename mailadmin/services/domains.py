"""Mail domains: the one place that creates, changes and deletes them.

Who may hold which name is decided here, so the panel and the CLI agree:
admins (and the CLI) add any name that is not taken, live at once; customers
add only when the admin allows it, within their limits, never a reserved name
(domain_policy) nor one under or above another owner's domain, and their
domain stays pending (left out of the mail config) until a TXT record proves
they hold its DNS (services.ownership). No message names another owner."""

import logging
import secrets
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext as _

from .. import dkim, domain_policy
from ..helper_client import HelperError, call_helper
from ..models import MailDomain, ServerSettings, acts_as_admin
from ..validation import normalize_domain
from . import apply, audit, certificates, customers, jobs
from .outcome import Change

logger = logging.getLogger(__name__)


def _idna_or_raw(name: str) -> str:
    try:
        return normalize_domain(name)
    except ValidationError:
        return name.strip().lower().rstrip(".")


def reserved_names(server: ServerSettings) -> set[str]:
    """The server's own names: its hostname, the panel's host, the mail
    domains of every admin (where password resets go) and of panel mail."""
    admin_emails = (
        get_user_model()
        .objects.filter(Q(is_staff=True) | Q(is_superuser=True))
        .exclude(email="")
        .values_list("email", flat=True)
    )
    names = {server.hostname, domain_policy.host_of_url(settings.MAILPANEL_BASE_URL)}
    names.update(domain_policy.domain_of_address(email) for email in admin_emails)
    names.add(domain_policy.domain_of_address(server.panel_smtp_from))
    return {_idna_or_raw(name) for name in names if name}


def claim_problem(owner, name: str, exclude_pk=None) -> str | None:
    """Why the customer `owner` may not hold `name` (IDNA), or None."""
    problem = domain_policy.reserved_problem(name, reserved_names(ServerSettings.load_public()))
    if problem:
        return problem
    near = MailDomain.objects.filter(
        Q(name__in=domain_policy.ancestors(name)) | Q(name__endswith="." + name)
    ).exclude(owner=owner)
    if exclude_pk is not None:
        near = near.exclude(pk=exclude_pk)
    if near.exists():
        return _(
            "%(name)s is under or above a domain that is already hosted on this server. "
            "If it is yours, ask an administrator to add it."
        ) % {"name": name}
    return None


def add_domain(actor, owner, name: str, dkim_enabled: bool = True, node=None) -> MailDomain:
    """node: the MailNode it lives on (admins); None = the first node."""
    customer = not acts_as_admin(actor)
    if customer:
        if getattr(owner, "pk", None) != actor.pk:
            raise ValidationError(_("You can add mail domains only for yourself."))
        if not ServerSettings.load_public().customers_add_domains:
            raise ValidationError(
                _("Customers cannot add mail domains on this server. Ask an administrator to add it for you.")
            )
    ascii_name = normalize_domain(name)
    if MailDomain.objects.filter(name=ascii_name).exists():
        # Same message whoever owns it: customers must not learn who hosts what.
        raise ValidationError(_("The domain %(name)s is already hosted on this server.") % {"name": name.strip()})
    if customer and (problem := claim_problem(owner, ascii_name)):
        raise ValidationError(problem)
    private_pem = dkim.generate_private_pem() if dkim_enabled else ""
    with transaction.atomic():
        customers.check_domain_room(actor, owner)
        domain = MailDomain.objects.create(
            name=ascii_name,
            owner=owner,
            dkim_enabled=dkim_enabled,
            dkim_private_key=private_pem,
            dkim_created_at=timezone.now() if private_pem else None,
            pending=customer,
            verify_token=secrets.token_hex(16) if customer else "",
            **({"node": node} if node is not None and not customer else {}),
        )
        audit.record(actor, "domain.add", ascii_name, ["name", "owner", "dkim_enabled"])
        if not customer:  # a pending domain renders nothing: no apply until verified
            jobs.request_apply(actor, domain=domain)
    return domain


@dataclass
class DeleteOutcome:
    name: str
    moved_to: str | None = None  # where the Maildirs went; None when there was no mail
    error: str = ""  # the mail could not be moved away (logged and audited)


def delete_domain(actor, domain: MailDomain) -> DeleteOutcome:
    if domain.suspended and not acts_as_admin(actor):
        # Else deleting and adding it again would lift the suspension.
        raise ValidationError(
            _("%(name)s is suspended by an administrator and cannot be deleted.") % {"name": domain.unicode_name}
        )
    name = domain.name
    # A domain in the middle of a move is on both nodes (services/domain_move.py).
    node_ids = [domain.node_id, *jobs.old_nodes_of(domain)]
    with transaction.atomic():
        domain.delete()
        audit.record(actor, "domain.delete", name)
        for node_id in node_ids:
            jobs.request_apply(actor, domain_name=name, node=node_id)
            if jobs.multi_node():
                # Its Maildirs are on its node: that node's worker moves them,
                # after the apply queued before (one queue, in order).
                jobs.enqueue_on_node(node_id, "mailadmin.tasks.retire_domain_mail", name)
    if jobs.multi_node():
        return DeleteOutcome(name)
    return retire_mail(actor, name)


def retire_mail(actor, name: str) -> DeleteOutcome:
    """After the row is gone. First its certificate leaves the SNI index and
    the name stops being local (a one-domain apply, so Exim delivers nothing
    more into its Maildirs), then its mail is
    moved to <mail root>/.deleted/: a new domain of this name starts empty.
    A failure is logged, audited and returned for the caller to show."""
    try:  # its certificate leaves the SNI index (the files stay while a config names them)
        certificates.remove(actor, name)
    except HelperError as exc:
        logger.warning("the certificate of deleted domain %s was not removed: %s", name, exc)
    try:  # renders Dovecot and nginx without it; the helper then deletes its files
        # In a node's worker: that node's domains only, also when its
        # server-wide files are missing and the apply renders everything.
        apply.apply_now(domains={name}, node=certificates._this_node())
    except HelperError as exc:  # the queued apply job tries again
        logger.warning("apply after deleting %s failed: %s", name, exc)
    try:
        answer = call_helper({"op": "move_mail_away", "domain": name})
    except HelperError as exc:
        logger.error("the mail of deleted domain %s was not moved away: %s", name, exc)
        audit.record(actor, "domain.mail_not_moved", name)
        return DeleteOutcome(name, error=exc.message)
    moved_to = answer.get("moved_to")
    if moved_to:
        audit.record(actor, "domain.mail_moved", name)
    return DeleteOutcome(name, moved_to=moved_to)


def update_domain(actor, domain: MailDomain, **changes) -> Change[MailDomain]:
    """Set plain fields (dkim_enabled, suspended, hosted_elsewhere, catchall,
    role_address, subaddressing, local_senders), already validated."""
    allowed = {"dkim_enabled", "suspended", "hosted_elsewhere", "catchall", "role_address",
               "subaddressing", "local_senders", "mta_sts_enforce"}
    unknown = set(changes) - allowed
    if unknown:
        raise ValueError(f"not a domain setting: {sorted(unknown)}")
    changed = [f for f, v in changes.items() if getattr(domain, f) != v]
    if not changed:
        return Change(domain)
    for field, value in changes.items():
        setattr(domain, field, value)
    if domain.dkim_enabled and not domain.dkim_private_key:
        domain.dkim_private_key = dkim.generate_private_pem()
        domain.dkim_created_at = timezone.now()
        changed += ["dkim_private_key", "dkim_created_at"]
    with transaction.atomic():
        domain.save(update_fields=[*changed, "updated_at"])
        audit.record(actor, "domain.update", domain.name, changed)
        # Send-only, suspended and untagged domains are listed in server-wide files.
        server_wide = bool({"hosted_elsewhere", "suspended", "subaddressing"} & set(changed))
        # The MTA-STS mode is in DNS and the served policy only: no mail configuration changes.
        mail_config = set(changed) - {"mta_sts_enforce"}
        job = jobs.request_apply(actor, domain=domain, whole_server=server_wide) if mail_config else None
    return Change(domain, job, tuple(changed))
