""""Order certificate now" on a domain's Overview tab: the hostile cases.

The order itself is proven against a real Pebble in
tests/test_certificates_pebble.py (test_the_pages_order_button_issues_the_certificate);
here nothing reaches a CA: every refused press must start no job and queue no task."""

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from mailadmin.models import Certificate, Job, JobKind, JobState, MailDomain, ServerSettings, UserProfile
from tests import taskqueue

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}


@pytest.fixture
def domain(alice):
    return MailDomain.objects.create(name="order.test", owner=alice)


def order_url(domain):
    return reverse("mailadmin:domain_certificate_order", args=[domain.pk])


def press(client, domain, capture, **kwargs):
    with capture(execute=True):
        return client.post(order_url(domain), **kwargs)


def orders():
    return Job.objects.filter(kind=JobKind.CERTIFICATE_ORDER).count()


def test_the_owner_starts_the_order_on_the_checks_queue(alice_client, domain, django_capture_on_commit_callbacks):
    page = alice_client.get(reverse("mailadmin:domain_detail", args=[domain.pk])).content.decode()
    assert f'action="{order_url(domain)}"' in page and "Order certificate now" in page
    response = press(alice_client, domain, django_capture_on_commit_callbacks, headers=HTMX)
    assert response.status_code == 200
    assert "Ordering the certificate" in response.content.decode()
    assert 'every 2s' in response.content.decode()  # the section polls until the job ends
    job = Job.objects.get(kind=JobKind.CERTIFICATE_ORDER)
    assert job.domain == domain and job.requested_by.username == "alice"
    assert taskqueue.queued() == [("checks", "mailadmin.tasks_dns.order_certificate")]
    # without JavaScript: post, then redirect to the section
    plain = press(alice_client, domain, django_capture_on_commit_callbacks)
    assert plain.status_code == 302 and plain.url.endswith("#certificate")


def test_another_customers_domain_is_a_404_and_orders_nothing(client, bob, domain, django_capture_on_commit_callbacks):
    client.force_login(bob)
    for headers in ({}, HTMX):
        assert press(client, domain, django_capture_on_commit_callbacks, headers=headers).status_code == 404
    assert orders() == 0 and taskqueue.queued() == []


def test_get_is_405(alice_client, domain):
    assert alice_client.get(order_url(domain)).status_code == 405
    assert orders() == 0


def test_a_customer_hammering_gets_429_after_the_check_limit(
    alice_client, domain, settings, django_capture_on_commit_callbacks
):
    settings.MAILPANEL_USER_CHECKS_LIMIT = 3
    settings.MAILPANEL_USER_CHECKS_WINDOW = 600
    for _i in range(3):
        assert press(alice_client, domain, django_capture_on_commit_callbacks).status_code == 302
    refused = press(alice_client, domain, django_capture_on_commit_callbacks)
    assert refused.status_code == 429
    assert "You started 3 checks in the last 10 minutes" in refused.content.decode()
    htmx = press(alice_client, domain, django_capture_on_commit_callbacks, headers=HTMX)
    assert "You started 3 checks" in htmx.content.decode()
    assert orders() == 3 and len(taskqueue.queued()) == 3
    # the orders count against the same limit as the other checks
    dns = alice_client.post(reverse("mailadmin:domain_dns_check", args=[domain.pk]))
    assert dns.status_code == 429


@pytest.mark.parametrize("state", ["pending", "domain_suspended", "owner_suspended", "hosted_elsewhere"])
def test_a_domain_that_is_not_served_here_is_refused(
    alice_client, admin_user, alice, domain, state, django_capture_on_commit_callbacks
):
    if state == "owner_suspended":
        UserProfile.objects.update_or_create(user=alice, defaults={"suspended": True})
    else:
        MailDomain.objects.filter(pk=domain.pk).update(**{state.removeprefix("domain_"): True})
    admin = Client()
    admin.force_login(admin_user)
    for client in (alice_client, admin):
        refused = press(client, domain, django_capture_on_commit_callbacks)
        if state == "owner_suspended" and client is alice_client:
            assert refused.status_code == 302 and "/login/" in refused.url  # a suspended customer is signed out
            continue
        assert refused.status_code == 409, state
        assert "only for a verified, active domain" in refused.content.decode()
    assert orders() == 0 and taskqueue.queued() == []


