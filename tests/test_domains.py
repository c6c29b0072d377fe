"""Mail domains: add (IDN), list, detail with DKIM, delete after confirmation."""

import pytest
from cryptography.hazmat.primitives import serialization
from django.urls import reverse

from mailadmin import dkim
from mailadmin.models import Job, AuditEntry, MailDomain
from tests.test_apply_pipeline import live_root  # noqa: F401 (a fixture: the helper works on a tmp tree)

pytestmark = pytest.mark.django_db


def add(client, name, **extra):
    return client.post(reverse("mailadmin:domain_add"), {"name": name, "dkim_enabled": "on", **extra})


def test_customer_adds_idn_domain_stored_as_punycode_shown_in_unicode(alice_client, alice):
    response = add(alice_client, "Bücher.example")
    domain = MailDomain.objects.get()
    assert domain.name == "xn--bcher-kva.example"
    assert domain.owner == alice
    assert response.status_code == 302 and response.url == domain.get_absolute_url()
    page = alice_client.get(domain.get_absolute_url()).content.decode()
    assert "bücher.example" in page
    listing = alice_client.get(reverse("mailadmin:domain_list")).content.decode()
    assert "bücher.example" in listing


def test_admin_adding_a_domain_enqueues_an_apply_job_and_audits_field_names(admin_client_, admin_user, alice):
    add(admin_client_, "example.org", owner="alice")
    assert not MailDomain.objects.get().pending
    job = Job.objects.get()
    assert job.state == "pending" and job.requested_by == admin_user
    entry = AuditEntry.objects.get(action="domain.add")
    assert entry.actor == admin_user and entry.target == "example.org"
    assert entry.fields == ["dkim_enabled", "name", "owner"]


def test_a_customers_new_domain_is_pending_and_applies_nothing(alice_client, alice):
    add(alice_client, "example.org")
    domain = MailDomain.objects.get()
    assert domain.pending and len(domain.verify_token) == 32
    assert not Job.objects.exists()  # nothing of it is rendered until verified
    assert AuditEntry.objects.get(action="domain.add").actor == alice


def test_quick_successive_edits_coalesce_into_one_pending_apply(admin_client_):
    for name in ["a.example", "b.example", "c.example"]:
        add(admin_client_, name)
    assert MailDomain.objects.count() == 3
    assert Job.objects.filter(state="pending").count() == 1


def test_dkim_key_is_rsa_2048_and_page_shows_its_public_half(alice_client):
    add(alice_client, "example.org")
    domain = MailDomain.objects.get()
    key = serialization.load_pem_private_key(domain.dkim_private_key.encode(), password=None)
    assert key.key_size == 2048
    page = alice_client.get(reverse("mailadmin:domain_dns", args=[domain.pk])).content.decode()
    assert dkim.dns_value(domain.dkim_private_key) in page
    assert "mail._domainkey.example.org" in page
    assert "PRIVATE KEY" not in page


def test_dkim_private_key_is_encrypted_at_rest(alice_client):
    from django.db import connection

    add(alice_client, "example.org")
    with connection.cursor() as cursor:
        cursor.execute("select dkim_private_key from mailadmin_maildomain")
        (raw,) = cursor.fetchone()
    assert "PRIVATE KEY" not in raw and raw.startswith("gAAAA")


def test_a_rotations_next_key_waits_beside_the_signing_key(alice_client):
    add(alice_client, "example.org")
    domain = MailDomain.objects.get()
    old = domain.dkim_private_key
    url = reverse("mailadmin:domain_dkim", args=[domain.pk])
    alice_client.post(url, {"action": "rotate", "selector": "next1", "bits": "2048"})
    domain.refresh_from_db()
    assert domain.dkim_private_key == old and domain.dkim_selector == "mail"
    assert domain.dkim_pending_private_key and domain.dkim_pending_selector == "next1"
    page = alice_client.get(reverse("mailadmin:domain_dns", args=[domain.pk])).content.decode()
    assert dkim.dns_value(old) in page and dkim.dns_value(domain.dkim_pending_private_key) in page
    assert "next1._domainkey.example.org" in page and "PRIVATE KEY" not in page
    alice_client.post(url, {"action": "cancel"})
    domain.refresh_from_db()
    assert domain.dkim_private_key == old and not domain.dkim_pending_private_key


@pytest.mark.parametrize(
    "bad",
    ["exa mple.com", "-a.com", "a..b.com", ("a" * 62 + ".") * 4 + "com", "localhost", "192.0.2.1",
     "[::1]", "", "a-.com", "example.c0m"],
)
def test_invalid_domain_names_get_a_clear_error_and_nothing_is_saved(alice_client, bad):
    response = add(alice_client, bad)
    assert response.status_code == 400
    assert MailDomain.objects.count() == 0 and Job.objects.count() == 0
    errors = response.context["form"].errors["name"]
    assert errors and all(len(e) > 10 for e in errors)


def test_duplicate_domain_is_refused_even_when_owned_by_someone_else(client, alice, bob):
    client.force_login(alice)
    add(client, "example.org")
    client.force_login(bob)
    response = add(client, "EXAMPLE.org")
    assert response.status_code == 400
    assert "already hosted" in str(response.context["form"].errors["name"])
    assert MailDomain.objects.get().owner == alice


def test_typed_domain_is_kept_in_the_form_after_an_error(alice_client):
    response = add(alice_client, "exa mple.com")
    assert 'value="exa mple.com"' in response.content.decode()


