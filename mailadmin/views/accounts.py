"""Mail accounts, aliases, forwards and the catch-all on the domain page.

Every view starts from get_domain_for_user (outsiders get 404) and finds the
account / alias / forward inside that domain only. Without JavaScript each
form does a POST and a redirect (or re-renders the page with the errors);
with htmx the same views return the section partial.
"""

from django.core.exceptions import ValidationError
from django.http import HttpResponseBadRequest
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from .. import passwords
from ..quota import mailbox_usage
from ..forms_accounts import (
    AccountAddForm,
    AccountEditForm,
    AliasForm,
    CatchallForm,
    ForwardForm,
    PasswordStrengthForm,
)
from ..models import MailAccount, MailAlias, MailForward
from ..services import accounts as account_service
from .common import get_domain_for_user
from .domain_page import client_settings
from .pages import DOMAIN_PAGE
from .shell import Section, done, job_area, respond

SECTION = "mailadmin/accounts/_section.html#accounts-section"
EDIT_PAGE = "mailadmin/accounts/account_edit.html"
USAGE_PAGE = "mailadmin/accounts/usage.html"


def section_context(request, domain, **forms) -> dict:
    """The Accounts tab: mailboxes, aliases, catch-all. `forms` replace the
    blank forms with bound ones (errors shown)."""
    accounts = list(domain.accounts.prefetch_related("forwards").order_by("local_part"))
    aliases = list(domain.aliases.order_by("local_part", "target"))
    by_target: dict[str, list[MailAlias]] = {}
    for alias in aliases:
        by_target.setdefault(alias.target, []).append(alias)
        alias.display_target = account_service.display_address(alias.target)
    for account in accounts:
        account.address = f"{account.local_part}@{domain.name}"
        account.display_address = f"{account.local_part}@{domain.unicode_name}"
        account.alias_list = by_target.get(account.address, [])
        account.forward_list = _with_display(account.forwards.all())
    return {
        "domain": domain,
        "accounts": accounts,
        "account_aliases": aliases,
        "account_add_form": forms.get("account_add_form") or AccountAddForm(),
        "alias_form": forms.get("alias_form") or AliasForm(),
        "catchall_form": forms.get("catchall_form")
        or CatchallForm(initial={"catchall": account_service.display_address(domain.catchall)}),
        "catchall_display": account_service.display_address(domain.catchall),
    }


ACCOUNTS_TAB = DOMAIN_PAGE.tab("accounts", SECTION, section_context)
ACCOUNTS = DOMAIN_PAGE.section("accounts", "accounts", SECTION, section_context)


def _with_display(forwards):
    forwards = list(forwards)
    for forward in forwards:
        forward.display_target = account_service.display_address(forward.target)
    return forwards


def _get_account(domain, account_id) -> MailAccount:
    return get_object_or_404(MailAccount.objects.select_related("domain"), pk=account_id, domain=domain)


def edit_context(request, domain, account, **forms) -> dict:
    account.forward_list = _with_display(account.forwards.all())
    account.alias_list = list(
        MailAlias.objects.filter(domain=domain, target=f"{account.local_part}@{domain.name}")
    )
    return {
        "domain": domain,
        "account": account,
        "edit_form": forms.get("edit_form")
        or AccountEditForm(initial={"quota_mb": account.quota_mb, "forward_only": account.forward_only}),
        "forward_form": forms.get("forward_form") or ForwardForm(initial={"forward_only": account.forward_only}),
        "client_settings": client_settings(domain),
    }


ACCOUNT_EDIT = Section.of(
    EDIT_PAGE,
    "account-edit",
    edit_context,
    lambda domain, account: reverse("mailadmin:account_edit", args=[domain.pk, account.pk]),
    page_context=job_area,
)


@require_GET
def domain_accounts(request, domain_id):
    return respond(request, ACCOUNTS_TAB, get_domain_for_user(request, domain_id))


# --- accounts ---------------------------------------------------------------


@require_POST
def account_add(request, domain_id):
    domain = get_domain_for_user(request, domain_id)
    form = AccountAddForm(request.POST)
    if form.is_valid():
        try:
            change = account_service.add_account(
                request.user,
                domain,
                form.cleaned_data["local_part"],
                form.cleaned_data["password"],
                quota_mb=form.cleaned_data["quota_mb"] or 0,
            )
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            notice = _("Mail account %(address)s added.") % {"address": str(change.object)}
            return done(request, ACCOUNTS, domain, notice=notice, job=change.job)
    return respond(request, ACCOUNTS, domain, status=400, account_add_form=form)


@require_http_methods(["GET", "POST"])
def account_edit(request, domain_id, account_id):
    domain = get_domain_for_user(request, domain_id)
    account = _get_account(domain, account_id)
    if request.method == "GET":
        return respond(request, ACCOUNT_EDIT, domain, account)
    form = AccountEditForm(request.POST)
    if form.is_valid():
        try:
            change = account_service.update_account(
                request.user,
                account,
                password=form.cleaned_data["password"],
                quota_mb=form.cleaned_data["quota_mb"] or 0,
                forward_only=form.cleaned_data["forward_only"],
            )
        except ValidationError as exc:
            form.add_error(None, exc)
            account.refresh_from_db()
        else:
            notice = _("Mail account %(address)s saved.") % {"address": str(account)}
            return done(request, ACCOUNT_EDIT, domain, account, notice=notice, job=change.job)
    return respond(request, ACCOUNT_EDIT, domain, account, status=400, edit_form=form)


