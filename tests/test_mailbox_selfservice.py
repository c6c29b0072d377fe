"""Mailbox self-service (issue #15): a mailbox owner signs in with the
address and its password, throttled like every login, and changes only
their own mailbox. The real-daemon half (IMAP with the new password, the
out-of-office reply sent by Dovecot and Exim) is test_mailbox_mailstack.py."""

import plistlib

import pytest
from axes.models import AccessAttempt
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from mailadmin import passwords
from mailadmin.mailbox_session import SESSION_KEY
from mailadmin.models import Job, AuditEntry, MailAccount, MailDomain, MailForward, ServerSettings, UserProfile
from mailadmin.services import accounts as account_service

pytestmark = pytest.mark.django_db

PW = "Mailb0x-pass-phrase"
HOME = "/mailbox/"


@pytest.fixture(autouse=True)
def _throttle(settings):
    settings.MAILPANEL_LOGIN_ATTEMPTS = 5
    settings.MAILPANEL_LOGIN_COOLOFF_MINUTES = 15
    settings.MAILPANEL_TRUSTED_PROXIES = []


@pytest.fixture
def info(alice):
    ServerSettings.objects.update_or_create(pk=1, defaults={"hostname": "mail.hoster.test"})
    domain = MailDomain.objects.create(name="example.org", owner=alice, dkim_enabled=False)
    return account_service.add_account(alice, domain, "info", PW).object


@pytest.fixture
def other(info):
    return account_service.add_account(info.domain.owner, info.domain, "other", PW + "2").object


def login(client, username, password=PW, addr="198.51.100.5"):
    return client.post(reverse("login"), {"username": username, "password": password}, REMOTE_ADDR=addr)


@pytest.fixture
def mailbox_client(info):
    client = Client()
    assert login(client, "info@example.org").status_code == 302
    return client


# --- signing in ---------------------------------------------------------------------


def test_a_mailbox_signs_in_with_its_address_and_password(client, info):
    response = login(client, "Info@Example.ORG")
    assert response.status_code == 302 and response["Location"] == reverse("mailadmin:mailbox_home")
    assert client.session[SESSION_KEY] == info.pk
    assert "_auth_user_id" not in client.session  # not a panel user: every panel page stays closed
    page = client.get(HOME)
    assert page.status_code == 200 and "info@example.org" in page.content.decode()
    assert client.get(reverse("mailadmin:domain_list")).status_code == 302


def test_an_idn_mailbox_signs_in_with_the_unicode_or_the_punycode_domain(client, alice):
    domain = MailDomain.objects.create(name="xn--mnchen-3ya.example", owner=alice)
    account_service.add_account(alice, domain, "post", PW)
    for spelling in ("post@münchen.example", "post@xn--mnchen-3ya.example"):
        client.logout()
        assert login(client, spelling).status_code == 302, spelling


@pytest.mark.parametrize("username, password", [
    ("info@example.org", "wrong-password-1"),
    ("nobody@example.org", PW),
    ("info@unknown.example", PW),
    ("info@example.org\n", PW + "x"),
    ("info", PW),
])
def test_wrong_password_and_unknown_address_fail_alike_and_count(client, info, username, password):
    response = login(client, username, password)
    assert response.status_code == 200
    assert "Please enter a correct" in response.content.decode()
    assert SESSION_KEY not in client.session
    assert AccessAttempt.objects.count() == 1


def test_failures_lock_the_address_out_and_the_right_password_then_too(client, info):
    for _i in range(5):
        login(client, "info@example.org", "wrong-guess")
    response = login(client, "INFO@example.org", PW)
    assert response.status_code == 429
    assert SESSION_KEY not in client.session
    # another client address is not locked out
    assert login(Client(), "info@example.org", PW, addr="203.0.113.9").status_code == 302


def test_a_successful_mailbox_login_clears_its_failures(client, info):
    for _i in range(3):
        login(client, "info@example.org", "wrong-guess")
    assert login(client, "info@example.org").status_code == 302
    assert not AccessAttempt.objects.filter(username="info@example.org").exists()


