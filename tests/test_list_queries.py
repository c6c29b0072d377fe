"""List pages run a constant number of SQL queries, however many rows they show."""

import datetime

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from mailadmin.models import Job, AuditEntry, MailDomain

pytestmark = pytest.mark.django_db


def make_domains(owner, count, start=0):
    MailDomain.objects.bulk_create(
        [MailDomain(name=f"d{start + i:05}.example", owner=owner) for i in range(count)]
    )


def count_queries(client, url):
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200
    return len(ctx.captured_queries)


@pytest.mark.parametrize("as_admin", [False, True])
def test_domain_list_query_count_is_the_same_for_1_and_200_domains(client, alice, admin_user, as_admin):
    client.force_login(admin_user if as_admin else alice)
    url = reverse("mailadmin:domain_list")
    make_domains(alice, 1)
    one = count_queries(client, url)
    make_domains(alice, 199, start=1)
    many = count_queries(client, url)
    assert one == many


def test_job_and_audit_logs_query_count_is_constant(admin_client_, alice):
    for url_name, make in [
        ("job_list", lambda n: Job.objects.bulk_create([Job(requested_by=alice) for _ in range(n)])),
        ("audit_list", lambda n: AuditEntry.objects.bulk_create([AuditEntry(actor=alice, actor_name="alice", action="x") for _ in range(n)])),
    ]:
        url = reverse(f"mailadmin:{url_name}")
        make(1)
        one = count_queries(admin_client_, url)
        make(199)
        assert count_queries(admin_client_, url) == one, url_name


def test_user_list_query_count_is_constant(admin_client_):
    url = reverse("mailadmin:user_list")
    one = count_queries(admin_client_, url)
    get_user_model().objects.bulk_create(
        [get_user_model()(username=f"user{i}") for i in range(200)]
    )
    assert count_queries(admin_client_, url) == one


def test_domain_page_query_count_is_the_same_for_1_and_200_accounts(alice_client, alice):
    from mailadmin.models import MailAccount, MailAlias, MailForward

    domain = MailDomain.objects.create(name="example.org", owner=alice)

    def make_accounts(start, count):
        accounts = MailAccount.objects.bulk_create(
            [MailAccount(domain=domain, local_part=f"user{i:03}", password_hash="{PLAIN}x") for i in range(start, start + count)]
        )
        MailAlias.objects.bulk_create(
            [MailAlias(domain=domain, local_part=f"alias{a.local_part}", target=f"{a.local_part}@example.org") for a in accounts]
        )
        MailForward.objects.bulk_create([MailForward(account=a, target="out@elsewhere.example") for a in accounts])

    make_accounts(0, 1)
    alice_client.get(domain.get_absolute_url())  # the first visit creates the server settings row
    one = count_queries(alice_client, domain.get_absolute_url())
    make_accounts(1, 199)
    assert count_queries(alice_client, domain.get_absolute_url()) == one


# --- the domain page's tabs and the server settings tabs: pinned counts ------------------

# session, user (with its profile), the domain (with its owner), the job area
FRAME = 4
DOMAIN_TAB_QUERIES = {
    # the counts and the relay in one query; the certificate; its last order from the page
    "overview": FRAME + 3,
    "accounts": FRAME + 3,  # accounts, their forwards, aliases
    "relay": FRAME + 1,
    # the server settings (once for records and DKIM policy), the DMARC
    # reports mailbox in the records, the last check
    "dns": FRAME + 3,
    "clients": FRAME + 2,  # the server settings, the accounts for the examples
    "settings": FRAME,
}


def fill_domain(domain, start, count):
    from mailadmin.models import MailAccount, MailAlias, MailForward, RelaySettings

    RelaySettings.objects.get_or_create(domain=domain, defaults={"host": "smtp.relay.example"})
    accounts = MailAccount.objects.bulk_create(
        [MailAccount(domain=domain, local_part=f"user{i:03}", password_hash="{PLAIN}x") for i in range(start, start + count)]
    )
    MailAlias.objects.bulk_create(
        [MailAlias(domain=domain, local_part=f"alias{a.local_part}", target=f"{a.local_part}@{domain.name}") for a in accounts]
    )
    MailForward.objects.bulk_create([MailForward(account=a, target="out@elsewhere.example") for a in accounts])


def test_every_domain_tab_runs_the_same_queries_for_1_and_200_accounts(alice_client, alice):
    from mailadmin.views.pages import DOMAIN_PAGE

    domain = MailDomain.objects.create(name="example.org", owner=alice)
    fill_domain(domain, 0, 1)
    alice_client.get(DOMAIN_PAGE.url("dns", domain))  # the first visit creates the server settings row
    urls = {tab.name: DOMAIN_PAGE.url(tab.name, domain) for tab in DOMAIN_PAGE.tabs}
    one = {name: count_queries(alice_client, url) for name, url in urls.items()}
    fill_domain(domain, 1, 199)
    assert {name: count_queries(alice_client, url) for name, url in urls.items()} == one
    assert {name: one[name] for name in DOMAIN_TAB_QUERIES} == DOMAIN_TAB_QUERIES


