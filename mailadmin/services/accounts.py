"""Mail accounts, aliases, forwards and the catch-all: the one place that
changes them.

Every change validates first, writes inside one transaction, then checks the
resulting delivery graph of the domain for loops before committing — so a
refused change leaves nothing half-saved. Each change is audited (field names
only) and asks for an apply; the rendered per-domain files are read by Exim
and Dovecot at run time, so no restart follows.

Errors are ValidationError({field: message}) so a form can show them next to
the field and the CLI prints the message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import idna
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils.translation import gettext as _

from .. import passwords
from ..models import MailAccount, MailAlias, MailDomain, MailForward, acts_as_admin
from ..validation import normalize_address, normalize_domain, validate_local_part
from . import audit, customers, jobs
from .outcome import Change

MAX_QUOTA_MB = 1024 * 1024  # 1 TiB: beyond any disk this panel runs on

# Stricter than RFC 5322: these land as lsearch keys, Dovecot user names and
# Maildir folder names (see mailconf/validate.py), so no quotes, slashes or
# characters Exim's redirect parser gives a meaning (| / : , " \).
_ACCOUNT_LOCAL_RE = re.compile(r"^[a-z0-9](?:[a-z0-9._+-]{0,62}[a-z0-9_+-])?$")
_TARGET_LOCAL_RE = re.compile(r"^[a-z0-9_+=-](?:[a-z0-9._+=-]{0,63})$")


# --- pure validation -------------------------------------------------------


def normalize_local_part(value: str, field: str = "local_part") -> str:
    """A new account's or alias's local part, lower case."""
    raw = (value or "").strip()
    try:
        local = validate_local_part(raw)
    except ValidationError as exc:
        raise ValidationError({field: exc.messages})
    if not _ACCOUNT_LOCAL_RE.match(local) or ".." in local:
        raise ValidationError(
            {
                field: _(
                    "“%(value)s” cannot be used before the @: use letters, digits and . _ - + "
                    "(not at the start or end, no two dots in a row)."
                )
                % {"value": raw}
            }
        )
    return local


def normalize_target(value: str, field: str = "target") -> str:
    """A delivery target: local@domain, domain in IDNA form, nothing Exim
    could read as a pipe, file or include."""
    raw = (value or "").strip()
    try:
        address = normalize_address(raw)
    except ValidationError as exc:
        raise ValidationError({field: exc.messages})
    local = address.rsplit("@", 1)[0]
    if not _TARGET_LOCAL_RE.match(local) or ".." in local or local.endswith("."):
        raise ValidationError(
            {
                field: _(
                    "“%(value)s” cannot be used as a delivery address: only letters, digits "
                    "and . _ - + = before the @."
                )
                % {"value": raw}
            }
        )
    return address


def normalize_quota(value, field: str = "quota_mb") -> int:
    if value in (None, ""):
        return 0
    try:
        quota = int(value)
    except (TypeError, ValueError):
        raise ValidationError({field: _("The quota is a whole number of MB (0 = unlimited).")})
    if quota < 0 or quota > MAX_QUOTA_MB:
        raise ValidationError(
            {field: _("The quota is a number of MB from 0 (unlimited) to %(max)d.") % {"max": MAX_QUOTA_MB}}
        )
    return quota


def _password(value: str, local_part: str, domain_name: str, field: str = "password") -> str:
    context = (local_part, domain_name.split(".")[0], domain_name)
    try:
        return passwords.hash_password(passwords.validate_new_password(value, context))
    except ValidationError as exc:
        raise ValidationError({field: exc.messages})


def address_of(account: MailAccount) -> str:
    return f"{account.local_part}@{account.domain.name}"


def display_address(address: str) -> str:
    """An address as people read it: the domain in Unicode (stored as IDNA)."""
    local, sep, name = (address or "").rpartition("@")
    if not sep:
        return address
    try:
        return f"{local}@{idna.decode(name)}"
    except idna.IDNAError:
        return address


# --- the delivery graph: refuse loops ---------------------------------------


@dataclass
class _DomainRoutes:
    local: bool  # delivered here (not hosted elsewhere)
    accounts: dict[str, list[str]]  # local part → forward targets
    aliases: dict[str, list[str]]  # local part → targets
    catchall: str


def _load_routes(name: str) -> _DomainRoutes:
    domain = MailDomain.objects.filter(name=name).first()
    if domain is None or domain.hosted_elsewhere:
        return _DomainRoutes(False, {}, {}, "")
    accounts = {local: [] for local in domain.accounts.values_list("local_part", flat=True)}
    for local, target in MailForward.objects.filter(account__domain=domain).values_list(
        "account__local_part", "target"
    ):
        accounts[local].append(target)
    aliases: dict[str, list[str]] = {}
    for local, target in domain.aliases.values_list("local_part", "target"):
        aliases.setdefault(local, []).append(target)
    return _DomainRoutes(True, accounts, aliases, domain.catchall)


class _Graph:
    """Where mail to an address goes next, read lazily one domain at a time."""

    def __init__(self):
        self._domains: dict[str, _DomainRoutes] = {}

    def routes(self, domain_name: str) -> _DomainRoutes:
        if domain_name not in self._domains:
            self._domains[domain_name] = _load_routes(domain_name)
        return self._domains[domain_name]

    def exists(self, address: str) -> bool:
        local, name = address.rsplit("@", 1)
        routes = self.routes(name)
        return local in routes.accounts or local in routes.aliases

    def next_hops(self, address: str) -> list[str]:
        local, name = address.rsplit("@", 1)
        routes = self.routes(name)
        if not routes.local:
            return []
        if local in routes.aliases:
            return routes.aliases[local]
        if local in routes.accounts:
            return routes.accounts[local]
        return [routes.catchall] if routes.catchall else []


def _find_loop(domain: MailDomain) -> list[str] | None:
    """A delivery cycle reachable from any address of the domain, or None."""
    graph = _Graph()
    routes = graph.routes(domain.name)
    starts = sorted({*routes.accounts, *routes.aliases})
    starts = [f"{local}@{domain.name}" for local in starts]
    if routes.catchall:
        starts.append(routes.catchall)
    done: set[str] = set()
    for start in starts:
        stack = [(start, iter(graph.next_hops(start)))]
        path, on_path = [start], {start}
        while stack:
            node, hops = stack[-1]
            nxt = next(hops, None)
            if nxt is None:
                stack.pop()
                path.pop()
                on_path.discard(node)
                done.add(node)
                continue
            if nxt in on_path:
                return path[path.index(nxt) :] + [nxt]
            if nxt in done or len(done) > 10000:
                continue
            stack.append((nxt, iter(graph.next_hops(nxt))))
            path.append(nxt)
            on_path.add(nxt)
    return None


def _check_no_loop(actor, domain: MailDomain, field: str) -> None:
    loop = _find_loop(domain)
    if loop:
        raise ValidationError(
            {field: _("This would make mail go round in a loop: %(loop)s.") % {"loop": _loop_as_seen_by(actor, loop)}}
        )


def _loop_as_seen_by(actor, loop: list[str]) -> str:
    """The loop, naming only addresses in the actor's own domains: another
    customer's addresses are theirs to know (admins and the CLI see all)."""
    if acts_as_admin(actor):
        return " → ".join(display_address(address) for address in loop)
    domains = {address.rpartition("@")[2] for address in loop}
    if hasattr(actor, "own_domains"):  # a mailbox acting on itself (mailbox_session.MailboxActor)
        own = domains & set(actor.own_domains)
    else:
        own = set(MailDomain.objects.filter(owner=actor, name__in=domains).values_list("name", flat=True))
    foreign = _("an address outside your domains")
    shown: list[str] = []
    for address in loop:
        if address.rpartition("@")[2] in own:
            shown.append(display_address(address))
        elif not shown or shown[-1] != foreign:  # one mention for a run of them
            shown.append(foreign)
    return " → ".join(shown)


