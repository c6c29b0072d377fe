"""As customer B, every URL of the app with customer A's ids is a 404.

The URL conf is enumerated, so URLs added later are covered without editing
this test: any route parameter is filled with an id of one of A's objects."""

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from mailadmin.models import (
    ApplyJob,
    MailAccount,
    MailAlias,
    MailDomain,
    MailForward,
    RelaySettings,
)

pytestmark = pytest.mark.django_db

# URLs that take no object id and are reachable by every customer.
PUBLIC_OR_OWN_SCOPE = set()


def walk(patterns, prefix=""):
    for entry in patterns:
        if isinstance(entry, URLResolver):
            yield from walk(entry.url_patterns, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern):
            yield prefix + str(entry.pattern), entry


@pytest.fixture
def alices_objects(alice, bob):
    domain = MailDomain.objects.create(name="alice.example", owner=alice, dkim_private_key="")
    account = MailAccount.objects.create(domain=domain, local_part="info", password_hash="{PLAIN}x")
    alias = MailAlias.objects.create(domain=domain, local_part="sales", target="info@alice.example")
    forward = MailForward.objects.create(account=account, target="elsewhere@example.net")
    relay = RelaySettings.objects.create(domain=domain, host="smtp.example.net")
    job = ApplyJob.objects.create(requested_by=alice, domain=domain)
    MailDomain.objects.create(name="bob.example", owner=bob)
    return {
        "domain_id": domain.pk,
        "account_id": account.pk,
        "alias_id": alias.pk,
        "forward_id": forward.pk,
        "relay_id": relay.pk,
        "job_id": job.pk,
        "user_id": alice.pk,
    }


def app_routes():
    """Every route of the mailadmin app (auth and i18n routes live outside it)."""
    for entry in get_resolver().url_patterns:
        if isinstance(entry, URLResolver) and entry.namespace == "mailadmin":
            yield from walk(entry.url_patterns, str(entry.pattern))


def id_routes():
    routes = []
    for route, pattern in app_routes():
        params = list(pattern.pattern.converters)
        if params:
            routes.append((route, pattern, params))
    return routes


def test_there_are_id_routes_to_check():
    assert len(id_routes()) >= 4


@pytest.mark.parametrize("method", ["get", "post"])
def test_customer_b_gets_404_on_every_url_with_customer_a_ids(client, bob, alices_objects, method):
    client.force_login(bob)
    checked = []
    for route, pattern, params in id_routes():
        kwargs = {}
        for name in params:
            if name not in alices_objects:
                pytest.fail(f"route {route} takes {name}: teach this test which of A's objects fills it")
            kwargs[name] = alices_objects[name]
        name = pattern.name
        url = reverse(f"mailadmin:{name}", kwargs=kwargs)
        response = getattr(client, method)(url, HTTP_HX_REQUEST="true" if method == "post" else "")
        assert response.status_code in (404, 405), f"{method.upper()} {url} gave {response.status_code}"
        if response.status_code == 405:
            assert method not in [m.lower() for m in response.headers.get("Allow", "").split(", ")]
        checked.append(url)
    assert checked
    # Nothing of alice's changed.
    assert MailDomain.objects.filter(pk=alices_objects["domain_id"]).exists()
    assert RelaySettings.objects.filter(pk=alices_objects["relay_id"], host="smtp.example.net").exists()


def test_customer_list_shows_only_own_domains(client, bob, alices_objects):
    client.force_login(bob)
    page = client.get(reverse("mailadmin:domain_list")).content.decode()
    assert "bob.example" in page and "alice.example" not in page


ADMIN_ONLY_PREFIXES = ("settings/", "users/", "audit/", "jobs/")


@pytest.mark.parametrize("method", ["get", "post"])
def test_customer_gets_404_on_every_admin_url(client, bob, method):
    client.force_login(bob)
    checked = 0
    for route, pattern in app_routes():
        if pattern.pattern.converters or not route.startswith(ADMIN_ONLY_PREFIXES):
            continue
        url = reverse(f"mailadmin:{pattern.name}")
        response = getattr(client, method)(url)
        assert response.status_code in (404, 405), f"{method.upper()} {url} gave {response.status_code}"
        checked += 1
    assert checked >= 4