@pytest.mark.parametrize("state", ["pending", "suspended", "hosted_elsewhere", "owner_suspended"])
def test_a_mailbox_of_a_domain_not_served_cannot_sign_in(client, info, state):
    domain = info.domain
    if state == "owner_suspended":
        UserProfile.objects.create(user=domain.owner, suspended=True)
    else:
        setattr(domain, state, True)
        domain.save()
    assert login(client, "info@example.org").status_code == 200
    assert SESSION_KEY not in client.session


def test_a_panel_user_of_the_same_name_is_tried_first(client, info):
    user = get_user_model().objects.create_user("info@example.org", password="panel-pass-123")
    login(client, "info@example.org", "panel-pass-123")
    assert client.session["_auth_user_id"] == str(user.pk) and SESSION_KEY not in client.session
    client.logout()
    login(client, "info@example.org", PW)
    assert client.session[SESSION_KEY] == info.pk and "_auth_user_id" not in client.session


def test_a_panel_login_ends_the_mailbox_session_and_the_other_way_round(mailbox_client, alice):
    assert login(mailbox_client, "alice", "alice-pass-123").status_code == 302
    assert SESSION_KEY not in mailbox_client.session
    mailbox_client.logout()
    login(mailbox_client, "info@example.org")
    assert "_auth_user_id" not in mailbox_client.session


@pytest.mark.parametrize("change", ["password", "deleted", "suspended", "owner_suspended"])
def test_the_session_ends_when_the_password_changes_or_the_mailbox_stops_being_served(mailbox_client, info, change):
    if change == "password":
        account_service.set_password(info.domain.owner, info, "Br4nd-new-passw0rd")
    elif change == "deleted":
        account_service.delete_account(info.domain.owner, info)
    elif change == "suspended":
        MailDomain.objects.filter(pk=info.domain_id).update(suspended=True)
    else:
        UserProfile.objects.create(user=info.domain.owner, suspended=True)
    response = mailbox_client.get(HOME)
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
    assert SESSION_KEY not in mailbox_client.session


def test_logging_out_ends_the_mailbox_session(mailbox_client):
    assert mailbox_client.post(reverse("mailadmin:mailbox_logout")).status_code == 302
    assert mailbox_client.get(HOME).status_code == 302


# --- the password -----------------------------------------------------------------------


def change(client, current, new, **extra):
    return client.post(reverse("mailadmin:mailbox_password"), {"password": current, "new_password": new}, **extra)


def test_the_owner_changes_the_password_and_stays_signed_in(mailbox_client, info):
    response = change(mailbox_client, PW, "Br4nd-new-passw0rd")
    assert response.status_code == 302
    info.refresh_from_db()
    assert passwords.check_password("Br4nd-new-passw0rd", info.password_hash)
    assert not passwords.check_password(PW, info.password_hash)
    assert mailbox_client.get(HOME).status_code == 200
    entry = AuditEntry.objects.get(action="account.update")
    assert (entry.actor_id, entry.actor_name, entry.target, entry.fields) == (
        None, "info@example.org", "info@example.org", ["password_hash"])
    job = Job.objects.get(requested_by=None)  # the mailbox's change: no panel user asked
    assert job.scope == ["example.org"]


