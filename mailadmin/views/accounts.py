"""Mail accounts, aliases, forwards and the catch-all on the domain page.

Every view starts from get_domain_for_user (outsiders get 404) and finds the
account / alias / forward inside that domain only. Without JavaScript each
form does a POST and a redirect (or re-renders the page with the errors);
with htmx the same views return the section partial.
"""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
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
from ..services import jobs
from .common import get_domain_for_user

SECTION = "mailadmin/accounts/_section.html"
USAGE_PAGE = "mailadmin/accounts/usage.html"
EDIT_PAGE = "mailadmin/accounts/account_edit.html"


def client_settings(domain) -> dict:
    """What a mail client needs; the same for every account of the domain."""
    server = f"mail.{domain.unicode_name}"
    return {
        "server": server,
        "imap_port": 993,
        "smtps_port": 465,
        "submission_port": 587,
        "webmail_url": f"https://webmail.{domain.unicode_name}/",
    }


def section_context(request, domain, **forms) -> dict:
    """The "Accounts" section of the domain page (registered in sections.py)."""
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
        "accounts": accounts,
        "account_aliases": aliases,
        "account_add_form": forms.get("account_add_form") or AccountAddForm(),
        "alias_form": forms.get("alias_form") or AliasForm(),
        "catchall_form": forms.get("catchall_form")
        or CatchallForm(initial={"catchall": account_service.display_address(domain.catchall)}),
        "catchall_display": account_service.display_address(domain.catchall),
        "client_settings": client_settings(domain),
    }


def _with_display(forwards):
    forwards = list(forwards)
    for forward in forwards:
        forward.display_target = account_service.display_address(forward.target)
    return forwards


def _latest_job(request):
    return jobs.latest_apply(request.user)


def _section_response(request, domain, status=200, notice="", **forms):
    """htmx: the section partial (+ the job area out of band); else the full
    domain page (errors) — successes redirect before getting here."""
    if request.htmx:
        ctx = {
            "domain": domain,
            "accounts_notice": notice,
            "job": _latest_job(request),
            "job_oob": True,
            **section_context(request, domain, **forms),
        }
        # htmx does not swap 4xx answers: errors come back as 200 with the form.
        return render(request, SECTION + "#accounts-section", ctx)
    from .domains import domain_context

    ctx = domain_context(request, domain, **section_context(request, domain, **forms))
    return render(request, "mailadmin/domain_detail.html", ctx, status=status)


def _done(request, domain, message):
    if request.htmx:
        return _section_response(request, domain, notice=message)
    messages.success(request, message)
    return redirect(reverse("mailadmin:domain_detail", args=[domain.pk]) + "#accounts")


def _get_account(domain, account_id) -> MailAccount:
    return get_object_or_404(MailAccount.objects.select_related("domain"), pk=account_id, domain=domain)


# --- accounts ---------------------------------------------------------------


@require_POST
def account_add(request, domain_id):
    domain = get_domain_for_user(request, domain_id)
    form = AccountAddForm(request.POST)
    if form.is_valid():
        try:
            account = account_service.add_account(
                request.user,
                domain,
                form.cleaned_data["local_part"],
                form.cleaned_data["password"],
                quota_mb=form.cleaned_data["quota_mb"] or 0,
            )
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            return _done(request, domain, _("Mail account %(address)s added.") % {"address": str(account)})
    return _section_response(request, domain, status=400, account_add_form=form)


def _edit_context(request, domain, account, **forms):
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
        "job": _latest_job(request),
        "notice": forms.get("notice", ""),
    }


def _edit_response(request, domain, account, partial="account-edit", status=200, **forms):
    account.refresh_from_db()
    ctx = _edit_context(request, domain, account, **forms)
    if request.htmx:
        ctx["job_oob"] = True
        return render(request, f"{EDIT_PAGE}#{partial}", ctx)
    return render(request, EDIT_PAGE, ctx, status=status)


@require_http_methods(["GET", "POST"])
def account_edit(request, domain_id, account_id):
    domain = get_domain_for_user(request, domain_id)
    account = _get_account(domain, account_id)
    if request.method == "GET":
        return render(request, EDIT_PAGE, _edit_context(request, domain, account))
    form = AccountEditForm(request.POST)
    if form.is_valid():
        try:
            account_service.update_account(
                request.user,
                account,
                password=form.cleaned_data["password"],
                quota_mb=form.cleaned_data["quota_mb"] or 0,
                forward_only=form.cleaned_data["forward_only"],
            )
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            message = _("Mail account %(address)s saved.") % {"address": str(account)}
            if request.htmx:
                return _edit_response(request, domain, account, notice=message)
            messages.success(request, message)
            return redirect("mailadmin:account_edit", domain.pk, account.pk)
    return _edit_response(request, domain, account, status=400, edit_form=form)


