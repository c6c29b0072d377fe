"""The mail queue and “where is my mail?” in the panel and the CLI, on a
spool and logs a real Exim wrote, read through the real helper (--root).

Customers see only messages sent from or to their domains, and of those
only their own recipients unless they sent it; only admins act on messages
or read a body. Log lines follow the same rule (services/mail_log.py)."""

import json
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from mailadmin.models import AuditEntry, MailAccount, MailDomain
from mailadmin.services import mail_log
from mailconf.snapshot import Domain, Mailbox, Relay, SendLimits, ServerIdentity, Snapshot
from tests import mailstack
from tests.test_helper_queue import HELPER, spool, submit

pytestmark = [pytest.mark.django_db]


@pytest.fixture
def queue(mailstack_tree, settings, alice, bob):
    """alice.example (alice's: mailbox info, Unix user www-data mapped) and
    bob.example (bob's: mailbox box); a relay nobody answers, so everything
    stays queued. Four messages:
      outgoing  info@alice.example → x@foreign.example, y@bob.example
      incoming  z@foreign.example → box@bob.example, info@alice.example
      stranger  s@foreign.example → t@foreign.example (root, no identity)
      held      web@alice.example (www-data, past 1 an hour) → w@foreign.example"""
    MailDomain.objects.create(name="alice.example", owner=alice, dkim_enabled=False)
    MailDomain.objects.create(name="bob.example", owner=bob, dkim_enabled=False)
    snap = Snapshot(
        server=ServerIdentity(hostname="mx.test.example"),
        domains=(
            Domain("alice.example", dkim_enabled=False, local_senders=("www-data",),
                   mailboxes=(Mailbox("info", "{PLAIN}x"),)),
            Domain("bob.example", dkim_enabled=False,
                   mailboxes=(Mailbox("box", "{PLAIN}y"), Mailbox("y", "{PLAIN}y"))),
        ),
        global_relay=Relay("127.0.0.1", mailstack.free_port(), tls="none"),
        send_limits=SendLimits(per_hour=1),
    )
    layout = mailstack_tree(snap)
    ids = {}
    (ids["outgoing"],) = submit(layout, [("info@alice.example", ["x@foreign.example", "y@bob.example"], "out")],
                                "-oMa", "192.0.2.50", "-oMaa", "dovecot_plain", "-oMai", "info@alice.example")
    (ids["incoming"],) = submit(layout, [("z@foreign.example", ["box@bob.example", "info@alice.example"], "in")])
    (ids["stranger"],) = submit(layout, [("s@foreign.example", ["t@foreign.example"], "stranger")])
    _first, ids["held"] = submit(layout, [("web@alice.example", ["w@foreign.example"], f"web{n}") for n in range(2)],
                                 "-oMt", "www-data")
    settings.MAILPANEL_HELPER = f"{sys.executable} {HELPER} --root {layout.root}"
    ids["first_web"] = _first
    return layout, ids


def listed(client, query=""):
    response = client.get(f"/queue/{query}")
    assert response.status_code == 200
    return response.content.decode()


# -- hostile input first -------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    ["?sender=a%0Ab", "?recipient=%00", "?domain=a%0d", "?domain=..%2Fetc", "?domain=a", "?state=evil",
     "?sender=" + "x" * 400],
)
def test_a_hostile_filter_is_a_form_error_and_never_reaches_the_helper(client, admin_user, queue, query):
    client.force_login(admin_user)
    page = listed(client, query)
    assert "errorlist" in page
    assert "<code>" not in page  # no messages listed


@pytest.mark.parametrize("path", ["/queue/..%2F..%2Fetc%2Fpasswd/", "/queue/1xXECy-00081o-0g-H/",
                                  "/queue/1xXECy-00081o-0g%0A/", "/queue/-Mrm/"])
def test_a_message_url_that_is_no_exim_id_is_404(client, admin_user, queue, path):
    client.force_login(admin_user)
    assert client.get(path).status_code == 404
    assert client.post(path, {"action": "delete"}).status_code == 404


@pytest.mark.parametrize("number", ["0", "-1", "x", "1e3", "99999999999", "١"])
def test_a_page_number_that_is_no_number_shows_the_first_page(client, admin_user, queue, number):
    layout, ids = queue
    client.force_login(admin_user)
    assert ids["outgoing"] in listed(client, f"?page={number}")


