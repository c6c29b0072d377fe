"""Network checks customers start (relay test, DNS check, diagnostics): no
port scanning of the server's own or private addresses, a per-user limit, and
their own task queue so applies never wait behind them.

Everything listens on 127.0.0.1; the test DNS server (tests/dnsserver.py) is
the panel's resolver, so names can point wherever a test needs."""

import socket
import threading
from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django_tasks_db.models import DBTaskResult

from mailadmin.checks.targets import refusal
from mailadmin.models import Job, JobKind, JobState, MailDomain
from mailadmin.services import relay_test
from tests import taskqueue
from tests.dnsserver import DnsServer

BANNER = b"220 internal-service-7.3 ESMTP secret banner"


@dataclass
class Listener:
    port: int
    accepted: list


@pytest.fixture(autouse=True)
def quick_checks(settings):
    settings.MAILPANEL_CHECK_TIMEOUT = 1.0  # the listener never answers EHLO


@pytest.fixture
def listener():
    """A loopback service that greets with a banner and counts connections."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.1)
    accepted = []
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            accepted.append(conn)
            conn.sendall(BANNER + b"\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield Listener(server.getsockname()[1], accepted)
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()


@pytest.fixture
def panel_dns(settings):
    """The panel's resolver: names for the hostile cases (never connected to)."""
    with DnsServer(
        [
            "loop.test. 300 IN A 127.0.0.1",
            "intranet.test. 300 IN A 10.1.2.3",
            "metadata.test. 300 IN A 169.254.169.254",
            "v6local.test. 300 IN AAAA fe80::1",
            # one public address and one loopback: every address is checked
            "mixed.test. 300 IN A 192.88.99.1",
            "mixed.test. 300 IN A 127.0.0.1",
            "alias.test. 300 IN CNAME loop.test.",
            # resolves to 127.0.0.1 only through the panel's resolver, never the system's
            "relay.rebind.test. 300 IN A 127.0.0.1",
        ]
    ) as server:
        settings.MAILPANEL_RESOLVERS = [server.address]
        yield server


@pytest.fixture
def alice_domain(alice):
    return MailDomain.objects.create(name="alice.example", owner=alice)


def relay_test_data(host, port, **overrides):
    data = {
        "preset": "custom", "host": host, "port": str(port), "tls": "none", "confirm_no_tls": "on",
        "username": "", "password": "", "auth": "login", "action": "test",
    }
    data.update(overrides)
    return data


def press_test(client, url, data, callbacks, htmx=True):
    headers = {"HX-Request": "true"} if htmx else {}
    with callbacks(execute=True):
        started = client.post(url, data, headers=headers)
    job = Job.objects.filter(kind=JobKind.DIAGNOSE).order_by("-id").first()
    return started, job


# --- which addresses a customer may target -----------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "127.1.2.3", "::1", "0.0.0.0", "::", "10.0.0.1", "172.16.5.4", "192.168.1.1",
        "169.254.169.254", "fe80::1", "fc00::1", "224.0.0.1", "ff02::1", "240.0.0.1",
        "255.255.255.255", "100.64.0.1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "2002:7f00:1::1",
        "192.0.2.10",
    ],
)
def test_non_public_addresses_are_refused(address):
    assert refusal(address) != ""


