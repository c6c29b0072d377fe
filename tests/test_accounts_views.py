"""The Accounts section of the domain page: htmx and plain POST/redirect,
errors next to the fields with the input kept, and customers stay in their own domains."""

import pytest
from django.urls import reverse

from mailadmin.models import AuditEntry, MailAccount, MailAlias, MailDomain, MailForward, ServerSettings
from mailadmin.services import accounts as svc

pytestmark = pytest.mark.django_db
PW = "Str0ng-enough-pass"


@pytest.fixture
def domain(alice):
    return MailDomain.objects.create(name="example.org", owner=alice)


@pytest.fixture
def info(alice, domain):
    return svc.add_account(alice, domain, "info", PW, quota_mb=250).object


def url(name, *args):
    return reverse(f"mailadmin:{name}", args=args)


def test_accounts_tab_lists_accounts_and_the_clients_tab_their_settings(alice_client, alice, domain, info, settings):
    settings.MAILPANEL_LAYOUT = {"tls_certificate": "/etc/mailpanel/tls/fullchain.pem"}  # TLS offered
    svc.add_alias(alice, domain, "sales", "info@example.org")
    svc.add_forward(alice, info, "boss@elsewhere.example")
    page = alice_client.get(url("domain_accounts", domain.pk)).content.decode()
    assert 'id="accounts"' in page
    assert "info@example.org" in page and "250 MB" in page
    assert "sales@example.org" in page and "boss@elsewhere.example" in page
    assert info.password_hash not in page
    ServerSettings.objects.update_or_create(pk=1, defaults={"hostname": "mail.hoster.test"})
    clients = alice_client.get(url("domain_clients", domain.pk)).content.decode()
    # the server's host name: its certificate is what the mail program checks
    assert "mail.hoster.test" in clients and "993" in clients and "465" in clients and "587" in clients
    assert "<code>mail.example.org</code>" not in clients
    assert url("account_mobileconfig", domain.pk, info.pk) in clients
    assert "https://mail.hoster.test/webmail/" in clients and "info@example.org" in clients
    overview = alice_client.get(domain.get_absolute_url()).content.decode()
    assert "1 mailbox" in overview and "1 alias" in overview


def test_add_account_without_js_redirects_back_to_the_section(alice_client, domain):
    response = alice_client.post(
        url("account_add", domain.pk), {"local_part": "Info", "password": PW, "quota_mb": ""}
    )
    assert response.status_code == 302 and response.url.endswith("#accounts")
    account = MailAccount.objects.get()
    assert account.local_part == "info" and account.quota_mb == 0
    page = alice_client.get(response.url).content.decode()
    assert "Mail account info@example.org added." in page and "unlimited" in page


def test_add_account_with_htmx_returns_the_section_partial(alice_client, domain):
    response = alice_client.post(
        url("account_add", domain.pk), {"local_part": "info", "password": PW, "quota_mb": "100"},
        HTTP_HX_REQUEST="true",
    )
    body = response.content.decode()
    assert response.status_code == 200
    assert body.lstrip().startswith('<section class="card" id="accounts">')
    assert "<html" not in body and "info@example.org" in body and "100 MB" in body
    assert 'hx-swap-oob="true"' in body  # the job area follows the apply


def test_invalid_account_shows_errors_and_keeps_input_but_not_the_password(alice_client, domain):
    response = alice_client.post(
        url("account_add", domain.pk), {"local_part": "bad name", "password": "Secret-but-unused-1", "quota_mb": "12"}
    )
    body = response.content.decode()
    assert response.status_code == 400
    assert "cannot be used before the @" in body
    assert 'value="bad name"' in body and 'value="12"' in body
    assert "Secret-but-unused-1" not in body
    assert not MailAccount.objects.exists()


def test_weak_password_error_is_shown_next_to_the_field_with_htmx(alice_client, domain):
    response = alice_client.post(
        url("account_add", domain.pk), {"local_part": "info", "password": "password1"}, HTTP_HX_REQUEST="true"
    )
    body = response.content.decode()
    assert response.status_code == 200 and "too weak" in body and "well-known" in body
    assert not MailAccount.objects.exists()


def test_password_strength_feedback_partial(alice_client, domain):
    weak = alice_client.post(url("account_password_strength", domain.pk), {"password": "abc", "local_part": "info"})
    assert 'data-score="0"' in weak.content.decode() and "too weak to save" in weak.content.decode()
    strong = alice_client.post(url("account_password_strength", domain.pk), {"password": "t7#Vq9!mZr2$kLp8"})
    assert 'data-score="4"' in strong.content.decode()
    assert "t7#Vq9" not in strong.content.decode()


# Password strength with a hostile account id: a 400, or a 404 for another
# customer's account; never a 500 with a traceback (issue #12).


