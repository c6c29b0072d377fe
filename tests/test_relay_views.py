"""The SMTP relay sections (domain page, server settings) and `mail relay`.

Saving changes the database, audits field names and enqueues an apply; the
password is never rendered back; bad input gives a clear error and keeps the
rest of what was typed; customers reach only their own domain's relay."""

import io
import json
import re
import sys

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from mailadmin.models import Job, AuditEntry, MailDomain, RelaySettings

pytestmark = pytest.mark.django_db

SECRET = "S3cret pass: ^$ \"q\" 'x' \\ #ü "


def relay_tab(domain):
    return reverse("mailadmin:domain_relay", args=[domain.pk])


@pytest.fixture
def alice_domain(alice):
    return MailDomain.objects.create(name="alice.example", owner=alice)


@pytest.fixture
def bob_domain(bob):
    return MailDomain.objects.create(name="bob.example", owner=bob)


def form_data(**overrides):
    data = {
        "preset": "custom",
        "region": "",
        "host": "smtp.relay.example",
        "port": "587",
        "tls": "starttls",
        "username": "relay-user",
        "password": SECRET,
        "auth": "login",
        "action": "save",
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def save_url(domain):
    return reverse("mailadmin:domain_relay", args=[domain.pk])


def html_contains_secret(html: str, secret: str = SECRET) -> bool:
    import html as html_module

    return secret in html or secret in html_module.unescape(html) or html_module.escape(secret) in html


# -- saving ----------------------------------------------------------------


def test_customer_saves_domain_relay_without_js_and_is_redirected(alice_client, alice, alice_domain):
    response = alice_client.post(save_url(alice_domain), form_data())
    assert response.status_code == 302 and response.url == relay_tab(alice_domain) + "#relay-section"
    row = RelaySettings.objects.get(domain=alice_domain)
    assert (row.host, row.port, row.tls, row.username, row.password, row.auth) == (
        "smtp.relay.example", 587, "starttls", "relay-user", SECRET, "login"
    )
    entry = AuditEntry.objects.get(action="relay.set")
    assert entry.target == "alice.example" and entry.actor == alice
    assert "password" in entry.fields and SECRET not in json.dumps(entry.fields)
    job = Job.objects.get()
    assert job.state == "pending" and job.domain == alice_domain
    page = alice_client.get(relay_tab(alice_domain)).content.decode()
    assert "smtp.relay.example:587" in page
    assert not html_contains_secret(page)


def test_htmx_save_returns_the_relay_section_with_the_apply_job(alice_client, alice_domain):
    response = alice_client.post(save_url(alice_domain), form_data(), headers={"HX-Request": "true"})
    assert response.status_code == 200
    html = response.content.decode()
    assert html.lstrip().startswith('<section class="card" id="relay-section">')
    assert "<html" not in html
    assert 'id="relay-notice"' in html and "Relay saved" in html
    assert 'class="job job-pending"' in html
    assert not html_contains_secret(html)
    assert RelaySettings.objects.get(domain=alice_domain).password == SECRET


def test_password_field_is_never_filled_in(alice_client, alice_domain):
    RelaySettings.objects.create(
        domain=alice_domain, host="smtp.relay.example", username="u", password=SECRET
    )
    page = alice_client.get(relay_tab(alice_domain)).content.decode()
    field = re.search(r'<input[^>]*name="password"[^>]*>', page).group(0)
    assert "value=" not in field
    assert "A password is stored" in page
    assert not html_contains_secret(page)


def test_blank_password_keeps_the_stored_one_for_the_same_endpoint(alice_client, alice_domain):
    RelaySettings.objects.create(
        domain=alice_domain, host="smtp.relay.example", username="u", password=SECRET
    )
    response = alice_client.post(save_url(alice_domain), form_data(preset="brevo", username="u", password=""))
    assert response.status_code == 302
    row = RelaySettings.objects.get(domain=alice_domain)
    assert row.preset == "brevo" and row.password == SECRET
    assert AuditEntry.objects.get(action="relay.set").fields == ["preset"]
    # Another host needs the password again (tests/test_secret_endpoint.py has every case).
    response = alice_client.post(save_url(alice_domain), form_data(host="new.relay.example", username="u", password=""))
    assert response.status_code == 400
    assert "Type the password again: the server changed." in response.content.decode()
    assert RelaySettings.objects.get(domain=alice_domain).host == "smtp.relay.example"


def test_new_user_without_any_password_is_an_error(alice_client, alice_domain):
    response = alice_client.post(save_url(alice_domain), form_data(password=""))
    assert response.status_code == 400
    assert "Enter the password for the relay user." in response.content.decode()
    assert not RelaySettings.objects.exists()


def test_empty_user_name_is_an_unauthenticated_relay_and_forgets_the_password(alice_client, alice_domain):
    RelaySettings.objects.create(domain=alice_domain, host="r.example", username="u", password=SECRET)
    alice_client.post(save_url(alice_domain), form_data(username="", password=""))
    row = RelaySettings.objects.get(domain=alice_domain)
    assert row.username == "" and row.password == ""


@pytest.mark.parametrize(
    "password",
    [" leading and trailing ", "a:b^c$d\"e'f\\g#h", "пароль 密码 🔑", "^^^", "\tTab"],
)
def test_any_representable_password_is_stored_byte_exactly(alice_client, alice_domain, password):
    alice_client.post(save_url(alice_domain), form_data(password=password))
    assert RelaySettings.objects.get(domain=alice_domain).password == password


def test_saving_the_same_values_again_changes_nothing(alice_client, alice_domain):
    alice_client.post(save_url(alice_domain), form_data())
    alice_client.post(save_url(alice_domain), form_data(password=""))
    assert AuditEntry.objects.filter(action="relay.set").count() == 1


# -- bad input -------------------------------------------------------------


def assert_kept(html, **values):
    for name, value in values.items():
        assert re.search(rf'name="{name}"[^>]*value="{re.escape(value)}"', html) or re.search(
            rf'value="{re.escape(value)}"[^>]*name="{name}"', html
        ), f"{name} lost"


@pytest.mark.parametrize("htmx", [False, True])
@pytest.mark.parametrize(
    "overrides, field, message",
    [
        ({"password": "line1\nline2"}, "password", "The password cannot contain line breaks or control characters."),
        ({"password": "nul\x00byte"}, "password", "The password cannot contain line breaks or control characters."),
        ({"password": "bell\x07"}, "password", "The password cannot contain line breaks or control characters."),
        ({"username": "user\r\nname"}, "username", "The user name cannot contain line breaks or control characters."),
        ({"host": "bad host"}, "host", "A domain name cannot contain spaces."),
        ({"host": "bad!host.example"}, "host", "is not a valid domain name"),
        ({"host": "exa_mple..com"}, "host", "is not a valid domain name"),
        ({"port": "0"}, "port", "A port is a number from 1 to 65535."),
        ({"port": "70000"}, "port", "A port is a number from 1 to 65535."),
        ({"port": "abc"}, "port", "Enter a whole number."),
        ({"tls": "none"}, "confirm_no_tls", "tick the box to confirm"),
        ({"port": "465"}, "tls", "Port 465 uses implicit TLS"),
    ],
)
def test_bad_input_gives_a_clear_error_and_keeps_the_other_values(
    alice_client, alice_domain, htmx, overrides, field, message
):
    data = form_data(**{"username": "kept-user", "host": "kept.relay.example", "port": "2525", **overrides})
    headers = {"HX-Request": "true"} if htmx else {}
    response = alice_client.post(save_url(alice_domain), data, headers=headers)
    html = response.content.decode()
    assert response.status_code == (200 if htmx else 400)
    assert message in html.replace("&#x27;", "'").replace("&quot;", '"')
    assert f'id="relay-{field}_error"' in html or f'aria-describedby="relay-{field}_error' in html or field == "confirm_no_tls"
    kept = {"host": data["host"], "username": data["username"], "port": data["port"]}
    kept = {k: v for k, v in kept.items() if k != field and k not in overrides}
    assert_kept(html, **kept)
    assert 'selected>STARTTLS' in html or overrides.get("tls") == "none"
    assert not RelaySettings.objects.exists()
    assert "line1" not in html and "nul\x00" not in html


def test_tls_none_with_confirmation_is_saved(alice_client, alice_domain):
    alice_client.post(save_url(alice_domain), form_data(tls="none", confirm_no_tls="on", port="25"))
    row = RelaySettings.objects.get(domain=alice_domain)
    assert row.tls == "none" and row.port == 25


def test_preset_fill_in_shows_the_providers_values_and_keeps_the_user(alice_client, alice_domain):
    data = form_data(preset="oracle", region="eu-frankfurt-1", host="", action="preset", password="")
    response = alice_client.post(save_url(alice_domain), data, headers={"HX-Request": "true"})
    html = response.content.decode()
    assert_kept(html, host="smtp.email.eu-frankfurt-1.oci.oraclecloud.com", port="587", username="relay-user")
    assert re.search(r'<option value="plain" selected>', html)
    assert not RelaySettings.objects.exists()


def test_preset_without_region_says_it_needs_one(alice_client, alice_domain):
    response = alice_client.post(save_url(alice_domain), form_data(preset="amazon_ses", host="", action="save"))
    assert response.status_code == 400
    assert "Amazon SES needs a region (for example us-east-1)." in response.content.decode()


def test_saving_with_a_preset_and_empty_host_uses_the_presets_host(alice_client, alice_domain):
    alice_client.post(save_url(alice_domain), form_data(preset="amazon_ses", region="eu-west-1", host=""))
    row = RelaySettings.objects.get(domain=alice_domain)
    assert (row.host, row.port, row.preset) == ("email-smtp.eu-west-1.amazonaws.com", 587, "amazon_ses")


# -- removing --------------------------------------------------------------


@pytest.mark.parametrize("htmx", [False, True])
def test_remove_relay(alice_client, alice_domain, htmx):
    RelaySettings.objects.create(domain=alice_domain, host="r.example")
    headers = {"HX-Request": "true"} if htmx else {}
    response = alice_client.post(
        reverse("mailadmin:domain_relay_remove", args=[alice_domain.pk]), headers=headers
    )
    assert not RelaySettings.objects.filter(domain=alice_domain).exists()
    assert AuditEntry.objects.get(action="relay.clear").target == "alice.example"
    assert Job.objects.count() == 1
    if htmx:
        assert response.status_code == 200 and "Relay removed" in response.content.decode()
    else:
        assert response.status_code == 302 and response.url == relay_tab(alice_domain) + "#relay-section"


# -- global relay ----------------------------------------------------------


def test_admin_saves_and_removes_the_global_relay(admin_client_, admin_user):
    response = admin_client_.post(reverse("mailadmin:global_relay"), form_data(auth="plain"))
    assert response.status_code == 302 and response.url == reverse("mailadmin:global_relay") + "#relay-section"
    row = RelaySettings.objects.get(domain__isnull=True)
    assert row.auth == "plain" and row.password == SECRET
    assert AuditEntry.objects.get(action="relay.set").target == "global"
    page = admin_client_.get(reverse("mailadmin:global_relay")).content.decode()
    assert "Global SMTP relay" in page and "smtp.relay.example:587" in page
    assert not html_contains_secret(page)
    admin_client_.post(reverse("mailadmin:global_relay_remove"))
    assert not RelaySettings.objects.exists()


def test_global_form_errors_render_the_settings_page(admin_client_):
    response = admin_client_.post(reverse("mailadmin:global_relay"), form_data(port="70000"))
    assert response.status_code == 400
    html = response.content.decode()
    assert "Server settings" in html and "A port is a number from 1 to 65535." in html


# -- isolation -------------------------------------------------------------


@pytest.mark.parametrize("name", ["domain_relay", "domain_relay_remove", "domain_relay_test"])
def test_customer_cannot_reach_other_customers_relay(client, bob, alice_domain, name):
    RelaySettings.objects.create(domain=alice_domain, host="alice.relay.example", username="u", password=SECRET)
    client.force_login(bob)
    response = client.post(reverse(f"mailadmin:{name}", args=[alice_domain.pk]), form_data(host="evil.example"))
    assert response.status_code == 404
    row = RelaySettings.objects.get(domain=alice_domain)
    assert row.host == "alice.relay.example" and row.password == SECRET
    assert not AuditEntry.objects.exists() and not Job.objects.exists()


@pytest.mark.parametrize("name", ["global_relay", "global_relay_remove", "global_relay_test"])
def test_customer_cannot_reach_the_global_relay(alice_client, name):
    RelaySettings.objects.create(domain=None, host="global.relay.example")
    response = alice_client.post(reverse(f"mailadmin:{name}"), form_data())
    assert response.status_code == 404
    assert RelaySettings.objects.get().host == "global.relay.example"


def test_customer_domain_page_never_shows_the_global_relay(alice_client, alice_domain):
    RelaySettings.objects.create(domain=None, host="global.relay.example", username="g-user", password="g-pass")
    page = alice_client.get(relay_tab(alice_domain)).content.decode()
    assert "global.relay.example" not in page and "g-user" not in page
    assert "has no relay of its own" in page
    assert alice_client.get(reverse("mailadmin:server_settings")).status_code == 404


def test_customer_sees_own_relay_not_another_domains(alice_client, alice_domain, bob_domain):
    RelaySettings.objects.create(domain=bob_domain, host="bob.relay.example")
    RelaySettings.objects.create(domain=alice_domain, host="alice.relay.example")
    page = alice_client.get(relay_tab(alice_domain)).content.decode()
    assert "alice.relay.example" in page and "bob.relay.example" not in page


# -- CLI -------------------------------------------------------------------


def mail(*args, stdin=None):
    out, err = io.StringIO(), io.StringIO()
    old = sys.stdin
    sys.stdin = io.StringIO(stdin) if stdin is not None else io.StringIO("")
    try:
        call_command("mail", *args, stdout=out, stderr=err)
    finally:
        sys.stdin = old
    return out.getvalue()


def test_cli_sets_the_global_relay_with_password_from_stdin():
    mail("relay", "set", "--host", "smtp.relay.example", "--user", "cli-user", "--password-stdin", stdin=SECRET + "\n")
    row = RelaySettings.objects.get(domain__isnull=True)
    assert (row.host, row.port, row.tls, row.auth, row.username, row.password) == (
        "smtp.relay.example", 587, "starttls", "login", "cli-user", SECRET
    )
    assert AuditEntry.objects.get(action="relay.set").actor_name == "cli"
    assert Job.objects.count() == 1


def test_cli_sets_a_domain_relay_from_a_preset_and_keeps_the_password(alice_domain):
    mail("relay", "set", "--domain", "ALICE.example", "--preset", "oracle", "--region", "us-ashburn-1",
         "--user", "ocid1.user", "--password-stdin", stdin="pw one\n")
    row = RelaySettings.objects.get(domain=alice_domain)
    assert (row.host, row.auth, row.preset) == ("smtp.email.us-ashburn-1.oci.oraclecloud.com", "plain", "oracle")
    mail("relay", "set", "--domain", "alice.example", "--preset", "custom")
    row.refresh_from_db()
    assert row.preset == "custom" and row.password == "pw one" and row.auth == "plain"
    with pytest.raises(CommandError, match="password: Type the password again: the server changed."):
        mail("relay", "set", "--domain", "alice.example", "--port", "2587")
    mail("relay", "set", "--domain", "alice.example", "--port", "2587", "--password-stdin", stdin="pw one\n")
    row.refresh_from_db()
    assert row.port == 2587 and row.password == "pw one" and row.auth == "plain"


def test_cli_show_prints_password_as_set_only(alice_domain):
    RelaySettings.objects.create(domain=alice_domain, host="r.example", username="u", password=SECRET, auth="plain")
    text = mail("relay", "show", "--domain", "alice.example")
    assert "host: r.example" in text and "password: set" in text and SECRET not in text
    data = json.loads(mail("relay", "show", "--domain", "alice.example", "--json"))
    assert data == {
        "scope": "alice.example", "configured": True, "preset": "custom", "host": "r.example",
        "port": 587, "tls": "starttls", "auth": "plain", "username": "u", "password": "set",
    }
    assert json.loads(mail("relay", "show", "--json")) == {"scope": "global", "configured": False}


def test_cli_clear(alice_domain):
    RelaySettings.objects.create(domain=alice_domain, host="r.example")
    assert "removed" in mail("relay", "clear", "--domain", "alice.example")
    assert not RelaySettings.objects.exists()
    assert "no relay" in mail("relay", "clear", "--domain", "alice.example")


@pytest.mark.parametrize(
    "args, stdin, message",
    [
        (["--host", "bad host"], None, "host: "),
        (["--host", "r.example", "--port", "70000"], None, "port: A port is a number from 1 to 65535."),
        (["--host", "r.example", "--port", "0"], None, "port: A port is a number from 1 to 65535."),
        (["--host", "r.example", "--user", "a\tb\x01"], None, "username: The user name cannot contain line breaks"),
        (["--host", "r.example", "--user", "u"], None, "password: Enter the password"),
        (["--host", "r.example", "--user", "u", "--password-stdin"], "\n", "nothing was read from standard input"),
        (["--host", "r.example", "--user", "u", "--password-stdin"], "a\x00b\n", "relay password cannot contain a NUL"),
        (["--preset", "amazon_ses"], None, "Amazon SES needs a region"),
        ([], None, "give --host"),
    ],
)
def test_cli_bad_values_exit_non_zero_with_a_message(args, stdin, message):
    with pytest.raises(CommandError) as exc:
        mail("relay", "set", *args, stdin=stdin)
    assert message in str(exc.value)
    assert not RelaySettings.objects.exists()


def test_cli_bad_value_exits_non_zero_through_manage_py(tmp_path):
    """The real entry point: exit status and stderr, password never on argv."""
    import os
    import subprocess

    from django.conf import settings

    db = tmp_path / "cli.sqlite3"
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{db}", "MAILPANEL_VAR_DIR": str(tmp_path)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    python, manage = sys.executable, str(settings.BASE_DIR / "manage.py")
    subprocess.run([python, manage, "migrate", "-v", "0"], env=env, check=True, capture_output=True)
    bad = subprocess.run(
        [python, manage, "mail", "relay", "set", "--host", "r.example", "--user", "u", "--password-stdin"],
        input="two\nlines", env=env, capture_output=True, text=True,
    )
    # once only the first line ("two") was stored without a word
    assert bad.returncode != 0 and "cannot contain a line break" in bad.stderr
    assert "lines" not in bad.stderr
    good = subprocess.run(
        [python, manage, "mail", "relay", "set", "--host", "r.example", "--user", "u", "--password-stdin"],
        input="two\n", env=env, capture_output=True, text=True,
    )
    assert good.returncode == 0, good.stderr
    bad = subprocess.run(
        [python, manage, "mail", "relay", "set", "--host", "r.example", "--port", "99999"],
        env=env, capture_output=True, text=True,
    )
    assert bad.returncode != 0 and "A port is a number from 1 to 65535." in bad.stderr
    shown = subprocess.run(
        [python, manage, "mail", "relay", "show", "--json"], env=env, capture_output=True, text=True, check=True
    )
    assert json.loads(shown.stdout)["password"] == "set" and "two" not in shown.stdout


# -- what Exim cannot send ----------------------------------------------------


def test_plain_with_a_password_starting_with_caret_is_a_form_error(alice_client, alice_domain):
    response = alice_client.post(save_url(alice_domain), form_data(auth="plain", password="^starts with caret"))
    assert response.status_code == 400
    assert "With PLAIN the mail server cannot send a user name or password that starts with ^" in response.content.decode()
    assert not RelaySettings.objects.exists()
    # LOGIN carries it
    alice_client.post(save_url(alice_domain), form_data(auth="login", password="^starts with caret"))
    assert RelaySettings.objects.get().password == "^starts with caret"


def test_switching_a_stored_caret_password_to_plain_is_refused(alice_client, alice_domain):
    RelaySettings.objects.create(domain=alice_domain, host="r.example", username="u", password="^pw", auth="login")
    # Another mechanism needs the password typed again, and then ^ is refused with PLAIN.
    response = alice_client.post(save_url(alice_domain), form_data(host="r.example", username="u", password="", auth="plain"))
    assert response.status_code == 400
    assert "Type the password again: the server changed." in response.content.decode()
    response = alice_client.post(save_url(alice_domain), form_data(host="r.example", username="u", password="^pw", auth="plain"))
    assert response.status_code == 400
    assert "starts with ^" in response.content.decode()
    assert RelaySettings.objects.get().auth == "login"


def test_cli_refuses_plain_with_a_caret_password():
    with pytest.raises(CommandError, match="starts with"):
        mail("relay", "set", "--host", "r.example", "--user", "u", "--auth", "plain", "--password-stdin", stdin="^x\n")
    assert not RelaySettings.objects.exists()


def test_relay_password_is_encrypted_at_rest(alice_client, alice_domain):
    from django.db import connection

    alice_client.post(save_url(alice_domain), form_data())
    with connection.cursor() as cursor:
        cursor.execute("SELECT password FROM mailadmin_relaysettings")
        (stored,) = cursor.fetchone()
    assert stored and SECRET not in stored and SECRET.strip() not in stored
    assert RelaySettings.objects.get().password == SECRET