@require_http_methods(["GET", "POST"])
def account_delete(request, domain_id, account_id):
    domain = get_domain_for_user(request, domain_id)
    account = _get_account(domain, account_id)
    if request.method == "GET":
        return render(request, "mailadmin/accounts/account_delete.html", {"domain": domain, "account": account})
    name = str(account)
    account_service.delete_account(request.user, account)
    return _done(request, domain, _("Mail account %(address)s deleted.") % {"address": name})


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
            account_service.add_forward(
                request.user, account, form.cleaned_data["target"], forward_only=form.cleaned_data["forward_only"]
            )
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            message = _("Forward to %(target)s added.") % {"target": form.cleaned_data["target"].strip()}
            if request.htmx:
                return _edit_response(request, domain, account, notice=message)
            messages.success(request, message)
            return redirect("mailadmin:account_edit", domain.pk, account.pk)
    return _edit_response(request, domain, account, status=400, forward_form=form)


@require_POST
def forward_delete(request, domain_id, account_id, forward_id):
    domain = get_domain_for_user(request, domain_id)
    account = _get_account(domain, account_id)
    forward = get_object_or_404(MailForward, pk=forward_id, account=account)
    target = forward.target
    account_service.delete_forward(request.user, forward)
    message = _("Forward to %(target)s removed.") % {"target": target}
    if request.htmx:
        return _edit_response(request, domain, account, notice=message)
    messages.success(request, message)
    return redirect("mailadmin:account_edit", domain.pk, account.pk)


# --- aliases and catch-all ---------------------------------------------------------


@require_POST
def alias_add(request, domain_id):
    domain = get_domain_for_user(request, domain_id)
    form = AliasForm(request.POST)
    if form.is_valid():
        try:
            alias = account_service.add_alias(
                request.user, domain, form.cleaned_data["local_part"], form.cleaned_data["target"]
            )
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            return _done(
                request,
                domain,
                _("Alias %(alias)s → %(target)s added.")
                % {
                    "alias": f"{alias.local_part}@{domain.unicode_name}",
                    "target": account_service.display_address(alias.target),
                },
            )
    return _section_response(request, domain, status=400, alias_form=form)


@require_POST
def alias_delete(request, domain_id, alias_id):
    domain = get_domain_for_user(request, domain_id)
    alias = get_object_or_404(MailAlias, pk=alias_id, domain=domain)
    name = f"{alias.local_part}@{domain.unicode_name}"
    try:
        account_service.delete_alias(request.user, alias)
    except ValidationError as exc:
        if request.htmx:
            return _section_response(request, domain, notice=" ".join(exc.messages))
        messages.error(request, " ".join(exc.messages))
        return redirect(reverse("mailadmin:domain_detail", args=[domain.pk]) + "#accounts")
    return _done(request, domain, _("Alias %(alias)s removed.") % {"alias": name})


@require_POST
def catchall_set(request, domain_id):
    domain = get_domain_for_user(request, domain_id)
    form = CatchallForm(request.POST)
    if form.is_valid():
        target = "" if request.POST.get("action") == "clear" else form.cleaned_data["catchall"]
        try:
            account_service.set_catchall(request.user, domain, target)
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            if domain.catchall:
                message = _("Mail to unknown addresses now goes to %(target)s.") % {
                    "target": account_service.display_address(domain.catchall)
                }
            else:
                message = _("The catch-all is off: mail to unknown addresses is refused.")
            return _done(request, domain, message)
    return _section_response(request, domain, status=400, catchall_form=form)


@require_GET
def account_usage(request, domain_id):
    """Mailbox usage, loaded after the domain page (htmx, on load) because it
    costs a helper call; without JavaScript a link opens it as a page."""
    domain = get_domain_for_user(request, domain_id)
    usage = mailbox_usage(domain.name)
    rows = []
    for account in domain.accounts.order_by("local_part"):
        used = None if usage is None else usage.get(account.local_part)
        used_mb = None if used is None else used["bytes"] / (1024 * 1024)
        percent = (
            round(100 * used_mb / account.quota_mb)
            if used_mb is not None and account.quota_mb
            else None
        )
        rows.append(
            {
                "address": f"{account.local_part}@{domain.unicode_name}",
                "quota_mb": account.quota_mb,
                "used_mb": used_mb,
                "messages": None if used is None else used["messages"],
                "percent": percent,
            }
        )
    template = USAGE_PAGE + ("#mailbox-usage" if request.htmx else "")
    return render(request, template, {"domain": domain, "usage_rows": rows, "usage_known": usage is not None})
