"""Jobs and messages show each requester only their own changes (issue #12).

Two customers edit in the same second: each gets an apply job of their own
(coalescing joins only one requester's edits), sees it done, and never sees the
other's file paths — not even when their own job happened to apply everything.
The other customer's job is a 404; admins see every job whole. A loop error
names only addresses in the requester's own domains.

The helper runs as a real subprocess with --root in a temporary directory."""

import re

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse

from mailadmin.models import Job, MailAccount, MailDomain
from mailadmin.services import accounts as account_service
from mailadmin.services import apply, domains, jobs
from tests.test_apply_pipeline import live_root  # noqa: F401 (fixture)

pytestmark = pytest.mark.django_db
PW = "Str0ng-enough-pass"


@pytest.fixture
def tenants(alice, bob):
    return (
        MailDomain.objects.create(name="alice.example", owner=alice),
        MailDomain.objects.create(name="bob.example", owner=bob),
    )


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def relay_form(**overrides):
    data = {"preset": "custom", "host": "smtp.relay.example", "port": "587", "tls": "starttls",
            "username": "u", "password": "relay-pass", "auth": "login", "action": "save"}
    data.update(overrides)
    return data


def run_pending():
    for pk in Job.objects.filter(state="pending").order_by("id").values_list("pk", flat=True):
        apply.run_apply_job(pk)


def job_page(client, job, htmx):
    return client.get(reverse("mailadmin:job_status", args=[job.pk]), headers={"HX-Request": "true"} if htmx else {})


# -- coalescing ------------------------------------------------------------------------


def test_edits_coalesce_only_within_one_requester(alice, bob, admin_user, tenants):
    a, b = tenants
    first = jobs.request_apply(alice, domain=a)
    assert jobs.request_apply(bob, domain=b) != first
    assert jobs.request_apply(alice, domain=a) == first
    admins = jobs.request_apply(admin_user, domain=a)
    cli = jobs.request_apply(None)
    assert len({first.pk, admins.pk, cli.pk}) == 3
    scopes = {
        (row.requested_by_id, tuple(row.scope) if row.scope is not None else None)
        for row in Job.objects.filter(state="pending")
    }
    assert scopes == {
        (alice.pk, ("alice.example",)),
        (bob.pk, ("bob.example",)),
        (admin_user.pk, ("alice.example",)),
        (None, None),
    }


@pytest.mark.parametrize("htmx", [True, False], ids=["htmx", "plain"])
def test_two_customers_in_the_same_second_each_see_only_their_own_job_done(
    live_root, alice, bob, admin_user, tenants, htmx  # noqa: F811
):
    jobs.request_apply(None)
    run_pending()  # the server-wide files are live from here on
    a, b = tenants
    alice_client, bob_client, admin_client = client_for(alice), client_for(bob), client_for(admin_user)
    headers = {"HX-Request": "true"} if htmx else {}
    alice_client.post(reverse("mailadmin:domain_relay", args=[a.pk]), relay_form(), headers=headers)
    answer = bob_client.post(reverse("mailadmin:domain_relay", args=[b.pk]), relay_form(), headers=headers)
    alice_job = Job.objects.get(state="pending", requested_by=alice)
    bob_job = Job.objects.get(state="pending", requested_by=bob)
    if htmx:  # the answer to bob's save shows bob's job
        assert f'id="job-{bob_job.pk}"' in answer.content.decode()
    run_pending()

    for client, own, other, mine, theirs in [
        (alice_client, alice_job, bob_job, "alice.example", "bob.example"),
        (bob_client, bob_job, alice_job, "bob.example", "alice.example"),
    ]:
        page = job_page(client, own, htmx)
        text = page.content.decode()
        assert page.status_code == 200 and 'data-state="done"' in text
        assert f"wrote /etc/exim4/domains/{mine}/smtp_relay.conf" in text
        assert theirs not in text
        assert job_page(client, other, htmx).status_code == 404
        latest = client.get(reverse("mailadmin:domain_detail", args=[(a if mine == "alice.example" else b).pk]))
        assert f'id="job-{own.pk}"' in latest.content.decode()
    for job in (alice_job, bob_job):
        assert job_page(admin_client, job, htmx).status_code == 200


@pytest.mark.parametrize("htmx", [True, False], ids=["htmx", "plain"])
def test_a_customers_full_apply_hides_the_other_customers_files(
    live_root, alice, bob, admin_user, tenants, htmx  # noqa: F811
):
    """Send-only is listed in a server-wide file: alice's change applies every
    file, bob's pending change included. Alice sees her part and a count."""
    jobs.request_apply(None)
    run_pending()
    a, b = tenants
    bob_client = client_for(bob)
    bob_client.post(reverse("mailadmin:domain_relay", args=[b.pk]), relay_form())
    domains.update_domain(alice, a, hosted_elsewhere=True)
    alice_job = Job.objects.get(state="pending", requested_by=alice)
    bob_job = Job.objects.get(state="pending", requested_by=bob)
    assert alice_job.scope is None
    apply.run_apply_job(alice_job.pk)  # alice's runs first and writes bob's file too
    alice_job.refresh_from_db()
    assert "/etc/exim4/domains/bob.example/smtp_relay.conf" in alice_job.changed_files

    text = job_page(client_for(alice), alice_job, htmx).content.decode()
    assert "bob.example" not in text
    assert "/etc/exim4/send_only_domains" in text
    assert re.search(r"1 line about other customers&#x27; domains is not shown|1 line about other customers' domains is not shown", text)
    admin_text = job_page(client_for(admin_user), alice_job, htmx).content.decode()
    assert "wrote /etc/exim4/domains/bob.example/smtp_relay.conf" in admin_text

    apply.run_apply_job(bob_job.pk)  # bob's change is live already: his job says so, done
    text = job_page(bob_client, bob_job, htmx).content.decode()
    assert 'data-state="done"' in text and "alice.example" not in text


