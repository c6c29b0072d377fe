"""The session and the session's user are read with statements written once
per process (mailadmin/session_store.py, auth_backend.get_user): the same rows
and checks as Django's ORM reads — a session ended anywhere ends everywhere."""

import datetime

import pytest
from django.contrib.sessions.models import Session
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from mailadmin.models import UserProfile

pytestmark = pytest.mark.django_db


def same_cookie(client) -> Client:
    """Another browser tab or another gunicorn worker: the same cookie, nothing else shared."""
    other = Client()
    other.cookies["sessionid"] = client.cookies["sessionid"].value
    return other


def test_a_session_ended_by_logout_is_refused_with_the_same_cookie(alice_client):
    url = reverse("mailadmin:domain_list")
    other = same_cookie(alice_client)
    assert other.get(url).status_code == 200
    alice_client.post(reverse("logout"))
    response = other.get(url)
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


def test_an_expired_session_is_refused(alice_client):
    Session.objects.update(expire_date=datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC))
    assert alice_client.get(reverse("mailadmin:domain_list")).status_code == 302


def test_a_forged_session_key_is_refused(client, alice):
    client.cookies["sessionid"] = "x' OR '1'='1"
    assert client.get(reverse("mailadmin:domain_list")).status_code == 302
    client.cookies["sessionid"] = "a" * 32
    assert client.get(reverse("mailadmin:domain_list")).status_code == 302


def test_a_user_suspended_or_deactivated_during_the_session_is_logged_out(alice_client, alice):
    url = reverse("mailadmin:domain_list")
    UserProfile.objects.create(user=alice, suspended=True)
    assert alice_client.get(url).status_code == 302
    alice.refresh_from_db()
    UserProfile.objects.filter(user=alice).update(suspended=False)
    alice_client.force_login(alice)
    assert alice_client.get(url).status_code == 200
    alice.is_active = False
    alice.save(update_fields=["is_active"])
    assert alice_client.get(url).status_code == 302


def test_a_password_change_elsewhere_ends_the_session(alice_client, alice):
    alice.set_password("a-new-password-456")
    alice.save()
    assert alice_client.get(reverse("mailadmin:domain_list")).status_code == 302


def test_the_session_user_is_a_full_user_in_one_query(alice_client, alice):
    """Session and user: one statement each, and the user is the stored one."""
    with CaptureQueriesContext(connection) as queries:
        response = alice_client.get(reverse("mailadmin:domain_list"))
    user = response.wsgi_request.user
    assert (user.pk, user.username, user.is_staff, user.is_active) == (alice.pk, "alice", False, True)
    assert user.date_joined == alice.date_joined and user.password == alice.password
    assert "django_session" in queries[0]["sql"]
    assert "auth_user" in queries[1]["sql"] and "mailadmin_userprofile" in queries[1]["sql"]
