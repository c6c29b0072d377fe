"""Spamhaus DQS and the DNSBL list (SPEC 2.4): the key turns zen.spamhaus.org
into <key>.zen.dq.spamhaus.net in dnsbl.conf; real Exim (`exim -bh`, private
network namespace, test DNS on 127.0.0.1) rejects a listed IP with a reply that
does not carry the key, and never rejects on Spamhaus's 127.255.255.x errors."""

import io
import json
import sys

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.urls import reverse

from mailadmin.passwords import hash_password
from mailadmin.models import Job, AuditEntry, MailAccount, ServerSettings
from mailconf.render import render_all
from mailadmin import dnsbl
from mailadmin.services import apply, server_mail
from mailadmin.services import domains as domain_service
from tests import exim_netns
from tests.mailstack import exim_conf, render_tree, require_root

pytestmark = pytest.mark.django_db

KEY = "q7w8e9r0t1y2u3i4o5p6a7s8d9"  # 26 letters and digits, made up
DQS_ZEN = f"{KEY}.zen.dq.spamhaus.net"


def set_key_through_the_view(client, key=KEY):
    return client.post(reverse("mailadmin:dqs_save"), {"action": "set", "key": key})


# --- validation and display -----------------------------------------------------------


@pytest.mark.parametrize(
    "value, message",
    [
        (KEY[:-1], "26 letters and digits; what you entered has 25 characters"),
        (KEY + "x", "has 27 characters"),
        (KEY[:-1] + "-", "only letters and digits"),
        ("", "Paste the DQS key"),
    ],
)
def test_dqs_key_must_be_26_letters_and_digits(admin_client_, value, message):
    response = admin_client_.post(
        reverse("mailadmin:dqs_save"), {"action": "set", "key": value}, HTTP_HX_REQUEST="true"
    )
    html = response.content.decode()
    assert message in html
    if value:
        assert value not in html  # not even a wrong key is echoed
    assert ServerSettings.load().dqs_key == ""


def test_key_is_stored_lower_case_encrypted_and_shown_only_as_set(admin_client_):
    response = set_key_through_the_view(admin_client_, KEY.upper())
    assert response.status_code == 302
    assert ServerSettings.load().dqs_key == KEY
    html = admin_client_.get(reverse("mailadmin:server_blacklists")).content.decode()
    assert "A DQS key is set" in html
    assert KEY not in html.lower()
    with connection.cursor() as cursor:
        cursor.execute("SELECT dqs_key FROM mailadmin_serversettings WHERE id = 1")
        stored = cursor.fetchone()[0]
    assert stored.startswith("gAAAAA") and KEY not in stored.lower()
    entry = AuditEntry.objects.get(action="server.dqs.set")
    assert entry.fields == ["dqs_key"]
    assert Job.objects.filter(kind="apply", state="pending").exists()


def test_rendered_dnsbl_conf_uses_the_dqs_zone_and_not_the_public_one(admin_client_):
    set_key_through_the_view(admin_client_)
    dnsbl = render_all(apply.build_snapshot(), apply.layout_from_settings())["/etc/exim4/dnsbl.conf"]
    text = dnsbl.content.decode()
    assert text.startswith(f"{DQS_ZEN}=127.0.0.2,")
    assert "zen.spamhaus.org" not in text
    assert "127.255.255" not in text


def test_clearing_the_key_goes_back_to_the_public_zone(admin_client_):
    set_key_through_the_view(admin_client_)
    admin_client_.post(reverse("mailadmin:dqs_save"), {"action": "clear"})
    assert ServerSettings.load().dqs_key == ""
    assert apply.build_snapshot().dnsbl_zones == ("zen.spamhaus.org",)
    assert AuditEntry.objects.filter(action="server.dqs.clear").exists()


