"""Login throttling (django-axes): failures count per (user, client address),
the user name counted the way login matches it (NFKC, strip, casefold), the
client address from X-Forwarded-For only behind a trusted proxy."""

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.management import CommandError
from django.db.models import F
from django.test import RequestFactory
from django.urls import reverse
from django.utils import translation
from django.utils.translation import ngettext

from mailadmin.client_address import client_address
from mailadmin.models import PasswordResetRequest
from mailadmin.services.users import add_user
from mailadmin.usernames import username_key
from panel.settings import env_networks
from tests.test_accounts_cli import mail

pytestmark = pytest.mark.django_db
ADMIN_PW = "admin-pass-123"
ATTACKER = "198.51.100.66"
VICTIM = "203.0.113.7"


@pytest.fixture
def admin(db):
    return get_user_model().objects.create_user("admin", password=ADMIN_PW, is_staff=True)


@pytest.fixture(autouse=True)
def _defaults(settings):
    settings.MAILPANEL_LOGIN_ATTEMPTS = 10
    settings.MAILPANEL_LOGIN_COOLOFF_MINUTES = 15
    settings.MAILPANEL_TRUSTED_PROXIES = []


def attempt(client, username, password="wrong-guess-1", addr=ATTACKER, **extra):
    client.logout()
    return client.post(
        reverse("login"), {"username": username, "password": password}, REMOTE_ADDR=addr, **extra
    )


def logged_in_as(client):
    return client.session.get("_auth_user_id")


# --- the findings, each failed on the old LoginFailure code --------------------


def test_failures_from_ten_addresses_do_not_lock_the_real_admin_out(client, admin):
    for i in range(10):
        attempt(client, "admin", addr=f"198.51.100.{i + 1}")
    response = attempt(client, "admin", ADMIN_PW, addr=VICTIM)
    assert response.status_code == 302
    assert logged_in_as(client) == str(admin.pk)


def test_one_address_behind_a_proxy_cannot_lock_everyone_out(client, alice):
    for i in range(30):
        assert attempt(client, f"guess{i}", addr="127.0.0.1").status_code == 200
    response = attempt(client, "alice", "alice-pass-123", addr="127.0.0.1")
    assert response.status_code == 302
    assert logged_in_as(client) == str(alice.pk)


def test_spellings_of_one_user_name_count_as_one(client, admin):
    spellings = [" admin", "admin ", "ａｄｍｉｎ", "ADMIN", "Admin"]
    for i in range(10):
        attempt(client, spellings[i % len(spellings)])
    for spelling in ["admin", *spellings]:
        response = attempt(client, spelling, ADMIN_PW)
        assert response.status_code == 429, spelling
        assert logged_in_as(client) is None


# --- what login accepts: a spelling of the same account, never another one -----


def test_spellings_of_a_user_name_log_in_to_that_account(client, admin):
    for spelling in ["ａｄｍｉｎ", " ADMIN ", "Admin"]:
        assert attempt(client, spelling, ADMIN_PW, addr=VICTIM).status_code == 302
        assert logged_in_as(client) == str(admin.pk)


def test_login_never_reaches_a_different_user_when_old_names_differ_only_by_case(client):
    # Users made before names were normalised at creation (straight through the ORM).
    User = get_user_model()
    upper = User.objects.create_user("Alice", password="upper-pass-123")
    lower = User.objects.create_user("alice", password="lower-pass-123")
    assert attempt(client, "Alice", "upper-pass-123").status_code == 302
    assert logged_in_as(client) == str(upper.pk)
    assert attempt(client, "alice", "lower-pass-123").status_code == 302
    assert logged_in_as(client) == str(lower.pk)
    assert attempt(client, "ａｌｉｃｅ", "lower-pass-123").status_code == 302  # width is no difference
    assert logged_in_as(client) == str(lower.pk)
    # Crossed passwords and an ambiguous spelling reach nobody.
    for username, password in [
        ("Alice", "lower-pass-123"),
        ("alice", "upper-pass-123"),
        ("ALICE", "upper-pass-123"),
        ("ALICE", "lower-pass-123"),
        ("ＡＬＩＣＥ", "lower-pass-123"),
        ("ａｌｉｃｅ", "upper-pass-123"),
    ]:
        assert attempt(client, username, password).status_code == 200, (username, password)
        assert logged_in_as(client) is None


