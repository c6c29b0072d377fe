"""Password reset: the request only counts and enqueues, the worker sends.

The answer must not tell whether an address belongs to a user: not by its
content, not by the work it does (no user lookup, no SMTP conversation in the
request), and the limits (3 an hour per address, 10 per client) also bound
the rows a flood of requests writes. No timing is asserted: the same queries
and the same bytes are."""

import email
import email.policy
import re

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from mailadmin.models import PasswordResetRequest
from mailadmin.services import password_reset as reset_service
from tests import taskqueue
from tests.mailstack import smtp_sink

pytestmark = pytest.mark.django_db
BASE_URL = "https://panel.example.net"


@pytest.fixture(autouse=True)
def real_mail(settings):
    settings.EMAIL_BACKEND = "mailadmin.services.panel_smtp.PanelEmailBackend"
    settings.MAILPANEL_BASE_URL = BASE_URL
    settings.MAILPANEL_SMTP_TIMEOUT = 5


@pytest.fixture
def local_mta(settings):
    """Panel SMTP is off: panel mail goes to the local MTA, here an aiosmtpd on 127.0.0.1."""
    with smtp_sink() as sink:
        settings.MAILPANEL_LOCAL_SMTP = f"127.0.0.1:{sink.port}"
        yield sink


@pytest.fixture
def carol(db):
    return get_user_model().objects.create_user("carol", email="carol@example.org", password="old-pass-123")


def ask(client, address, callbacks, **extra):
    with CaptureQueriesContext(connection) as queries:
        with callbacks(execute=True):  # the enqueue, after the commit, is part of the request
            response = client.post(reverse("password_reset"), {"email": address}, **extra)
    # literals and savepoint names differ from request to request; statements must not
    return response, [re.sub(r"'[^']*'|\bs\d+_x\d+\b|\b\d+\b", "?", q["sql"]) for q in queries.captured_queries]


def test_the_request_does_the_same_work_for_a_user_and_a_stranger_and_sends_nothing(
    client, carol, local_mta, django_capture_on_commit_callbacks
):
    known, known_sql = ask(client, "carol@example.org", django_capture_on_commit_callbacks)
    unknown, unknown_sql = ask(client, "nobody@example.org", django_capture_on_commit_callbacks)

    # the same answer, byte for byte, after the same statements
    assert (known.status_code, known["Location"], known.content) == (
        unknown.status_code, unknown["Location"], unknown.content
    )
    assert known.status_code == 302 and known["Location"] == reverse("password_reset_done")
    assert known_sql == unknown_sql
    assert not any("auth_user" in sql for sql in known_sql)  # nobody was looked up
    # no SMTP in the request: nothing reached the mail server yet
    assert local_mta.messages == [] and local_mta.auth_attempts == []
    assert taskqueue.queued() == [("default", "mailadmin.tasks.send_password_reset")] * 2

    # the worker sends carol's mail and nothing for the stranger
    assert taskqueue.run_queue("default") == ["mailadmin.tasks.send_password_reset"] * 2
    [msg] = local_mta.messages
    assert msg.recipients == ("carol@example.org",)
    body = email.message_from_bytes(msg.data, policy=email.policy.default).get_content()
    [link] = re.findall(r"https?://\S+", body)
    assert link.startswith(BASE_URL + "/password-reset/")
    response = client.get(link[len(BASE_URL):])
    assert response.status_code == 302  # a valid token: on to the set-password form


def test_the_mail_is_in_the_language_the_request_was_in(client, carol, local_mta, django_capture_on_commit_callbacks):
    ask(client, "carol@example.org", django_capture_on_commit_callbacks, HTTP_ACCEPT_LANGUAGE="zh-hans")
    taskqueue.run_queue("default")
    english = _render_subject("en")
    [msg] = local_mta.messages
    subject = email.message_from_bytes(msg.data, policy=email.policy.default)["Subject"]
    assert subject and subject != english


def _render_subject(language):
    from django.template.loader import render_to_string
    from django.utils import translation

    with translation.override(language):
        return render_to_string(reset_service.SUBJECT_TEMPLATE, {"site_name": "x"}).strip()


def test_a_flood_of_anonymous_requests_writes_only_as_many_rows_as_the_limits_allow(
    client, django_capture_on_commit_callbacks
):
    answers = set()
    for i in range(300):
        response, _sql = ask(client, f"victim{i}@example.org", django_capture_on_commit_callbacks)
        answers.add((response.status_code, response["Location"]))
    assert answers == {(302, reverse("password_reset_done"))}
    assert PasswordResetRequest.objects.count() == reset_service.RESETS_PER_CLIENT
    assert len(taskqueue.queued()) == reset_service.RESETS_PER_CLIENT


def test_one_address_gets_at_most_three_mails_an_hour_from_many_clients(
    client, carol, local_mta, django_capture_on_commit_callbacks
):
    for i in range(20):
        ask(client, "Carol@Example.org ", django_capture_on_commit_callbacks, REMOTE_ADDR=f"127.0.0.{i + 1}")
    assert PasswordResetRequest.objects.count() == reset_service.RESETS_PER_ADDRESS
    taskqueue.run_queue("default")
    assert len(local_mta.messages) == reset_service.RESETS_PER_ADDRESS
