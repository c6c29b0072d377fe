"""The tabbed pages, as data: each page's template, its tabs (name, label, URL
name) and how its arguments become URL arguments and template names. The
frame around every tab (the job area) and the tab bar are TabbedPage's
(views.shell); each tab's content is defined next to its views (the domain's
Overview, Webmail and Settings in domain_page, Accounts in accounts, Relay in
relay, …; the server's Server tab in admin, Panel mail and Blacklists in
server_mail, Webmail and filters in snappymail)."""

from django.utils.translation import gettext_lazy as _

from .shell import TabbedPage

DOMAIN_PAGE = TabbedPage(
    "mailadmin/domain/page.html",
    (
        ("overview", _("Overview"), "mailadmin:domain_detail"),
        ("accounts", _("Accounts"), "mailadmin:domain_accounts"),
        ("relay", _("Relay"), "mailadmin:domain_relay"),
        ("dns", _("DNS"), "mailadmin:domain_dns"),
        ("dmarc", _("DMARC reports"), "mailadmin:domain_dmarc"),
        ("clients", _("Webmail and clients"), "mailadmin:domain_clients"),
        ("settings", _("Settings"), "mailadmin:domain_settings"),
    ),
    url_args=lambda domain: [domain.pk],
    names=lambda domain: {"domain": domain},
)

# Admin only: every view of it calls require_admin.
SETTINGS_PAGE = TabbedPage(
    "mailadmin/server_settings.html",
    (
        ("server", _("Server"), "mailadmin:server_settings"),
        ("relay", _("Global relay"), "mailadmin:global_relay"),
        ("panel-smtp", _("Panel mail"), "mailadmin:panel_smtp"),
        ("blacklists", _("Blacklists"), "mailadmin:server_blacklists"),
        ("webmail", _("Webmail and filters"), "mailadmin:server_webmail"),
    ),
    url_args=lambda: [],
    names=lambda: {},
)
