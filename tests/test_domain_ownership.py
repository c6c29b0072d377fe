"""Who may hold which mail domain (issue #12, "tenant boundary"): a customer's
domain is pending until a TXT record proves it; the server's own names,
public suffixes and names near another owner's domain are refused; the
admin's switch and per-customer limits; the ownership check against a real
DNS server on 127.0.0.1."""

import io

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.urls import reverse

from mailadmin.models import Job, AuditEntry, MailAccount, MailDomain, ServerSettings, UserProfile
from mailadmin.services import accounts as account_service
from mailadmin.services import apply, customers, ownership
from mailadmin.services import domains as domain_service
from tests.dnsserver import DnsServer, txt

pytestmark = pytest.mark.django_db

PASSWORD = "Vault-Horse-Lamp-91"


def add(client, name, **extra):
    return client.post(reverse("mailadmin:domain_add"), {"name": name, "dkim_enabled": "on", **extra})


def name_error(response) -> str:
    return " ".join(response.context["form"].errors.get("name", []))


@pytest.fixture
def server_names(settings, admin_user):
    """The admin's own mail domain, the server's hostname and the panel's host."""
    settings.MAILPANEL_BASE_URL = "https://panel.hoster.test"
    admin_user.email = "admin@corp.test"
    admin_user.save()
    server = ServerSettings.load()
    server.hostname = "mx1.hoster.test"
    server.save()
    return server


# --- what a customer may claim -------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "corp.test",  # the admin's mail domain: password resets go there
        "mail.corp.test",
        "mx1.hoster.test",  # the server's hostname: postmaster@<server name>
        "x.mx1.hoster.test",
        "hoster.test",  # above the hostname and the panel's host
        "panel.hoster.test",
    ],
)
def test_customer_cannot_claim_the_servers_or_the_admins_names(alice_client, server_names, name):
    response = add(alice_client, name)
    assert response.status_code == 400
    assert "reserved for this server" in name_error(response)
    assert not MailDomain.objects.exists()


@pytest.mark.parametrize("name", ["com", "co.uk", "github.io", "s3.amazonaws.com"])
def test_customer_cannot_claim_a_public_suffix(alice_client, name):
    response = add(alice_client, name)
    assert response.status_code == 400
    assert "public suffix" in name_error(response) or "not a full domain" in name_error(response)
    assert not MailDomain.objects.exists()


def test_customer_cannot_claim_under_or_above_another_customers_domain(alice_client, bob):
    domain_service.add_domain(None, bob, "bob.test")
    for name in ("sub.bob.test", "deep.sub.bob.test"):
        response = add(alice_client, name)
        assert response.status_code == 400
        message = name_error(response)
        assert "under or above a domain that is already hosted" in message
        assert "bob" not in message.replace("bob.test", "")  # never who holds it
    domain_service.add_domain(None, bob, "shop.carol.test")
    response = add(alice_client, "carol.test")
    assert "under or above" in name_error(response)
    assert MailDomain.objects.filter(owner__username="alice").count() == 0


def test_customer_may_add_names_under_their_own_domain(alice_client, alice):
    domain_service.add_domain(None, alice, "alice.test")
    assert add(alice_client, "shop.alice.test").status_code == 302
    assert MailDomain.objects.get(name="shop.alice.test").pending


def test_admin_may_add_reserved_names_but_not_a_taken_one(admin_client_, server_names, alice, bob):
    for name in ("corp.test", "mx1.hoster.test", "com.test"):
        assert add(admin_client_, name, owner="alice").status_code == 302
    domain_service.add_domain(None, bob, "bob.test")
    assert add(admin_client_, "sub.bob.test", owner="alice").status_code == 302
    response = add(admin_client_, "BOB.test", owner="alice")
    assert response.status_code == 400 and "already hosted" in name_error(response)
    assert not MailDomain.objects.filter(pending=True).exists()  # an admin's domain is live at once


def test_cli_domain_add_is_verified_at_once(alice, server_names):
    call_command("mail", "domain", "add", "alice", "corp.test", stdout=io.StringIO())
    domain = MailDomain.objects.get()
    assert not domain.pending and domain.owner == alice
    assert [d.name for d in apply.build_snapshot().domains] == ["corp.test"]