def test_switching_tabs_with_htmx_skips_the_frame(alice_client, alice):
    """The tab partial has no job area: one query fewer than the whole page,
    and the answer says it varies with HX-Request."""
    from mailadmin.views.pages import DOMAIN_PAGE

    domain = MailDomain.objects.create(name="example.org", owner=alice)
    fill_domain(domain, 0, 3)
    alice_client.get(DOMAIN_PAGE.url("dns", domain))  # the first visit creates the server settings row
    for tab in DOMAIN_PAGE.tabs:
        url = DOMAIN_PAGE.url(tab.name, domain)
        whole = count_queries(alice_client, url)
        with CaptureQueriesContext(connection) as ctx:
            response = alice_client.get(url, headers={"HX-Request": "true"})
        assert response.status_code == 200 and b"<html" not in response.content
        assert "HX-Request" in response["Vary"]
        assert len(ctx.captured_queries) == whole - 1, tab.name


SETTINGS_TAB_QUERIES = {  # session, user, the job area, then each tab's own
    "server": 3 + 1,  # the server settings, read once for its four sections
    "relay": 3 + 1,
    "panel-smtp": 3 + 1,
    "blacklists": 3 + 2,  # the server settings, and the DQS key (deferred: a secret) for its status
    "webmail": 3 + 2,  # the server settings, the install job
}


def test_every_server_settings_tab_runs_a_pinned_number_of_queries(admin_client_):
    from mailadmin.views.pages import SETTINGS_PAGE

    admin_client_.get(reverse("mailadmin:server_settings"))
    counts = {tab.name: count_queries(admin_client_, SETTINGS_PAGE.url(tab.name)) for tab in SETTINGS_PAGE.tabs}
    assert {name: counts[name] for name in SETTINGS_TAB_QUERIES} == SETTINGS_TAB_QUERIES


def test_domain_list_runs_four_queries_on_any_page(admin_client_, alice):
    """session, user, the page's ids and its rows (one statement: the ids a
    subquery), the paginator's count."""
    make_domains(alice, 120)
    for url in (reverse("mailadmin:domain_list"), reverse("mailadmin:domain_list") + "?page=3"):
        assert count_queries(admin_client_, url) == 4, url


@pytest.mark.parametrize("as_admin", [False, True])
@pytest.mark.parametrize("query", ["", "d001", "%", "_", "'", '"; DROP TABLE x; --'])
def test_domain_list_rows_are_the_orms_values(client, alice, bob, admin_user, as_admin, query):
    """The list's rows come from a statement written once per process around
    the ORM's scoped page of ids: the same values, converted alike, and only
    the visible domains."""
    from django.core.paginator import Paginator

    from mailadmin.models import UserProfile
    from mailadmin.views.domains import KEYS, page_rows

    make_domains(alice, 120)
    make_domains(bob, 5, start=500)
    MailDomain.objects.filter(name__endswith="7.example").update(suspended=True, pending=True)
    UserProfile.objects.create(user=bob, suspended=True)
    viewer = admin_user if as_admin else alice
    ids = MailDomain.objects.visible_to(viewer).order_by("name")
    if query:
        ids = ids.filter(name__icontains=query)
    for number in (1, 2, 3):
        page = Paginator(ids.values_list("pk", flat=True), 50).get_page(number)
        rows = page_rows(page.object_list)
        expected = list(MailDomain.objects.filter(pk__in=list(page.object_list)).order_by("name").values(*KEYS))
        assert rows == expected
        assert all(isinstance(row["created_at"], datetime.datetime) and row["created_at"].tzinfo for row in rows)
        assert all(isinstance(row["suspended"], bool) for row in rows)
    if not as_admin:
        assert not any(row["owner__username"] != "alice" for row in page_rows(ids.values_list("pk", flat=True)))


def test_page_of_is_djangos_page_and_an_empty_list_builds_no_sql(alice):
    from django.db.models.sql.compiler import SQLCompiler

    from mailadmin.views.common import page_of

    compiled = []
    original = SQLCompiler.as_sql

    def counting(self, *args, **kwargs):
        compiled.append(self.query.model)
        return original(self, *args, **kwargs)

    SQLCompiler.as_sql = counting
    try:
        empty = page_of(AuditEntry.objects.all(), 100, None)
        assert list(empty) == [] and empty.number == 1 and not empty.has_other_pages()
        assert len(compiled) == 1  # the COUNT only
    finally:
        SQLCompiler.as_sql = original
    AuditEntry.objects.bulk_create([AuditEntry(actor=alice, actor_name="alice", action=f"a{i}") for i in range(5)])
    page = page_of(AuditEntry.objects.order_by("id"), 2, "2")
    assert [e.action for e in page] == ["a2", "a3"] and page.number == 2 and page.paginator.num_pages == 3
