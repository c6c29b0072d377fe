"""Secrets sweep (SPEC 2.4, 8.1): after an admin sets the Spamhaus DQS key and
the panel SMTP password through the views — and both are used: a test mail,
a failed test mail, an apply job — neither value appears in any page the panel
serves (every route of the URL conf is crawled as admin, ids filled from real
objects), in the log output, in job logs, in audit entries, or anywhere in the
database in clear: their columns hold ciphertext."""

import logging
import re
import sys
from pathlib import Path

import pytest
from django.contrib.auth.tokens import default_token_generator
from django.db import connection
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from mailadmin.passwords import hash_password
from mailadmin import crypto
from mailadmin.models import (
    Job,
    AuditEntry,
    MailAccount,
    MailAlias,
    MailDomain,
    MailForward,
    RelaySettings,
    ServerSettings,
)
from mailadmin.services import apply
from mailadmin.services import domains as domain_service
from tests.mailstack import mail_pki, smtp_sink

pytestmark = pytest.mark.django_db

DQS_KEY = "z9y8x7w6v5u4t3s2r1q0p9o8n7"
SMTP_PASSWORD = "Pan3l-SMTP-pässword-4711"
SMTP_USER = "panel@relay.test"
HELPER = Path(__file__).resolve().parent.parent / "deploy" / "mailpanel_helper.py"


def walk(patterns, prefix=""):
    for entry in patterns:
        if isinstance(entry, URLResolver):
            yield from walk(entry.url_patterns, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern):
            yield prefix + str(entry.pattern), entry


def fill(route: str, values: dict) -> str | None:
    if route.startswith("^"):
        return None  # a regex route: none in this project

    def value(match):
        name = match.group(1)
        if name in values:
            return str(values[name])
        model_name = name.removesuffix("_id")
        guess = values.get(f"{model_name}_id")
        return str(guess if guess is not None else 1)

    return "/" + re.sub(r"<(?:\w+:)?(\w+)>", value, route)


@pytest.fixture
def live(tmp_path, settings):
    """A real helper on a temporary root, and checks that stay on loopback."""
    root = tmp_path / "root"
    root.mkdir()
    settings.MAILPANEL_ROOT = str(root)
    settings.MAILPANEL_HELPER = f"{sys.executable} {HELPER} --root {root} --service-command true"
    settings.EMAIL_BACKEND = "mailadmin.services.panel_smtp.PanelEmailBackend"
    settings.MAILPANEL_SMTP_CA_FILE = mail_pki().ca_cert
    settings.MAILPANEL_SMTP_TIMEOUT = 5
    settings.MAILPANEL_RESOLVERS = ["127.0.0.1:9"]
    settings.MAILPANEL_PORT25_TARGET = "127.0.0.1:9"
    settings.MAILPANEL_CHECK_TIMEOUT = 0.5
    return root


@pytest.fixture
def objects(admin_user, alice):
    domain = domain_service.add_domain(None, alice, "alice.example")
    account = MailAccount.objects.create(domain=domain, local_part="info", password_hash=hash_password("secret-password"))
    alias = MailAlias.objects.create(domain=domain, local_part="sales", target="info@alice.example")
    forward = MailForward.objects.create(account=account, target="elsewhere@example.net")
    relay = RelaySettings.objects.create(domain=domain, host="smtp.example.net")
    return {
        "domain_id": domain.pk,
        "account_id": account.pk,
        "alias_id": alias.pk,
        "forward_id": forward.pk,
        "relay_id": relay.pk,
        "user_id": alice.pk,
        "uidb64": urlsafe_base64_encode(force_bytes(admin_user.pk)),
        "token": default_token_generator.make_token(admin_user),
    }


def contains_secret(text: str) -> list[str]:
    lowered = text.lower()
    return [name for name, secret in (("DQS key", DQS_KEY), ("SMTP password", SMTP_PASSWORD))
            if secret.lower() in lowered]