def test_service_refuses_a_customer_adding_for_someone_else(alice, bob):
    with pytest.raises(ValidationError):
        domain_service.add_domain(alice, bob, "shop.test")
    assert not MailDomain.objects.exists()


# --- the admin's switch -------------------------------------------------------------


def test_admin_switch_stops_customers_from_adding_domains(client, alice, admin_user):
    client.force_login(admin_user)
    url = reverse("mailadmin:customer_domains_save")
    page = client.get(reverse("mailadmin:server_settings")).content.decode()
    assert 'id="customer-domains"' in page and 'name="customers_add_domains"' in page
    response = client.post(url, {}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and "<html" not in response.content.decode()
    assert "Only administrators can add mail domains" in response.content.decode()
    assert not ServerSettings.load().customers_add_domains
    assert AuditEntry.objects.filter(action="server.customers_add_domains").count() == 1

    client.force_login(alice)
    listing = client.get(reverse("mailadmin:domain_list")).content.decode()
    assert 'id="domain-add-closed"' in listing and 'id="domain-add-form"' not in listing
    response = add(client, "shop.test")
    assert response.status_code == 400 and not MailDomain.objects.exists()
    with pytest.raises(ValidationError, match="Customers cannot add mail domains"):
        domain_service.add_domain(alice, alice, "shop.test")
    domain_service.add_domain(admin_user, alice, "shop.test")  # admins still can

    client.force_login(admin_user)
    assert client.post(url, {"customers_add_domains": "on"}).status_code == 302
    assert ServerSettings.load().customers_add_domains


def test_cli_switches_customer_domains(alice):
    call_command("mail", "server", "customer-domains", "off", stdout=io.StringIO())
    assert not ServerSettings.load().customers_add_domains
    call_command("mail", "server", "customer-domains", "on", stdout=io.StringIO())
    assert ServerSettings.load().customers_add_domains


# --- per-customer limits ----------------------------------------------------------------


def test_domain_limit_is_enforced_for_customers_not_admins(alice_client, alice, admin_user):
    customers.set_limits(admin_user, alice, max_domains=1)
    assert add(alice_client, "one.test").status_code == 302
    response = add(alice_client, "two.test")
    assert response.status_code == 400
    assert "Your plan allows 1 mail domain" in name_error(response)
    domain_service.add_domain(admin_user, alice, "two.test")
    assert MailDomain.objects.filter(owner=alice).count() == 2


def test_mailbox_and_quota_limits_are_enforced_in_the_service(alice, admin_user):
    domain = domain_service.add_domain(None, alice, "alice.test")
    customers.set_limits(admin_user, alice, max_mailboxes=2, max_quota_mb=100)
    with pytest.raises(ValidationError) as exc:
        account_service.add_account(alice, domain, "nolimit", PASSWORD, quota_mb=0)
    assert "give this mailbox a quota" in str(exc.value.message_dict["quota_mb"])
    first = account_service.add_account(alice, domain, "one", PASSWORD, quota_mb=60).object
    with pytest.raises(ValidationError) as exc:
        account_service.add_account(alice, domain, "two", PASSWORD, quota_mb=50)
    assert "40 MB are left" in str(exc.value.message_dict["quota_mb"])
    account_service.add_account(alice, domain, "two", PASSWORD, quota_mb=40)
    with pytest.raises(ValidationError) as exc:
        account_service.add_account(alice, domain, "three", PASSWORD, quota_mb=1)
    assert "Your plan allows 2 mailboxes" in str(exc.value)
    with pytest.raises(ValidationError):
        account_service.update_account(alice, first, quota_mb=61)  # raising one past the total
    account_service.update_account(alice, first, quota_mb=59)
    account_service.add_account(admin_user, domain, "three", PASSWORD, quota_mb=0)  # admins may
    assert MailAccount.objects.filter(domain=domain).count() == 3


def test_mailbox_limit_error_shows_on_the_domain_page(alice_client, alice, admin_user):
    domain = domain_service.add_domain(None, alice, "alice.test")
    customers.set_limits(admin_user, alice, max_mailboxes=0)
    response = alice_client.post(
        reverse("mailadmin:account_add", args=[domain.pk]),
        {"local_part": "info", "password": PASSWORD, "password_again": PASSWORD, "quota_mb": "10"},
    )
    assert response.status_code == 400
    assert "Your plan allows 0 mailboxes" in response.content.decode()
    assert not MailAccount.objects.exists()


def test_admin_sets_limits_on_the_users_page(admin_client_, alice):
    url = reverse("mailadmin:user_limits", args=[alice.pk])
    page = admin_client_.get(reverse("mailadmin:user_detail", args=[alice.pk])).content.decode()
    assert 'id="limits"' in page and 'name="max_quota_mb"' in page
    response = admin_client_.post(url, {"max_domains": "3", "max_mailboxes": "", "max_quota_mb": "500"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and "Limits saved" in response.content.decode()
    profile = UserProfile.objects.get(user=alice)
    assert (profile.max_domains, profile.max_mailboxes, profile.max_quota_mb) == (3, None, 500)
    assert AuditEntry.objects.get(action="user.limits").fields == ["max_domains", "max_quota_mb"]
    response = admin_client_.post(url, {"max_domains": "-1"})
    assert response.status_code == 400
    assert UserProfile.objects.get(user=alice).max_domains == 3
    assert admin_client_.post(url, {"max_domains": ""}).status_code == 302
    assert UserProfile.objects.get(user=alice).max_domains is None


def test_cli_user_set_limits(alice):
    out = io.StringIO()
    call_command("mail", "user", "set", "alice", "--max-domains", "2", "--max-quota-mb", "1000", stdout=out)
    profile = UserProfile.objects.get(user=alice)
    assert (profile.max_domains, profile.max_mailboxes, profile.max_quota_mb) == (2, None, 1000)
    call_command("mail", "user", "set", "alice", "--max-domains", "none", stdout=out)
    assert UserProfile.objects.get(user=alice).max_domains is None
    with pytest.raises(CommandError):
        call_command("mail", "user", "set", "alice", "--max-mailboxes", "-3", stdout=out, stderr=io.StringIO())
    with pytest.raises(CommandError):
        call_command("mail", "user", "set", "alice", stdout=out)


# --- pending until verified ---------------------------------------------------------


def test_pending_domain_is_left_out_of_the_mail_config(alice):
    pending = domain_service.add_domain(alice, alice, "alice.test")
    MailAccount.objects.create(domain=pending, local_part="info", password_hash="{PLAIN}x")
    account_service.set_catchall(None, pending, "info@alice.test")
    assert apply.build_snapshot().domains == ()
    assert apply.build_snapshot(only_domains={"alice.test"}).domains == ()
    ownership.mark_verified(None, pending)
    [live] = apply.build_snapshot().domains
    assert live.name == "alice.test" and live.mailboxes[0].local_part == "info"


@pytest.fixture
def dns(settings):
    server = DnsServer().start()
    settings.MAILPANEL_RESOLVERS = [server.address]
    settings.MAILPANEL_CHECK_TIMEOUT = 2.0
    yield server
    server.stop()


def publish(dns, domain):
    dns.add([f"_mailpanel-verify.{domain.name}. 300 IN TXT {txt('mailpanel-verify=' + domain.verify_token)}"])


def test_page_shows_the_record_and_the_zone_export_lists_it_as_required(alice_client, alice):
    add(alice_client, "alice.test")
    domain = MailDomain.objects.get()
    page = alice_client.get(domain.get_absolute_url()).content.decode()
    value = f"mailpanel-verify={domain.verify_token}"
    assert 'id="ownership"' in page and value in page
    dns_tab = alice_client.get(reverse("mailadmin:domain_dns", args=[domain.pk])).content.decode()
    assert 'id="dns-ownership"' in dns_tab  # a row of the records table, with its copy button
    assert reverse("mailadmin:domain_verify", args=[domain.pk]) in page
    zone = alice_client.get(reverse("mailadmin:domain_dns_zone", args=[domain.pk])).content.decode()
    assert "; required: ownership" in zone
    assert f'_mailpanel-verify.alice.test.\t3600\tIN\tTXT\t"{value}"' in zone
    ownership.mark_verified(None, domain)
    page = alice_client.get(domain.get_absolute_url()).content.decode()
    assert 'id="ownership"' not in page and value not in page


def test_other_tokens_do_not_verify(alice, bob):
    first = domain_service.add_domain(alice, alice, "alice.test")
    second = domain_service.add_domain(bob, bob, "bob.test")
    assert first.verify_token != second.verify_token


def test_verify_button_htmx_missing_then_published(alice_client, alice, dns):
    add(alice_client, "alice.test")
    domain = MailDomain.objects.get()
    url = reverse("mailadmin:domain_verify", args=[domain.pk])
    response = alice_client.post(url, HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert response.status_code == 200 and "<html" not in html and 'id="ownership"' in html
    assert "not verified yet" in html and "_mailpanel-verify.alice.test" in html
    domain.refresh_from_db()
    assert domain.pending and not Job.objects.exists()

    dns.add(["_mailpanel-verify.alice.test. 300 IN TXT \"mailpanel-verify=someone-elses-token\""])
    html = alice_client.post(url, HTTP_HX_REQUEST="true").content.decode()
    assert "someone-elses-token" in html and "not verified yet" in html

    publish(dns, domain)
    response = alice_client.post(url, HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and response["HX-Redirect"] == domain.get_absolute_url()
    domain.refresh_from_db()
    assert not domain.pending
    assert [job.scope for job in Job.objects.filter(state="pending")] == [["alice.test"]]
    assert AuditEntry.objects.filter(action="domain.verify", target="alice.test").exists()
    assert "is verified" in alice_client.get(domain.get_absolute_url()).content.decode()


def test_verify_button_without_javascript_redirects_with_a_message(alice_client, alice, dns):
    add(alice_client, "alice.test")
    domain = MailDomain.objects.get()
    url = reverse("mailadmin:domain_verify", args=[domain.pk])
    response = alice_client.post(url, follow=True)
    assert response.redirect_chain[-1][0].endswith("#ownership")
    assert "not verified yet" in response.content.decode()
    publish(dns, domain)
    response = alice_client.post(url)
    assert response.status_code == 302 and response.url == domain.get_absolute_url()
    domain.refresh_from_db()
    assert not domain.pending


def test_customer_cannot_approve_without_the_record_but_an_admin_can(client, alice, admin_user, dns):
    domain = domain_service.add_domain(alice, alice, "alice.test")
    url = reverse("mailadmin:domain_verify", args=[domain.pk])
    client.force_login(alice)
    assert "Approve without" not in client.get(domain.get_absolute_url()).content.decode()
    client.post(url, {"action": "approve"})
    domain.refresh_from_db()
    assert domain.pending
    client.force_login(admin_user)
    assert "Approve without" in client.get(domain.get_absolute_url()).content.decode()
    client.post(url, {"action": "approve"})
    domain.refresh_from_db()
    assert not domain.pending


def test_periodic_job_verifies_published_domains_and_rechecks_the_rules(alice, bob, admin_user, dns, settings):
    ready = domain_service.add_domain(alice, alice, "ready.test")
    waiting = domain_service.add_domain(alice, alice, "waiting.test")
    now_reserved = domain_service.add_domain(bob, bob, "bobs.test")
    publish(dns, ready)
    publish(dns, now_reserved)
    admin_user.email = "root@bobs.test"  # since bob added it, it became the admin's domain
    admin_user.save()
    out = io.StringIO()
    call_command("mail", "domain", "verify-pending", stdout=out)
    assert "pending 3, verified 1, refused 1" in out.getvalue()
    assert set(MailDomain.objects.filter(pending=True).values_list("name", flat=True)) == {"waiting.test", "bobs.test"}
    assert [d.name for d in apply.build_snapshot().domains] == ["ready.test"]


def test_cli_verify_one_domain(alice, dns):
    domain = domain_service.add_domain(alice, alice, "alice.test")
    with pytest.raises(CommandError, match="not verified"):
        call_command("mail", "domain", "verify", "alice.test", stdout=io.StringIO())
    call_command("mail", "domain", "verify", "alice.test", "--skip-dns", stdout=io.StringIO())
    domain.refresh_from_db()
    assert not domain.pending


def test_dead_resolver_leaves_the_domain_pending(alice, settings):
    from tests.dnsserver import SilentResolver

    domain = domain_service.add_domain(alice, alice, "alice.test")
    with SilentResolver() as silent:
        settings.MAILPANEL_RESOLVERS = [silent.address]
        settings.MAILPANEL_CHECK_TIMEOUT = 0.5
        outcome = ownership.verify_domain(alice, domain)
    assert not outcome.verified and outcome.verdict.status == "unknown"
    domain.refresh_from_db()
    assert domain.pending


# --- suspension holds -------------------------------------------------------------


def test_owner_cannot_delete_a_suspended_domain_to_lift_the_suspension(alice_client, alice, admin_user):
    """The finding: delete the suspended domain, add it again, no longer suspended."""
    domain = domain_service.add_domain(None, alice, "alice.test")
    domain_service.update_domain(admin_user, domain, suspended=True)
    url = reverse("mailadmin:domain_delete", args=[domain.pk])
    page = alice_client.get(url).content.decode()
    assert "suspended by an administrator and cannot be deleted" in page and "confirm_name" not in page
    response = alice_client.post(url, {"confirm_name": "alice.test"})
    assert response.status_code == 400
    assert MailDomain.objects.get(name="alice.test").suspended
    with pytest.raises(ValidationError):
        domain_service.delete_domain(alice, domain)
    response = add(alice_client, "alice.test")  # nor add it again
    assert response.status_code == 400 and MailDomain.objects.get().suspended


@pytest.fixture
def alices_domains(alice, admin_user):
    one = domain_service.add_domain(None, alice, "one.test")
    held = domain_service.add_domain(None, alice, "held.test")
    domain_service.update_domain(admin_user, held, suspended=True)
    return one, held


def live_names():
    return {d.name: d.suspended for d in apply.build_snapshot().domains}


def test_admin_suspends_a_user_and_lifting_it_restores_exactly_the_domains(client, alice, admin_user, alices_domains):
    client.force_login(alice)
    assert client.get(reverse("mailadmin:domain_list")).status_code == 200
    assert live_names() == {"one.test": False, "held.test": True}

    client.force_login(admin_user)
    url = reverse("mailadmin:user_suspend", args=[alice.pk])
    response = client.post(url, {"suspended": "1"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and "is suspended" in response.content.decode()
    assert live_names() == {}
    assert any(job.scope is None for job in Job.objects.filter(state="pending"))  # the whole server
    assert AuditEntry.objects.filter(action="user.suspend", target="alice").exists()
    listing = client.get(reverse("mailadmin:domain_list")).content.decode()
    assert "owner suspended" in listing
    assert "suspended" in client.get(reverse("mailadmin:user_list")).content.decode()

    # Her open session ends, and she cannot log in again.
    client.force_login(alice)
    assert client.get(reverse("mailadmin:domain_list")).status_code == 302
    client.logout()
    client.post(reverse("login"), {"username": "alice", "password": "alice-pass-123"})
    assert "_auth_user_id" not in client.session

    client.force_login(admin_user)
    assert client.post(url, {"suspended": "0"}).status_code == 302
    assert live_names() == {"one.test": False, "held.test": True}  # held.test stays suspended
    assert AuditEntry.objects.filter(action="user.unsuspend", target="alice").exists()
    client.logout()
    client.post(reverse("login"), {"username": "alice", "password": "alice-pass-123"})
    assert client.session.get("_auth_user_id") == str(alice.pk)


def test_admin_cannot_suspend_themselves(admin_client_, admin_user):
    admin_client_.post(reverse("mailadmin:user_suspend", args=[admin_user.pk]), {"suspended": "1"})
    assert not UserProfile.objects.filter(user=admin_user, suspended=True).exists()


def test_cli_suspend_and_unsuspend(alice, alices_domains):
    call_command("mail", "user", "suspend", "alice", stdout=io.StringIO())
    assert UserProfile.objects.get(user=alice).suspended and live_names() == {}
    out = io.StringIO()
    call_command("mail", "user", "list", "--json", stdout=out)
    assert '"suspended": true' in out.getvalue()
    call_command("mail", "user", "unsuspend", "alice", stdout=io.StringIO())
    assert live_names() == {"one.test": False, "held.test": True}


# --- the periodic job's systemd units ------------------------------------------------


def test_verify_timer_units_pass_systemd_verify_and_run_the_cli(tmp_path):
    from tests.test_deploy import assert_timer_units

    assert_timer_units("mailpanel-verify-domains", "mail domain verify-pending", tmp_path)