@pytest.fixture
def bobs_account(bob):
    bobs = MailDomain.objects.create(name="bob.example", owner=bob)
    return svc.add_account(bob, bobs, "bob", PW).object


def strength(client, domain, **data):
    client.raise_request_exception = False  # a 500 must show as a 500, not as the exception
    return client.post(url("account_password_strength", domain.pk), {"password": "abc", **data})


@pytest.mark.parametrize(
    "account",
    ["abc", "1.5", "-1", "0", "0x1", "1e3", "1\n2", "99999999999999999999999", "1\x00", "１"],
    ids=["letters", "decimal", "negative", "zero", "hex", "exponent", "newline", "overflow", "nul", "fullwidth-one"],
)
def test_bad_account_id_is_a_400_without_a_traceback(alice_client, domain, account):
    response = strength(alice_client, domain, account=account)
    assert response.status_code == 400
    assert "Traceback" not in response.content.decode()


def test_another_customers_account_is_a_404(alice_client, domain, bobs_account):
    response = strength(alice_client, domain, account=str(bobs_account.pk))
    assert response.status_code == 404


def test_an_account_that_does_not_exist_is_a_404(alice_client, domain):
    assert strength(alice_client, domain, account="424242").status_code == 404


def test_own_account_id_uses_its_local_part(alice_client, domain, info):
    weak = strength(alice_client, domain, password="info", account=str(info.pk))
    assert weak.status_code == 200 and 'data-score="0"' in weak.content.decode()


def test_customer_cannot_use_another_customers_domain(alice_client, bobs_account):
    assert strength(alice_client, bobs_account.domain, account=str(bobs_account.pk)).status_code == 404


def test_edit_account_quota_and_forward_only_blank_password_keeps_hash(alice_client, alice, info, domain):
    old_hash = info.password_hash
    page = alice_client.get(url("account_edit", domain.pk, info.pk)).content.decode()
    assert 'value="250"' in page and old_hash not in page
    response = alice_client.post(url("account_edit", domain.pk, info.pk), {"password": "", "quota_mb": "0"})
    assert response.status_code == 302
    info.refresh_from_db()
    assert info.quota_mb == 0 and info.password_hash == old_hash
    # forward-only without a forward: refused, nothing saved, message on the field
    response = alice_client.post(
        url("account_edit", domain.pk, info.pk), {"quota_mb": "5", "forward_only": "on"}, HTTP_HX_REQUEST="true"
    )
    assert "forwarding address first" in response.content.decode()
    info.refresh_from_db()
    assert info.quota_mb == 0 and not info.forward_only


