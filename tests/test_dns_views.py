"""The DNS records page, "Check now" and the BIND download, against the test DNS server."""

import dns.rdatatype
import dns.zone
import pytest
from django.urls import reverse

from mailadmin.models import Job, DnsCheckResult, JobKind, MailDomain, ServerSettings
from mailadmin.services import dns_checks
from tests import taskqueue
from tests.dnsserver import SERVER_HOSTNAME, SERVER_V4, SERVER_V6, dns_world  # noqa: F401


# A server that offers TLS (a certificate in its Layout): good.test's SRV
# records name 993 and 465.
TLS = {"tls_certificate": "/etc/mailpanel/tls/fullchain.pem", "tls_privatekey": "/etc/mailpanel/tls/privkey.pem"}


@pytest.fixture
def live_dns(settings, dns_world, db):
    settings.MAILPANEL_LAYOUT = TLS
    settings.MAILPANEL_RESOLVERS = [dns_world.address]
    settings.MAILPANEL_CHECK_TIMEOUT = 2.0
    server = ServerSettings.load()
    server.hostname, server.ipv4, server.ipv6 = SERVER_HOSTNAME, SERVER_V4, SERVER_V6
    server.save()
    return dns_world


@pytest.fixture
def good(alice, live_dns):
    return MailDomain.objects.create(name="good.test", owner=alice, dkim_private_key=live_dns.good_pem)


@pytest.fixture
def bobs(bob, live_dns):
    return MailDomain.objects.create(name="different.test", owner=bob, dkim_private_key=live_dns.other_pem)


def test_dns_page_lists_records_with_labels_copy_buttons_and_cloudflare_note(alice_client, good, live_dns):
    page = alice_client.get(reverse("mailadmin:domain_dns", args=[good.pk])).content.decode()
    assert "mail._domainkey.good.test" in page
    assert live_dns.good_key in page
    assert "v=spf1 a mx ip4:192.0.2.10 ip6:2001:db8::10 ~all" in page
    for label in ("required", "recommended", "optional"):
        assert f'level-{label}"' in page
    assert 'class="secondary copy"' in page
    assert "must not be proxied" in page
    assert "not checked" in page


def test_domain_page_dns_tab_has_the_dns_section(alice_client, good):
    page = alice_client.get(reverse("mailadmin:domain_dns", args=[good.pk])).content.decode()
    assert 'id="dns-records"' in page
    assert reverse("mailadmin:domain_dns_check", args=[good.pk]) in page


@pytest.fixture
def check_now(django_capture_on_commit_callbacks):
    """Press "Check now": the request starts a job on the checks queue and
    answers at once; the checks worker runs it; then the page's poll (htmx)
    or the status page (no JS). Returns (first answer, answer after the check)."""

    def press(client, domain, htmx=True):
        headers = {"HX-Request": "true"} if htmx else {}
        with django_capture_on_commit_callbacks(execute=True):
            started = client.post(reverse("mailadmin:domain_dns_check", args=[domain.pk]), headers=headers)
        job = Job.objects.filter(kind=JobKind.DNS_CHECK).latest("id")
        assert not DnsCheckResult.objects.filter(checked_at__gt=job.created_at).exists()  # not checked yet
        assert taskqueue.run_queue("checks") == ["mailadmin.tasks_dns.dns_check"]
        status = reverse("mailadmin:domain_dns_check_status", args=[domain.pk, job.pk])
        return started, client.get(status, headers=headers)

    return press


def test_check_now_htmx_shows_verdicts_and_stores_them(alice_client, good, check_now):
    started, response = check_now(alice_client, good)
    assert started.status_code == 200 and 'id="dns-checking"' in started.content.decode()
    assert "every 1s" in started.content.decode()
    body = response.content.decode()
    assert response.status_code == 200
    assert body.lstrip().startswith('<section class="card" id="dns-records">')  # no more polling
    # 8 mail records, 3 MTA-STS, 4 autoconfig/autodiscover, 5 SRV
    assert body.count("status status-ok") == 20
    result = DnsCheckResult.objects.get(domain=good)
    assert result.summary == "ok" and len(result.results) == 20
    good.refresh_from_db()
    assert good.dns_status == "ok" and good.dns_checked_at == result.checked_at


