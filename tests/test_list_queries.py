"""List pages run a constant number of SQL queries, however many rows they show."""

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from mailadmin.models import ApplyJob, AuditEntry, MailDomain

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
        ("job_list", lambda n: ApplyJob.objects.bulk_create([ApplyJob(requested_by=alice) for _ in range(n)])),
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