def test_a_wrong_current_password_changes_nothing_and_counts_as_a_failed_login(mailbox_client, info):
    before = info.password_hash
    response = change(mailbox_client, "not-my-password", "Br4nd-new-passw0rd", HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and "not the mailbox" in response.content.decode()
    info.refresh_from_db()
    assert info.password_hash == before
    attempt = AccessAttempt.objects.get()
    assert attempt.username == "info@example.org"
    assert "Br4nd-new-passw0rd" not in attempt.post_data and "not-my-password" not in attempt.post_data


def test_the_current_password_check_is_locked_out_like_the_login(mailbox_client, info):
    for _i in range(5):
        change(mailbox_client, "guess", "Br4nd-new-passw0rd")
    response = change(mailbox_client, PW, "Br4nd-new-passw0rd")
    assert "Too many wrong passwords" in response.content.decode()
    info.refresh_from_db()
    assert passwords.check_password(PW, info.password_hash)


@pytest.mark.parametrize("new, why", [
    ("short", "at least 8"),
    ("password123", "well-known"),
    ("info-example-2026", "address itself"),
    ("x" * 73, "at most 72 bytes"),
    ("line\nbreak-Passw0rd", "line breaks"),
])
def test_the_new_password_follows_the_strength_rules(mailbox_client, info, new, why):
    before = info.password_hash
    response = change(mailbox_client, PW, new)
    assert response.status_code == 400 and why in response.content.decode()
    info.refresh_from_db()
    assert info.password_hash == before


# --- forwarding ------------------------------------------------------------------------------


def test_the_owner_forwards_without_keeping_a_copy_and_takes_it_back(mailbox_client, info):
    response = mailbox_client.post(reverse("mailadmin:mailbox_forward_add"), {"target": "Me@Elsewhere.example"})
    assert response.status_code == 302
    info.refresh_from_db()
    forward = info.forwards.get()
    assert forward.target == "me@elsewhere.example" and info.forward_only
    mailbox_client.post(reverse("mailadmin:mailbox_keep_copy"), {"keep_copy": "on"})
    info.refresh_from_db()
    assert not info.forward_only
    mailbox_client.post(reverse("mailadmin:mailbox_forward_delete", args=[forward.pk]))
    assert not info.forwards.exists()
    assert AuditEntry.objects.filter(actor_name="info@example.org", action__startswith="forward.").count() == 2


def test_a_forward_with_a_copy_keeps_local_delivery(mailbox_client, info):
    mailbox_client.post(reverse("mailadmin:mailbox_forward_add"), {"target": "me@elsewhere.example", "keep_copy": "on"})
    info.refresh_from_db()
    assert info.forwards.count() == 1 and not info.forward_only


def test_another_mailboxs_forward_cannot_be_removed(mailbox_client, info, other):
    forward = MailForward.objects.create(account=other, target="x@elsewhere.example")
    response = mailbox_client.post(reverse("mailadmin:mailbox_forward_delete", args=[forward.pk]))
    assert response.status_code == 404
    assert MailForward.objects.filter(pk=forward.pk).exists()


def test_a_forwarding_loop_names_no_address_outside_the_mailboxs_domain(mailbox_client, info, bob):
    bobs = MailDomain.objects.create(name="bob.example", owner=bob)
    box = account_service.add_account(bob, bobs, "box", PW).object
    account_service.add_forward(bob, box, "info@example.org")
    response = mailbox_client.post(reverse("mailadmin:mailbox_forward_add"), {"target": "box@bob.example"})
    html = response.content.decode()
    assert response.status_code == 400 and "loop" in html
    assert "box@bob.example</code>" not in html and "outside your domains" in html
    assert not info.forwards.exists()


# --- quota used and the Apple profile -----------------------------------------------------


def test_the_page_shows_what_the_mailbox_holds_or_that_it_is_unknown(mailbox_client, monkeypatch):
    from mailadmin import quota

    monkeypatch.setattr(quota, "mailbox_usage", lambda name: {"info": {"bytes": 52428800, "messages": 3}})
    MailAccount.objects.filter(local_part="info").update(quota_mb=100)
    page = mailbox_client.get(HOME).content.decode().replace("\xa0", " ")
    assert "50.0 MB of 100 MB used, 3 messages." in page and 'value="50"' in page
    monkeypatch.setattr(quota, "mailbox_usage", lambda name: None)
    assert "cannot be read right now" in mailbox_client.get(HOME).content.decode()


@pytest.fixture(autouse=True)
def _tls_offered(settings):
    """The server offers TLS, as install.sh's Layout says: the answers say
    SSL/STARTTLS (without a certificate they say plain: tests/test_tls_truth.py)."""
    settings.MAILPANEL_LAYOUT = {"tls_certificate": "/etc/mailpanel/tls/fullchain.pem",
                                 "tls_privatekey": "/etc/mailpanel/tls/privkey.pem"}


def profile_of(response):
    assert response["Content-Type"] == "application/x-apple-aspen-config"
    assert response["Content-Disposition"] == 'attachment; filename="info@example.org.mobileconfig"'
    return plistlib.loads(response.content)


def test_the_apple_profile_has_the_servers_and_no_password(mailbox_client):
    profile = profile_of(mailbox_client.get(reverse("mailadmin:mailbox_mobileconfig")))
    assert profile["PayloadType"] == "Configuration" and profile["PayloadVersion"] == 1
    (mail,) = profile["PayloadContent"]
    assert mail["PayloadType"] == "com.apple.mail.managed"
    assert (mail["EmailAccountType"], mail["EmailAddress"]) == ("EmailTypeIMAP", "info@example.org")
    assert (mail["IncomingMailServerHostName"], mail["IncomingMailServerPortNumber"], mail["IncomingMailServerUseSSL"]) == (
        "mail.hoster.test", 993, True)
    assert (mail["OutgoingMailServerHostName"], mail["OutgoingMailServerPortNumber"], mail["OutgoingMailServerUseSSL"]) == (
        "mail.hoster.test", 465, True)
    assert mail["IncomingMailServerUsername"] == mail["OutgoingMailServerUsername"] == "info@example.org"
    assert mail["IncomingMailServerAuthentication"] == "EmailAuthPassword"
    keys = {key for payload in (profile, mail) for key in payload}
    assert not keys & {"IncomingPassword", "OutgoingPassword", "Password"}  # the keys a password would go in
    assert PW.encode() not in mailbox_client.get(reverse("mailadmin:mailbox_mobileconfig")).content


def test_the_same_address_gets_the_same_profile_ids(mailbox_client, info, alice_client):
    mine = profile_of(mailbox_client.get(reverse("mailadmin:mailbox_mobileconfig")))
    url = reverse("mailadmin:account_mobileconfig", args=[info.domain_id, info.pk])
    owners = profile_of(alice_client.get(url))
    assert (mine["PayloadUUID"], mine["PayloadIdentifier"]) == (owners["PayloadUUID"], owners["PayloadIdentifier"])


def test_only_the_domains_owner_and_admins_download_a_mailboxs_profile(client, info, bob, admin_user):
    url = reverse("mailadmin:account_mobileconfig", args=[info.domain_id, info.pk])
    client.force_login(bob)
    assert client.get(url).status_code == 404
    client.force_login(admin_user)
    assert client.get(url).status_code == 200


# --- out of office: what is refused before the mail server is asked ------------------------


def vacation(client, **fields):
    data = {"enabled": "on", "subject": "Away", "body": "Back soon.", "password": PW, **fields}
    return client.post(reverse("mailadmin:mailbox_vacation"), {k: v for k, v in data.items() if v is not None})


@pytest.fixture
def sieve_on(admin_user, settings):
    from mailadmin.services import sieve

    sieve.set_sieve(admin_user, enabled=True)
    settings.MAILPANEL_MANAGESIEVE = "127.0.0.1:9"  # nothing listens: nothing may get that far


@pytest.mark.parametrize("fields, why", [
    ({"subject": "Away\nBcc: x@evil.example"}, "one line"),
    ({"subject": "Away\x00"}, "Null characters are not allowed"),
    ({"body": "Back\x07soon"}, "control characters"),
    ({"subject": ""}, "Enter a subject"),
    ({"body": "  \n"}, "Enter the message"),
    ({"start": "2030-01-10", "end": "2030-01-09"}, "cannot end before it starts"),
    ({"end": "2001-01-01"}, "This date has passed"),
    ({"start": "not a date"}, "Enter a valid date"),
    ({"body": "x" * 10_001}, "at most 10000 characters"),
])
def test_the_vacation_form_refuses_hostile_and_impossible_input(mailbox_client, sieve_on, fields, why):
    response = vacation(mailbox_client, **fields)
    assert response.status_code == 400 and why in response.content.decode()
    assert not AccessAttempt.objects.exists()  # refused before the password was even checked
    from mailadmin.models import MailboxVacation

    assert not MailboxVacation.objects.exists()


def test_an_unreachable_managesieve_saves_nothing(mailbox_client, sieve_on):
    from mailadmin.models import MailboxVacation

    response = vacation(mailbox_client)
    assert response.status_code == 400 and "did not answer" in response.content.decode()
    assert not MailboxVacation.objects.exists()


def test_out_of_office_needs_the_servers_filters(mailbox_client, settings):
    from mailadmin.models import MailboxVacation

    settings.MAILPANEL_MANAGESIEVE = "127.0.0.1:9"
    assert "has not switched on" in mailbox_client.get(HOME).content.decode()
    response = vacation(mailbox_client)
    assert response.status_code == 400 and "which are off" in response.content.decode()
    assert not MailboxVacation.objects.exists() and not AccessAttempt.objects.exists()


@pytest.mark.parametrize("name", ['filters', 'my "rules"', 'back\\slash', "规则", "mailpanel-vacation2"])
def test_the_wrapper_finds_the_owners_script_again_whatever_its_name(name):
    from mailadmin import sieve_vacation

    assert sieve_vacation.previous_of(sieve_vacation.wrapper_script(name)) == name
    assert sieve_vacation.previous_of("require [];") is None


def test_the_script_refuses_control_characters_even_without_the_form():
    from mailadmin import sieve_vacation

    for subject, body in (("a\rb", "x"), ("a", "x\x1b[31m")):
        with pytest.raises(ValueError):
            sieve_vacation.vacation_script(subject, body, ["info@example.org"])


def test_unicode_and_punycode_spellings_of_a_mailbox_count_as_one(client, alice):
    domain = MailDomain.objects.create(name="xn--mnchen-3ya.example", owner=alice)
    account_service.add_account(alice, domain, "post", PW)
    for i in range(5):
        login(client, "post@münchen.example" if i % 2 else "POST@xn--mnchen-3ya.example", "wrong-guess")
    assert login(client, "post@xn--mnchen-3ya.example").status_code == 429
    assert login(client, "post@münchen.example").status_code == 429


def test_an_ended_session_sends_htmx_requests_to_the_login_page_whole(mailbox_client, info):
    account_service.set_password(info.domain.owner, info, "Br4nd-new-passw0rd")
    response = mailbox_client.post(reverse("mailadmin:mailbox_forward_add"), {"target": "x@elsewhere.example"},
                                   HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and response["HX-Redirect"] == reverse("login")
    assert not info.forwards.exists()


def test_an_unknown_address_costs_one_bcrypt_check_like_a_known_one(client, info, monkeypatch):
    """No oracle of which mailboxes exist by timing: the same hashing work."""
    from mailadmin import mailbox_session

    calls = []
    real = passwords.check_password
    monkeypatch.setattr(passwords, "check_password", lambda pw, stored: calls.append(stored[:16]) or real(pw, stored))
    login(client, "nobody@example.org", "wrong-guess")
    login(client, "info@example.org", "wrong-guess")
    assert len(calls) == 2 and all(c.startswith("{BLF-CRYPT}$2b$") for c in calls)
    assert mailbox_session._dummy_hash() != info.password_hash


def test_the_cli_writes_the_same_profile(info, mailbox_client):
    import io

    from django.core.management import call_command

    out = io.StringIO()
    call_command("mail", "account", "mobileconfig", "Info@Example.org", stdout=out)
    assert out.getvalue().encode() == mailbox_client.get(reverse("mailadmin:mailbox_mobileconfig")).content