def test_check_now_without_javascript_redirects_to_the_checks_page(alice_client, good, check_now):
    started, response = check_now(alice_client, good, htmx=False)
    job = Job.objects.get(kind=JobKind.DNS_CHECK)
    assert started.status_code == 302
    assert started["Location"] == reverse("mailadmin:domain_dns_check_status", args=[good.pk, job.pk])
    assert "<html" in response.content.decode() and "Last checked" in response.content.decode()
    page = alice_client.get(reverse("mailadmin:domain_dns", args=[good.pk])).content.decode()
    assert "Last checked" in page


def test_customer_cannot_follow_another_customers_check(alice_client, good, bob, client, check_now):
    check_now(alice_client, good)
    job = Job.objects.get(kind=JobKind.DNS_CHECK)
    client.force_login(bob)
    bobs = MailDomain.objects.create(name="bobs.test", owner=bob)
    for domain in (good, bobs):
        url = reverse("mailadmin:domain_dns_check_status", args=[domain.pk, job.pk])
        assert client.get(url, headers={"HX-Request": "true"}).status_code == 404


def test_check_shows_what_dns_returned_for_a_wrong_record(admin_client_, bobs, check_now):
    body = check_now(admin_client_, bobs)[1].content.decode()
    assert "status status-different" in body
    assert "198.51.100.7" in body  # what mail.different.test really points at
    assert "Change the A record at mail.different.test" in body


def test_domain_list_shows_the_stored_status(alice_client, good, alice, check_now):
    other = MailDomain.objects.create(name="missing.test", owner=alice)
    check_now(alice_client, good)
    check_now(alice_client, other)
    page = alice_client.get(reverse("mailadmin:domain_list")).content.decode()
    assert 'class="status status-ok"' in page
    assert 'class="status status-missing"' in page


def test_bind_download_loads_in_a_zone_parser(alice_client, good, live_dns):
    response = alice_client.get(reverse("mailadmin:domain_dns_zone", args=[good.pk]))
    assert response["Content-Disposition"] == 'attachment; filename="good.test.zone"'
    zone = dns.zone.from_text(response.content.decode(), origin="good.test.", check_origin=False)
    strings = zone.find_rdataset("mail._domainkey", dns.rdatatype.TXT)[0].strings
    assert b"".join(strings).decode() == f"v=DKIM1; k=rsa; p={live_dns.good_key}"
    assert max(len(s) for s in strings) <= 255


def srv_verdicts(domain):
    # as the checks worker reads it (the check runs in an event loop: no lazy queries)
    domain = MailDomain.objects.select_related("dmarc_mailbox__account", "owner").get(pk=domain.pk)
    result = dns_checks.check_domain(domain)
    return {v["purpose"]: v for v in result.results if v["purpose"].startswith("srv_")}


