"""The server settings page (admin only): tabs with their own URLs — Server,
Global relay, Panel mail, Blacklists, Webmail and filters. Each tab and its
sections are defined next to their views (admin: the Server tab; relay;
server_mail; snappymail and sieve); this module holds only the frame."""

from django.utils.translation import gettext_lazy

from ..services import jobs
from .shell import Tab, TabbedPage

PAGE = "mailadmin/server_settings.html"


def frame(request) -> dict:
    return {"job": jobs.latest_apply(request.user)}


SETTINGS_PAGE = TabbedPage(
    PAGE,
    (
        Tab("server", gettext_lazy("Server"), "mailadmin:server_settings"),
        Tab("relay", gettext_lazy("Global relay"), "mailadmin:global_relay"),
        Tab("panel-smtp", gettext_lazy("Panel mail"), "mailadmin:panel_smtp"),
        Tab("blacklists", gettext_lazy("Blacklists"), "mailadmin:server_blacklists"),
        Tab("webmail", gettext_lazy("Webmail and filters"), "mailadmin:server_webmail"),
    ),
    frame,
    url_args=lambda: [],
    names=lambda: {},
)