def _check_local_target_exists(domain: MailDomain, target: str, field: str) -> None:
    """A target in the same domain must be an account or alias: otherwise the
    mail bounces (or, through a catch-all, goes somewhere unexpected)."""
    local, name = target.rsplit("@", 1)
    if name != domain.name or domain.hosted_elsewhere:
        return
    if not (
        MailAccount.objects.filter(domain=domain, local_part=local).exists()
        or MailAlias.objects.filter(domain=domain, local_part=local).exists()
    ):
        raise ValidationError({field: _("There is no account or alias %(address)s.") % {"address": target}})


def _drop_dangling_catchall(domain: MailDomain) -> bool:
    """After a delete: a catch-all pointing at an address of its own domain
    that no longer exists would send unknown mail round in a circle."""
    if not domain.catchall:
        return False
    local, name = domain.catchall.rsplit("@", 1)
    if name != domain.name:
        return False
    if (
        MailAccount.objects.filter(domain=domain, local_part=local).exists()
        or MailAlias.objects.filter(domain=domain, local_part=local).exists()
    ):
        return False
    domain.catchall = ""
    domain.save(update_fields=["catchall", "updated_at"])
    return True


def _changed(actor, action: str, target: str, fields, domain: MailDomain):
    """Audit the change and ask for an apply; returns the apply job."""
    audit.record(actor, action, target, fields)
    return jobs.request_apply(actor, domain=domain)