def test_forwards_add_with_no_local_copy_and_remove(alice_client, info, domain):
    response = alice_client.post(
        url("forward_add", domain.pk, info.pk), {"target": "boss@elsewhere.example", "forward_only": "on"}
    )
    assert response.status_code == 302
    info.refresh_from_db()
    assert info.forward_only
    forward = MailForward.objects.get()
    response = alice_client.post(
        url("forward_add", domain.pk, info.pk), {"target": "info@example.org"}, HTTP_HX_REQUEST="true"
    )
    assert "cannot forward to itself" in response.content.decode()
    response = alice_client.post(url("forward_delete", domain.pk, info.pk, forward.pk), HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and "Mail is not forwarded." in response.content.decode()
    info.refresh_from_db()
    assert not info.forward_only and not MailForward.objects.exists()


def test_alias_add_loop_error_and_delete(alice_client, alice, info, domain):
    response = alice_client.post(url("alias_add", domain.pk), {"local_part": "sales", "target": "info@example.org"})
    assert response.status_code == 302
    alias = MailAlias.objects.get()
    svc.add_alias(alice, domain, "team", "sales@example.org")
    response = alice_client.post(
        url("alias_add", domain.pk), {"local_part": "sales", "target": "team@example.org"}, HTTP_HX_REQUEST="true"
    )
    body = response.content.decode()
    assert "loop" in body and 'value="team@example.org"' in body
    assert MailAlias.objects.count() == 2
    response = alice_client.post(url("alias_delete", domain.pk, alias.pk))
    assert response.status_code == 302
    assert list(MailAlias.objects.values_list("local_part", flat=True)) == ["team"]


def test_catchall_set_and_turn_off(alice_client, info, domain):
    response = alice_client.post(url("catchall_set", domain.pk), {"catchall": "info@example.org", "action": "set"})
    assert response.status_code == 302
    domain.refresh_from_db()
    assert domain.catchall == "info@example.org"
    response = alice_client.post(url("catchall_set", domain.pk), {"catchall": "nobody@example.org"})
    assert response.status_code == 400 and "no account or alias" in response.content.decode()
    response = alice_client.post(url("catchall_set", domain.pk), {"catchall": "info@example.org", "action": "clear"}, HTTP_HX_REQUEST="true")
    assert "mail to unknown addresses is refused" in response.content.decode()
    domain.refresh_from_db()
    assert domain.catchall == ""


def test_delete_account_asks_first_without_js_then_deletes(alice_client, info, domain):
    page = alice_client.get(url("account_delete", domain.pk, info.pk))
    assert page.status_code == 200 and "Delete info@example.org?" in page.content.decode()
    assert MailAccount.objects.exists()
    response = alice_client.post(url("account_delete", domain.pk, info.pk))
    assert response.status_code == 302 and not MailAccount.objects.exists()
    assert AuditEntry.objects.filter(action="account.delete", target="info@example.org").exists()


def test_customer_cannot_touch_other_customers_accounts(client, bob, alice, domain, info):
    svc.add_alias(alice, domain, "sales", "info@example.org")
    forward = svc.add_forward(alice, info, "boss@elsewhere.example").object
    alias = MailAlias.objects.get()
    bobs = MailDomain.objects.create(name="bob.example", owner=bob)
    client.force_login(bob)
    attempts = [
        ("get", url("account_edit", domain.pk, info.pk), {}),
        ("post", url("account_edit", domain.pk, info.pk), {"password": "Bob-takes-over-1", "quota_mb": "1"}),
        ("get", url("account_delete", domain.pk, info.pk), {}),
        ("post", url("account_delete", domain.pk, info.pk), {}),
        ("post", url("account_add", domain.pk), {"local_part": "evil", "password": PW}),
        ("post", url("forward_add", domain.pk, info.pk), {"target": "bob@bob.example"}),
        ("post", url("forward_delete", domain.pk, info.pk, forward.pk), {}),
        ("post", url("alias_add", domain.pk), {"local_part": "evil", "target": "bob@bob.example"}),
        ("post", url("alias_delete", domain.pk, alias.pk), {}),
        ("post", url("catchall_set", domain.pk), {"catchall": "bob@bob.example"}),
        ("post", url("account_password_strength", domain.pk), {"password": "x"}),
        # bob's own domain id with alice's account / alias ids
        ("get", url("account_edit", bobs.pk, info.pk), {}),
        ("post", url("account_delete", bobs.pk, info.pk), {}),
        ("post", url("forward_delete", bobs.pk, info.pk, forward.pk), {}),
        ("post", url("alias_delete", bobs.pk, alias.pk), {}),
    ]
    for method, target, data in attempts:
        for htmx in ("", "true"):
            response = getattr(client, method)(target, data, HTTP_HX_REQUEST=htmx)
            assert response.status_code == 404, f"{method} {target} gave {response.status_code}"
    info.refresh_from_db()
    assert info.quota_mb == 250
    assert MailAccount.objects.count() == 1 and MailAlias.objects.count() == 1 and MailForward.objects.count() == 1
    domain.refresh_from_db()
    assert domain.catchall == ""
    assert "info@example.org" not in client.get(bobs.get_absolute_url()).content.decode()


def test_admin_manages_any_customers_accounts(admin_client_, domain):
    response = admin_client_.post(url("account_add", domain.pk), {"local_part": "postmaster", "password": PW})
    assert response.status_code == 302
    assert MailAccount.objects.get().local_part == "postmaster"


def test_idn_addresses_are_shown_in_unicode_and_form_ids_are_unique(alice_client, alice):
    import re

    domain = MailDomain.objects.create(name="xn--bcher-kva.example", owner=alice)
    info = svc.add_account(alice, domain, "info", PW).object
    svc.add_account(alice, domain, "boss", PW)
    svc.add_alias(alice, domain, "sales", "info@bücher.example")
    svc.add_forward(alice, info, "boss@bücher.example")
    svc.set_catchall(alice, domain, "info@bücher.example")
    assert domain.catchall == "info@xn--bcher-kva.example"  # stored as IDNA
    page = alice_client.get(url("domain_accounts", domain.pk)).content.decode()
    start = page.index('id="accounts"')
    section = page[start : page.index("</section>", start)]
    assert "xn--bcher-kva" not in section
    assert "sales@bücher.example" in section and "boss@bücher.example" in section
    ids = re.findall(r'\sid="([^"]+)"', page)
    mine = set(re.findall(r'\sid="([^"]+)"', section))
    assert not [i for i in mine if ids.count(i) > 1], sorted(i for i in mine if ids.count(i) > 1)


def test_mailbox_usage_loads_after_the_page_and_says_unknown_when_the_helper_fails(
    alice_client, domain, info, settings
):
    page = alice_client.get(url("domain_accounts", domain.pk)).content.decode()
    usage_url = url("account_usage", domain.pk)
    assert f'hx-get="{usage_url}" hx-trigger="load"' in page  # not computed for the page itself
    settings.MAILPANEL_HELPER = "false"
    html = alice_client.get(usage_url).content.decode()
    assert "<html" in html and "Unknown: the mail server could not be asked." in html
    assert "0.0 MB" not in html  # unknown is never shown as empty
