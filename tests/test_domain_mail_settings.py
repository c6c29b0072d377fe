"""The domain's own mail settings: where postmaster@ and abuse@ go,
sub-addressing, and (admins only) which Unix users may send as the domain."""

import io

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from mailadmin.models import MailDomain
from mailadmin.services.apply import build_snapshot

pytestmark = pytest.mark.django_db


@pytest.fixture
def domain(alice):
    alice.email = "alice@owner.example"
    alice.save()
    return MailDomain.objects.create(name="example.org", owner=alice)


def post(client, domain, **data):
    base = {"dkim_enabled": "on", "subaddressing": "on", "role_address": ""}
    base.update(data)
    return client.post(reverse("mailadmin:domain_settings", args=[domain.pk]), base)


def snapshot_domain():
    (domain,) = build_snapshot().domains
    return domain


def test_postmaster_goes_to_the_owners_email_until_the_owner_chooses_another(alice_client, domain):
    assert snapshot_domain().role_address == "alice@owner.example"
    page = alice_client.get(reverse("mailadmin:domain_settings", args=[domain.pk])).content.decode()
    assert "alice@owner.example" in page and "postmaster@" in page

    post(alice_client, domain, role_address="Abuse-Desk@Owner.Example")

    assert snapshot_domain().role_address == "abuse-desk@owner.example"


@pytest.mark.parametrize("bad", ["|/bin/sh", "a@b@c", ":include:/etc/passwd", "x@", "x\n@example.org"])
def test_a_role_address_that_is_not_an_address_is_refused(alice_client, domain, bad):
    response = post(alice_client, domain, role_address=bad)
    assert response.status_code == 400 and "The settings could not be saved" in response.content.decode()
    domain.refresh_from_db()
    assert domain.role_address == ""
    assert snapshot_domain().role_address == "alice@owner.example"


def test_customers_cannot_map_unix_users_admins_can(alice, admin_client_, domain):
    customer = Client()
    customer.force_login(alice)
    post(customer, domain, local_senders="www-data")
    domain.refresh_from_db()
    assert domain.local_senders == ""

    post(admin_client_, domain, local_senders="www-data, alice-web www-data")
    domain.refresh_from_db()
    assert domain.local_senders == "alice-web www-data"
    assert snapshot_domain().local_senders == ("alice-web", "www-data")


@pytest.mark.parametrize("bad", ["root:x", "a\nb", "../x", "Www", "x" * 40, "a;b"])
def test_hostile_unix_user_names_are_refused(admin_client_, domain, bad):
    post(admin_client_, domain, local_senders=bad)
    domain.refresh_from_db()
    assert domain.local_senders == ""


def test_subaddressing_switch_reaches_the_snapshot(alice_client, domain):
    assert snapshot_domain().subaddressing is True
    post(alice_client, domain, subaddressing="")
    assert snapshot_domain().subaddressing is False


def test_cli_sets_the_same_fields_with_the_same_rules(domain):
    out = io.StringIO()
    call_command("mail", "domain", "set", "example.org", "--role-address", "desk@owner.example",
                 "--subaddressing", "no", "--local-senders", "www-data", stdout=out)
    domain.refresh_from_db()
    assert (domain.role_address, domain.subaddressing, domain.local_senders) == (
        "desk@owner.example", False, "www-data")
    with pytest.raises(CommandError, match="not a Unix user name"):
        call_command("mail", "domain", "set", "example.org", "--local-senders", "root:0", stdout=out)
    with pytest.raises(CommandError, match="not an email address"):
        call_command("mail", "domain", "set", "example.org", "--role-address", "|cmd", stdout=out)
    domain.refresh_from_db()
    assert domain.local_senders == "www-data"