def test_every_public_spamhaus_zone_with_a_dqs_twin_goes_through_dqs():
    assert dnsbl.dqs_zone("zen.spamhaus.org", KEY) == DQS_ZEN
    assert dnsbl.dqs_zone("dbl.spamhaus.org", KEY) == f"{KEY}.dbl.dq.spamhaus.net"
    assert dnsbl.dqs_zone("xbl.spamhaus.org", KEY) == f"{KEY}.xbl.dq.spamhaus.net"
    assert dnsbl.dqs_zone("bl.spamcop.net", KEY) == "bl.spamcop.net"
    assert dnsbl.dqs_zone("zen.spamhaus.org", "") == "zen.spamhaus.org"
    assert dnsbl.dqs_zone("evil.zen.spamhaus.org", KEY) == "evil.zen.spamhaus.org"


# --- the zone list ----------------------------------------------------------------------


def test_admin_adds_and_removes_zones_with_validated_names(admin_client_):
    url = reverse("mailadmin:dnsbl_save")
    assert admin_client_.post(url, {"action": "add", "zone": " BL.SpamCop.net. "}).status_code == 302
    assert server_mail.zone_list(ServerSettings.load()) == ["zen.spamhaus.org", "bl.spamcop.net"]
    for bad, message in [
        ("not a zone", "cannot contain spaces"),
        ("bl.spamcop.net", "already in the list"),
        (f"{KEY}.zen.dq.spamhaus.net", "a DQS zone name contains the key"),
        ("127.0.0.2", "not an IP address"),
    ]:
        response = admin_client_.post(url, {"action": "add", "zone": bad}, HTTP_HX_REQUEST="true")
        assert message in response.content.decode(), bad
    assert admin_client_.post(url, {"action": "remove", "zone": "zen.spamhaus.org"}).status_code == 302
    assert server_mail.zone_list(ServerSettings.load()) == ["bl.spamcop.net"]
    actions = set(AuditEntry.objects.values_list("action", flat=True))
    assert {"server.dnsbl.add", "server.dnsbl.remove"} <= actions


def test_zone_list_partial_marks_dqs_without_showing_the_dqs_name(admin_client_):
    set_key_through_the_view(admin_client_)
    response = admin_client_.post(
        reverse("mailadmin:dnsbl_save"), {"action": "add", "zone": "bl.spamcop.net"}, HTTP_HX_REQUEST="true"
    )
    html = response.content.decode()
    assert "<html" not in html and 'id="dnsbl"' in html
    assert "zen.spamhaus.org" in html and "queried through DQS" in html
    assert KEY not in html


def test_customer_cannot_touch_server_mail_settings(alice_client):
    for name, data in [
        ("dqs_save", {"action": "set", "key": KEY}),
        ("dnsbl_save", {"action": "add", "zone": "bl.example.net"}),
        ("internal_lookup_save", {}),
    ]:
        assert alice_client.post(reverse(f"mailadmin:{name}"), data).status_code == 404
    server = ServerSettings.load()
    assert server.dqs_key == "" and server.internal_lookup and "example" not in server.dnsbl_zones


# --- CLI -----------------------------------------------------------------------------------


def test_cli_dqs_key_from_stdin_and_dnsbl_verbs(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO(KEY + "\n"))
    out = io.StringIO()
    call_command("mail", "dqs", "set", stdout=out)
    assert ServerSettings.load().dqs_key == KEY and KEY not in out.getvalue()
    call_command("mail", "dnsbl", "add", "bl.spamcop.net", stdout=io.StringIO())
    out = io.StringIO()
    call_command("mail", "dnsbl", "list", "--json", stdout=out)
    assert json.loads(out.getvalue()) == [
        {"zone": "zen.spamhaus.org", "dqs": True},
        {"zone": "bl.spamcop.net", "dqs": False},
    ]
    assert KEY not in out.getvalue()
    call_command("mail", "dnsbl", "remove", "bl.spamcop.net", stdout=io.StringIO())
    with pytest.raises(CommandError, match="not in the list"):
        call_command("mail", "dnsbl", "remove", "bl.spamcop.net", stdout=io.StringIO())
    call_command("mail", "dqs", "clear", stdout=io.StringIO())
    assert ServerSettings.load().dqs_key == ""


def test_cli_rejects_a_bad_key_without_echoing_it(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("abc-def\n"))
    with pytest.raises(CommandError) as exc:
        call_command("mail", "dqs", "set", stdout=io.StringIO())
    assert "26 letters and digits" in str(exc.value) and "abc-def" not in str(exc.value)


