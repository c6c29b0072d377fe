"""Send limits and holds in Exim (mailconf): the data files' grammars (hostile
lines first), what the renderer writes, and real Exim: the limit that applies
(mailbox, else domain, else server), recipients per message, hold instead of
bounce, suspension, and values Exim never expands. No Django."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from mailconf import grammar
from mailconf.render.exim import render_exim
from mailconf.snapshot import Domain, Layout, Mailbox, Relay, SendLimits, ServerIdentity, Snapshot
from tests.mailstack import _exim, main_log, make_message


@pytest.fixture(autouse=True)
def _english():
    """No Django here (see tests/test_render_exim.py)."""


# -- grammars ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        b"*: hour=${run{/bin/touch /tmp/x}}\n",
        b"*: hour=5/leaky\n",
        b"*: hour=5 / 1s / per_cmd\n",
        b"*: hour=-1\n",
        b"*: hour=05\n",
        b"*: hour=1000000000\n",
        b"*: hour=5 hour=6\n",
        b"*: day=5 hour=6\n",
        b"*: hour=5  day=6\n",
        b"*: hour=5 \n",
        b"*: minute=5\n",
        b"*: \n",
        b"*:\n",
        b"*: hour=5",
        b"*: hour=5\r\n",
        b"*: hour=5\n*: hour=6\n",
        b"alice: hour=5\nalice: day=5\n",
        b"Alice: hour=5\n",
        b"al ice: hour=5\n",
        b"al:ice: hour=5\n",
        b"/etc/passwd: hour=5\n",
        b"a|b: hour=5\n",
        b"#x: hour=5\n",
        b"*: hour=\xd9\xa5\n",  # an Arabic-Indic five
        b"*: hour=5\x00\n",
    ],
    ids=repr,
)
def test_a_send_limits_line_outside_the_grammar_is_refused(content):
    with pytest.raises(ValueError):
        grammar.check("send_limits", content)


@pytest.mark.parametrize(
    "content",
    [b"", b"*: hour=5\n", b"*: hour=5 day=100 rcpt=20\n", b"*: rcpt=0\nalice: day=0\nbob.smith: hour=1\n"],
    ids=repr,
)
def test_send_limits_the_renderer_writes_pass_the_grammar(content):
    grammar.check("send_limits", content)


@pytest.mark.parametrize(
    "content",
    [b"alice\n", b"alice: \n", b"alice:x\n", b"Alice:\n", b"/x:\n", b"alice:\nalice:\n", b"a b:\n",
     b":\n", b"alice:\r\n", b"*x:\n" + b"\xff"],
    ids=repr,
)
def test_a_held_senders_line_outside_the_grammar_is_refused(content):
    with pytest.raises(ValueError):
        grammar.check("held_senders", content)


def test_held_senders_takes_local_parts_and_the_domains_star():
    grammar.check("held_senders", b"*:\nalice:\nbob.smith:\n")


# -- rendering --------------------------------------------------------------------


def snapshot(**kw) -> Snapshot:
    domain = Domain(
        "hosted.example",
        dkim_enabled=False,
        local_senders=("www-data",),
        mailboxes=(
            Mailbox("alice", "{PLAIN}alice-pw"),
            Mailbox("bob", "{PLAIN}bob-pw", send_limits=SendLimits(per_hour=0)),
            Mailbox("carol", "{PLAIN}carol-pw", send_limits=SendLimits(per_hour=1, recipients=1)),
        ),
        send_limits=kw.pop("domain_limits", SendLimits(per_hour=3, recipients=2)),
        held_senders=kw.pop("held", ()),
    )
    kw.setdefault("send_limits", SendLimits(per_hour=2, per_day=50, recipients=10))
    return Snapshot(server=ServerIdentity(hostname="mx.test.example"), domains=(domain,), **kw)


def test_limits_are_written_as_data_per_scope_and_never_into_exim_conf():
    files = render_exim(snapshot(held=("*", "carol")), Layout())
    assert files["/etc/exim4/send_limits"].content == b"*: hour=2 day=50 rcpt=10\n"
    assert files["/etc/exim4/domains/hosted.example/send_limits"].content == (
        b"*: hour=3 rcpt=2\nbob: hour=0\ncarol: hour=1 rcpt=1\n"
    )
    assert files["/etc/exim4/domains/hosted.example/held_senders"].content == b"*:\ncarol:\n"
    for path in ("/etc/exim4/send_limits", "/etc/exim4/domains/hosted.example/send_limits"):
        grammar.check("send_limits", files[path].content)
    grammar.check("held_senders", files["/etc/exim4/domains/hosted.example/held_senders"].content)
    conf = files["/etc/exim4/exim4.conf"].content
    assert b"hour=" not in conf and b"carol" not in conf


def test_no_limits_anywhere_is_an_empty_server_file_and_no_domain_files():
    files = render_exim(snapshot(domain_limits=SendLimits(), send_limits=SendLimits()), Layout())
    assert files["/etc/exim4/send_limits"].content == b""
    assert "/etc/exim4/domains/hosted.example/held_senders" not in files


@pytest.mark.parametrize("bad", [-1, 10**9, True, 2.5, "5"])
def test_a_limit_that_is_not_a_whole_number_is_refused(bad):
    with pytest.raises(ValueError):
        render_exim(snapshot(send_limits=SendLimits(per_hour=bad)), Layout())


def test_a_mailbox_named_star_cannot_take_the_domains_key():
    snap = snapshot()
    star = Domain("hosted.example", mailboxes=(Mailbox("*", "{PLAIN}x", send_limits=SendLimits(per_hour=1)),))
    with pytest.raises(ValueError, match="'\\*'"):
        render_exim(Snapshot(domains=(star,)), Layout())
    assert snap  # the normal snapshot renders (above)


# -- real Exim ------------------------------------------------------------------------


def session(layout, sender, recipients, count=1, *args, subject="m"):
    """``count`` messages in one ``exim -bs`` session (queued); Exim's replies."""
    lines = [b"EHLO client.example"]
    for n in range(count):
        body = make_message(sender, recipients[0], subject=f"{subject}{n}").replace(b"\n", b"\r\n") + b"."
        lines += [f"MAIL FROM:<{sender}>".encode(), *(f"RCPT TO:<{r}>".encode() for r in recipients),
                  b"DATA", body]
    lines.append(b"QUIT")
    return _exim(layout, "-odq", *args, "-bs", input=b"\r\n".join(lines) + b"\r\n").stdout.decode()