def test_an_unknown_action_is_refused(client, admin_user, queue):
    layout, ids = queue
    client.force_login(admin_user)
    for action in ("-bh", "rm", ""):
        assert client.post(f"/queue/{ids['stranger']}/", {"action": action}).status_code == 404
    assert (spool(layout) / f"{ids['stranger']}-H").exists()


# -- who sees what -------------------------------------------------------------------


def test_the_admin_sees_the_whole_queue(client, admin_user, queue):
    layout, ids = queue
    client.force_login(admin_user)
    page = listed(client)
    assert all(ids[k] in page for k in ("outgoing", "incoming", "stranger", "held"))
    assert "5 messages in the queue." in page
    assert "1 messages, 1 frozen, 1 held" in listed(client, "?state=frozen")
    assert "4 messages, 0 frozen, 0 held" in listed(client, "?state=active")
    held_only = listed(client, "?state=held")
    assert ids["held"] in held_only and ids["stranger"] not in held_only
    by_domain = listed(client, "?domain=bob.example")
    assert ids["incoming"] in by_domain and ids["outgoing"] in by_domain and ids["stranger"] not in by_domain


def test_a_customer_sees_only_mail_of_their_domains_and_only_their_recipients(client, alice, bob, queue):
    layout, ids = queue
    client.force_login(alice)
    page = listed(client)
    assert ids["outgoing"] in page and ids["incoming"] in page and ids["held"] in page
    assert ids["stranger"] not in page and "t@foreign.example" not in page
    # her own outgoing mail: every recipient; mail to her: only her address
    assert "x@foreign.example, y@bob.example" in page
    assert "box@bob.example" not in page
    # a domain filter outside her domains shows nothing, not bob's mail
    assert ids["incoming"] not in listed(client, "?domain=bob.example")
    client.force_login(bob)
    page = listed(client)
    assert ids["incoming"] in page and ids["outgoing"] in page and ids["held"] not in page
    # alice's mail to him: from her, to him only; the mail he shares with her: his address only
    assert "x@foreign.example" not in page
    assert "info@alice.example" not in page.split(ids["incoming"])[1].split("</tr>")[0]


def test_message_detail_shows_envelope_and_headers_and_404s_for_others(client, alice, bob, admin_user, queue):
    layout, ids = queue
    client.force_login(alice)
    page = client.get(f"/queue/{ids['outgoing']}/").content.decode()
    assert "Subject: out" in page and "192.0.2.50" in page
    assert "Hello." not in page  # no body for a customer
    assert "Hello." not in client.get(f"/queue/{ids['outgoing']}/?body=1").content.decode()
    assert client.get(f"/queue/{ids['stranger']}/").status_code == 404
    client.force_login(bob)
    assert client.get(f"/queue/{ids['held']}/").status_code == 404
    page = client.get(f"/queue/{ids['incoming']}/").content.decode()
    assert "box@bob.example" in page and "info@alice.example</dd>" not in page
    client.force_login(admin_user)
    assert "Hello." in client.get(f"/queue/{ids['stranger']}/?body=1").content.decode()


def test_only_admins_act_on_messages(client, alice, admin_user, queue):
    layout, ids = queue
    client.force_login(alice)
    assert client.post(f"/queue/{ids['outgoing']}/", {"action": "delete"}).status_code == 404
    assert (spool(layout) / f"{ids['outgoing']}-H").exists()
    client.force_login(admin_user)
    response = client.post(f"/queue/{ids['stranger']}/", {"action": "freeze"})
    assert response.status_code == 302
    assert "frozen" in listed(client, "?state=frozen").split(ids["stranger"])[1].split("</tr>")[0]
    response = client.post(f"/queue/{ids['stranger']}/", {"action": "delete"})
    assert response.status_code == 302 and response.headers["Location"] == "/queue/"
    assert not (spool(layout) / f"{ids['stranger']}-H").exists()
    assert AuditEntry.objects.filter(action="queue.delete", target=ids["stranger"]).exists()


def test_pages_of_fifty(client, admin_user, queue):
    layout, ids = queue
    submit(layout, [("s@foreign.example", ["t@foreign.example"], f"bulk{n}") for n in range(60)])
    client.force_login(admin_user)
    first = listed(client)
    assert "Page 1 of 2" in first and "65 messages in the queue" in first and ids["outgoing"] in first
    second = listed(client, "?page=2")
    assert "Page 2 of 2" in second and ids["outgoing"] not in second
    assert second.count("<code>") == 15
    assert "Page 2 of 2" in listed(client, "?page=99")  # past the end: the last page