@pytest.mark.parametrize("address", ["8.8.8.8", "192.88.99.1", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address):
    assert refusal(address) == ""


def test_allowing_loopback_for_tests_opens_nothing_else():
    assert refusal("127.0.0.2", allow_loopback=True) == ""
    assert refusal("::1", allow_loopback=True) == ""
    for address in ("10.0.0.1", "169.254.169.254", "fe80::1", "0.0.0.0", "224.0.0.1"):
        assert refusal(address, allow_loopback=True) != ""


# --- the relay test through the panel ------------------------------------------------


@pytest.mark.parametrize(
    "host, shown",
    [
        ("127.0.0.1", "127.0.0.1 is not allowed (loopback address)"),
        ("loop.test", "loop.test resolves to 127.0.0.1 (loopback address)"),
        ("alias.test", "alias.test resolves to 127.0.0.1 (loopback address)"),
        ("mixed.test", "mixed.test resolves to 127.0.0.1 (loopback address)"),
        ("intranet.test", "intranet.test resolves to 10.1.2.3 (private address)"),
        ("metadata.test", "metadata.test resolves to 169.254.169.254 (link-local address)"),
        ("v6local.test", "v6local.test resolves to fe80::1 (link-local address)"),
    ],
)
def test_customer_relay_test_of_a_non_public_host_is_refused_without_connecting(
    alice_client, alice_domain, panel_dns, listener, django_capture_on_commit_callbacks, host, shown
):
    url = reverse("mailadmin:domain_relay_test", args=[alice_domain.pk])
    started, job = press_test(
        alice_client, url, relay_test_data(host, listener.port), django_capture_on_commit_callbacks
    )
    assert started.status_code == 200 and job.requested_by.username == "alice"
    taskqueue.run_queue("checks")
    html = alice_client.get(
        reverse("mailadmin:domain_relay_test_result", args=[alice_domain.pk, job.pk]), headers={"HX-Request": "true"}
    ).content.decode()
    assert 'data-outcome="target_refused"' in html
    assert shown in html and "only hosts on the public internet can be tested" in html
    assert listener.accepted == []  # no connection, so no banner either
    assert "secret banner" not in html and "transcript" not in html


def test_the_relay_test_request_itself_connects_nowhere(
    alice_client, alice_domain, listener, settings, django_capture_on_commit_callbacks
):
    settings.MAILPANEL_CUSTOMER_TARGETS_ALLOW_LOOPBACK = True
    url = reverse("mailadmin:domain_relay_test", args=[alice_domain.pk])
    started, job = press_test(
        alice_client, url, relay_test_data("127.0.0.1", listener.port), django_capture_on_commit_callbacks
    )
    assert 'data-outcome="pending"' in started.content.decode() and job.state == JobState.PENDING
    assert listener.accepted == []  # the gunicorn worker is free: the checks worker connects
    assert taskqueue.queued() == [("checks", "mailadmin.tasks_dns.relay_test")]
    taskqueue.run_queue("checks")
    assert len(listener.accepted) == 1


def test_customer_connects_to_the_checked_address_not_a_fresh_lookup(
    alice_client, alice_domain, panel_dns, smtp_sinks, settings, django_capture_on_commit_callbacks
):
    """relay.rebind.test exists only in the panel's resolver: the system's
    getaddrinfo cannot find it, so a success proves the connection went to the
    address that was checked."""
    settings.MAILPANEL_CUSTOMER_TARGETS_ALLOW_LOOPBACK = True
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo("relay.rebind.test", 25)
    sink = smtp_sinks()
    url = reverse("mailadmin:domain_relay_test", args=[alice_domain.pk])
    _started, job = press_test(
        alice_client, url, relay_test_data("relay.rebind.test", sink.port), django_capture_on_commit_callbacks
    )
    taskqueue.run_queue("checks")
    job.refresh_from_db()
    assert job.result["relay"]["outcome"] == "ok", job.result
    assert job.result["relay"]["steps"][0]["sent"] == f"relay.rebind.test:{sink.port}"


def test_admin_may_test_a_loopback_relay(admin_client_, listener, django_capture_on_commit_callbacks):
    url = reverse("mailadmin:global_relay_test")
    _started, job = press_test(
        admin_client_, url, relay_test_data("127.0.0.1", listener.port), django_capture_on_commit_callbacks
    )
    taskqueue.run_queue("checks")
    job.refresh_from_db()
    assert len(listener.accepted) == 1
    assert "secret banner" in job.result["relay"]["steps"][1]["reply"]  # admins see the transcript


def test_typed_password_never_rests_in_the_task_queue_nor_the_finished_job(
    alice_client, alice_domain, smtp_sinks, settings, django_capture_on_commit_callbacks
):
    settings.MAILPANEL_CUSTOMER_TARGETS_ALLOW_LOOPBACK = True
    password = "typed-only-s3cret"
    sink = smtp_sinks(credentials={(b"user", password.encode())})
    url = reverse("mailadmin:domain_relay_test", args=[alice_domain.pk])
    _started, job = press_test(
        alice_client,
        url,
        relay_test_data("127.0.0.1", sink.port, username="user", password=password),
        django_capture_on_commit_callbacks,
    )
    rows = [str(r) for r in DBTaskResult.objects.values_list("args_kwargs", flat=True)]
    assert rows and not any(password in row for row in rows)
    assert password not in str(Job.objects.filter(pk=job.pk).values_list("result", flat=True)[0])
    taskqueue.run_queue("checks")
    job.refresh_from_db()
    assert job.result["relay"]["outcome"] == "ok"
    assert sink.auth_attempts[-1].password == password.encode()
    assert "request" not in job.result and password not in str(job.result)


def test_a_customer_cannot_poll_someone_elses_relay_test(
    alice_client, alice_domain, bob, client, listener, django_capture_on_commit_callbacks
):
    url = reverse("mailadmin:domain_relay_test", args=[alice_domain.pk])
    _started, job = press_test(
        alice_client, url, relay_test_data("127.0.0.1", listener.port), django_capture_on_commit_callbacks
    )
    bobs_domain = MailDomain.objects.create(name="bob.example", owner=bob)
    client.force_login(bob)
    for path in (
        reverse("mailadmin:domain_relay_test_result", args=[alice_domain.pk, job.pk]),
        reverse("mailadmin:domain_relay_test_result", args=[bobs_domain.pk, job.pk]),
        reverse("mailadmin:global_relay_test_result", args=[job.pk]),
    ):
        assert client.get(path, headers={"HX-Request": "true"}).status_code == 404


# --- per-user limit and the checks queue ---------------------------------------------


def test_customer_checks_are_rate_limited_per_user(
    alice_client, alice_domain, admin_user, listener, settings, django_capture_on_commit_callbacks
):
    settings.MAILPANEL_USER_CHECKS_LIMIT = 3
    settings.MAILPANEL_USER_CHECKS_WINDOW = 600
    url = reverse("mailadmin:domain_relay_test", args=[alice_domain.pk])
    data = relay_test_data("127.0.0.1", listener.port)
    for _i in range(3):
        press_test(alice_client, url, data, django_capture_on_commit_callbacks)
    refused = alice_client.post(url, data)
    assert refused.status_code == 429
    assert "You started 3 checks in the last 10 minutes" in refused.content.decode()
    dns = alice_client.post(reverse("mailadmin:domain_dns_check", args=[alice_domain.pk]), headers={"HX-Request": "true"})
    assert "You started 3 checks" in dns.content.decode()
    diag = alice_client.post(reverse("mailadmin:diagnostics_run"), {"action": "domain", "domain": alice_domain.pk})
    assert diag.status_code == 429
    assert Job.objects.filter(requested_by__username="alice").count() == 3
    assert len(taskqueue.queued()) == 3

    # an admin is not limited by alice's count, nor at all
    admin_client_ = Client()
    admin_client_.force_login(admin_user)
    for _i in range(4):
        press_test(admin_client_, reverse("mailadmin:global_relay_test"), data, django_capture_on_commit_callbacks)
    assert Job.objects.filter(requested_by__username="root-admin").count() == 4

    # the window slides: once the oldest check is older than it, one more fits
    oldest = Job.objects.filter(requested_by__username="alice").order_by("id").first()
    Job.objects.filter(pk=oldest.pk).update(created_at=oldest.created_at - timedelta(seconds=601))
    _started, job = press_test(alice_client, url, data, django_capture_on_commit_callbacks)
    assert job.requested_by.username == "alice" and job.state == JobState.PENDING
    assert alice_client.post(url, data).status_code == 429


def test_checks_run_on_their_own_queue_and_applies_on_default(
    alice_client, alice_domain, listener, django_capture_on_commit_callbacks
):
    from mailadmin.services.jobs import request_apply

    with django_capture_on_commit_callbacks(execute=True):
        alice_client.post(reverse("mailadmin:diagnostics_run"), {"action": "domain", "domain": alice_domain.pk})
        alice_client.post(
            reverse("mailadmin:domain_relay_test", args=[alice_domain.pk]),
            relay_test_data("127.0.0.1", listener.port),
        )
        request_apply(None, alice_domain)
    assert sorted(taskqueue.queued()) == [
        ("checks", "mailadmin.tasks_dns.diagnose"),
        ("checks", "mailadmin.tasks_dns.relay_test"),
        ("default", "mailadmin.tasks.apply_config"),
    ]


def test_a_relay_test_job_is_not_taken_for_server_diagnostics(admin_client_, listener, django_capture_on_commit_callbacks):
    press_test(
        admin_client_, reverse("mailadmin:global_relay_test"), relay_test_data("127.0.0.1", listener.port),
        django_capture_on_commit_callbacks,
    )
    taskqueue.run_queue("checks")
    page = admin_client_.get(reverse("mailadmin:diagnostics"))
    assert page.status_code == 200
    assert page.context["latest_server_job"] is None


def test_relay_result_of_a_running_job_is_none(alice, alice_domain):
    job = Job.objects.create(kind=JobKind.DIAGNOSE, requested_by=alice, domain=alice_domain,
                                  result={"what": "relay"})
    assert relay_test.result_of(job) is None


def test_a_customers_diagnostics_never_connect_to_mx_hosts(alice_client, alice_domain, django_capture_on_commit_callbacks):
    """Connecting to port 25 of each MX host (whatever the customer's DNS says) is for admins."""
    with django_capture_on_commit_callbacks(execute=True):
        alice_client.post(
            reverse("mailadmin:diagnostics_run"), {"action": "domain", "domain": alice_domain.pk, "connect": "on"}
        )
    [row] = DBTaskResult.objects.all()
    assert row.queue_name == "checks" and row.args_kwargs["kwargs"]["connect"] is False


@pytest.mark.parametrize("host", ["127.0.0.1", "10.1.2.3", "169.254.0.1", "fe80::1", "::1"])
def test_customer_cannot_save_a_relay_on_a_non_public_host_admin_can(alice, admin_user, host):
    from django.core.exceptions import ValidationError

    from mailadmin.models import MailDomain, RelaySettings
    from mailadmin.services import relay as relay_service

    domain = MailDomain.objects.create(name="alice-relay.example", owner=alice)
    with pytest.raises(ValidationError) as error:
        relay_service.set_relay(alice, domain, host=host, port=25, tls="none")
    assert "host" in error.value.message_dict
    assert not RelaySettings.objects.exists()
    relay_service.set_relay(admin_user, domain, host=host, port=25, tls="none")
    assert RelaySettings.objects.get().host