def test_while_a_failed_order_waits_a_customer_cannot_force_it_an_admin_can(
    alice_client, admin_client_, alice, domain, django_capture_on_commit_callbacks
):
    until = timezone.now() + timedelta(hours=2)
    Certificate.objects.create(domain=domain, last_error="connection refused", attempts=2,
                               last_attempt_at=timezone.now(), next_attempt_at=until)
    when = until.strftime("%Y-%m-%d %H:%M")
    customer = Client()
    customer.force_login(alice)
    page = customer.get(reverse("mailadmin:domain_certificate", args=[domain.pk])).content.decode()
    assert f"Possible again after {when} (UTC)" in page
    assert order_url(domain) not in page  # a disabled button, no form
    refused = press(customer, domain, django_capture_on_commit_callbacks)
    assert refused.status_code == 409 and f"after {when} (UTC)" in refused.content.decode()
    assert orders() == 0
    # an admin may: the order is forced past the backoff
    page = admin_client_.get(reverse("mailadmin:domain_certificate", args=[domain.pk])).content.decode()
    assert order_url(domain) in page and "as an admin you may order now" in page
    assert press(admin_client_, domain, django_capture_on_commit_callbacks).status_code == 302
    assert orders() == 1
    from django_tasks_db.models import DBTaskResult

    assert DBTaskResult.objects.get().args_kwargs["kwargs"]["force"] is True


@pytest.fixture
def node_queue_in_the_database(settings, domain):
    """The database backend told of the domain's node queue, so a task routed
    there lands in a row to read (the real routing is RQ's: test_certificates_nodes_rq)."""
    from asgiref.local import Local
    from django.tasks import task_backends

    def reset():
        task_backends.__dict__.pop("settings", None)
        task_backends._connections = Local(task_backends.thread_critical)

    settings.TASKS = {"default": {**settings.TASKS["default"],
                                  "QUEUES": ["default", "checks", domain.node.queue_name]}}
    reset()
    yield
    reset()  # read again at the next use, after pytest-django restores TASKS


def test_with_several_nodes_the_order_goes_to_the_domains_node(
    alice_client, domain, settings, node_queue_in_the_database, django_capture_on_commit_callbacks
):
    """RQ: the existing tasks.issue_certificate on the domain's node queue,
    with the job it records the outcome in; counted like any check."""
    from django_tasks_db.models import DBTaskResult

    settings.MAILPANEL_TASK_BACKEND = "rq"  # jobs.multi_node()
    settings.MAILPANEL_USER_CHECKS_LIMIT = 1
    assert press(alice_client, domain, django_capture_on_commit_callbacks).status_code == 302
    job = Job.objects.get(kind=JobKind.CERTIFICATE_ORDER)
    task = DBTaskResult.objects.get()
    assert (task.queue_name, task.task_path) == (domain.node.queue_name, "mailadmin.tasks.issue_certificate")
    assert task.args_kwargs["args"] == [domain.node.name, "order.test", False, False, job.pk]
    assert press(alice_client, domain, django_capture_on_commit_callbacks).status_code == 429


def test_a_failed_order_shows_why_in_the_section(alice_client, domain, settings, django_capture_on_commit_callbacks):
    """The job ends failed; the section stops polling and says why (here
    nothing points to this server, so nothing was asked of the CA)."""
    from tests.dnsserver import DnsServer

    server = ServerSettings.load()
    server.ipv4 = "192.0.2.10"
    server.save()
    dns = DnsServer(["mail.order.test. 60 IN A 192.0.2.99"]).start()
    try:
        settings.MAILPANEL_RESOLVERS = [dns.address]
        settings.MAILPANEL_CHECK_TIMEOUT = 2.0
        press(alice_client, domain, django_capture_on_commit_callbacks)
        assert taskqueue.run_queue("checks") == ["mailadmin.tasks_dns.order_certificate"]
    finally:
        dns.stop()
    job = Job.objects.get(kind=JobKind.CERTIFICATE_ORDER)
    assert job.state == JobState.FAILED
    section = alice_client.get(reverse("mailadmin:domain_certificate", args=[domain.pk]),
                               headers=HTMX).content.decode()
    assert "The last order from this page failed: none of its names points to this server" in section
    assert "points to 192.0.2.99, not here" in section
    assert "every 2s" not in section and order_url(domain) in section  # no backoff: may press again
