"""Small helpers every view module uses."""

from django.http import Http404
from django.shortcuts import get_object_or_404

from ..models import MailDomain, ServerSettings, is_admin


def get_domain_for_user(request, domain_id) -> MailDomain:
    """The only way a view gets a domain: outsiders get 404, never 403
    (a 403 would confirm that the id exists)."""
    return get_object_or_404(
        MailDomain.objects.visible_to(request.user).select_related("owner", "node"), pk=domain_id
    )


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
