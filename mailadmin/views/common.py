"""Small helpers every view module uses."""

from django.http import Http404
from django.shortcuts import get_object_or_404

from ..models import MailDomain, is_admin


def get_domain_for_user(request, domain_id) -> MailDomain:
    """The only way a view gets a domain: outsiders get 404, never 403
    (a 403 would confirm that the id exists)."""
    return get_object_or_404(
        MailDomain.objects.visible_to(request.user).select_related("owner"), pk=domain_id
    )


def require_admin(request) -> None:
    if not is_admin(request.user):
        raise Http404


def template_for(request, page: str, partial: str) -> str:
    """Full page for normal requests, the named partial for htmx."""
    return f"{page}#{partial}" if request.htmx else page
