"""The domain page and the server settings page are made of sections, one per
feature. Each entry: (template included in the page, "module.function" that
returns the section's context for (request, domain) or (request,)).
A feature adds its own line here; nothing else in the page view changes."""

from django.utils.module_loading import import_string

DOMAIN_SECTIONS: list[tuple[str, str]] = [
]

SETTINGS_SECTIONS: list[tuple[str, str]] = [
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