def as_mailbox(address):
    """What Exim records for an SMTP AUTH login from a remote client."""
    return ("-oMa", "192.0.2.50", "-oMaa", "dovecot_plain", "-oMai", address)


def held_lines(layout):
    return [line for line in main_log(layout).splitlines() if " held (" in line]


@pytest.fixture
def limits_tree(mailstack_tree, smtp_sinks):
    sink = smtp_sinks()
    return mailstack_tree(snapshot(global_relay=Relay("127.0.0.1", sink.port, tls="none")))


def test_the_mailbox_limit_wins_then_the_domains_then_the_servers(limits_tree):
    layout = limits_tree
    session(layout, "alice@hosted.example", ["x@foreign.example"], 5, *as_mailbox("alice@hosted.example"))
    session(layout, "bob@hosted.example", ["x@foreign.example"], 5, *as_mailbox("bob@hosted.example"))
    session(layout, "carol@hosted.example", ["x@foreign.example"], 3, *as_mailbox("carol@hosted.example"))
    session(layout, "web@hosted.example", ["x@foreign.example"], 5, "-oMt", "www-data")
    held = held_lines(layout)
    # alice: the domain's 3 an hour; bob: 0 = no limit; carol: her own 1; www-data: the domain's 3
    assert sum("for alice@hosted.example" in line for line in held) == 2
    assert not any("bob@" in line for line in held)
    assert sum("for carol@hosted.example" in line for line in held) == 2
    assert sum("for *@hosted.example" in line for line in held) == 2
    assert all("held (hour)" in line for line in held)


