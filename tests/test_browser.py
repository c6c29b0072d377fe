"""A person in real headless Chromium: log in, add a domain, verify it with
its TXT record (a real DNS server), watch the apply job
reach "done" live (htmx polling, a real task worker and the real helper), then
switch to 中文 and see the page translated; the htmx relay form against a real
SMTP server; "Check now" against a real DNS server."""

import os
import shutil
import sys
import threading
from pathlib import Path

import pytest

from tests.dnsserver import DnsServer, dns_world, txt  # noqa: F401  (dns_world: a fixture)

CHROMIUM = "/usr/bin/chromium"
HELPER = Path(__file__).resolve().parent.parent / "deploy" / "mailpanel_helper.py"

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not shutil.which(CHROMIUM), reason="Debian chromium is not installed"),
]


@pytest.fixture
def task_worker():
    """The django_tasks_db worker loop in a thread of this process, so it sees the
    test database (SQLite in memory is per process); it serves both queues
    (applies and checks)."""
    from django_tasks_db.management.commands.db_worker import Worker

    worker = Worker(
        queue_names=["default", "checks"], interval=0.1, batch=False, backend_name="default",
        startup_delay=False, max_tasks=None, worker_id="browser-test", excluded_queue_names=[],
    )
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    yield worker
    worker.running = False
    thread.join(timeout=5)


@pytest.fixture
def chromium():
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"  # Playwright's sync API runs an event loop
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update"],
        )
        yield browser
        browser.close()


@pytest.fixture
def browser_page(chromium):
    page = chromium.new_page()
    page.set_default_timeout(15000)
    return page


@pytest.fixture
def nojs_page(chromium):
    """A browser with JavaScript off: no htmx, every link and form a page load."""
    page = chromium.new_context(java_script_enabled=False).new_page()
    page.set_default_timeout(15000)
    return page