# -- CLI ------------------------------------------------------------------------------


def test_cli_queue_list_show_release_delete(queue, capsys):
    layout, ids = queue
    call_command("mail", "queue", "list", "--json", "--held")
    answer = json.loads(capsys.readouterr().out)
    assert [m["id"] for m in answer["messages"]] == [ids["held"]]
    call_command("mail", "queue", "list", "--domain", "bob.example")
    out = capsys.readouterr().out
    assert ids["incoming"] in out and ids["stranger"] not in out
    call_command("mail", "queue", "show", ids["incoming"])
    assert "Subject: in" in capsys.readouterr().out
    call_command("mail", "queue", "delete", ids["stranger"])
    assert not (spool(layout) / f"{ids['stranger']}-H").exists()
    with pytest.raises(CommandError, match="not an Exim message id"):
        call_command("mail", "queue", "delete", "../x")
    with pytest.raises(CommandError, match="no message"):
        call_command("mail", "queue", "show", "1xXECy-00081o-0g")


# -- where is my mail? ---------------------------------------------------------------


def test_log_search_as_admin_and_as_customers(client, alice, bob, admin_user, queue):
    layout, ids = queue
    mailstack.exim_queue_run(layout)  # deliveries to a relay nobody answers: "==" lines
    client.force_login(admin_user)
    page = client.get("/mail-log/?q=foreign.example&days=1").content.decode()
    assert f"{ids['stranger']} &lt;= s@foreign.example" in page
    client.force_login(alice)
    page = client.get("/mail-log/?q=foreign.example").content.decode()
    assert f"{ids['outgoing']} &lt;= info@alice.example" in page
    assert f"{ids['outgoing']} == x@foreign.example" in page  # her own mail, every recipient
    assert f"{ids['incoming']} &lt;= z@foreign.example" in page
    assert "box@bob.example" not in page and ids["stranger"] not in page
    client.force_login(bob)
    page = client.get("/mail-log/?q=foreign.example").content.decode()
    assert f"{ids['incoming']} == box@bob.example" in page
    assert f"{ids['outgoing']} == y@bob.example" in page
    assert "x@foreign.example" not in page
    # alice's address only where she sent him mail, never as a recipient of the mail they share
    assert all(" &lt;= info@alice.example " in line for line in page.splitlines() if "info@alice.example" in line)


def test_log_searches_count_against_the_customers_check_limit(client, alice, admin_user, queue, settings):
    """The helper reads up to 512 MB of logs for one search: a customer gets
    the same per-user limit as the checks they start (services/user_checks)."""
    from mailadmin.models import Job, JobKind

    settings.MAILPANEL_USER_CHECKS_LIMIT = 2
    settings.MAILPANEL_USER_CHECKS_WINDOW = 600
    client.force_login(alice)
    for _i in range(2):
        page = client.get("/mail-log/?q=foreign.example").content.decode()
        assert "You started" not in page
    page = client.get("/mail-log/?q=foreign.example").content.decode()
    assert "You started 2 checks in the last 10 minutes" in page and '<pre class="log">' not in page
    assert Job.objects.filter(requested_by=alice, kind=JobKind.LOG_SEARCH).count() == 2
    # a DNS check now waits too: one limit for both
    from mailadmin.services import user_checks

    with pytest.raises(user_checks.TooManyChecks):
        user_checks._check_limit(alice)
    client.force_login(admin_user)  # admins are not limited
    for _i in range(3):
        assert "You started" not in client.get("/mail-log/?q=foreign.example").content.decode()


@pytest.mark.parametrize("query", ["?q=ab", "?q=%0Aalice", "?q=a%00bc", "?q=" + "x" * 400, "?q=alice&days=60"])
def test_a_hostile_log_search_is_a_form_error(client, admin_user, queue, query):
    client.force_login(admin_user)
    page = client.get(f"/mail-log/{query}").content.decode()
    assert "errorlist" in page and "<pre class=\"log\">" not in page


@pytest.mark.parametrize("term", ["ab", "alice\nfake", "a\x00bc", "x" * 321])
def test_cli_log_search_refuses_a_bad_term(queue, term):
    with pytest.raises(CommandError):
        call_command("mail", "log", "search", term)


def test_cli_says_what_the_helper_said_without_a_traceback(queue, settings):
    settings.MAILPANEL_HELPER = "false"
    for args in (("queue", "list"), ("log", "search", "alice"), ("held", "check")):
        with pytest.raises(CommandError, match="helper"):
            call_command("mail", *args)


