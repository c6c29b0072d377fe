"""The domain list (search, pages) and adding and deleting a domain. The
domain page itself is views.domain_page and its tabs."""

import functools
from typing import NamedTuple

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.core.exceptions import EmptyResultSet, ValidationError
from django.core.paginator import Paginator
from django.db import connections
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from ..forms import DomainAddForm
from ..models import MailDomain, ServerSettings, UserProfile, display_domain, is_admin
from ..services import domains as domain_service
from .common import get_domain_for_user
from .shell import Section, fast_template, respond

LIST_PAGE = "mailadmin/domain_list.html"
# The rows are a Jinja2 template (views.shell.fast_template): the Django engine spent
# about 30 µs a row on its eleven lookups and tags, a third of the page.
ROWS = "mailadmin/domain_rows.html"
# A row's columns: (key, model, field); the owner's and its profile's by join.
LIST_COLUMNS = (
    ("pk", MailDomain, "id"),
    ("name", MailDomain, "name"),
    ("owner__username", get_user_model(), "username"),
    ("dkim_enabled", MailDomain, "dkim_enabled"),
    ("suspended", MailDomain, "suspended"),
    ("hosted_elsewhere", MailDomain, "hosted_elsewhere"),
    ("dns_status", MailDomain, "dns_status"),
    ("dns_checked_at", MailDomain, "dns_checked_at"),
    ("created_at", MailDomain, "created_at"),
    ("pending", MailDomain, "pending"),
    ("owner__mail_profile__suspended", UserProfile, "suspended"),
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
    labels, prefix = row_labels(), reverse("mailadmin:domain_detail", args=[0]).removesuffix("0/")
    tz = timezone.get_current_timezone()
    page.object_list = [list_row(row, labels, prefix, tz) for row in page_rows(page.object_list)]
    return page


def page_rows(ids) -> list[dict]:
    """The list's columns of one page, by name, in one round trip: the page's
    ids (the ORM's statement, with visible_to's scoping and the search) are a
    subquery of a statement written once per process. The ORM spent about
    0.35 ms building the joined values() query for each page; the values go
    through the same converters it applies (LIST_COLUMNS' fields')."""
    try:
        ids_sql, params = ids.query.sql_with_params()
    except EmptyResultSet:  # an empty page
        return []
    connection = connections[ids.db]
    (head, tail), converters = _rows_statement(ids.db)
    with connection.cursor() as cursor:
        cursor.execute(head + ids_sql + tail, params)
        rows = cursor.fetchall()
    return [
        {key: converters[i](value) if i in converters else value for i, (key, value) in enumerate(zip(KEYS, row))}
        for row in rows
    ]


KEYS = [key for key, _model, _field in LIST_COLUMNS]


@functools.cache
def _rows_statement(using: str) -> tuple[tuple[str, str], dict]:
    """The statement around a page of ids, and for each column whose value
    the database backend converts (booleans and dates on SQLite), that
    conversion."""
    connection = connections[using]
    qn = connection.ops.quote_name
    User = get_user_model()
    domains, users, profiles = (qn(model._meta.db_table) for model in (MailDomain, User, UserProfile))
    owner, profile_user = MailDomain._meta.get_field("owner"), UserProfile._meta.get_field("user")
    columns, converters = [], {}
    for i, (_key, model, name) in enumerate(LIST_COLUMNS):
        field = model._meta.get_field(name)
        columns.append(f"{qn(model._meta.db_table)}.{qn(field.column)}")
        column = field.get_col(model._meta.db_table)
        functions = connection.ops.get_db_converters(column) + field.get_db_converters(connection)
        if functions:
            converters[i] = functools.partial(_convert, functions, column, connection)
    head = (
        f"SELECT {', '.join(columns)} FROM {domains}"
        f" INNER JOIN {users} ON {domains}.{qn(owner.column)} = {users}.{qn(User._meta.pk.column)}"
        f" LEFT OUTER JOIN {profiles} ON {profiles}.{qn(profile_user.column)} = {users}.{qn(User._meta.pk.column)}"
        f" WHERE {domains}.{qn(MailDomain._meta.pk.column)} IN ("
    )
    tail = f") ORDER BY {domains}.{qn(MailDomain._meta.get_field('name').column)}"
    return (head, tail), converters


def _convert(functions, column, connection, value):
    for function in functions:
        value = function(value, column, connection)
    return value


DNS_LABELS = {
    "ok": gettext_lazy("ok"),
    "missing": gettext_lazy("missing"),
    "different": gettext_lazy("different"),
    "unknown": gettext_lazy("unknown"),
}


BADGES = (  # (field, label, class): shown after the name when the field is true
    ("pending", gettext_lazy("pending verification"), "badge warn"),
    ("suspended", gettext_lazy("suspended"), "badge warn"),
    ("owner__mail_profile__suspended", gettext_lazy("owner suspended"), "badge warn"),
    ("hosted_elsewhere", gettext_lazy("send-only"), "badge"),
)


class Row(NamedTuple):
    """One row of the list, final values only (attributes: a Jinja2 lookup
    on a dict key tries getattr first and pays for the AttributeError)."""

    url: str
    name: str
    idna: str
    badges: list
    owner: str
    dkim: str
    dns_status: str
    dns_label: str
    checked: str
    created: str


def list_row(row: dict, labels: dict, prefix: str, tz) -> Row:
    """Plain, final values for the template: dates formatted, the name
    decoded and every label translated once here, so that a row is a few
    variable lookups (a template tag or filter per cell per row was most of
    the page's time)."""
    checked = row["dns_checked_at"]
    name = display_domain(row["name"])
    return Row(
        url=f"{prefix}{row['pk']}/",
        name=name,
        idna=row["name"] if name != row["name"] else "",
        badges=[(labels[field], css) for field, _label, css in BADGES if row[field]],
        owner=row["owner__username"],
        dkim=labels["on"] if row["dkim_enabled"] else labels["off"],
        dns_status=row["dns_status"],
        dns_label=labels.get(row["dns_status"], row["dns_status"]),
        checked=checked.astimezone(tz).strftime("%Y-%m-%d %H:%M") if checked else "",
        created=row["created_at"].astimezone(tz).strftime("%Y-%m-%d"),
    )


def row_labels() -> dict:
    """Every label a row may show, in the request's language."""
    labels = {field: str(label) for field, label, _css in BADGES}
    labels.update({status: str(label) for status, label in DNS_LABELS.items()})
    labels.update(on=_("on"), off=_("off"))
    return labels


def rows_html(rows: list[Row], show_owner: bool) -> str:
    """The rows, drawn by the Jinja2 template; the engine autoescapes every
    value, so its output is safe HTML for the Django page around it."""
    return fast_template(ROWS, {"rows": rows, "show_owner": show_owner, "not_checked": _("not checked")})


def list_context(request, query="", number=None, form=None) -> dict:
    page, show_owner = domain_page(request.user, query, number), is_admin(request.user)
    return {
        "page": page,
        "rows": rows_html(page.object_list, show_owner),
        "query": query,
        "show_owner": show_owner,
        "form": form or DomainAddForm(user=request.user),
        "may_add": may_add_domains(request.user),
    }


# htmx swaps the table when searching or paging; the whole page otherwise.
DOMAIN_LIST = Section.of(LIST_PAGE, "domain-table", list_context, lambda: reverse("mailadmin:domain_list"))
DOMAIN_ADD = Section.of(LIST_PAGE, "domain-add", list_context, DOMAIN_LIST.url)


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
