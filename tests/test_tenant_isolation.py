"""As customer B, every URL of the app with customer A's ids is a 404.

The URL conf is enumerated, so URLs added later are covered without editing
this test: any route parameter is filled with an id of one of A's objects."""

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from mailadmin.models import (
    Job,
    MailAccount,
    MailAlias,
    MailDomain,
    MailForward,
    RelaySettings,
    SendHold,
)

pytestmark = pytest.mark.django_db

# URLs that take no object id and are reachable by every customer.
PUBLIC_OR_OWN_SCOPE = set()


def walk(patterns, prefix=""):
    for entry in patterns:
        if isinstance(entry, URLResolver):
            yield from walk(entry.url_patterns, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern):
            yield prefix + str(entry.pattern), entry


@pytest.fixture
def alices_objects(alice, bob):
    domain = MailDomain.objects.create(name="alice.example", owner=alice, dkim_private_key="")
    account = MailAccount.objects.create(domain=domain, local_part="info", password_hash="{PLAIN}x")
    alias = MailAlias.objects.create(domain=domain, local_part="sales", target="info@alice.example")
    forward = MailForward.objects.create(account=account, target="elsewhere@example.net")
    relay = RelaySettings.objects.create(domain=domain, host="smtp.example.net")
    job = Job.objects.create(requested_by=alice, domain=domain)
    hold = SendHold.objects.create(domain=domain, local_part="info", reason="hour", held_count=6)
    MailDomain.objects.create(name="bob.example", owner=bob)
    return {
        "domain_id": domain.pk,
        "account_id": account.pk,
        "alias_id": alias.pk,
        "forward_id": forward.pk,
        "relay_id": relay.pk,
        "job_id": job.pk,
        "user_id": alice.pk,
        "hold_id": hold.pk,
        # a queued message of alice's (the queue views ask the helper; none of
        # this id in the test's spool, and bob may not see alice's anyway)
        "message_id": "1xXECy-00081o-0g",
    }


def app_routes():
    """Every route of the mailadmin app (auth and i18n routes live outside it)."""
    for entry in get_resolver().url_patterns:
        if isinstance(entry, URLResolver) and entry.namespace == "mailadmin":
            yield from walk(entry.url_patterns, str(entry.pattern))


def id_routes():
    routes = []
    for route, pattern in app_routes():
        params = list(pattern.pattern.converters)
        if params:
            routes.append((route, pattern, params))
    return routes


def test_there_are_id_routes_to_check():
    assert len(id_routes()) >= 4


@pytest.mark.parametrize("htmx", [False, True])
@pytest.mark.parametrize("method", ["get", "post"])
def test_customer_b_gets_404_on_every_url_with_customer_a_ids(client, bob, alices_objects, method, htmx):
    client.force_login(bob)
    checked = []
    for route, pattern, params in id_routes():
        kwargs = {}
        for name in params:
            if name not in alices_objects:
                pytest.fail(f"route {route} takes {name}: teach this test which of A's objects fills it")
            kwargs[name] = alices_objects[name]
        name = pattern.name
        url = reverse(f"mailadmin:{name}", kwargs=kwargs)
        response = getattr(client, method)(url, headers={"HX-Request": "true"} if htmx else {})
        assert response.status_code in (404, 405), f"{method.upper()} {url} gave {response.status_code}"
        if response.status_code == 405:
            assert method not in [m.lower() for m in response.headers.get("Allow", "").split(", ")]
        checked.append(url)
    assert checked
    # Nothing of alice's changed.
    assert MailDomain.objects.filter(pk=alices_objects["domain_id"]).exists()
    assert RelaySettings.objects.filter(pk=alices_objects["relay_id"], host="smtp.example.net").exists()


@pytest.mark.parametrize("htmx", [False, True])
@pytest.mark.parametrize("method", ["get", "post"])
def test_anonymous_reaches_nothing_of_the_app(client, alices_objects, method, htmx):
    """Login, reset and language live outside the app's URLs; every app URL
    sends an anonymous visitor to the login page (or refuses the method)."""
    checked = 0
    for route, pattern in app_routes():
        kwargs = {name: alices_objects[name] for name in pattern.pattern.converters}
        url = reverse(f"mailadmin:{pattern.name}", kwargs=kwargs)
        response = getattr(client, method)(url, headers={"HX-Request": "true"} if htmx else {})
        if htmx and "HX-Redirect" in response.headers:  # htmx follows it to the login page
            assert "/login/" in response.headers["HX-Redirect"] and response.content in (b"", b"\n"), url
            checked += 1
            continue
        assert response.status_code in (302, 401, 403, 404, 405), f"{method.upper()} {url}: {response.status_code}"
        if response.status_code == 302:
            assert "/login/" in response.headers["Location"], url
        checked += 1
    assert checked >= 20
    assert MailDomain.objects.filter(pk=alices_objects["domain_id"]).exists()


def test_customer_list_shows_only_own_domains(client, bob, alices_objects):
    client.force_login(bob)
    page = client.get(reverse("mailadmin:domain_list")).content.decode()
    assert "bob.example" in page and "alice.example" not in page


ADMIN_ONLY_PREFIXES = ("settings/", "users/", "audit/", "jobs/")


@pytest.mark.parametrize("method", ["get", "post"])
def test_customer_gets_404_on_every_admin_url(client, bob, method):
    client.force_login(bob)
    checked = 0
    for route, pattern in app_routes():
        if pattern.pattern.converters or not route.startswith(ADMIN_ONLY_PREFIXES):
            continue
        url = reverse(f"mailadmin:{pattern.name}")
        response = getattr(client, method)(url)
        assert response.status_code in (404, 405), f"{method.upper()} {url} gave {response.status_code}"
        checked += 1
    assert checked >= 4


