"""Sending: the mail queue, held senders, “where is my mail?” and sending
limits. Everything goes through services (mail_queue, holds, mail_log,
send_limits) that decide what a customer may see: only their domains' mail
and log lines, only their own held senders; outsiders get 404.

Each page is one template with an inline partial that htmx swaps (the queue
table when a filter changes, the log results); without JavaScript the forms
are plain GETs and POST/redirect."""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers

from ..forms_sending import HoldResolveForm, LogSearchForm, QueueActionForm, QueueFilterForm, SendLimitForm
from ..helper_client import HelperError
from ..models import MailAccount, MailDomain, is_admin
from ..services import holds, mail_log, mail_queue, send_limits, user_checks
from .common import get_domain_for_user, require_admin
from .shell import Section, respond

QUEUE_PAGE = "mailadmin/sending/queue.html"
MESSAGE_PAGE = "mailadmin/sending/message.html"
HELD_PAGE = "mailadmin/sending/held.html"
HOLD_PAGE = "mailadmin/sending/hold.html"
LOG_PAGE = "mailadmin/sending/log.html"
LIMITS_PAGE = "mailadmin/sending/limits.html"
DOMAIN_LIMITS_PAGE = "mailadmin/sending/domain_limits.html"


def _given(request, given: dict) -> dict:
    """The context the view built itself."""
    return given


# htmx swaps the table when a filter changes, the results of a search.
QUEUE = Section.of(QUEUE_PAGE, "queue-table", _given, lambda: reverse("mailadmin:queue_list"))
LOG = Section.of(LOG_PAGE, "log-results", _given, lambda: reverse("mailadmin:mail_log"))


def _helper_failed(request, exc: HelperError) -> str:
    # Not the helper's words: they may name paths; admins find them in the server log.
    return _("The mail server could not answer: %(reason)s") % {
        "reason": exc.message if is_admin(request.user) else _("try again in a moment")
    }


# --- the queue ----------------------------------------------------------------------


def _page_number(value) -> int:
    """?page=: a number from 1 up; anything else is the first page."""
    return int(value) if value and value.isascii() and value.isdigit() and 0 < int(value) < 10**6 else 1


@require_GET
@vary_on_headers("HX-Request")
def queue_list(request):
    form = QueueFilterForm(request.GET or None)
    filters, number, error, page = mail_queue.QueueFilter(), 1, "", None
    if form.is_bound and form.is_valid():
        data = form.cleaned_data
        state = data.get("state") or ""
        filters = mail_queue.QueueFilter(
            sender=data["sender"],
            recipient=data["recipient"],
            domain=data["domain"],
            frozen=True if state == "frozen" else False if state == "active" else None,
            held=True if state == "held" else None,
        )
    number = _page_number(request.GET.get("page"))
    if not form.is_bound or form.is_valid():
        try:
            page = mail_queue.list_page(request.user, filters, number)
        except HelperError as exc:
            error = _helper_failed(request, exc)
    query = request.GET.copy()
    query.pop("page", None)
    ctx = {"form": form, "page": page, "error": error, "query": query.urlencode(),
           "can_act": is_admin(request.user)}
    return respond(request, QUEUE, given=ctx)


@require_http_methods(["GET", "POST"])
def queue_message(request, message_id):
    if request.method == "POST":
        require_admin(request)
        form = QueueActionForm(request.POST)
        if not form.is_valid():
            raise Http404
        try:
            answer = mail_queue.act(request.user, form.cleaned_data["action"], [message_id])
        except HelperError as exc:
            messages.error(request, _helper_failed(request, exc))
        else:
            messages.success(request, _("Done: %(output)s") % {"output": answer.get("output") or form.cleaned_data["action"]})
        if form.cleaned_data["action"] in ("delete", "bounce"):
            return redirect("mailadmin:queue_list")
        return redirect("mailadmin:queue_message", message_id)
    body = request.GET.get("body") == "1" and is_admin(request.user)
    try:
        shown = mail_queue.show(request.user, message_id, body=body)
    except HelperError as exc:
        messages.error(request, _helper_failed(request, exc))
        return redirect("mailadmin:queue_list")
    if shown is None:
        raise Http404
    return render(request, MESSAGE_PAGE, {**shown, "can_act": is_admin(request.user)})