@require_http_methods(["GET", "POST"])
def account_delete(request, domain_id, account_id):
    domain = get_domain_for_user(request, domain_id)
    account = _get_account(domain, account_id)
    if request.method == "GET":
        return render(request, "mailadmin/accounts/account_delete.html", {"domain": domain, "account": account})
    name = str(account)
    change = account_service.delete_account(request.user, account)
    domain.refresh_from_db(fields=["catchall"])  # the catch-all goes with its mailbox
    notice = _("Mail account %(address)s deleted.") % {"address": name}
    return done(request, ACCOUNTS, domain, notice=notice, job=change.job)


@require_POST
def password_strength(request, domain_id):
    """htmx feedback while typing; the same rules refuse a weak password on save."""
    domain = get_domain_for_user(request, domain_id)
    form = PasswordStrengthForm(request.POST)
    if not form.is_valid():
        return HttpResponseBadRequest()
    password, local_part = form.cleaned_data["password"], form.cleaned_data["local_part"]
    if not local_part and form.cleaned_data["account"]:
        local_part = _get_account(domain, int(form.cleaned_data["account"])).local_part
    strength = passwords.password_strength(password, (local_part, domain.name.split(".")[0], domain.name))
    return render(
        request,
        "mailadmin/accounts/_strength.html",
        {"strength": strength if password else None},
    )


# --- forwards ----------------------------------------------------------------


@require_POST
def forward_add(request, domain_id, account_id):
    domain = get_domain_for_user(request, domain_id)
    account = _get_account(domain, account_id)
    form = ForwardForm(request.POST)
    if form.is_valid():
        try:
            change = account_service.add_forward(
                request.user, account, form.cleaned_data["target"], forward_only=form.cleaned_data["forward_only"]
            )
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            notice = _("Forward to %(target)s added.") % {"target": change.object.target}
            return done(request, ACCOUNT_EDIT, domain, account, notice=notice, job=change.job)
    return respond(request, ACCOUNT_EDIT, domain, account, status=400, forward_form=form)


@require_POST
def forward_delete(request, domain_id, account_id, forward_id):
    domain = get_domain_for_user(request, domain_id)
    account = _get_account(domain, account_id)
    forward = get_object_or_404(MailForward, pk=forward_id, account=account)
    target = forward.target
    change = account_service.delete_forward(request.user, forward)
    notice = _("Forward to %(target)s removed.") % {"target": target}
    return done(request, ACCOUNT_EDIT, domain, account, notice=notice, job=change.job)


# --- aliases and catch-all ---------------------------------------------------------


@require_POST
def alias_add(request, domain_id):
    domain = get_domain_for_user(request, domain_id)
    form = AliasForm(request.POST)
    if form.is_valid():
        try:
            change = account_service.add_alias(
                request.user, domain, form.cleaned_data["local_part"], form.cleaned_data["target"]
            )
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            notice = _("Alias %(alias)s → %(target)s added.") % {
                "alias": f"{change.object.local_part}@{domain.unicode_name}",
                "target": account_service.display_address(change.object.target),
            }
            return done(request, ACCOUNTS, domain, notice=notice, job=change.job)
    return respond(request, ACCOUNTS, domain, status=400, alias_form=form)


@require_POST
def alias_delete(request, domain_id, alias_id):
    domain = get_domain_for_user(request, domain_id)
    alias = get_object_or_404(MailAlias, pk=alias_id, domain=domain)
    name = f"{alias.local_part}@{domain.unicode_name}"
    try:
        change = account_service.delete_alias(request.user, alias)
    except ValidationError as exc:
        return done(request, ACCOUNTS, domain, error=" ".join(exc.messages))
    domain.refresh_from_db(fields=["catchall"])
    return done(request, ACCOUNTS, domain, notice=_("Alias %(alias)s removed.") % {"alias": name}, job=change.job)


@require_POST
def catchall_set(request, domain_id):
    domain = get_domain_for_user(request, domain_id)
    form = CatchallForm(request.POST)
    if form.is_valid():
        target = "" if request.POST.get("action") == "clear" else form.cleaned_data["catchall"]
        try:
            change = account_service.set_catchall(request.user, domain, target)
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            if domain.catchall:
                notice = _("Mail to unknown addresses now goes to %(target)s.") % {
                    "target": account_service.display_address(domain.catchall)
                }
            else:
                notice = _("The catch-all is off: mail to unknown addresses is refused.")
            return done(request, ACCOUNTS, domain, notice=notice, job=change.job)
    return respond(request, ACCOUNTS, domain, status=400, catchall_form=form)


def usage_context(request, domain) -> dict:
    """Each mailbox's size and message count, as Dovecot counts them (a
    helper call): None when the helper cannot tell."""
    usage = mailbox_usage(domain.name)
    rows = []
    for account in domain.accounts.order_by("local_part"):
        used = None if usage is None else usage.get(account.local_part)
        used_mb = None if used is None else used["bytes"] / (1024 * 1024)
        percent = round(100 * used_mb / account.quota_mb) if used_mb is not None and account.quota_mb else None
        rows.append(
            {
                "address": f"{account.local_part}@{domain.unicode_name}",
                "quota_mb": account.quota_mb,
                "used_mb": used_mb,
                "messages": None if used is None else used["messages"],
                "percent": percent,
            }
        )
    return {"domain": domain, "usage_rows": rows, "usage_known": usage is not None}


USAGE = Section.of(
    USAGE_PAGE, "mailbox-usage", usage_context, lambda domain: reverse("mailadmin:account_usage", args=[domain.pk])
)


@require_GET
def account_usage(request, domain_id):
    """Mailbox usage, loaded after the Accounts tab (htmx, on load) because it
    costs a helper call; without JavaScript a link opens it as a page."""
    return respond(request, USAGE, get_domain_for_user(request, domain_id))