def test_cli_log_search(queue, capsys):
    layout, ids = queue
    call_command("mail", "log", "search", ids["incoming"], "--json")
    lines = json.loads(capsys.readouterr().out)["lines"]
    assert lines and all(ids["incoming"] in entry["line"] for entry in lines)


LOG = """2026-11-28 09:00:00 1xXEaa-00000a-0A <= info@alice.example H=(c) [192.0.2.50] P=esmtpa A=dovecot_plain:info@alice.example S=300 id=m1@x
2026-11-28 09:00:01 1xXEaa-00000a-0A => x@foreign.example R=dnslookup T=remote_smtp H=mx.foreign.example [198.51.100.1] C="250 OK"
2026-11-28 09:00:01 1xXEaa-00000a-0A => y@bob.example <y@bob.example> R=local_mailbox T=dovecot_lmtp
2026-11-28 09:00:01 1xXEaa-00000a-0A Completed
2026-11-28 09:01:00 1xXEbb-00000b-0B <= z@foreign.example H=mx.foreign.example [198.51.100.1] P=esmtp S=300 id=m2@x
2026-11-28 09:01:00 1xXEbb-00000b-0B => info <info@alice.example> R=local_mailbox T=dovecot_lmtp
2026-11-28 09:01:00 1xXEbb-00000b-0B ** box@bob.example: over quota
2026-11-28 09:01:00 1xXEbb-00000b-0B Completed
2026-11-28 09:02:00 1xXEcc-00000c-0C <= s@foreign.example H=x [203.0.113.9] P=esmtp S=300 id=m3@x
2026-11-28 09:02:00 1xXEcc-00000c-0C == t@foreign.example R=dnslookup defer (-44): retry
2026-11-28 09:03:00 H=x [203.0.113.9] F=<s@foreign.example> rejected RCPT <nobody@alice.example>: Unknown user
2026-11-28 09:03:01 H=x [203.0.113.9] F=<s@foreign.example> rejected RCPT <nobody@bob.example>: Unknown user
2026-11-28 09:03:02 H=x [203.0.113.9] F=<info@alice.example> rejected RCPT <nobody@bob.example>: Unknown user"""

DOVECOT = """Nov 28 09:01:00 lmtp(info@alice.example)<1><a>: msgid=<m2@x>: saved mail to INBOX
Nov 28 09:01:00 lmtp(box@bob.example)<1><b>: msgid=<m2@x>: Error: quota exceeded
Nov 28 09:05:00 imap-login: Login: user=<info@alice.example>, rip=192.0.2.50"""


def _lines():
    return mail_log.parse([{"source": "exim", "line": t} for t in LOG.splitlines()]
                          + [{"source": "dovecot", "line": t} for t in DOVECOT.splitlines()])


def test_visible_lines_for_an_admin_are_all():
    assert len(mail_log.visible_lines(_lines(), None)) == len(_lines())


def test_visible_lines_for_a_customer():
    shown = [line.text for line in mail_log.visible_lines(_lines(), ["alice.example"])]
    text = "\n".join(shown)
    # her outgoing message: every line; the message to her: not bob's failure
    assert text.count("1xXEaa-00000a-0A") == 4
    assert "=> info <info@alice.example>" in text and "box@bob.example" not in text
    assert "1xXEbb-00000b-0B Completed" in text
    assert "1xXEcc" not in text and "t@foreign.example" not in text
    assert "rejected RCPT <nobody@alice.example>" in text  # mail to her, refused
    assert "F=<s@foreign.example> rejected RCPT <nobody@bob.example>" not in text
    assert "F=<info@alice.example> rejected RCPT <nobody@bob.example>" in text  # her own attempt
    assert "lmtp(info@alice.example)" in text and "lmtp(box@bob.example)" not in text
    assert "imap-login" not in text  # a Dovecot line without user(...) form


def test_visible_lines_for_the_other_customer():
    text = "\n".join(line.text for line in mail_log.visible_lines(_lines(), ["bob.example"]))
    assert "=> y@bob.example" in text and "x@foreign.example" not in text
    assert "<= info@alice.example" in text  # the mail he got: its reception
    assert "** box@bob.example" in text and "=> info <info@alice.example>" not in text
    assert "lmtp(box@bob.example)" in text and "lmtp(info@alice.example)" not in text