@pytest.mark.parametrize("htmx", [True, False], ids=["htmx", "plain"])
def test_after_a_save_the_page_shows_the_apply_job_with_the_change_not_a_test_started_since(
    alice, tenants, settings, htmx
):
    settings.MAILPANEL_CUSTOMER_TARGETS_ALLOW_LOOPBACK = True
    a = tenants[0]
    client = client_for(alice)
    headers = {"HX-Request": "true"} if htmx else {}
    client.post(reverse("mailadmin:domain_relay", args=[a.pk]), relay_form(), headers=headers)
    client.post(reverse("mailadmin:domain_relay_test", args=[a.pk]), relay_form(action="test"), headers=headers)
    assert Job.objects.filter(requested_by=alice, kind="diagnose").exists()
    answer = client.post(
        reverse("mailadmin:domain_relay", args=[a.pk]), relay_form(port="2525"), headers=headers, follow=True
    )
    apply_job = Job.objects.get(requested_by=alice, kind="apply")  # the second save joined it
    assert f'id="job-{apply_job.pk}"' in answer.content.decode()
    page = client.get(reverse("mailadmin:domain_detail", args=[a.pk])).content.decode()
    assert f'id="job-{apply_job.pk}"' in page


# -- loop errors ------------------------------------------------------------------------


@pytest.fixture
def loop(alice, bob, tenants):
    """bob: x@bob.example → y@bob.example → info@alice.example. Alice's forward
    info → x@bob.example would close the circle."""
    a, b = tenants
    info = account_service.add_account(alice, a, "info", PW).object
    account_service.add_account(bob, b, "y", PW)
    account_service.add_alias(bob, b, "x", "y@bob.example")
    account_service.add_forward(bob, MailAccount.objects.get(domain=b, local_part="y"), "info@alice.example")
    return info


def loop_message(exc) -> str:
    return " ".join(m for msgs in exc.value.message_dict.values() for m in msgs)


def test_a_customers_loop_error_names_only_their_own_addresses(alice, loop):
    with pytest.raises(ValidationError) as exc:
        account_service.add_forward(alice, loop, "x@bob.example")
    message = loop_message(exc)
    assert "info@alice.example → an address outside your domains → info@alice.example" in message
    assert "bob.example" not in message


def test_the_other_customer_sees_the_same_loop_from_their_side(bob, loop, tenants):
    account_service.add_forward(None, loop, "z@bob.example")  # alice's info now goes to bob's z
    with pytest.raises(ValidationError) as exc:
        account_service.add_alias(bob, tenants[1], "z", "x@bob.example")
    message = loop_message(exc)
    assert "alice.example" not in message and "x@bob.example" in message
    assert "an address outside your domains" in message


def test_an_admins_loop_error_names_every_address(admin_user, loop):
    with pytest.raises(ValidationError) as exc:
        account_service.add_forward(admin_user, loop, "x@bob.example")
    assert "info@alice.example → x@bob.example → y@bob.example → info@alice.example" in loop_message(exc)


@pytest.mark.parametrize("htmx", [True, False], ids=["htmx", "plain"])
def test_the_loop_error_on_alices_page_does_not_name_bobs_addresses(alice, loop, tenants, htmx):
    url = reverse("mailadmin:forward_add", args=[tenants[0].pk, loop.pk])
    response = client_for(alice).post(
        url, {"target": "x@bob.example"}, headers={"HX-Request": "true"} if htmx else {}
    )
    text = response.content.decode()
    assert "an address outside your domains" in text
    # What alice typed is kept in the form; nothing else of bob's appears.
    assert text.count("bob.example") == text.count('value="x@bob.example"') == 1


def test_several_customers_edits_are_several_one_domain_applies(live_root, alice, bob, tenants):  # noqa: F811
    """The cost of not sharing jobs: one one-domain apply per customer (one
    helper round trip each, ~110 ms), never a full apply."""
    jobs.request_apply(None)
    run_pending()
    for domain, owner in zip(tenants, (alice, bob)):
        domains.update_domain(owner, domain, catchall=f"info@{domain.name}")
    run_pending()
    for domain, owner in zip(tenants, (alice, bob)):
        job = Job.objects.get(requested_by=owner)
        assert job.state == "done" and job.scope == [domain.name]
        assert job.log.splitlines()[0].startswith(f"only the files of {domain.name}:")
        assert f"/etc/exim4/domains/{domain.name}/aliases" in job.changed_files
        assert all(path.startswith(f"/etc/exim4/domains/{domain.name}/") for path in job.changed_files)