def test_held_mail_is_frozen_not_bounced(limits_tree):
    layout = limits_tree
    out = session(layout, "alice@hosted.example", ["x@foreign.example"], 4, *as_mailbox("alice@hosted.example"))
    assert out.count("250 OK id=") == 4  # every message accepted
    log = main_log(layout)
    assert log.count("frozen by ACL") == 1
    assert "**" not in log and "rejected" not in log


def test_recipients_past_the_per_message_limit_get_452(limits_tree):
    layout = limits_tree
    out = session(layout, "alice@hosted.example", ["a@foreign.example", "b@foreign.example", "c@foreign.example"],
                  1, *as_mailbox("alice@hosted.example"))
    assert out.count("250 Accepted") == 2
    assert "452 4.5.3 Too many recipients for one message (at most 2)" in out
    out = session(layout, "carol@hosted.example", ["a@foreign.example", "b@foreign.example"],
                  1, *as_mailbox("carol@hosted.example"))
    assert out.count("250 Accepted") == 1


def test_a_sendmail_submission_by_a_mapped_user_is_limited_and_held(limits_tree):
    layout = limits_tree
    results = [
        _exim(layout, "-odq", "-oMt", "www-data", "-f", "web@hosted.example", "-t",
              input=make_message("web@hosted.example", "x@foreign.example", subject=f"php{n}"))
        for n in range(4)
    ]
    assert [r.returncode for r in results] == [0, 0, 0, 0]
    assert sum("for *@hosted.example" in line for line in held_lines(layout)) == 1
    too_many = _exim(layout, "-odq", "-oep", "-oMt", "www-data", "-f", "web@hosted.example", "--",
                     "a@foreign.example", "b@foreign.example", "c@foreign.example",
                     input=make_message("web@hosted.example", "a@foreign.example"))
    assert too_many.returncode != 0
    assert b"Too many recipients" in too_many.stderr + too_many.stdout


def test_unmapped_and_unauthenticated_senders_have_no_identity_and_no_limit(limits_tree):
    layout = limits_tree
    session(layout, "web@hosted.example", ["x@foreign.example"], 5)  # root: not mapped
    session(layout, "someone@foreign.example", ["alice@hosted.example"], 5, "-oMa", "192.0.2.9")
    assert held_lines(layout) == []


def test_a_suspended_sender_is_held_from_its_first_message(mailstack_tree):
    layout = mailstack_tree(snapshot(held=("alice",), send_limits=SendLimits(), domain_limits=SendLimits()))
    session(layout, "alice@hosted.example", ["x@foreign.example"], 2, *as_mailbox("alice@hosted.example"))
    session(layout, "bob@hosted.example", ["x@foreign.example"], 2, *as_mailbox("bob@hosted.example"))
    held = held_lines(layout)
    assert len(held) == 2 and all("held (suspended) for alice@hosted.example" in line for line in held)


def test_exim_never_expands_what_a_limits_file_holds(mailstack_tree):
    """Even past the helper's grammar (root wrote it by hand, say), a value in
    a limits file is looked up, never expanded, and used only as a number."""
    marker = Path(f"/tmp/mailpanel-limit-{uuid.uuid4().hex}")
    layout = mailstack_tree(snapshot(send_limits=SendLimits(), domain_limits=SendLimits()))
    limits = Path(layout.path("/etc/exim4/domains/hosted.example/send_limits"))
    limits.write_text(f"*: hour=${{run{{/usr/bin/touch {marker}}}}} rcpt=${{run{{/usr/bin/touch {marker}}}}}\n"
                      "alice: hour=1/1s/per_cmd/strict/x\n")
    limits.chmod(0o644)
    out = session(layout, "alice@hosted.example", ["a@foreign.example", "b@foreign.example"], 3,
                  *as_mailbox("alice@hosted.example"))
    out += session(layout, "web@hosted.example", ["a@foreign.example", "b@foreign.example"], 3, "-oMt", "www-data")
    assert not marker.exists()
    assert out.count("250 OK id=") == 6 and "452" not in out
    assert held_lines(layout) == []
