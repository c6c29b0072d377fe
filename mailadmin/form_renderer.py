"""FORM_RENDERER: Django's Jinja2 form templates, drawn with less work and to
the same HTML.

A form field is up to four template renders (the field, its label, its
errors, its widget), and Django's templates include further ones: a widget's
type template includes input.html, which includes attrs.html; a select
includes one template per option. A tab with three forms spent about a
third of its time there. So:

- an error list with no errors is "" without a render (every empty
  `{{ form.x.errors }}` and `{{ form.non_field_errors }}` on a page);
- the templates whose whole text is one include of another are read as that
  other one (SAME_AS);
- input, select and label are flat copies under templates/jinja2/django/forms/
  (no includes).

tests/test_form_renderer.py holds every page with forms to the same HTML as
Django's own renderer."""

from pathlib import Path

import django.forms
from django.conf import settings
from django.forms.renderers import Jinja2
from django.utils.functional import cached_property

WIDGETS = "django/forms/widgets/"
ERROR_LISTS = "django/forms/errors/list/"
# Django templates whose whole text is one {% include %} of another with the same context.
SAME_AS = {
    **{
        f"{WIDGETS}{name}.html": f"{WIDGETS}input.html"
        for name in (
            "checkbox", "color", "date", "datetime", "email", "file", "hidden",
            "number", "password", "search", "tel", "text", "time", "url",
        )
    },
    f"{ERROR_LISTS}default.html": f"{ERROR_LISTS}ul.html",
}
# Error list templates that draw nothing at all for an empty list.
EMPTY_WITHOUT_ERRORS = {f"{ERROR_LISTS}default.html", f"{ERROR_LISTS}ul.html", f"{ERROR_LISTS}text.txt"}


class FormRenderer(Jinja2):
    @cached_property
    def engine(self):
        return self.backend(
            {
                "APP_DIRS": True,
                "DIRS": [Path(settings.BASE_DIR) / "templates" / "jinja2", Path(django.forms.__file__).parent / "jinja2"],
                "NAME": "djangoforms",
                "OPTIONS": {},
            }
        )

    def get_template(self, template_name):
        return self.engine.get_template(SAME_AS.get(template_name, template_name))

    def render(self, template_name, context, request=None):
        if template_name in EMPTY_WITHOUT_ERRORS and not context.get("errors"):
            return ""
        return super().render(template_name, context, request=request)
