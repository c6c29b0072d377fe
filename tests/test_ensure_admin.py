"""The first admin: created once, its password printed once, never again."""

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError

pytestmark = pytest.mark.django_db


def run(*args):
    out = io.StringIO()
    call_command("ensure_admin", *args, stdout=out)
    return out.getvalue()


def test_a_bad_email_is_refused_and_no_admin_is_created():
    with pytest.raises(CommandError, match="not an e-mail address"):
        run("--email", "admin@example.org\nX-Injected: 1")

    assert not get_user_model().objects.exists()


def test_first_admin_gets_the_email_and_the_login_is_printed_once(settings):
    settings.MAILPANEL_BASE_URL = "https://mail.example.org"

    first = run("--email", "admin@example.org")
    second = run("--email", "admin@example.org")

    admin = get_user_model().objects.get(username="admin")
    password = first.split("Password: ")[1].split()[0]
    assert admin.is_staff and admin.email == "admin@example.org"
    assert admin.check_password(password)
    assert "URL:      https://mail.example.org/" in first
    assert second == ""
