"""Mailbox self-service in real headless Chromium (issue #15): a mailbox owner
logs in on the panel's login page with the address, changes the password and
adds a forward (htmx swaps each section in place, no page load), and with
JavaScript off the same forms post and come back to the page."""

import shutil

import pytest

from mailadmin import passwords
from mailadmin.models import MailAccount, MailDomain
from mailadmin.services import accounts as account_service
from tests.test_browser import CHROMIUM, browser_page, chromium, nojs_page  # noqa: F401 (fixtures)

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not shutil.which(CHROMIUM), reason="Debian chromium is not installed"),
]
PW = "Mailb0x-pass-phrase"
NEW_PW = "Br4nd-new-passw0rd"


@pytest.fixture
def info(alice):
    domain = MailDomain.objects.create(name="example.org", owner=alice, dkim_enabled=False)
    return account_service.add_account(alice, domain, "info", PW).object


def log_in_as_mailbox(page, live_server):
    page.goto(live_server.url + "/login/")
    page.fill("#id_username", "Info@Example.org")
    page.fill("#id_password", PW)
    page.click("main form button[type=submit]")
    page.wait_for_url(live_server.url + "/mailbox/")


def test_a_mailbox_owner_changes_the_password_and_forwards_in_place(live_server, browser_page, info):
    page = browser_page
    log_in_as_mailbox(page, live_server)
    assert "info@example.org" in page.inner_text("h1")
    assert page.locator("header nav").count() == 0  # no panel navigation for a mailbox
    page.evaluate("window.loadedOnce = true")

    page.fill("#mailbox_password_password", "not-the-password")
    page.fill("#mailbox_password_new_password", NEW_PW)
    page.click("#mailbox-password button[type=submit]")
    page.wait_for_selector("#mailbox-password .errorlist")
    assert "not the mailbox" in page.inner_text("#mailbox-password")
    page.fill("#mailbox_password_password", PW)
    page.fill("#mailbox_password_new_password", NEW_PW)
    page.click("#mailbox-password button[type=submit]")
    page.wait_for_selector("#mailbox-password .notice")
    info.refresh_from_db()
    assert passwords.check_password(NEW_PW, info.password_hash)
    assert NEW_PW not in page.content()

    page.fill("#mailbox_forward_target", "me@elsewhere.example")
    page.uncheck("#mailbox_forward_keep_copy")
    page.click("#mailbox-forwarding form:last-of-type button[type=submit]")
    page.wait_for_selector("#mailbox-forwarding code:has-text('me@elsewhere.example')")
    assert MailAccount.objects.get(pk=info.pk).forward_only
    assert page.evaluate("window.loadedOnce") is True  # both came by htmx, no page load

    page.reload()  # still signed in with the new password's session
    assert "info@example.org" in page.inner_text("h1")


def test_without_javascript_the_forms_post_and_come_back(live_server, nojs_page, info):
    page = nojs_page
    log_in_as_mailbox(page, live_server)
    page.fill("#mailbox_forward_target", "me@elsewhere.example")
    page.click("#mailbox-forwarding form:last-of-type button[type=submit]")
    page.wait_for_selector(".messages >> text=Forward added.")
    assert page.url.startswith(live_server.url + "/mailbox/")
    assert info.forwards.filter(target="me@elsewhere.example").exists()
    page.click("#mailbox-forwarding li button[type=submit]")  # remove it again
    page.wait_for_selector(".messages >> text=Forward removed.")
    assert not info.forwards.exists()