# --- accounts ----------------------------------------------------------------


def add_account(actor, domain: MailDomain, local_part: str, password: str, quota_mb=0) -> Change[MailAccount]:
    errors = {}
    try:
        local = normalize_local_part(local_part)
    except ValidationError as exc:
        errors.update(exc.message_dict)
        local = ""
    if "+" in local:
        # user+tag@ is sub-addressing: Dovecot finds the mailbox without the
        # tag, so a mailbox named with a "+" could never receive (an alias can).
        errors["local_part"] = [
            _("A mailbox name cannot contain “+”: user+tag@ delivers to user. Use an alias for that address.")
        ]
    elif local:
        if MailAccount.objects.filter(domain=domain, local_part=local).exists():
            errors["local_part"] = [_("The account %(address)s already exists.") % {"address": f"{local}@{domain.unicode_name}"}]
        elif MailAlias.objects.filter(domain=domain, local_part=local).exists():
            errors["local_part"] = [
                _("%(address)s is already an alias. Delete the alias first.") % {"address": f"{local}@{domain.unicode_name}"}
            ]
    try:
        quota = normalize_quota(quota_mb)
    except ValidationError as exc:
        errors.update(exc.message_dict)
    try:
        password_hash = _password(password, local or local_part, domain.name)
    except ValidationError as exc:
        errors.update(exc.message_dict)
    if errors:
        raise ValidationError(errors)
    try:
        with transaction.atomic():
            customers.check_mailbox_room(actor, domain.owner, quota)
            account = MailAccount.objects.create(
                domain=domain, local_part=local, password_hash=password_hash, quota_mb=quota
            )
            _check_no_loop(actor, domain, "local_part")  # a new account can end a catch-all chain
            fields = ("local_part", "password_hash", "quota_mb")
            job = _changed(actor, "account.add", address_of(account), fields, domain)
    except IntegrityError:
        raise ValidationError({"local_part": _("The account %(address)s already exists.") % {"address": f"{local}@{domain.unicode_name}"}})
    return Change(account, job, fields)


def update_account(actor, account: MailAccount, password: str = "", quota_mb=None, forward_only=None) -> Change[MailAccount]:
    """Blank password = keep the current one."""
    errors, changed = {}, []
    new_hash = None
    if password:
        try:
            new_hash = _password(password, account.local_part, account.domain.name)
        except ValidationError as exc:
            errors.update(exc.message_dict)
    quota = account.quota_mb
    if quota_mb is not None:
        try:
            quota = normalize_quota(quota_mb)
        except ValidationError as exc:
            errors.update(exc.message_dict)
    if forward_only and not account.forwards.exists():
        errors["forward_only"] = [_("Add a forwarding address first: without one, mail would be lost.")]
    if errors:
        raise ValidationError(errors)
    if new_hash:
        account.password_hash = new_hash
        changed.append("password_hash")
    if quota != account.quota_mb:
        account.quota_mb = quota
        changed.append("quota_mb")
    if forward_only is not None and bool(forward_only) != account.forward_only:
        account.forward_only = bool(forward_only)
        changed.append("forward_only")
    if not changed:
        return Change(account)
    with transaction.atomic():
        if "quota_mb" in changed:
            customers.check_mailbox_room(actor, account.domain.owner, quota, account=account)
        account.save(update_fields=[*changed, "updated_at"])
        job = _changed(actor, "account.update", address_of(account), changed, account.domain)
    return Change(account, job, tuple(changed))


def set_password(actor, account: MailAccount, password: str) -> Change[MailAccount]:
    if not password:
        raise ValidationError({"password": _("Enter a password.")})
    return update_account(actor, account, password=password)