def test_old_mixed_case_name_logs_in_with_any_spelling(client):
    carol = get_user_model().objects.create_user("Carol", password="carol-pass-123")
    assert attempt(client, "ｃａｒｏｌ", "carol-pass-123").status_code == 302
    assert logged_in_as(client) == str(carol.pk)


def test_inactive_user_cannot_log_in_with_any_spelling(client, admin):
    admin.is_active = False
    admin.save()
    assert attempt(client, "ADMIN", ADMIN_PW).status_code == 200
    assert logged_in_as(client) is None


# --- creation: two users never differ only by case, width or spaces -------------


@pytest.mark.parametrize("name", ["ADMIN", "ａｄｍｉｎ", " admin", "Ａdmin "])
def test_a_spelling_of_an_existing_name_is_taken(admin, name):
    with pytest.raises(ValidationError, match="taken"):
        add_user(None, name, "Fresh-pass-4567")
    assert get_user_model().objects.count() == 1


def test_a_spelling_of_an_old_mixed_case_name_is_taken(db):
    get_user_model().objects.create_user("Carol", password="carol-pass-123")
    with pytest.raises(ValidationError, match="taken"):
        add_user(None, "ｃａｒｏｌ", "Fresh-pass-4567")


@pytest.mark.parametrize("name", ["", "   ", "ad\u200bmin", "a b", "<b>x</b>", "x" * 151])
def test_names_that_are_not_plain_user_names_are_refused(db, name):
    with pytest.raises(ValidationError):
        add_user(None, name, "Fresh-pass-4567")
    assert not get_user_model().objects.exists()


def test_new_names_are_stored_normalised(db):
    assert add_user(None, " Ｃａｒｏｌ ", "Fresh-pass-4567").username == "carol"
    assert add_user(None, "Straße", "Fresh-pass-4567").username == "strasse"


def test_cli_refuses_a_fullwidth_copy_of_the_admin(admin):
    with pytest.raises(CommandError, match="taken"):
        mail("user", "add", "ＡＤＭＩＮ", "--admin", stdin="Fresh-pass-4567\n")
    assert get_user_model().objects.count() == 1
    assert "added user dave" in mail("user", "add", "Dave", stdin="Fresh-pass-4567\n")


def test_admin_page_refuses_a_fullwidth_copy_of_an_existing_user(client, admin, alice):
    client.force_login(admin)
    response = client.post(
        reverse("mailadmin:user_add"), {"username": "ＡＬＩＣＥ", "password": "Fresh-pass-4567"}
    )
    assert response.status_code == 400 and "This user name is taken." in response.content.decode()
    assert get_user_model().objects.count() == 2


