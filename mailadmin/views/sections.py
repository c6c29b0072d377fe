"""The domain page and the server settings page are made of sections, one per
feature. Each entry: (template included in the page, "module.function" that
returns the section's context for (request, domain) or (request,)).
A feature adds its own line here; nothing else in the page view changes."""

from django.utils.module_loading import import_string

DOMAIN_SECTIONS: list[tuple[str, str]] = [
    ("mailadmin/dkim/section.html", "mailadmin.views.dkim.dkim_section"),
    ("mailadmin/accounts/_section.html", "mailadmin.views.accounts.section_context"),
    ("mailadmin/relay/section.html", "mailadmin.views.relay.domain_section"),
    ("mailadmin/snappymail/_domain_webmail.html", "mailadmin.views.snappymail.domain_webmail_section"),
    ("mailadmin/dns/section.html", "mailadmin.views.dns.domain_section"),
]

SETTINGS_SECTIONS: list[tuple[str, str]] = [
    ("mailadmin/users/customer_domains.html", "mailadmin.views.admin.customer_domains_section"),
    ("mailadmin/relay/section.html", "mailadmin.views.relay.global_section"),
    ("mailadmin/server_mail/panel_smtp.html", "mailadmin.views.server_mail.panel_smtp_section"),
    ("mailadmin/server_mail/dqs.html", "mailadmin.views.server_mail.dqs_section"),
    ("mailadmin/server_mail/dnsbl.html", "mailadmin.views.server_mail.dnsbl_section"),
    ("mailadmin/server_mail/internal_lookup.html", "mailadmin.views.server_mail.internal_lookup_section"),
    ("mailadmin/dkim/policy.html", "mailadmin.views.dkim.policy_section"),
    ("mailadmin/snappymail/section.html", "mailadmin.views.snappymail.settings_section"),
    ("mailadmin/sieve/section.html", "mailadmin.views.sieve.settings_section"),
]


def domain_sections_context(request, domain) -> dict:
    ctx = {"domain_section_templates": [template for template, _ in DOMAIN_SECTIONS]}
    for _template, builder in DOMAIN_SECTIONS:
        ctx.update(import_string(builder)(request, domain))
    return ctx


def settings_sections_context(request) -> dict:
    ctx = {"settings_section_templates": [template for template, _ in SETTINGS_SECTIONS]}
    for _template, builder in SETTINGS_SECTIONS:
        ctx.update(import_string(builder)(request))
    return ctx