def test_delete_asks_for_confirmation_then_deletes(alice_client, live_root):
    add(alice_client, "example.org")
    domain = MailDomain.objects.get()
    url = reverse("mailadmin:domain_delete", args=[domain.pk])
    assert alice_client.get(url).status_code == 200
    assert alice_client.post(url, {"confirm_name": "wrong.org"}).status_code == 400
    assert MailDomain.objects.exists()
    response = alice_client.post(url, {"confirm_name": "example.org"})
    assert response.status_code == 302 and not MailDomain.objects.exists()


def test_admin_adds_a_domain_for_a_customer(admin_client_, alice):
    add(admin_client_, "shop.example", owner="alice")
    assert MailDomain.objects.get().owner == alice


def test_admin_gets_a_clear_error_for_an_unknown_owner(admin_client_):
    response = add(admin_client_, "shop.example", owner="nobody")
    assert response.status_code == 400
    assert "There is no user nobody" in str(response.context["form"].errors["owner"])
    assert not MailDomain.objects.exists()


def test_customer_cannot_pick_another_owner(alice_client, alice, bob):
    add(alice_client, "shop.example", owner="bob")
    assert MailDomain.objects.get().owner == alice


def test_domain_list_is_paginated(alice_client, alice):
    MailDomain.objects.bulk_create(
        [MailDomain(name=f"d{i:03}.example", owner=alice) for i in range(120)]
    )
    page1 = alice_client.get(reverse("mailadmin:domain_list")).content.decode()
    page3 = alice_client.get(reverse("mailadmin:domain_list") + "?page=3").content.decode()
    assert "d000.example" in page1 and "d050.example" not in page1
    assert "d119.example" in page3 and "Page 3 of 3" in page3


def test_login_is_rate_limited(client, alice, settings):
    settings.MAILPANEL_LOGIN_ATTEMPTS = 3
    for _ in range(2):
        assert client.post(reverse("login"), {"username": "alice", "password": "nope"}).status_code == 200
    # The third failure locks (user, address) out; more in tests/test_login_throttle.py.
    assert client.post(reverse("login"), {"username": "alice", "password": "nope"}).status_code == 429
    response = client.post(reverse("login"), {"username": "alice", "password": "alice-pass-123"})
    assert response.status_code == 429
    assert "Too many failed logins" in response.content.decode()


def test_anonymous_visitor_is_sent_to_login(client, db):
    response = client.get(reverse("mailadmin:domain_list"))
    assert response.status_code == 302 and response.url.startswith(reverse("login"))


def test_list_links_point_at_the_detail_url(alice_client, alice):
    domain = MailDomain.objects.create(name="example.org", owner=alice)
    assert f'href="{domain.get_absolute_url()}"' in alice_client.get(reverse("mailadmin:domain_list")).content.decode()


def test_list_escapes_what_it_shows(admin_client_, db):
    from django.contrib.auth import get_user_model

    owner = get_user_model().objects.create_user("<b>evil</b>", password="x-pass-123456")
    MailDomain.objects.create(name="example.org", owner=owner)
    page = admin_client_.get(reverse("mailadmin:domain_list")).content.decode()
    assert "&lt;b&gt;evil&lt;/b&gt;" in page and "<b>evil</b>" not in page


def test_list_rows_template_escapes_every_value():
    """The rows are a Jinja2 template marked safe as a whole: every value in it
    must be escaped by the engine, whatever the row holds."""
    from mailadmin.views.domains import Row, rows_html

    evil = '<i x="1">&'
    row = Row(url=evil, name=evil, idna=evil, badges=[(evil, evil)], owner=evil, dkim=evil,
              dns_status=evil, dns_label=evil, checked=evil, created=evil)
    html = rows_html([row], show_owner=True)
    assert "<i" not in html and html.count("&lt;i x=&#34;1&#34;&gt;&amp;") == 11


def test_admin_suspends_a_domain_and_a_customer_cannot_lift_it(client, alice, admin_user):
    domain = MailDomain.objects.create(name="example.org", owner=alice)
    url = reverse("mailadmin:domain_settings", args=[domain.pk])
    client.force_login(admin_user)
    assert "Suspended (admin)" in client.get(url).content.decode()
    client.post(url, {"dkim_enabled": "on", "suspended": "on"})
    domain.refresh_from_db()
    assert domain.suspended
    assert Job.objects.get(state="pending").scope is None  # suspension changes server-wide files
    client.force_login(alice)
    assert "Suspended (admin)" not in client.get(url).content.decode()
    client.post(url, {"dkim_enabled": "on"})  # no "suspended" field: must not unsuspend
    domain.refresh_from_db()
    assert domain.suspended


def test_admin_deactivates_a_customer_who_then_cannot_log_in(client, admin_user, alice):
    client.force_login(admin_user)
    url = reverse("mailadmin:user_active", args=[alice.pk])
    assert client.post(url, {"active": "0"}).status_code == 302
    alice.refresh_from_db()
    assert not alice.is_active
    assert AuditEntry.objects.filter(action="user.deactivate", target="alice").exists()
    assert client.post(reverse("mailadmin:user_active", args=[admin_user.pk]), {"active": "0"}).status_code == 302
    admin_user.refresh_from_db()
    assert admin_user.is_active  # nobody locks themselves out
    client.logout()
    response = client.post(reverse("login"), {"username": "alice", "password": "alice-pass-123"})
    assert response.status_code == 200 and "_auth_user_id" not in client.session