def test_username_key_is_idempotent_over_the_basic_multilingual_plane():
    for cp in range(0x20, 0x10000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        key = username_key(chr(cp) + "x")
        assert username_key(key) == key, hex(cp)


# --- lockout: per (user, address), cool-off, the page ---------------------------


def test_lockout_is_per_user_and_address(client, admin, alice):
    for _ in range(10):
        attempt(client, "admin")
    assert attempt(client, "admin", ADMIN_PW).status_code == 429
    assert attempt(client, "alice", "alice-pass-123").status_code == 302
    assert attempt(client, "admin", ADMIN_PW, addr=VICTIM).status_code == 302


def test_the_tenth_failure_locks_and_a_right_password_then_does_not_log_in(client, admin):
    for _ in range(9):
        assert attempt(client, "admin").status_code == 200
    assert attempt(client, "admin").status_code == 429
    response = attempt(client, "admin", ADMIN_PW)
    assert response.status_code == 429 and logged_in_as(client) is None


def test_lockout_ends_after_the_cool_off(client, admin, settings):
    settings.MAILPANEL_LOGIN_COOLOFF_MINUTES = 15
    for _ in range(10):
        attempt(client, "admin")
    AccessAttempt.objects.update(attempt_time=F("attempt_time") - timedelta(minutes=14))
    assert attempt(client, "admin", ADMIN_PW).status_code == 429
    # That refused try counted too: the cool-off runs from the last failure.
    AccessAttempt.objects.update(attempt_time=F("attempt_time") - timedelta(minutes=16))
    assert attempt(client, "admin", ADMIN_PW).status_code == 302


def test_a_changed_user_agent_does_not_escape_the_lockout(client, admin):
    for i in range(10):
        attempt(client, "admin", HTTP_USER_AGENT=f"bot/{i}")
    assert attempt(client, "admin", ADMIN_PW, HTTP_USER_AGENT="Firefox").status_code == 429


def test_a_successful_login_clears_that_users_failures_from_that_address(client, admin):
    for _ in range(9):
        attempt(client, "admin")
    assert attempt(client, "admin", ADMIN_PW).status_code == 302
    for _ in range(9):
        assert attempt(client, "admin").status_code == 200


def test_limit_and_cool_off_come_from_settings(client, admin, settings):
    settings.MAILPANEL_LOGIN_ATTEMPTS = 3
    settings.MAILPANEL_LOGIN_COOLOFF_MINUTES = 60
    for _ in range(2):
        assert attempt(client, "admin").status_code == 200
    assert attempt(client, "admin").status_code == 429
    AccessAttempt.objects.update(attempt_time=F("attempt_time") - timedelta(minutes=59))
    assert attempt(client, "admin", ADMIN_PW).status_code == 429


def lockout_text(minutes):
    return ngettext(
        "Too many failed logins. Wait %(minutes)d minute and try again.",
        "Too many failed logins. Wait %(minutes)d minutes and try again.",
        minutes,
    ) % {"minutes": minutes}


def test_locked_out_answer_is_the_login_page_in_english(client, admin):
    for _ in range(10):
        attempt(client, "admin")
    response = attempt(client, "admin", ADMIN_PW)
    page = response.content.decode()
    assert response.status_code == 429
    assert "Too many failed logins. Wait 15 minutes and try again." in page
    assert 'name="password"' in page and 'value="admin"' in page
    assert ADMIN_PW not in page


def test_locked_out_answer_is_the_login_page_in_chinese(client, admin):
    for _ in range(10):
        attempt(client, "admin", HTTP_ACCEPT_LANGUAGE="zh-hans")
    response = attempt(client, "admin", ADMIN_PW, HTTP_ACCEPT_LANGUAGE="zh-hans")
    page = response.content.decode()
    assert response.status_code == 429
    assert '<html lang="zh-hans">' in page and "登录" in page
    with translation.override("zh-hans"):
        assert lockout_text(15) in page


def test_lockout_keeps_the_next_url_and_escapes_the_user_name(client, admin):
    for _ in range(10):
        attempt(client, "<b>admin</b>")
    response = client.post(
        reverse("login") + "?next=/domains/",
        {"username": "<b>admin</b>", "password": "x", "next": "/domains/"},
        REMOTE_ADDR=ATTACKER,
    )
    page = response.content.decode()
    assert response.status_code == 429
    assert "<b>admin</b>" not in page and "&lt;b&gt;admin&lt;/b&gt;" in page
    assert 'name="next" value="/domains/"' in page


def test_names_that_grow_under_normalisation_are_counted_without_error(client):
    # U+0390 casefolds to three code points: 150 of them pass the form's
    # length check and become a 450-character key.
    name = "\u0390" * 150
    for _ in range(9):
        assert attempt(client, name).status_code == 200
    assert attempt(client, name).status_code == 429


def test_hostile_user_names_do_not_break_the_page(client, admin):
    for name in ["admin\x00", "x" * 5000, "\ufdfa" * 150, "", " "]:
        assert attempt(client, name).status_code == 200, name[:20]


def test_lockout_leaves_no_password_in_the_attempt_rows(client, admin):
    for _ in range(10):
        attempt(client, "admin", "Secret-guess-42")
    for row in AccessAttempt.objects.all():
        assert "Secret-guess-42" not in row.post_data


# --- the client address --------------------------------------------------------


def request(remote_addr, forwarded=None):
    extra = {"REMOTE_ADDR": remote_addr}
    if forwarded is not None:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded
    return RequestFactory().post("/login/", **extra)


@pytest.mark.parametrize(
    "trusted, remote, forwarded, expected",
    [
        # No trusted proxy: the header is the client's word and is ignored.
        ([], "198.51.100.66", VICTIM, "198.51.100.66"),
        (["10.0.0.0/8"], "198.51.100.66", VICTIM, "198.51.100.66"),
        # Behind the proxy: the rightmost hop the proxy did not add itself.
        (["127.0.0.1"], "127.0.0.1", "198.51.100.66", "198.51.100.66"),
        (["127.0.0.1"], "127.0.0.1", f"{VICTIM}, 198.51.100.66", "198.51.100.66"),
        (["127.0.0.1", "10.0.0.0/8"], "127.0.0.1", f"{VICTIM}, 198.51.100.66, 10.1.2.3", "198.51.100.66"),
        # Every hop trusted: the leftmost one.
        (["127.0.0.1", "10.0.0.0/8"], "127.0.0.1", "10.9.9.9, 10.1.2.3", "10.9.9.9"),
        # No header, or an unreadable hop: the last address we could trust.
        (["127.0.0.1"], "127.0.0.1", None, "127.0.0.1"),
        (["127.0.0.1"], "127.0.0.1", "", "127.0.0.1"),
        (["127.0.0.1"], "127.0.0.1", "garbage", "127.0.0.1"),
        (["127.0.0.1", "10.0.0.0/8"], "127.0.0.1", f"{VICTIM}, 1.2.3.4:80, 10.1.2.3", "10.1.2.3"),
        (["127.0.0.1"], "127.0.0.1", "fe80::1%eth0", "127.0.0.1"),
        # One spelling per client: IPv4-mapped and IPv6 addresses by their /64.
        (["127.0.0.1"], "::ffff:127.0.0.1", "::ffff:198.51.100.66", "198.51.100.66"),
        ([], "2001:db8:1:2:aaaa::1", None, "2001:db8:1:2::"),
        (["::1"], "::1", "2001:DB8:1:2::FFFF", "2001:db8:1:2::"),
        ([], "", None, None),
    ],
)
def test_client_address(settings, trusted, remote, forwarded, expected):
    settings.MAILPANEL_TRUSTED_PROXIES = trusted
    assert client_address(request(remote, forwarded)) == expected


def test_spoofed_forwarding_header_cannot_lock_out_the_address_it_names(client, admin):
    for _ in range(10):
        attempt(client, "admin", HTTP_X_FORWARDED_FOR=VICTIM)
    assert attempt(client, "admin", ADMIN_PW, addr=VICTIM).status_code == 302


def test_behind_a_trusted_proxy_clients_are_told_apart_by_the_header(client, admin, settings):
    settings.MAILPANEL_TRUSTED_PROXIES = ["127.0.0.1"]
    for i in range(10):
        # The attacker changes what it puts in front; the proxy appends what it saw.
        forwarded = f"192.0.2.{i}, {ATTACKER}"
        attempt(client, "admin", addr="127.0.0.1", HTTP_X_FORWARDED_FOR=forwarded)
    assert (
        attempt(client, "admin", ADMIN_PW, addr="127.0.0.1", HTTP_X_FORWARDED_FOR=ATTACKER).status_code
        == 429
    )
    response = attempt(client, "admin", ADMIN_PW, addr="127.0.0.1", HTTP_X_FORWARDED_FOR=VICTIM)
    assert response.status_code == 302


def test_addresses_of_one_ipv6_64_count_as_one_client(client, admin):
    for i in range(10):
        attempt(client, "admin", addr=f"2001:db8:1:2::{i + 1:x}")
    assert attempt(client, "admin", ADMIN_PW, addr="2001:db8:1:2:ffff::1").status_code == 429
    assert attempt(client, "admin", ADMIN_PW, addr="2001:db8:1:3::1").status_code == 302


def test_trusted_proxies_setting_is_parsed_strictly(monkeypatch):
    monkeypatch.setenv("MAILPANEL_TRUSTED_PROXIES", " 127.0.0.1, 10.0.0.0/8 ,::1,")
    assert env_networks("MAILPANEL_TRUSTED_PROXIES") == ["127.0.0.1/32", "10.0.0.0/8", "::1/128"]
    monkeypatch.delenv("MAILPANEL_TRUSTED_PROXIES")
    assert env_networks("MAILPANEL_TRUSTED_PROXIES") == []
    for bad in ["proxy.example", "10.0.0.1/33", "127.0.0.1 10.0.0.1"]:
        monkeypatch.setenv("MAILPANEL_TRUSTED_PROXIES", bad)
        with pytest.raises(ImproperlyConfigured, match="MAILPANEL_TRUSTED_PROXIES"):
            env_networks("MAILPANEL_TRUSTED_PROXIES")


def test_password_reset_counts_the_client_behind_a_trusted_proxy_not_the_proxy(client, settings):
    settings.MAILPANEL_TRUSTED_PROXIES = ["127.0.0.1"]
    response = client.post(
        reverse("password_reset"),
        {"email": "nobody@example.org"},
        REMOTE_ADDR="127.0.0.1",
        HTTP_X_FORWARDED_FOR=ATTACKER,
    )
    assert response.status_code == 302
    assert PasswordResetRequest.objects.get().ip == ATTACKER