def test_no_page_log_job_audit_or_clear_column_holds_the_dqs_key_or_smtp_password(
    admin_client_, objects, live, caplog, capfd
):
    caplog.set_level(logging.DEBUG)
    client = admin_client_

    # Set both secrets through the views.
    response = client.post("/settings/server/dqs/", {"action": "set", "key": DQS_KEY.upper()})
    assert response.status_code == 302
    with smtp_sink(credentials={(SMTP_USER.encode(), SMTP_PASSWORD.encode())}, starttls=True) as sink:
        response = client.post(
            "/settings/server/panel-smtp/",
            {"enabled": "on", "host": "127.0.0.1", "port": sink.port, "security": "starttls",
             "username": SMTP_USER, "password": SMTP_PASSWORD, "from_email": "noreply@example.net"},
        )
        assert response.status_code == 302
        server = ServerSettings.load()
        assert server.dqs_key == DQS_KEY and server.panel_smtp_password == SMTP_PASSWORD
        # Use them: a test mail that works, a password reset mail, an apply.
        pages = [client.post("/settings/server/panel-smtp/test/", {"to": "admin@example.org"})]
        client.post("/password-reset/", {"email": "nobody@example.org"})
        sink.wait_for_messages(1)
    # ... and a test mail that fails (nothing listens any more).
    pages.append(client.post("/settings/server/panel-smtp/test/", {"to": "admin@example.org"},
                             HTTP_HX_REQUEST="true"))
    job = Job.objects.filter(kind="apply", state="pending").order_by("id").first()
    apply.run_apply_job(job.pk)
    job.refresh_from_db()
    assert job.state == "done", job.log
    dnsbl = (live / "etc/exim4/dnsbl.conf").read_text()
    assert f"{DQS_KEY}.zen.dq.spamhaus.net" in dnsbl  # the one place the key must be

    # Crawl every GET route, plain and htmx.
    objects["job_id"] = job.pk
    crawled = []
    for route, pattern in walk(get_resolver().url_patterns):
        url = fill(route, objects)
        if url is None or pattern.name == "logout":
            continue
        for htmx in ("", "true"):
            response = client.get(url, HTTP_HX_REQUEST=htmx) if htmx else client.get(url)
            body = response.content.decode(errors="replace")
            assert not contains_secret(body), f"GET {url} (htmx={bool(htmx)}) shows {contains_secret(body)}"
            assert not contains_secret(str(response.headers)), url
            crawled.append((url, response.status_code))
            if response.status_code in (301, 302) and response["Location"].startswith("/"):
                # one hop: the reset-confirm link lands on its set-password form
                followed = client.get(response["Location"])
                assert not contains_secret(followed.content.decode(errors="replace")), url
                crawled.append((response["Location"], followed.status_code))
    ok_pages = [url for url, status in crawled if status == 200]
    assert "/settings/server/" in ok_pages and f"/domains/{objects['domain_id']}/" in ok_pages
    assert f"/jobs/{job.pk}/" in ok_pages and "/audit/" in ok_pages
    assert len(ok_pages) >= 10, crawled
    for page in pages:
        assert not contains_secret(page.content.decode())

    # Logs, job logs, audit entries.
    assert not contains_secret(caplog.text)
    out, err = capfd.readouterr()
    assert not contains_secret(out + err)
    for job in Job.objects.all():
        assert not contains_secret(job.log + str(job.result) + str(job.changed_files)), job.pk
    for entry in AuditEntry.objects.all():
        assert not contains_secret(f"{entry.action} {entry.target} {entry.fields}"), entry.action
    assert AuditEntry.objects.filter(action="server.dqs.set", fields=["dqs_key"]).exists()

    # The database: ciphertext in the two columns, no clear copy anywhere.
    with connection.cursor() as cursor:
        cursor.execute("SELECT dqs_key, panel_smtp_password FROM mailadmin_serversettings WHERE id = 1")
        dqs_column, password_column = cursor.fetchone()
    for column, secret in ((dqs_column, DQS_KEY), (password_column, SMTP_PASSWORD)):
        assert column.startswith("gAAAAA") and not contains_secret(column)
        assert crypto.decrypt(column) == secret
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f'SELECT * FROM "{table}"')
            for row in cursor.fetchall():
                text = " ".join(
                    bytes(v).decode(errors="replace") if isinstance(v, (bytes, memoryview)) else str(v)
                    for v in row
                )
                assert not contains_secret(text), table