# --- held senders ------------------------------------------------------------------


@require_GET
def held_list(request):
    # a customer's way to their domains' sending limits (admins have the menu)
    domains = [] if is_admin(request.user) else list(MailDomain.objects.visible_to(request.user).only("pk", "name")[:100])
    return render(request, HELD_PAGE, {"holds": holds.visible_holds(request.user), "domains": domains})


@require_http_methods(["GET", "POST"])
def hold_detail(request, hold_id):
    hold = get_object_or_404(holds.visible_holds(request.user), pk=hold_id)
    is_mailbox = hold.local_part != holds.DOMAIN_STAR
    form = HoldResolveForm(request.POST or None)
    job = None
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            job = holds.resolve(request.user, hold, data["action"], password=data["password"],
                                keep_password=data["keep_password"] or not is_mailbox)
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, _("The held mail of %(sender)s is being released.") % {"sender": hold.sender_key}
                             if data["action"] == holds.RELEASE
                             else _("The held mail of %(sender)s is being deleted.") % {"sender": hold.sender_key})
            return redirect("mailadmin:job_status", job.pk)
    return render(request, HOLD_PAGE, {"hold": hold, "form": form, "is_mailbox": is_mailbox},
                  status=400 if form.errors else 200)


# --- where is my mail? -------------------------------------------------------------


@require_GET
@vary_on_headers("HX-Request")
def mail_log_search(request):
    form = LogSearchForm(request.GET or None)
    lines, truncated, error = None, False, ""
    if form.is_bound and form.is_valid():
        try:
            lines, truncated = mail_log.search(request.user, form.cleaned_data["q"], form.cleaned_data["days"])
        except HelperError as exc:
            error = _helper_failed(request, exc)
        except user_checks.TooManyChecks as exc:
            error = str(exc)
    ctx = {"form": form, "lines": lines, "truncated": truncated, "error": error}
    return respond(request, LOG, given=ctx)


# --- limits ----------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
def limits_server(request):
    """The server's defaults and every override (admins only)."""
    require_admin(request)
    row = send_limits.stored()
    form = SendLimitForm(request.POST) if request.method == "POST" else SendLimitForm.for_row(row)
    if request.method == "POST" and form.is_valid():
        try:
            send_limits.set_limits(request.user, **form.cleaned_data)
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, _("Sending limits saved."))
            return redirect("mailadmin:limits_server")
    overrides = send_limits.overrides()
    return render(request, LIMITS_PAGE, {"form": form, "overrides": overrides}, status=400 if form.errors else 200)


@require_http_methods(["GET", "POST"])
def limits_domain(request, domain_id):
    """A domain's limits and its mailboxes': admins change them, the owner
    sees what applies."""
    domain = get_domain_for_user(request, domain_id)
    account, form = None, None
    if request.method == "POST":
        require_admin(request)
        if request.POST.get("account"):
            account = get_object_or_404(MailAccount, pk=request.POST["account"], domain=domain)
        form = SendLimitForm(request.POST)
        if form.is_valid():
            try:
                send_limits.set_limits(request.user, domain=None if account else domain, account=account,
                                       **form.cleaned_data)
            except ValidationError as exc:
                form.add_error(None, exc)
            else:
                messages.success(request, _("Sending limits saved."))
                return redirect("mailadmin:limits_domain", domain.pk)
    ctx = {
        "domain": domain,
        "domain_form": form if form is not None and account is None else SendLimitForm.for_row(send_limits.stored(domain=domain)),
        "rows": send_limits.domain_rows(domain),
        "error_account": account,
        "account_form": form if account is not None else None,
        "can_edit": is_admin(request.user),
        "holds": holds.visible_holds(request.user).filter(domain=domain),
    }
    return render(request, DOMAIN_LIMITS_PAGE, ctx, status=400 if form is not None and form.errors else 200)
