"""The authorization matrix of mailbox self-service (issue #15), beside
test_tenant_isolation.py's for panel users: a mailbox session reaches its
own mailbox's pages and nothing else of the app; panel users (customers,
admins) get 404 on the mailbox pages; anonymous visitors go to the login.
Routes are enumerated from the URL conf, so later ones are covered too."""

import pytest
from django.test import Client
from django.urls import reverse

from mailadmin.models import MailAccount, MailDomain, MailForward, RelaySettings
from mailadmin.services import accounts as account_service
from tests.test_tenant_isolation import alices_objects, app_routes  # noqa: F401 (fixture)

pytestmark = pytest.mark.django_db
PW = "Mailb0x-pass-phrase"
MAILBOX_ROUTES = "mailbox/"


def mailbox_routes():
    return [(route, pattern) for route, pattern in app_routes() if route.startswith(MAILBOX_ROUTES)]


def other_routes():
    return [(route, pattern) for route, pattern in app_routes() if not route.startswith(MAILBOX_ROUTES)]


@pytest.fixture
def signed_in_mailbox(alices_objects):
    """carol@alice.example, a mailbox of alice's domain, signed in."""
    domain = MailDomain.objects.get(pk=alices_objects["domain_id"])
    account_service.add_account(domain.owner, domain, "carol", PW)
    client = Client()
    response = client.post(reverse("login"), {"username": "carol@alice.example", "password": PW})
    assert response.status_code == 302 and response["Location"] == reverse("mailadmin:mailbox_home")
    return client


def test_there_are_mailbox_routes_and_other_routes():
    assert len(mailbox_routes()) >= 7 and len(other_routes()) >= 40


@pytest.mark.parametrize("htmx", [False, True])
@pytest.mark.parametrize("method", ["get", "post"])
def test_a_mailbox_session_reaches_nothing_else_of_the_app(signed_in_mailbox, alices_objects, method, htmx):
    """Even inside its own domain: not the domain, not the other accounts,
    not its own account's panel pages."""
    checked = 0
    for route, pattern in other_routes():
        kwargs = {name: alices_objects[name] for name in pattern.pattern.converters}
        url = reverse(f"mailadmin:{pattern.name}", kwargs=kwargs)
        response = getattr(signed_in_mailbox, method)(url, headers={"HX-Request": "true"} if htmx else {})
        assert response.status_code in (302, 404, 405), f"{method.upper()} {url}: {response.status_code}"
        if response.status_code == 302:
            assert response["Location"].startswith(reverse("login")), url
        checked += 1
    assert checked >= 40
    assert MailDomain.objects.filter(pk=alices_objects["domain_id"]).exists()
    assert MailAccount.objects.filter(pk=alices_objects["account_id"]).exists()
    assert MailForward.objects.filter(pk=alices_objects["forward_id"]).exists()
    assert RelaySettings.objects.filter(pk=alices_objects["relay_id"], host="smtp.example.net").exists()
    assert signed_in_mailbox.get(reverse("mailadmin:mailbox_home")).status_code == 200  # still signed in


@pytest.mark.parametrize("role", ["alice", "bob", "admin", "anonymous"])
@pytest.mark.parametrize("method", ["get", "post"])
def test_panel_users_get_404_on_the_mailbox_pages_and_strangers_the_login(
    client, alice, bob, admin_user, alices_objects, role, method
):
    """alice owns the domain and its mailboxes, yet is no mailbox: these
    pages do not exist for her (her own pages manage the mailbox)."""
    users = {"alice": alice, "bob": bob, "admin": admin_user}
    if role in users:
        client.force_login(users[role])
    for route, pattern in mailbox_routes():
        kwargs = {name: alices_objects[name] for name in pattern.pattern.converters}
        url = reverse(f"mailadmin:{pattern.name}", kwargs=kwargs)
        response = getattr(client, method)(url)
        if role == "anonymous":
            assert response.status_code in (302, 405), url
            if response.status_code == 302:
                assert response["Location"].startswith(reverse("login")), url
        else:
            assert response.status_code in (404, 405), f"{role} {method.upper()} {url}: {response.status_code}"
    assert MailForward.objects.filter(pk=alices_objects["forward_id"]).exists()


def test_one_mailbox_sees_and_changes_only_itself(signed_in_mailbox, alices_objects):
    """info@alice.example's forward (alices_objects) is neither shown to
    carol nor removable by her."""
    page = signed_in_mailbox.get(reverse("mailadmin:mailbox_home")).content.decode()
    assert "carol@alice.example" in page
    assert "elsewhere@example.net" not in page and "info@alice.example" not in page
    url = reverse("mailadmin:mailbox_forward_delete", args=[alices_objects["forward_id"]])
    for headers in ({}, {"HX-Request": "true"}):
        assert signed_in_mailbox.post(url, headers=headers).status_code == 404
    assert MailForward.objects.filter(pk=alices_objects["forward_id"]).exists()