def delete_account(actor, account: MailAccount) -> Change[None]:
    """Also removes what only pointed at this mailbox in its domain (aliases
    to it, the catch-all if it was the target): left behind, they would bounce."""
    domain = account.domain
    address = address_of(account)
    try:
        with transaction.atomic():
            removed_aliases = MailAlias.objects.filter(domain=domain, target=address).delete()[0]
            fields = ["aliases"] if removed_aliases else []
            account.delete()
            if _drop_dangling_catchall(domain):
                fields.append("catchall")
            _check_no_loop(actor, domain, "local_part")
            job = _changed(actor, "account.delete", address, fields, domain)
    except ValidationError:
        domain.refresh_from_db(fields=["catchall"])
        raise
    return Change(None, job, tuple(fields))


# --- aliases -------------------------------------------------------------------


def add_alias(actor, domain: MailDomain, local_part: str, target: str) -> Change[MailAlias]:
    errors = {}
    try:
        local = normalize_local_part(local_part)
    except ValidationError as exc:
        errors.update(exc.message_dict)
        local = ""
    try:
        target_address = normalize_target(target)
    except ValidationError as exc:
        errors.update(exc.message_dict)
        target_address = ""
    if local:
        if MailAccount.objects.filter(domain=domain, local_part=local).exists():
            errors["local_part"] = [
                _("%(address)s is a mail account; an alias cannot have the same address.")
                % {"address": f"{local}@{domain.unicode_name}"}
            ]
        elif target_address and MailAlias.objects.filter(domain=domain, local_part=local, target=target_address).exists():
            errors["target"] = [
                _("The alias %(alias)s already delivers to %(target)s.")
                % {"alias": f"{local}@{domain.unicode_name}", "target": target_address}
            ]
    if local and target_address == f"{local}@{domain.name}":
        errors["target"] = [_("An alias cannot deliver to itself.")]
    if errors:
        raise ValidationError(errors)
    _check_local_target_exists(domain, target_address, "target")
    try:
        with transaction.atomic():
            alias = MailAlias.objects.create(domain=domain, local_part=local, target=target_address)
            _check_no_loop(actor, domain, "target")
            job = _changed(actor, "alias.add", f"{local}@{domain.name}", ["local_part", "target"], domain)
    except IntegrityError:
        raise ValidationError({"target": _("This alias exists already.")})
    return Change(alias, job, ("local_part", "target"))


def delete_alias(actor, alias: MailAlias) -> Change[None]:
    domain = alias.domain
    address = f"{alias.local_part}@{domain.name}"
    fields = ["local_part", "target"]
    with transaction.atomic():
        alias.delete()
        if _drop_dangling_catchall(domain):
            fields.append("catchall")
        _check_no_loop(actor, domain, "target")
        job = _changed(actor, "alias.delete", address, fields, domain)
    return Change(None, job, tuple(fields))


def find_alias(domain: MailDomain, local_part: str, target: str) -> MailAlias:
    local = normalize_local_part(local_part)
    target_address = normalize_target(target)
    alias = MailAlias.objects.filter(domain=domain, local_part=local, target=target_address).first()
    if alias is None:
        raise ValidationError(
            {"local_part": _("There is no alias %(alias)s → %(target)s.") % {"alias": f"{local}@{domain.unicode_name}", "target": target_address}}
        )
    return alias


# --- forwards --------------------------------------------------------------------


def add_forward(actor, account: MailAccount, target: str, forward_only=None) -> Change[MailForward]:
    """forward_only=True/False also sets "keep no local copy"; None leaves it."""
    target_address = normalize_target(target)
    domain = account.domain
    if target_address == address_of(account):
        raise ValidationError({"target": _("An account cannot forward to itself.")})
    if account.forwards.filter(target=target_address).exists():
        raise ValidationError(
            {"target": _("%(address)s is already forwarded to %(target)s.") % {"address": str(account), "target": target_address}}
        )
    _check_local_target_exists(domain, target_address, "target")
    fields = ["target"]
    try:
        with transaction.atomic():
            forward = MailForward.objects.create(account=account, target=target_address)
            if forward_only is not None and bool(forward_only) != account.forward_only:
                account.forward_only = bool(forward_only)
                account.save(update_fields=["forward_only", "updated_at"])
                fields.append("forward_only")
            _check_no_loop(actor, domain, "target")
            job = _changed(actor, "forward.add", address_of(account), fields, domain)
    except IntegrityError:
        account.refresh_from_db(fields=["forward_only"])
        raise ValidationError({"target": _("This forward exists already.")})
    except ValidationError:
        account.refresh_from_db(fields=["forward_only"])  # rolled back: so is the object
        raise
    return Change(forward, job, tuple(fields))