# --- the tenant-boundary URLs, role by role --------------------------------------

BOUNDARY_URLS = {
    # name: (the object whose id fills the URL, the methods the view takes)
    "domain_verify": ("domain_id", {"post"}),
    "user_detail": ("user_id", {"get"}),
    "user_limits": ("user_id", {"post"}),
    "user_suspend": ("user_id", {"post"}),
    "customer_domains_save": (None, {"post"}),
}


def expected_status(role, name, method, allowed):
    """Anonymous: the login page. A method the view does not take: 405 for
    anyone. Otherwise the action (a redirect, or 200 with the htmx partial)
    for the admin and for alice on her own domain; 404 for everyone else."""
    if role == "anonymous":
        return {302}
    if method not in allowed:
        return {405}
    may_act = role == "admin" or (role == "alice" and name == "domain_verify")
    return {200, 302} if may_act else {404}


@pytest.mark.parametrize("role", ["alice", "bob", "admin", "anonymous"])
@pytest.mark.parametrize("method", ["get", "post"])
@pytest.mark.parametrize("htmx", [False, True])
def test_boundary_urls_for_every_role(client, alice, bob, admin_user, alices_objects, role, method, htmx):
    from mailadmin.models import ServerSettings, UserProfile

    MailDomain.objects.filter(pk=alices_objects["domain_id"]).update(pending=True, verify_token="t" * 32)
    users = {"alice": alice, "bob": bob, "admin": admin_user}
    if role in users:
        client.force_login(users[role])
    headers = {"HX-Request": "true"} if htmx else {}
    for name, (param, allowed) in BOUNDARY_URLS.items():
        kwargs = {param: alices_objects[param]} if param else {}
        url = reverse(f"mailadmin:{name}", kwargs=kwargs)
        data = {"action": "approve", "suspended": "1", "max_domains": "0"} if method == "post" else None
        response = getattr(client, method)(url, data, headers=headers)
        want = expected_status(role, name, method, allowed)
        assert response.status_code in want, f"{role} {method.upper()} {url} htmx={htmx}: {response.status_code}"
        if role == "anonymous":
            assert response.url.startswith(reverse("login"))
    # What changed is exactly what the role may change.
    domain = MailDomain.objects.get(pk=alices_objects["domain_id"])
    profile = UserProfile.objects.filter(user=alice).first()
    server = ServerSettings.objects.filter(pk=1).first()
    admin_posted = role == "admin" and method == "post"
    assert domain.pending is not admin_posted  # only an admin approves without DNS
    assert bool(profile and profile.suspended) is admin_posted
    assert bool(profile and profile.max_domains == 0) is admin_posted
    assert (server is not None and not server.customers_add_domains) is admin_posted


# --- DKIM rotation and DMARC reports, role by role ----------------------------------


@pytest.mark.parametrize("role", ["alice", "bob", "admin", "anonymous"])
@pytest.mark.parametrize("htmx", [False, True])
def test_dkim_and_dmarc_urls_for_every_role(client, alice, bob, admin_user, role, htmx):
    """alice's DMARC rows are seen by alice and admins only; a rotation and the
    reports mailbox are hers and the admin's to change; the key policy is the
    admin's alone."""
    import datetime

    from mailadmin import dkim
    from mailadmin.models import DmarcMailbox, DmarcReport, DmarcRow, ServerSettings

    domain = MailDomain.objects.create(
        name="keys.example", owner=alice, dkim_private_key=dkim.generate_private_pem(1024)
    )
    now = datetime.datetime.now(datetime.UTC)
    report = DmarcReport.objects.create(domain=domain, org_name="google.com", report_id="r1", begin=now, end=now)
    DmarcRow.objects.create(
        report=report, domain=domain, day=now.date(), source_ip="203.0.113.77", source="other", count=3,
        disposition="reject", dkim_aligned=False, spf_aligned=False,
    )
    users = {"alice": alice, "bob": bob, "admin": admin_user}
    if role in users:
        client.force_login(users[role])
    headers = {"HX-Request": "true"} if htmx else {}
    may = role in ("alice", "admin")

    def expect(response, allowed):
        if role == "anonymous":
            assert response.status_code == 302 and response.url.startswith(reverse("login"))
        else:
            assert response.status_code in ({200, 302} if allowed else {404}), (role, response.status_code)
        return response

    tab = expect(client.get(reverse("mailadmin:domain_dmarc", args=[domain.pk]), headers=headers), may)
    assert ("203.0.113.77" in tab.content.decode()) is may
    expect(client.post(reverse("mailadmin:domain_dkim", args=[domain.pk]),
                       {"action": "rotate", "selector": "k2", "bits": "1024"}, headers=headers), may)
    expect(client.post(reverse("mailadmin:domain_dmarc", args=[domain.pk]), {"local_part": "dmarc"}, headers=headers), may)
    expect(client.post(reverse("mailadmin:dkim_policy_save"),
                       {"dkim_grace_days": "3", "dkim_max_age_months": "6"}, headers=headers), role == "admin")
    domain.refresh_from_db()
    assert (domain.dkim_pending_selector == "k2") is may
    assert DmarcMailbox.objects.filter(domain=domain).exists() is may
    assert (ServerSettings.load().dkim_grace_days == 3) is (role == "admin")
