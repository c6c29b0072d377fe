"""The domain list (search, pages) and adding and deleting a domain. The
domain page itself is views.domain_page and its tabs."""

from operator import itemgetter

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from ..forms import DomainAddForm
from ..models import MailDomain, ServerSettings, display_domain, is_admin
from ..services import domains as domain_service
from .common import get_domain_for_user
from .shell import Section, respond

LIST_PAGE = "mailadmin/domain_list.html"
LIST_FIELDS = (
    "pk", "name", "owner__username", "dkim_enabled", "suspended", "hosted_elsewhere",
    "dns_status", "dns_checked_at", "created_at", "pending", "owner__mail_profile__suspended",
)


def may_add_domains(user) -> bool:
    """One column, and no settings row created by a GET (before the first save
    the model's default holds)."""
    if is_admin(user):
        return True
    allowed = ServerSettings.objects.filter(pk=1).values_list("customers_add_domains", flat=True).first()
    return ServerSettings().customers_add_domains if allowed is None else allowed


def domain_page(user, query: str, number):
    """Paginate over ids only (an index-only scan of the name index), then fetch
    that page's rows: an OFFSET over the joined rows read every earlier row."""
    ids = MailDomain.objects.visible_to(user).order_by("name")
    if query:
        ids = ids.filter(name__icontains=query)
    page = Paginator(ids.values_list("pk", flat=True), settings.MAILPANEL_DOMAINS_PER_PAGE).get_page(number)
    # The page's ids stay a subquery: one round trip for ids and rows.
    rows = MailDomain.objects.filter(pk__in=page.object_list).values(*LIST_FIELDS)
    page.object_list = [list_row(row) for row in sorted(rows, key=itemgetter("name"))]
    return page


DNS_LABELS = {
    "ok": gettext_lazy("ok"),
    "missing": gettext_lazy("missing"),
    "different": gettext_lazy("different"),
    "unknown": gettext_lazy("unknown"),
}


def list_row(row: dict) -> dict:
    """Plain values for the template: the dates formatted and the name decoded
    once here, not by filters in the loop (model instances and the date
    filter cost several times the rest of the page)."""
    tz = timezone.get_current_timezone()
    checked = row["dns_checked_at"]
    return {
        **row,
        "display_name": display_domain(row["name"]),
        "checked": checked.astimezone(tz).strftime("%Y-%m-%d %H:%M") if checked else "",
        "created": row["created_at"].astimezone(tz).strftime("%Y-%m-%d"),
        "dns_label": DNS_LABELS.get(row["dns_status"], row["dns_status"]),
    }


def list_context(request, query="", number=None, form=None) -> dict:
    return {
        "page": domain_page(request.user, query, number),
        "query": query,
        "detail_prefix": reverse("mailadmin:domain_detail", args=[0]).removesuffix("0/"),
        "form": form or DomainAddForm(user=request.user),
        "may_add": may_add_domains(request.user),
    }


# htmx swaps the table when searching or paging; the whole page otherwise.
DOMAIN_LIST = Section(
    name="domain-table",
    partial=LIST_PAGE + "#domain-table",
    page=LIST_PAGE,
    context=list_context,
    url=lambda: reverse("mailadmin:domain_list"),
)
DOMAIN_ADD = Section(
    name="domain-add",
    partial=LIST_PAGE + "#domain-add",
    page=LIST_PAGE,
    context=list_context,
    url=lambda: reverse("mailadmin:domain_list"),
)


@require_GET
def domain_list(request):
    return respond(request, DOMAIN_LIST, query=request.GET.get("q", "").strip(), number=request.GET.get("page"))


@require_POST
def domain_add(request):
    form = DomainAddForm(request.POST, user=request.user)
    if form.is_valid():
        try:
            domain = domain_service.add_domain(
                request.user,
                form.owner_or_self(),
                form.cleaned_data["name"],
                dkim_enabled=form.cleaned_data["dkim_enabled"],
            )
        except ValidationError as exc:
            form.add_error("name", exc)
        else:
            if domain.pending:
                messages.info(
                    request,
                    _("Mail domain %(name)s added. Publish the TXT record below to verify it: until then it receives no mail.")
                    % {"name": domain.unicode_name},
                )
            else:
                messages.success(request, _("Mail domain %(name)s added.") % {"name": domain.unicode_name})
            if request.htmx:  # a new page: the domain's
                return HttpResponseClientRedirect(domain.get_absolute_url())
            return redirect(domain)
    return respond(request, DOMAIN_ADD, status=400, form=form)


@require_http_methods(["GET", "POST"])
def domain_delete(request, domain_id):
    domain = get_domain_for_user(request, domain_id)
    ctx = {"domain": domain, "held": domain.suspended and not is_admin(request.user)}
    if request.method == "POST":
        if request.POST.get("confirm_name", "").strip().lower() not in (domain.name, domain.unicode_name.lower()):
            messages.error(request, _("Type the domain name to confirm the deletion."))
            return render(request, "mailadmin/domain_delete.html", ctx, status=400)
        name = domain.unicode_name
        try:
            outcome = domain_service.delete_domain(request.user, domain)
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
            return render(request, "mailadmin/domain_delete.html", ctx, status=400)
        messages.success(request, _("Mail domain %(name)s deleted.") % {"name": name})
        if outcome.error:
            messages.error(request, mail_not_moved_message(request.user, name, outcome.error))
        return redirect("mailadmin:domain_list")
    return render(request, "mailadmin/domain_delete.html", ctx)


def mail_not_moved_message(user, name: str, error: str) -> str:
    """The helper's words are for admins; a customer learns what it means."""
    message = _(
        "The mail stored for %(name)s could not be moved away, so it is still on the server. "
        "An administrator must move it before this name is added again."
    ) % {"name": name}
    if is_admin(user):
        message += " " + _("Helper: %(error)s") % {"error": error}
    return message
