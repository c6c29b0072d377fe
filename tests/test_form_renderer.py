"""mailadmin.form_renderer draws every form of the panel to the same HTML as
Django's own Jinja2 form renderer (it only skips includes and the render of
an empty error list): every tab with forms, blank and with errors."""

import re

import pytest
from django.urls import reverse

from mailadmin.models import MailDomain, RelaySettings

pytestmark = pytest.mark.django_db

DJANGO = "django.forms.renderers.Jinja2"
OURS = "mailadmin.form_renderer.FormRenderer"
TOKEN = re.compile(r'(name="csrfmiddlewaretoken" value="|"x-csrftoken": ")[^"]+')


def pages(client, requests) -> list[str]:
    out = []
    for method, url, data in requests:
        response = client.post(url, data) if method == "POST" else client.get(url)
        assert response.status_code in (200, 400), (url, response.status_code)
        out.append(TOKEN.sub(r"\1…", response.content.decode()))
    return out


def test_every_form_renders_the_same_html_as_djangos_renderer(admin_client_, admin_user, settings):
    from mailadmin.views.pages import DOMAIN_PAGE
    from mailadmin.views.pages import SETTINGS_PAGE

    domain = MailDomain.objects.create(name="example.org", owner=admin_user)
    RelaySettings.objects.create(domain=domain, host="smtp.relay.example", username="u", password="p")
    requests = [("GET", reverse("mailadmin:domain_list"), None)]
    requests += [("GET", DOMAIN_PAGE.url(tab.name, domain), None) for tab in DOMAIN_PAGE.tabs]
    requests += [("GET", SETTINGS_PAGE.url(tab.name), None) for tab in SETTINGS_PAGE.tabs]
    requests += [  # bound forms with errors: error lists, aria-invalid, typed values kept
        ("POST", reverse("mailadmin:domain_add"), {"name": "not a domain!", "owner": "nobody"}),
        ("POST", reverse("mailadmin:domain_relay", args=[domain.pk]),
         {"preset": "custom", "host": "bad host!", "port": "x", "tls": "bogus", "auth": "login", "action": "save"}),
        ("POST", reverse("mailadmin:account_add", args=[domain.pk]),
         {"local_part": "bad name", "password": "x", "quota_mb": "-1"}),
        ("POST", reverse("mailadmin:global_relay"), {"preset": "nope", "port": "70000", "tls": "none", "action": "save"}),
    ]
    admin_client_.get(DOMAIN_PAGE.url("dns", domain))  # the first visit creates the server settings row
    settings.FORM_RENDERER = DJANGO
    theirs = pages(admin_client_, requests)
    settings.FORM_RENDERER = OURS
    ours = pages(admin_client_, requests)
    for (method, url, _data), a, b in zip(requests, theirs, ours):
        assert a == b, (method, url)
    assert sum(page.count("<input") + page.count("<select") for page in ours) > 60  # forms were drawn
    assert sum(page.count('class="errorlist"') for page in ours) >= 6  # and errors