def delete_forward(actor, forward: MailForward) -> Change[None]:
    """Deleting the last forward of a forward-only account turns local
    delivery back on: otherwise its mail would go nowhere."""
    account = forward.account
    fields = ["target"]
    with transaction.atomic():
        forward.delete()
        if account.forward_only and not account.forwards.exists():
            account.forward_only = False
            account.save(update_fields=["forward_only", "updated_at"])
            fields.append("forward_only")
        job = _changed(actor, "forward.delete", address_of(account), fields, account.domain)
    return Change(None, job, tuple(fields))


def find_forward(account: MailAccount, target: str) -> MailForward:
    target_address = normalize_target(target)
    forward = account.forwards.filter(target=target_address).first()
    if forward is None:
        raise ValidationError({"target": _("%(address)s is not forwarded to %(target)s.") % {"address": str(account), "target": target_address}})
    return forward


# --- catch-all -------------------------------------------------------------------


def set_catchall(actor, domain: MailDomain, target: str) -> Change[MailDomain]:
    """target "" clears the catch-all: unknown addresses are refused at RCPT."""
    target_address = normalize_target(target, "catchall") if (target or "").strip() else ""
    if target_address == domain.catchall:
        return Change(domain)
    if target_address:
        if target_address.rsplit("@", 1)[1] == domain.name:
            local = target_address.rsplit("@", 1)[0]
            if not MailAccount.objects.filter(domain=domain, local_part=local).exists() and not MailAlias.objects.filter(domain=domain, local_part=local).exists():
                raise ValidationError(
                    {"catchall": _("There is no account or alias %(address)s.") % {"address": target_address}}
                )
    previous = domain.catchall
    try:
        with transaction.atomic():
            domain.catchall = target_address
            domain.save(update_fields=["catchall", "updated_at"])
            _check_no_loop(actor, domain, "catchall")
            action = "catchall.set" if target_address else "catchall.clear"
            job = _changed(actor, action, domain.name, ["catchall"], domain)
    except Exception:
        domain.catchall = previous  # the row was rolled back; so is the object
        raise
    return Change(domain, job, ("catchall",))


def clear_catchall(actor, domain: MailDomain) -> Change[MailDomain]:
    return set_catchall(actor, domain, "")


# --- lookups for the CLI ------------------------------------------------------------


def split_address(value: str) -> tuple[MailDomain, str]:
    """"user@domain" → (the hosted domain, normalized local part). Raises
    ValidationError if the domain is not hosted here."""
    raw = (value or "").strip()
    if raw.count("@") != 1:
        raise ValidationError(_("“%(value)s” is not an email address.") % {"value": raw})
    local, name = raw.split("@")
    domain = MailDomain.objects.filter(name=normalize_domain(name)).first()
    if domain is None:
        raise ValidationError(_("No mail domain %(name)s on this server.") % {"name": name})
    return domain, local.strip().lower()


def get_account(value: str) -> MailAccount:
    domain, local = split_address(value)
    account = MailAccount.objects.filter(domain=domain, local_part=local).select_related("domain").first()
    if account is None:
        raise ValidationError(_("No mail account %(address)s.") % {"address": value.strip()})
    return account


def account_rows(domain: MailDomain) -> list[dict]:
    """The per-account summary the page, the CLI and --json share."""
    aliases: dict[str, list[str]] = {}
    for alias in domain.aliases.all():
        local, _sep, name = alias.target.rpartition("@")
        if name == domain.name:
            aliases.setdefault(local, []).append(f"{alias.local_part}@{domain.name}")
    rows = []
    for account in domain.accounts.prefetch_related("forwards").order_by("local_part"):
        rows.append(
            {
                "id": account.pk,
                "address": f"{account.local_part}@{domain.name}",
                "local_part": account.local_part,
                "quota_mb": account.quota_mb,
                "aliases": sorted(aliases.get(account.local_part, [])),
                "forwards": [f.target for f in account.forwards.all()],
                "forward_only": account.forward_only,
            }
        )
    return rows