def log_in(page, live_server, username, password):
    page.goto(live_server.url + "/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("main form button[type=submit]")  # not the language form's <noscript> button
    page.wait_for_url(live_server.url + "/")


def test_customer_adds_a_domain_watches_the_job_finish_and_switches_to_chinese(
    live_server, browser_page, task_worker, alice, settings, tmp_path
):
    root = tmp_path / "root"
    root.mkdir()
    settings.MAILPANEL_ROOT = str(root)
    settings.MAILPANEL_HELPER = f"{sys.executable} {HELPER} --root {root} --service-command true"
    page = browser_page
    log_in(page, live_server, "alice", "alice-pass-123")

    dns = DnsServer().start()
    settings.MAILPANEL_RESOLVERS = [dns.address]
    settings.MAILPANEL_CHECK_TIMEOUT = 2.0

    page.fill("#id_name", "bücher.example")
    page.click("#domain-add-form button[type=submit]")
    page.wait_for_selector("h1:has-text('bücher.example')")
    assert "xn--bcher-kva.example" in page.inner_text("h1")

    # Pending until its DNS proves it is hers: Verify swaps the section in place.
    record = page.inner_text("#ownership-value")
    assert record.startswith("mailpanel-verify=")
    page.click("#ownership button[value=verify]")
    page.wait_for_selector("#ownership-notice")
    assert "not verified yet" in page.inner_text("#ownership-notice")
    assert not (root / "etc/exim4/domains/xn--bcher-kva.example").exists()
    dns.add([f"_mailpanel-verify.xn--bcher-kva.example. 300 IN TXT {txt(record)}"])
    page.click("#ownership button[value=verify]")
    page.wait_for_selector(".messages >> text=is verified")  # the page loaded again
    page.wait_for_load_state()
    assert page.locator("#ownership").count() == 0
    dns.stop()

    # The job box polls itself (htmx) until the worker and helper are done.
    page.wait_for_selector(".job[data-state=done]", timeout=30000)
    assert (root / "etc/exim4/domains/xn--bcher-kva.example/dkim.pem").exists()
    page.click("nav.tabs a[data-tab=dns]")
    page.wait_for_selector("#dkim-record")
    assert "v=DKIM1; k=rsa; p=" in page.inner_text("#dkim-record")

    page.select_option("#language-form select", "zh-hans")
    page.wait_for_selector("html[lang=zh-hans]")
    assert page.url.endswith("/dns/")  # the language switch came back to the tab
    assert "邮件域" in page.inner_text("header nav")
    page.click("nav.tabs a[data-tab=settings]")
    page.wait_for_selector("#danger")
    assert "删除" in page.inner_text("#danger")
    page.screenshot(path=str(tmp_path / "domain-zh.png"))


def test_relay_form_saves_and_tests_inline_with_htmx_and_never_shows_the_password(
    live_server, browser_page, alice, smtp_sinks, task_worker, settings
):
    """The relay form is htmx: saving, a form error and "Test relay" all swap the
    section in place (no page load), against a real SMTP server on 127.0.0.1."""
    from mailadmin.models import MailDomain, RelaySettings

    password = 'p^ss:w$rd "x" \\ 密码'
    settings.MAILPANEL_CUSTOMER_TARGETS_ALLOW_LOOPBACK = True  # the sink is on 127.0.0.1
    sink = smtp_sinks(credentials={(b"relay-user", password.encode())})
    domain = MailDomain.objects.create(name="shop.example", owner=alice)
    page = browser_page
    log_in(page, live_server, "alice", "alice-pass-123")
    page.goto(f"{live_server.url}/domains/{domain.pk}/relay/")
    page.evaluate("window.loadedOnce = true")  # lost if the page reloads
    form = page.locator("#relay-section form.relay-form")

    form.locator("input[name=host]").fill("bad host!")
    form.locator("input[name=username]").fill("relay-user")
    form.locator("button[value=save]").click()
    page.wait_for_selector("#relay-section .errorlist")
    assert form.locator("input[name=username]").input_value() == "relay-user"
    assert not RelaySettings.objects.exists()

    form.locator("input[name=host]").fill("127.0.0.1")
    form.locator("input[name=port]").fill(str(sink.port))
    form.locator("select[name=tls]").select_option("none")
    form.locator("input[name=confirm_no_tls]").check()
    form.locator("input[name=password]").fill(password)
    form.locator("button[value=test]").click()
    page.wait_for_selector("#relay-test[data-outcome=ok]", timeout=20000)

    form.locator("input[name=password]").fill(password)
    form.locator("button[value=save]").click()
    page.wait_for_selector(f"#relay-current:has-text('127.0.0.1:{sink.port}')")
    assert page.evaluate("window.loadedOnce") is True
    relay = RelaySettings.objects.get(domain=domain)
    assert (relay.username, relay.password) == ("relay-user", password)
    assert password not in page.content()


def test_dns_check_now_fills_in_verdicts_inline_from_a_real_dns_server(
    live_server, browser_page, alice, dns_world, settings, task_worker
):
    """On the domain page, "Check now" asks the test DNS server on 127.0.0.1 and
    swaps the records table in place: every row gets a verdict."""
    from mailadmin.models import MailDomain, ServerSettings
    from tests.dnsserver import SERVER_HOSTNAME, SERVER_V4, SERVER_V6
    from tests.test_dns_views import TLS

    # A server that offers TLS, as good.test's published SRV records (993, 465) say.
    settings.MAILPANEL_LAYOUT = TLS
    settings.MAILPANEL_RESOLVERS = [dns_world.address]
    settings.MAILPANEL_CHECK_TIMEOUT = 2.0
    server = ServerSettings.load()
    server.hostname, server.ipv4, server.ipv6 = SERVER_HOSTNAME, SERVER_V4, SERVER_V6
    server.save()
    domain = MailDomain.objects.create(name="good.test", owner=alice, dkim_private_key=dns_world.good_pem)
    page = browser_page
    log_in(page, live_server, "alice", "alice-pass-123")
    page.goto(f"{live_server.url}/domains/{domain.pk}/dns/")
    page.evaluate("window.loadedOnce = true")
    assert page.locator("#dns-records .verdict .status").count() == 0
    page.click("#dns-records button:has-text('Check now')")
    page.wait_for_selector("#dns-checked-at")
    statuses = page.locator("#dns-records tr[data-purpose] .verdict .status").all_inner_texts()
    assert statuses and all(s.strip() == "ok" for s in statuses), statuses
    assert page.evaluate("window.loadedOnce") is True  # swapped by htmx, no page load


# --- the domain page's tabs -------------------------------------------------------------

# What some tabs show; no other tab shows it (a view renders only its tab).
TAB_MARKS = {"overview": "#overview", "accounts": "#accounts", "relay": "#relay-section", "dns": "#dns-records",
             "clients": "#client-settings", "settings": "#domain-settings"}


def domain_tabs():
    """Every tab of the domain page, in order: Overview, Accounts, Relay, DNS,
    Webmail and clients, Settings, and whatever a feature added since."""
    from mailadmin.views.pages import DOMAIN_PAGE

    return [tab.name for tab in DOMAIN_PAGE.tabs]


def tab_labels(language):
    from django.utils import translation

    from mailadmin.views.pages import DOMAIN_PAGE

    with translation.override(language):
        return {tab.name: str(tab.label) for tab in DOMAIN_PAGE.tabs}


def assert_on_tab(page, live_server, domain, name, labels):
    from mailadmin.views.pages import DOMAIN_PAGE

    assert page.url.split("#")[0] == live_server.url + DOMAIN_PAGE.url(name, domain)
    current = page.locator("nav.tabs a[aria-current=page]")
    assert current.count() == 1 and current.inner_text().strip() == labels[name]
    assert page.locator(".tab-panel").get_attribute("id") == f"tab-{name}"
    for other, mark in TAB_MARKS.items():
        assert page.locator(mark).count() == (1 if other == name else 0), (name, other)


@pytest.mark.parametrize("language", ["en", "zh-hans"])
def test_domain_tabs_swap_in_place_push_their_url_and_go_back(live_server, browser_page, alice, language):
    """With JavaScript a tab is swapped by htmx (no page load) and its URL
    pushed; Back shows the tab before; reloading a tab's URL shows that tab."""
    from mailadmin.models import MailDomain

    domain = MailDomain.objects.create(name="tabs.example", owner=alice)
    page = browser_page
    log_in(page, live_server, "alice", "alice-pass-123")
    page.goto(f"{live_server.url}/domains/{domain.pk}/")
    if language != "en":
        page.select_option("#language-form select", language)
        page.wait_for_selector(f"html[lang={language}]")
    labels, tabs = tab_labels(language), domain_tabs()
    named = ["overview", "accounts", "relay", "dns", "clients", "settings"]
    assert [tab for tab in tabs if tab in named] == named
    assert [a.strip() for a in page.locator("nav.tabs a").all_inner_texts()] == [labels[t] for t in tabs]
    assert_on_tab(page, live_server, domain, "overview", labels)
    page.evaluate("window.loadedOnce = true")
    for name in tabs[1:] + ["clients"]:
        page.click(f"nav.tabs a[data-tab={name}]")
        page.wait_for_selector(f".tab-panel#tab-{name}")
        assert_on_tab(page, live_server, domain, name, labels)
    assert page.evaluate("window.loadedOnce") is True  # every tab came by htmx
    page.go_back()
    page.wait_for_selector(f".tab-panel#tab-{tabs[-1]}")
    assert_on_tab(page, live_server, domain, tabs[-1], labels)
    page.reload()
    page.wait_for_selector(f".tab-panel#tab-{tabs[-1]}")
    assert_on_tab(page, live_server, domain, tabs[-1], labels)
    assert page.locator("html").get_attribute("lang") == language


@pytest.mark.parametrize("language", ["en", "zh-hans"])
def test_domain_tabs_and_their_forms_work_without_javascript(live_server, nojs_page, alice, language):
    """JavaScript off: each tab is a link to its own page; a form on a tab
    posts, is redirected back to that tab and says what happened."""
    from django.utils import translation

    from mailadmin.models import MailDomain

    domain = MailDomain.objects.create(name="nojs.example", owner=alice)
    page = nojs_page
    log_in(page, live_server, "alice", "alice-pass-123")
    page.goto(f"{live_server.url}/domains/{domain.pk}/")
    if language != "en":
        page.locator("#language-form select").select_option(language)
        with page.expect_navigation():
            page.click("#language-form button")  # the <noscript> button
        assert page.locator("html").get_attribute("lang") == language
    labels = tab_labels(language)
    assert_on_tab(page, live_server, domain, "overview", labels)
    for name in domain_tabs()[1:] + ["settings"]:
        with page.expect_navigation():
            page.click(f"nav.tabs a[data-tab={name}]")
        assert_on_tab(page, live_server, domain, name, labels)
    page.fill("#domain-settings input[name=role_address]", "desk@owner.example")
    with page.expect_navigation():
        page.click("#domain-settings button[type=submit]")
    assert_on_tab(page, live_server, domain, "settings", labels)
    assert page.url.endswith("#domain-settings")  # back at the form that was sent
    with translation.override(language):
        saved = translation.gettext("Settings saved. The mail server is being updated.")
    assert saved in page.inner_text(".messages")
    domain.refresh_from_db()
    assert domain.role_address == "desk@owner.example"