# --- real Exim -----------------------------------------------------------------------------

LISTED = "127.1.2.3"  # DQS ZEN answers 127.0.0.2 (SBL)
UNLISTED = "127.1.2.4"  # NXDOMAIN everywhere
OPEN_RESOLVER = "127.1.2.5"  # 127.255.255.254: "query through an open resolver"
RATE_LIMITED = "127.1.2.6"  # 127.255.255.255
OTHER_LISTED = "127.1.2.7"  # listed only in the admin's extra zone (127.0.0.4)


def _reversed(ip):
    return ".".join(reversed(ip.split(".")))


def _smtp_replies(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line[:3].isdigit()]


def test_real_exim_rejects_a_listed_ip_without_the_key_in_the_reply(admin_client_, alice, tmp_path):
    require_root()
    if reason := exim_netns.available():
        pytest.skip(reason)
    domain = domain_service.add_domain(None, alice, "hosted.test", dkim_enabled=False)
    MailAccount.objects.create(domain=domain, local_part="alice", password_hash=hash_password("secret-password"))
    set_key_through_the_view(admin_client_)
    admin_client_.post(reverse("mailadmin:dnsbl_save"), {"action": "add", "zone": "bl.example.test"})
    layout = render_tree(apply.build_snapshot(), tmp_path)

    records = {
        f"{_reversed(LISTED)}.{DQS_ZEN}": [("A", "127.0.0.2")],
        f"{_reversed(OPEN_RESOLVER)}.{DQS_ZEN}": [("A", "127.255.255.254")],
        f"{_reversed(RATE_LIMITED)}.{DQS_ZEN}": [("A", "127.255.255.255")],
        f"{_reversed(OTHER_LISTED)}.bl.example.test": [("A", "127.0.0.4")],
    }
    dialogue = "EHLO client.test\r\nMAIL FROM:<someone@sender.test>\r\nRCPT TO:<alice@hosted.test>\r\nQUIT\r\n"
    ips = [LISTED, UNLISTED, OPEN_RESOLVER, RATE_LIMITED, OTHER_LISTED]
    out = exim_netns.run_in_netns(
        records, [{"argv": ["exim", "-C", exim_conf(layout), "-bh", ip], "input": dialogue} for ip in ips]
    )
    replies = {ip: _smtp_replies(r["stdout"]) for ip, r in zip(ips, out["results"])}
    rcpt = {ip: lines[-2] for ip, lines in replies.items()}  # the answer before 221

    assert rcpt[LISTED].startswith("550 "), replies[LISTED]
    assert "black list" in rcpt[LISTED]
    assert KEY not in "\n".join(replies[LISTED])
    assert "dq.spamhaus" not in "\n".join(replies[LISTED])
    # Exim's log line names the zone with the key masked.
    [log] = [line for line in out["results"][0]["stderr"].splitlines() if line.startswith("LOG:")]
    assert f"{LISTED} listed in <key>.zen.dq.spamhaus.net (127.0.0.2)" in log and KEY not in log
    assert rcpt[UNLISTED].startswith("250 "), replies[UNLISTED]
    assert rcpt[OPEN_RESOLVER].startswith("250 "), replies[OPEN_RESOLVER]
    assert rcpt[RATE_LIMITED].startswith("250 "), replies[RATE_LIMITED]
    assert rcpt[OTHER_LISTED].startswith("550 "), replies[OTHER_LISTED]
    # The DQS zone was asked, never the public one.
    asked = {name for name, _type in out["queries"]}
    assert f"{_reversed(LISTED)}.{DQS_ZEN}" in asked
    assert not any(name.endswith("zen.spamhaus.org") for name in asked)


def test_without_js_an_invalid_zone_re_renders_the_whole_page_with_the_error(admin_client_):
    response = admin_client_.post(reverse("mailadmin:dnsbl_save"), {"action": "add", "zone": "bad zone"})
    html = response.content.decode()
    assert response.status_code == 400
    assert "<html" in html and 'aria-current="page">Blacklists</a>' in html and 'id="dqs"' in html
    assert "cannot contain spaces" in html and 'value="bad zone"' in html
