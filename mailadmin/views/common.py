"""Small helpers every view module uses."""

from django.core.paginator import Page, Paginator
from django.http import Http404
from django.shortcuts import get_object_or_404

from ..models import MailDomain, ServerSettings, is_admin


def get_domain_for_user(request, domain_id) -> MailDomain:
    """The only way a view gets a domain: outsiders get 404, never 403
    (a 403 would confirm that the id exists)."""
    return get_object_or_404(
        MailDomain.objects.visible_to(request.user).select_related("owner", "node"), pk=domain_id
    )


def page_of(items, per_page: int, number) -> Page:
    """One page of a list (`number` as the query string gives it). An empty
    list's page is empty without building SQL: Django's Paginator would
    still compile the query of an empty slice, ~0.13 ms of an empty log page."""
    page = Paginator(items, per_page).get_page(number)
    if not page.paginator.count:
        page.object_list = []
    return page


def require_admin(request) -> None:
    if not is_admin(request.user):
        raise Http404


def server_of(request) -> ServerSettings:
    """The server settings row without its secrets (not fetched, so not
    decrypted), read once a request however many sections show a part of it.
    A section that needs a secret reads it from this object (one more query,
    for that field only)."""
    if not hasattr(request, "_mailpanel_server"):
        request._mailpanel_server = ServerSettings.load_public()
    return request._mailpanel_server