def test_without_tls_the_srv_records_say_imaps_and_submissions_are_not_offered(
    alice_client, alice, good, live_dns, settings
):
    """No certificate in the Layout: Exim and Dovecot offer no 993 and no 465
    (client_config.offered_services), so RFC 6186 says "." for them, on the
    page, in the BIND export and in the live check, like the client-settings
    box; 143 and 587 are still published."""
    settings.MAILPANEL_LAYOUT = {}
    page = alice_client.get(reverse("mailadmin:domain_dns", args=[good.pk])).content.decode()
    assert "_imaps._tcp.good.test" in page and "0 0 0 ." in page
    response = alice_client.get(reverse("mailadmin:domain_dns_zone", args=[good.pk]))
    zone = dns.zone.from_text(response.content.decode(), origin="good.test.", check_origin=False)
    for name in ("_imaps._tcp", "_submissions._tcp"):
        (srv,) = zone.find_rdataset(name, dns.rdatatype.SRV)
        assert (srv.port, srv.target.to_text()) == (0, "."), name
    imap = zone.find_rdataset("_imap._tcp", dns.rdatatype.SRV)[0]
    assert (imap.port, imap.target.to_text()) == (143, SERVER_HOSTNAME + ".")
    submission = zone.find_rdataset("_submission._tcp", dns.rdatatype.SRV)[0]
    assert (submission.port, submission.target.to_text()) == (587, SERVER_HOSTNAME + ".")
    # good.test still publishes 993 and 465: the live check says so
    verdicts = srv_verdicts(good)
    assert {p: v["status"] for p, v in verdicts.items()} == {
        "srv_imaps": "different", "srv_imap": "ok", "srv_submissions": "different", "srv_submission": "ok",
        "srv_autodiscover": "ok"}
    assert verdicts["srv_imaps"]["found"] == [f"0 1 993 {SERVER_HOSTNAME}."]
    assert verdicts["srv_imaps"]["fix"].endswith("0 0 0 .")
    # a domain whose DNS says "not offered" for both is right
    plain = MailDomain.objects.create(name="plain.test", owner=alice)
    verdicts = srv_verdicts(plain)
    assert {p: verdicts[p]["status"] for p in ("srv_imaps", "srv_imap", "srv_submissions", "srv_submission")} == {
        "srv_imaps": "ok", "srv_imap": "ok", "srv_submissions": "ok", "srv_submission": "ok"}


def test_with_tls_a_dns_that_says_not_offered_is_different(alice, live_dns):
    """The same plain.test on a server with a certificate: its "." records
    hide 993 and 465 that are really offered."""
    plain = MailDomain.objects.create(name="plain.test", owner=alice)
    verdicts = srv_verdicts(plain)
    assert verdicts["srv_imaps"]["status"] == "different" and verdicts["srv_imaps"]["found"] == ["0 0 0 ."]
    assert verdicts["srv_submissions"]["status"] == "different"
    assert verdicts["srv_imaps"]["fix"].endswith(f"0 1 993 {SERVER_HOSTNAME}.")


@pytest.mark.parametrize(
    "name, method",
    [("mailadmin:domain_dns", "get"), ("mailadmin:domain_dns_check", "post"), ("mailadmin:domain_dns_zone", "get")],
)
def test_customer_cannot_open_other_customers_dns_pages(alice_client, bobs, name, method):
    response = getattr(alice_client, method)(reverse(name, args=[bobs.pk]))
    assert response.status_code == 404
    assert not DnsCheckResult.objects.filter(domain=bobs).exists()


def test_admin_can_open_any_domains_dns_page(admin_client_, bobs):
    assert admin_client_.get(reverse("mailadmin:domain_dns", args=[bobs.pk])).status_code == 200


def test_check_now_verdicts_are_in_the_language_of_the_page(alice_client, alice, live_dns, check_now):
    """The check runs in the worker, in the language the page was in."""
    missing = MailDomain.objects.create(name="missing.test", owner=alice)
    alice_client.defaults["HTTP_ACCEPT_LANGUAGE"] = "zh-hans"
    check_now(alice_client, missing)
    fixes = " ".join(v["fix"] for v in DnsCheckResult.objects.get(domain=missing).results if v.get("fix"))
    assert fixes and any("\u4e00" <= ch <= "\u9fff" for ch in fixes), fixes


def test_the_dns_tab_names_roundcube_when_it_serves_webmail(alice_client, good):
    from mailadmin.models import WebmailApp

    page = alice_client.get(reverse("mailadmin:domain_dns", args=[good.pk])).content.decode()
    assert "Webmail (SnappyMail)" in page
    ServerSettings.objects.filter(pk=1).update(webmail=WebmailApp.ROUNDCUBE)
    page = alice_client.get(reverse("mailadmin:domain_dns", args=[good.pk])).content.decode()
    assert "Webmail (Roundcube)" in page and "Webmail (SnappyMail)" not in page
