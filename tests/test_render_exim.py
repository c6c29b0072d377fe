"""Exim (and the Dovecot it delivers through): pure render checks, then the
real daemons on 127.0.0.1 started from the rendered tree (tests/mailstack.py).

SPEC §1.7 send-only, §1.8 accounts, §2.4 DNSBL, §2.5 internal lookup, §3 relay.
"""

from __future__ import annotations

import base64
import dataclasses
import imaplib
import os
import pwd
import smtplib
import subprocess
from pathlib import Path

import pytest

from mailconf.render import render_all
from mailconf.render.exim import render_exim
from mailconf.snapshot import (
    Alias,
    Domain,
    Forward,
    Layout,
    Mailbox,
    Relay,
    ServerIdentity,
    Snapshot,
)
from tests.mailstack import (
    LOOPBACK,
    _exim,
    exim_queue_run,
    dkim_public_key_der,
    dkim_verify,
    dovecot_daemon,
    exim_bh,
    exim_bt,
    exim_bv,
    exim_daemon,
    exim_submit,
    main_log,
    make_message,
    wait_for_banner,
)

HOST = ServerIdentity(hostname="mx.test.example", ipv4="192.0.2.1")
OUTSIDE_IP = "192.0.2.99"


@pytest.fixture(autouse=True)
def _english():
    """These tests need no Django: shadow the main conftest's autouse fixture
    that wants pytest-django's ``settings`` (absent with -p no:django)."""


@pytest.fixture(scope="module")
def dkim_pem() -> str:
    from mailadmin.dkim import generate_private_pem

    return generate_private_pem()


def hosted(name="hosted.example", **kw) -> Domain:
    kw.setdefault("dkim_enabled", False)
    kw.setdefault("mailboxes", (Mailbox("alice", "{PLAIN}alice-pw"),))
    # the tests submit as root from the command line, like a web app whose
    # Unix user an admin mapped to the domain
    kw.setdefault("local_senders", ("root",))
    return Domain(name, **kw)


def snapshot(*domains, **kw) -> Snapshot:
    kw.setdefault("server", HOST)
    return Snapshot(domains=tuple(domains), **kw)


def smtp_dialogue(sender: str, *recipients: str) -> list[str]:
    return [
        "EHLO client.example",
        f"MAIL FROM:<{sender}>",
        *(f"RCPT TO:<{r}>" for r in recipients),
        "QUIT",
    ]


def replies(bh_output: str) -> list[str]:
    """The SMTP reply lines of an ``exim -bh`` run (not its ACL trace)."""
    return [line for line in bh_output.splitlines() if line[:3].isdigit()]


# -- pure ------------------------------------------------------------------------


def rich_snapshot(pem: str) -> Snapshot:
    return snapshot(
        hosted(
            "b-hosted.example",
            dkim_enabled=True,
            dkim_private_pem=pem,
            mailboxes=(Mailbox("zed", "{PLAIN}z", 5), Mailbox("alice", "{PLAIN}a", 0, True)),
            aliases=(Alias("sales", ("zed@b-hosted.example", "alice@b-hosted.example")),),
            forwards=(Forward("alice", ("out@else.example",)),),
            catchall="zed@b-hosted.example",
            relay=Relay("relay.example.net", 2525, "u", "p"),
        ),
        hosted("a-sendonly.example", hosted_elsewhere=True, dkim_enabled=True, dkim_private_pem=pem),
        hosted("c-suspended.example", suspended=True, dkim_enabled=True, dkim_private_pem=pem),
        global_relay=Relay("smtp.example.net"),
        dnsbl_zones=("zen.spamhaus.org", "dbl.spamhaus.org"),
    )


def test_render_is_byte_for_byte_deterministic_and_order_independent(dkim_pem):
    snap = rich_snapshot(dkim_pem)
    layout = Layout(root="/srv/x")
    first = render_all(snap, layout)
    shuffled = dataclasses.replace(
        snap,
        domains=tuple(
            dataclasses.replace(d, mailboxes=d.mailboxes[::-1], aliases=d.aliases[::-1])
            for d in snap.domains[::-1]
        ),
    )
    again = render_all(shuffled, layout)
    assert list(first) == sorted(first) == list(again)
    assert {p: s.content for p, s in first.items()} == {p: s.content for p, s in again.items()}
    assert first == again


def test_rendered_files_owners_modes_and_services(dkim_pem):
    files = render_exim(rich_snapshot(dkim_pem), Layout())
    assert files["/etc/exim4/exim4.conf"].service == "exim4"
    for path, spec in files.items():
        assert (spec.owner, spec.group, spec.mode) == ("root", "Debian-exim", 0o640), path
        if path != "/etc/exim4/exim4.conf":
            assert spec.service == "", path
    assert sorted(p for p in files if "/domains/" in p) == [
        "/etc/exim4/domains/a-sendonly.example/dkim.pem",
        "/etc/exim4/domains/a-sendonly.example/dkim_selector",
        "/etc/exim4/domains/a-sendonly.example/local_senders",
        "/etc/exim4/domains/b-hosted.example/aliases",
        "/etc/exim4/domains/b-hosted.example/dkim.pem",
        "/etc/exim4/domains/b-hosted.example/dkim_selector",
        "/etc/exim4/domains/b-hosted.example/forwards",
        "/etc/exim4/domains/b-hosted.example/local_senders",
        "/etc/exim4/domains/b-hosted.example/passwd",
        "/etc/exim4/domains/b-hosted.example/smtp_relay.conf",
    ]  # suspended: nothing; send-only: signing only
    assert files["/etc/exim4/send_only_domains"].content == b"a-sendonly.example:\n"


def test_account_files_formats(dkim_pem):
    files = render_exim(rich_snapshot(dkim_pem), Layout())
    d = "/etc/exim4/domains/b-hosted.example/"
    assert files[d + "passwd"].content == (
        b"alice:{PLAIN}a::::::\nzed:{PLAIN}z::::::userdb_quota_rule=*:storage=5M\n"
    )
    assert files[d + "aliases"].content == (
        b"sales: alice@b-hosted.example, zed@b-hosted.example\n*: zed@b-hosted.example\n"
    )
    # alice is forward-only: her own address is not among the targets
    assert files[d + "forwards"].content == b"alice: out@else.example\n"
    keep_copy = dataclasses.replace(
        rich_snapshot(dkim_pem).domains[0], mailboxes=(Mailbox("alice", "{PLAIN}a"),)
    )
    files = render_exim(snapshot(keep_copy), Layout())
    assert files[d + "forwards"].content == b"alice: alice@b-hosted.example, out@else.example\n"


def test_paths_inside_files_follow_the_layout_root(dkim_pem):
    conf = render_exim(rich_snapshot(dkim_pem), Layout(root="/srv/x"))["/etc/exim4/exim4.conf"]
    text = conf.content.decode()
    for line in text.splitlines():
        if line.startswith("add_environment"):  # PATH for pipes, not a file
            continue
        for word in line.replace("=", " ").replace(";", " ").split():
            if word.startswith("/") and not word.startswith("/srv/x/"):
                pytest.fail(f"path outside the layout root: {line}")


def test_relay_secrets_never_in_exim_conf_and_stored_base64():
    password = "S3cr€t:^$"
    snap = snapshot(
        hosted(relay=Relay("relay.example.net", 587, "me@hosted.example", password)),
        global_relay=Relay("smtp.example.net", 465, "globaluser", password, tls="ssl"),
    )
    files = render_exim(snap, Layout())
    conf = files["/etc/exim4/exim4.conf"].content
    assert b"S3cr" not in conf and b"globaluser" not in conf
    relay = files["/etc/exim4/domains/hosted.example/smtp_relay.conf"].content.decode()
    assert relay == (
        "auth: login\nhost: relay.example.net\npass: UzNjcuKCrHQ6XiQ=\n"
        "port: 587\ntls: starttls\nuser: bWVAaG9zdGVkLmV4YW1wbGU=\n"
    )


def test_dnsbl_file_lists_only_listing_codes():
    key = "a1b2c3d4e5f6g7h8i9j0k1l2m3"
    files = render_exim(
        snapshot(dnsbl_zones=(f"{key}.zen.dq.spamhaus.net", f"{key}.dbl.dq.spamhaus.net")),
        Layout(),
    )
    ip_line, domain_line = files["/etc/exim4/dnsbl.conf"].content.decode().splitlines()
    zone, _, codes = ip_line.partition("=")
    assert zone == f"{key}.zen.dq.spamhaus.net"
    codes = codes.split(",")
    for listed in ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.9", "127.0.0.10",
                   "127.0.0.11", "127.0.0.30"):
        assert listed in codes
    assert not [c for c in codes if not c.startswith("127.0.0.")]
    assert "127.0.0.1" not in codes
    dzone, _, dcodes = domain_line.partition("=")
    assert dzone == f"{key}.dbl.dq.spamhaus.net"
    assert "127.0.1.2" in dcodes.split(",") and "127.0.1.255" not in dcodes.split(",")
    conf = files["/etc/exim4/exim4.conf"].content.decode()
    assert key not in conf
    assert "$dnslist_domain" not in "".join(
        line for line in conf.splitlines() if "message =" in line and "log_message" not in line
    )


@pytest.mark.parametrize(
    "bad",
    [
        lambda s: dataclasses.replace(s, server=ServerIdentity(hostname="mx.example\nspool_directory = /tmp")),
        lambda s: dataclasses.replace(s, dnsbl_zones=("zen.spamhaus.org:127.0.0.1",)),
        lambda s: dataclasses.replace(s, dnsbl_zones=("${run{/bin/id}}",)),
        lambda s: dataclasses.replace(s, global_relay=Relay("relay.example.net\nhost: evil")),
        lambda s: dataclasses.replace(s, global_relay=Relay("relay.example.net", 0)),
        lambda s: dataclasses.replace(s, global_relay=Relay("relay.example.net", auth="cram")),
        lambda s: dataclasses.replace(s, global_relay=Relay("relay.example.net", tls="maybe")),
        lambda s: dataclasses.replace(s, global_relay=Relay("r.example.net", 587, "u", "a\nb")),
        lambda s: dataclasses.replace(s, global_relay=Relay("r.example.net", 587, "u", "a\x00b")),
        lambda s: snapshot(hosted("bad domain.example")),
        lambda s: snapshot(hosted("../etc")),
        lambda s: snapshot(hosted(mailboxes=(Mailbox("a:b", "{PLAIN}x"),))),
        lambda s: snapshot(hosted(mailboxes=(Mailbox("a/b", "{PLAIN}x"),))),
        lambda s: snapshot(hosted(mailboxes=(Mailbox("al", "{PLAIN}x:y"),))),
        lambda s: snapshot(hosted(mailboxes=(Mailbox("al", "{PLAIN}x\nbob:{PLAIN}y"),))),
        lambda s: snapshot(hosted(aliases=(Alias("a", ("|/bin/sh@x.example",)),))),
        lambda s: snapshot(hosted(aliases=(Alias("a", ("x@y.example, z@evil.example",)),))),
        lambda s: snapshot(hosted(catchall="/etc/passwd")),
        lambda s: snapshot(hosted(dkim_enabled=True, dkim_private_pem="not a key")),
    ],
)
def test_values_that_could_change_the_config_are_refused(bad):
    with pytest.raises(ValueError):
        render_all(bad(snapshot()), Layout())


@pytest.mark.parametrize(
    "selector",
    ["", "a.b", "-a", "a-", "Mail", "mail\n", "a\nb", "${run{/bin/id}}", "a:b", "a/b", "x" * 64,
     "sel ector", "s\u00e9l", "a_b", "mail\x00"],
)
def test_a_dkim_selector_that_is_not_one_dns_label_is_refused(dkim_pem, selector):
    domain = hosted(dkim_enabled=True, dkim_private_pem=dkim_pem, dkim_selector=selector)
    with pytest.raises(ValueError, match="not one DNS label"):
        render_exim(snapshot(domain), Layout())
    from mailconf import grammar

    with pytest.raises(ValueError):
        grammar.check("dkim_selector", f"{selector}\n".encode())


def test_the_dkim_selector_is_data_beside_the_key_never_in_exim_conf(dkim_pem):
    from mailconf import grammar

    files = render_exim(
        snapshot(hosted(dkim_enabled=True, dkim_private_pem=dkim_pem, dkim_selector="s2026a")), Layout()
    )
    content = files["/etc/exim4/domains/hosted.example/dkim_selector"].content
    assert content == b"s2026a\n"
    grammar.check("dkim_selector", content)
    assert b"s2026a" not in files["/etc/exim4/exim4.conf"].content
    # no key, no selector file
    files = render_exim(snapshot(hosted(dkim_selector="s2026a")), Layout())
    assert not [p for p in files if p.endswith("dkim_selector")]


def test_a_dqs_key_never_appears_in_a_validation_error():
    key = "a1b2c3d4e5f6g7h8i9j0k1l2m3"
    with pytest.raises(ValueError) as err:
        render_exim(snapshot(dnsbl_zones=(f"{key}.zen dq.spamhaus.net",)), Layout())
    assert key not in str(err.value)


# -- exim -bV / -bt / -bh ----------------------------------------------------------


@pytest.mark.parametrize("internal_lookup", [True, False])
def test_exim_accepts_the_rendered_config(mailstack_tree, dkim_pem, internal_lookup):
    snap = dataclasses.replace(rich_snapshot(dkim_pem), internal_lookup=internal_lookup)
    exim_bv(mailstack_tree(snap))
    exim_bv(mailstack_tree(snap, tls=True))  # certificate, implicit TLS port


def test_production_layout_config_is_what_debian_expects(dkim_pem):
    conf = render_exim(rich_snapshot(dkim_pem), Layout(tls_certificate="/etc/ssl/mail.pem"))[
        "/etc/exim4/exim4.conf"
    ].content.decode()
    assert "daemon_smtp_ports = 25 : 465 : 587\n" in conf
    assert "tls_on_connect_ports = 465\n" in conf
    assert "server_advertise_condition = ${if def:tls_in_cipher}" in conf
    assert "spool_directory = /var/spool/exim4\n" in conf
    assert "primary_hostname = mx.test.example\n" in conf
    assert "local_interfaces" not in conf  # all interfaces


def test_routing_works_before_the_first_domain_exists(mailstack_tree, smtp_sinks):
    """No domain yet = no /etc/exim4/domains folder: a dsearch of a missing
    folder would be a PANIC for every address."""
    sink = smtp_sinks()
    layout = mailstack_tree(snapshot(global_relay=Relay("127.0.0.1", sink.port, tls="none")))
    assert not os.path.exists(layout.path("/etc/exim4/domains"))
    out = exim_bt(layout, "x@foreign.example", "web@app.example")
    assert "router = smtp_relay_global" in out, out
    send_via(layout, "web@app.example")
    assert len(sink.wait_for_messages(1)) == 1


def dns_for_routing():
    return {
        ("hosted.example", "MX"): ["10 mx.hosted-elsewhere.example"],
        ("mx.hosted-elsewhere.example", "A"): ["192.0.2.25"],
        ("foreign.example", "MX"): ["10 mx.foreign.example"],
        ("mx.foreign.example", "A"): ["192.0.2.26"],
        ("sendonly.example", "MX"): ["10 mx.google.example"],
        ("mx.google.example", "A"): ["192.0.2.27"],
    }


def test_bt_hosted_address_is_local_and_foreign_is_remote(mailstack_tree, fake_dns):
    layout = mailstack_tree(snapshot(hosted()))
    dns = fake_dns(dns_for_routing())
    local = exim_bt(layout, "alice@hosted.example", dns=dns)
    assert "router = local_mailbox, transport = dovecot_lmtp" in local
    assert "router = local_mailbox" in exim_bt(layout, "ALICE@Hosted.Example", dns=dns)
    remote = exim_bt(layout, "bob@foreign.example", dns=dns)
    assert "router = dnslookup, transport = remote_smtp" in remote
    assert "192.0.2.26" in remote
    assert "Unrouteable address" in exim_bt(layout, "nobody@hosted.example", dns=dns)


def test_internal_lookup_off_routes_a_hosted_domain_by_dns(mailstack_tree, fake_dns):
    layout = mailstack_tree(snapshot(hosted(), internal_lookup=False))
    out = exim_bt(layout, "alice@hosted.example", dns=fake_dns(dns_for_routing()))
    assert "router = dnslookup, transport = remote_smtp" in out
    assert "192.0.2.25" in out
    assert "local_mailbox" not in out


def test_send_only_domain_is_not_local(mailstack_tree, fake_dns, dkim_pem):
    snap = snapshot(hosted("sendonly.example", hosted_elsewhere=True, dkim_enabled=True,
                           dkim_private_pem=dkim_pem))
    layout = mailstack_tree(snap)
    dns = fake_dns(dns_for_routing())
    out = exim_bt(layout, "alice@sendonly.example", dns=dns)
    assert "router = dnslookup, transport = remote_smtp" in out and "192.0.2.27" in out
    # and a stranger cannot make us relay for it
    bh = replies(exim_bh(layout, OUTSIDE_IP, smtp_dialogue("a@b.example", "x@sendonly.example"),
                         dns=dns))
    assert bh[-2].startswith("550") and "Relay not permitted" in bh[-2]


def test_rcpt_checks_for_outside_hosts(mailstack_tree):
    layout = mailstack_tree(snapshot(hosted()))
    out = replies(exim_bh(layout, OUTSIDE_IP, smtp_dialogue(
        "someone@else.example",
        "alice@hosted.example",
        "Alice@HOSTED.example",
        "nobody@hosted.example",
        "victim@foreign.example",
    )))
    rcpt = out[-5:-1]
    assert rcpt[0].startswith("250") and rcpt[1].startswith("250")
    assert rcpt[2].startswith("550") and "Unknown user" in rcpt[2]
    assert rcpt[3].startswith("550") and "Relay not permitted" in rcpt[3]
    # localhost (web apps) may send anywhere
    local = replies(exim_bh(layout, "127.0.0.1", smtp_dialogue("app@x.example", "v@foreign.example")))
    assert local[-2].startswith("250")


def test_catchall_accepts_unknown_local_parts(mailstack_tree):
    layout = mailstack_tree(snapshot(hosted(catchall="alice@hosted.example")))
    out = replies(exim_bh(layout, OUTSIDE_IP, smtp_dialogue("s@else.example", "anything@hosted.example")))
    assert out[-2].startswith("250")


def test_dnsbl_rejects_only_listing_codes_and_never_names_the_zone(mailstack_tree, fake_dns):
    key = "a1b2c3d4e5f6g7h8i9j0k1l2m3"
    zone = f"{key}.zen.dq.spamhaus.net"
    layout = mailstack_tree(snapshot(hosted(), dnsbl_zones=(zone, "dbl.spamhaus.org")))
    dns = fake_dns({
        (f"10.2.0.192.{zone}", "A"): ["127.0.0.2"],  # SBL
        (f"11.2.0.192.{zone}", "A"): ["127.0.0.11"],  # PBL
        (f"12.2.0.192.{zone}", "A"): ["127.255.255.254"],  # refused: not a listing
        (f"13.2.0.192.{zone}", "A"): ["127.255.255.252"],
        ("bad.example.dbl.spamhaus.org", "A"): ["127.0.1.2"],
        ("odd.example.dbl.spamhaus.org", "A"): ["127.0.1.255"],  # error code
    })

    log_lines = []

    def rcpt(ip, sender="s@ok.example"):
        out = exim_bh(layout, ip, smtp_dialogue(sender, "alice@hosted.example"), dns=dns)
        # -bh prints what Exim would log as "LOG: ..." lines
        log_lines.extend(line for line in out.splitlines() if line.startswith("LOG:"))
        return replies(out)[-2]

    for ip in ("192.0.2.10", "192.0.2.11"):
        answer = rcpt(ip)
        assert answer == f"550 Rejected because {ip} is in a black list"
    for ip in ("192.0.2.12", "192.0.2.13", "192.0.2.14"):
        assert rcpt(ip).startswith("250"), ip
    assert rcpt("192.0.2.14", "s@bad.example").startswith("550 Rejected because")
    assert rcpt("192.0.2.14", "s@odd.example").startswith("250")
    log = "\n".join(log_lines)
    assert "192.0.2.10 listed in <key>.zen.dq.spamhaus.net (127.0.0.2)" in log
    assert "bad.example listed in dbl.spamhaus.org (127.0.1.2)" in log
    assert key not in log
    # not applied to this host's own submissions
    assert replies(exim_bh(layout, "127.0.0.1", smtp_dialogue("s@ok.example", "alice@hosted.example"),
                           dns=dns))[-2].startswith("250")


# -- relay -------------------------------------------------------------------------


def send_via(layout, sender, rcpt="someone@foreign.example", **kw):
    proc = exim_submit(layout, sender, [rcpt], make_message(sender, rcpt, **kw))
    assert proc.returncode == 0, proc.stderr
    return proc


def delivery_lines(layout) -> list[str]:
    return [line for line in main_log(layout).splitlines() if " => " in line or " == " in line]


def test_global_relay_login_gets_exact_credentials_and_dkim_signs(mailstack_tree, smtp_sinks, dkim_pem):
    sink = smtp_sinks()
    snap = snapshot(
        hosted(dkim_enabled=True, dkim_private_pem=dkim_pem),
        global_relay=Relay("127.0.0.1", sink.port, "relay-user", "pa:ss^word$", tls="none"),
    )
    layout = mailstack_tree(snap)
    send_via(layout, "web@hosted.example")
    (msg,) = sink.wait_for_messages(1)
    assert msg.auth.mechanism == "LOGIN"
    assert (msg.auth.username, msg.auth.password) == (b"relay-user", b"pa:ss^word$")
    tags = dkim_verify(msg.data, dkim_public_key_der(dkim_pem))
    assert (tags["d"], tags["s"]) == ("hosted.example", "mail")
    assert "R=smtp_relay_global" in delivery_lines(layout)[0]
    try:
        import dkim  # dkimpy, a second opinion when installed
    except ImportError:
        return
    public = "v=DKIM1; k=rsa; p=" + base64.b64encode(dkim_public_key_der(dkim_pem)).decode()
    assert dkim.verify(msg.data, dnsfunc=lambda name, timeout=5: public.encode())


def test_dkim_uses_the_lower_cased_sender_domain(mailstack_tree, smtp_sinks, dkim_pem):
    sink = smtp_sinks()
    snap = snapshot(
        hosted(dkim_enabled=True, dkim_private_pem=dkim_pem),
        hosted("nokey.example"),
        hosted("sendonly.example", hosted_elsewhere=True, dkim_enabled=True,
               dkim_private_pem=dkim_pem),
        hosted("suspended.example", suspended=True, dkim_enabled=True, dkim_private_pem=dkim_pem),
        global_relay=Relay("127.0.0.1", sink.port, tls="none"),
    )
    layout = mailstack_tree(snap)
    send_via(layout, "Web@HOSTED.Example", subject="upper")
    send_via(layout, "web@nokey.example", subject="unsigned")
    send_via(layout, "web@stranger.example", subject="stranger")
    send_via(layout, "web@SendOnly.example", subject="sendonly")
    send_via(layout, "web@suspended.example", subject="suspended")
    msgs = {m.data.split(b"Subject: ")[1].split(b"\r\n")[0].split(b"\n")[0]: m for m in sink.wait_for_messages(5)}
    tags = dkim_verify(msgs[b"upper"].data, dkim_public_key_der(dkim_pem))
    assert tags["d"] == "hosted.example"
    assert dkim_verify(msgs[b"sendonly"].data, dkim_public_key_der(dkim_pem))["d"] == "sendonly.example"
    assert b"DKIM-Signature" not in msgs[b"suspended"].data
    assert b"DKIM-Signature" not in msgs[b"unsigned"].data
    assert b"DKIM-Signature" not in msgs[b"stranger"].data
    assert msgs[b"upper"].auth is None  # unauthenticated relay: no AUTH at all


def test_direct_delivery_is_dkim_signed(mailstack_tree, smtp_sinks, fake_dns, dkim_pem):
    sink = smtp_sinks(host="127.0.0.77", port=25)
    dns = fake_dns({("foreign.example", "MX"): ["10 mx.foreign.example"],
                    ("mx.foreign.example", "A"): ["127.0.0.77"]})
    layout = mailstack_tree(snapshot(hosted(dkim_enabled=True, dkim_private_pem=dkim_pem)))
    proc = exim_submit(layout, "web@hosted.example", ["bob@foreign.example"],
                       make_message("web@hosted.example", "bob@foreign.example"), dns=dns)
    assert proc.returncode == 0, proc.stderr
    (msg,) = sink.wait_for_messages(1)
    assert dkim_verify(msg.data, dkim_public_key_der(dkim_pem))["d"] == "hosted.example"
    assert "R=dnslookup T=remote_smtp" in delivery_lines(layout)[0]


def test_exim_signs_with_each_domains_own_selector(mailstack_tree, smtp_sinks, dkim_pem):
    import dkim  # dkimpy

    other_pem = __import__("mailadmin.dkim", fromlist=["x"]).generate_private_pem(1024)
    sink = smtp_sinks()
    snap = snapshot(
        hosted(dkim_enabled=True, dkim_private_pem=dkim_pem, dkim_selector="s2026-b"),
        hosted("default.example", dkim_enabled=True, dkim_private_pem=other_pem),
        global_relay=Relay("127.0.0.1", sink.port, tls="none"),
    )
    layout = mailstack_tree(snap)
    send_via(layout, "web@hosted.example", subject="rotated")
    send_via(layout, "web@default.example", subject="default")
    msgs = {m.data.split(b"Subject: ")[1].split(b"\r\n")[0].split(b"\n")[0]: m for m in sink.wait_for_messages(2)}
    published = {
        b"s2026-b._domainkey.hosted.example.": dkim_public_key_der(dkim_pem),
        b"mail._domainkey.default.example.": dkim_public_key_der(other_pem),
    }

    def dns(name, timeout=5):
        der = published.get(name)
        return b"v=DKIM1; k=rsa; p=" + base64.b64encode(der) if der else None

    assert dkim_verify(msgs[b"rotated"].data, dkim_public_key_der(dkim_pem))["s"] == "s2026-b"
    assert dkim_verify(msgs[b"default"].data, dkim_public_key_der(other_pem))["s"] == "mail"
    assert dkim.verify(msgs[b"rotated"].data, dnsfunc=dns)
    assert dkim.verify(msgs[b"default"].data, dnsfunc=dns)


def test_relay_plain_only_server(mailstack_tree, smtp_sinks):
    sink = smtp_sinks(mechanisms=("PLAIN",))
    layout = mailstack_tree(snapshot(
        hosted(), global_relay=Relay("127.0.0.1", sink.port, "ocid1.user", "p^l:ain", auth="plain", tls="none")
    ))
    send_via(layout, "web@hosted.example")
    (msg,) = sink.wait_for_messages(1)
    assert (msg.auth.mechanism, msg.auth.username, msg.auth.password) == ("PLAIN", b"ocid1.user", b"p^l:ain")


def test_relay_login_chosen_but_server_offers_only_plain_defers(mailstack_tree, smtp_sinks):
    sink = smtp_sinks(mechanisms=("PLAIN",))
    layout = mailstack_tree(snapshot(
        hosted(), global_relay=Relay("127.0.0.1", sink.port, "u", "p", auth="login", tls="none")
    ))
    send_via(layout, "web@hosted.example")
    assert "no common mechanisms" in delivery_lines(layout)[0]
    assert sink.messages == [] and sink.auth_attempts == []


def test_domain_relay_overrides_global_even_for_upper_case_sender(mailstack_tree, smtp_sinks):
    global_sink, domain_sink = smtp_sinks(), smtp_sinks()
    layout = mailstack_tree(snapshot(
        hosted(relay=Relay("127.0.0.1", domain_sink.port, "domain-user", "domain-pw", tls="none")),
        hosted("other.example"),
        global_relay=Relay("127.0.0.1", global_sink.port, "global-user", "global-pw", tls="none"),
    ))
    send_via(layout, "web@HOSTED.EXAMPLE")
    send_via(layout, "web@other.example")
    (mine,) = domain_sink.wait_for_messages(1)
    (theirs,) = global_sink.wait_for_messages(1)
    assert mine.auth.username == b"domain-user" and mine.sender == "web@HOSTED.EXAMPLE"
    assert theirs.auth.username == b"global-user" and theirs.sender == "web@other.example"
    assert "R=smtp_relay_domain" in delivery_lines(layout)[0]


@pytest.mark.parametrize("tls", ["starttls", "ssl"])
def test_relay_tls_verifies_the_certificate(mailstack_tree, smtp_sinks, tls):
    kind = {"starttls": True} if tls == "starttls" else {"implicit_tls": True}
    good, wrong = smtp_sinks(**kind), smtp_sinks(wrong_ca=True, **kind)
    layout = mailstack_tree(snapshot(
        hosted(relay=Relay("127.0.0.1", good.port, "u", "p", tls=tls)),
        hosted("other.example", relay=Relay("127.0.0.1", wrong.port, "u", "p", tls=tls)),
    ))
    send_via(layout, "web@hosted.example")
    send_via(layout, "web@other.example")
    (msg,) = good.wait_for_messages(1)
    assert msg.tls and msg.auth.password == b"p"
    lines = delivery_lines(layout)
    assert "CV=yes" in lines[0]
    assert " == " in lines[1] and "certificate verification failed" in lines[1]
    assert wrong.messages == [] and wrong.auth_attempts == []


PASSWORDS = [
    ":", "a:b:c", "::", "^", "^^", "a^b", "^start", "end^", "^^^x^",
    "$", "${", "${run{/bin/false}}", "$$", "a$b",
    '"', '"quoted"', "'", "it's", "\\", "\\\\", "back\\slash", "\\n",
    "#", "#comment", "a # b", " leading", "trailing ", "  both  ", " ",
    "\ttab", "tab\t", "in\tside", "Ünïcödé", "密码", "пароль🙂",
    "x" * 200, ";", "a;b", "<;>", "{}", "%s%n", "=", "a=b=", "+/=", "\x7f",
]


def corpus_relay(i: int, password: str, port: int) -> Relay:
    # Some user names end in ^ (just before a separator NUL in PLAIN).
    username = f"u{i}^" if i % 3 == 0 else f"user-{i}^:{i}"
    # PLAIN cannot carry a leading ^ (relay_credentials_problem): LOGIN then.
    auth = "plain" if i % 2 and not password.startswith("^") else "login"
    return Relay("127.0.0.1", port, username, password, auth=auth, tls="none")


def test_relay_passwords_authenticate_byte_exact(mailstack_tree, smtp_sinks):
    assert len(PASSWORDS) >= 30
    sink = smtp_sinks()
    relays = [corpus_relay(i, pw, sink.port) for i, pw in enumerate(PASSWORDS)]
    layout = mailstack_tree(snapshot(*(
        hosted(f"pw{i:02d}.example", relay=relay) for i, relay in enumerate(relays)
    )))
    # One local SMTP session (exim -bs, as a web app on this host whose Unix
    # user is mapped to the domains), then one queue run.
    dialogue = [b"EHLO app.example"]
    for i in range(len(relays)):
        sender = f"web@pw{i:02d}.example"
        dialogue += [f"MAIL FROM:<{sender}>".encode(), b"RCPT TO:<x@foreign.example>", b"DATA",
                     make_message(sender, "x@foreign.example").replace(b"\n", b"\r\n") + b".", b"RSET"]
    proc = _exim(layout, "-odq", "-bs", input=b"\r\n".join(dialogue + [b"QUIT"]) + b"\r\n")
    assert proc.returncode == 0, proc.stderr
    exim_queue_run(layout)
    msgs = sink.wait_for_messages(len(relays), timeout=30)
    seen = {m.sender: m.auth for m in msgs}
    for i, relay in enumerate(relays):
        auth = seen[f"web@pw{i:02d}.example"]
        assert auth is not None, i
        assert auth.mechanism == relay.auth.upper()
        assert auth.username == relay.username.encode()
        assert auth.password == relay.password.encode(), (i, relay.password)
    assert {r.auth for r in relays} == {"login", "plain"}


@pytest.mark.parametrize("username,password", [("^user", "pw"), ("user", "^pw"), ("u", "^")])
def test_plain_relay_cannot_start_a_credential_with_a_caret(username, password):
    from mailconf.render.exim import relay_credentials_problem

    relay = Relay("relay.example.net", 587, username, password, auth="plain")
    assert "start with ^" in relay_credentials_problem(username, password, "plain")
    assert relay_credentials_problem(username, password, "login") is None
    with pytest.raises(ValueError, match=r"start with \^"):
        render_exim(snapshot(global_relay=relay), Layout())


# -- local delivery and submission (Exim + Dovecot) ----------------------------------


def test_local_delivery_aliases_forwards_and_catchall(mailstack_tree, smtp_sinks):
    sink = smtp_sinks()
    snap = snapshot(
        hosted(
            mailboxes=(Mailbox("alice", "{PLAIN}a"), Mailbox("bob", "{PLAIN}b", forward_only=True),
                       Mailbox("carol", "{PLAIN}c")),
            aliases=(Alias("team", ("carol@hosted.example", "ext@foreign.example")),),
            forwards=(Forward("alice", ("alice-out@foreign.example",)),
                      Forward("bob", ("bob-out@foreign.example",))),
            catchall="carol@hosted.example",
        ),
        global_relay=Relay("127.0.0.1", sink.port, tls="none"),
    )
    layout = mailstack_tree(snap)
    with dovecot_daemon(layout) as dovecot, exim_daemon(layout) as exim:
        exim.send("s@else.example", ["alice@hosted.example"], make_message("s@else.example", "alice", "1"))
        exim.send("s@else.example", ["bob@hosted.example"], make_message("s@else.example", "bob", "2"))
        exim.send("s@else.example", ["team@hosted.example"], make_message("s@else.example", "team", "3"))
        exim.send("s@else.example", ["whoever@hosted.example"], make_message("s@else.example", "x", "4"))
        out = {r for m in sink.wait_for_messages(3) for r in m.recipients}
        assert out == {"alice-out@foreign.example", "bob-out@foreign.example", "ext@foreign.example"}
        assert len(dovecot.wait_for_messages("alice@hosted.example", 1)) == 1
        assert len(dovecot.wait_for_messages("carol@hosted.example", 2)) == 2
        exim.wait_for_log(r"Completed", 4)
        with imaplib.IMAP4(LOOPBACK, layout.imap_port) as imap:
            imap.login("Carol@Hosted.Example", "c")
            assert imap.select("INBOX") == ("OK", [b"2"])
    assert dovecot.messages("bob@hosted.example") == []  # forward-only: no local copy
    maildir = dovecot.maildir("alice@hosted.example")
    assert maildir == Path(layout.path("/var/mail/vhosts/hosted.example/alice/Maildir"))
    assert maildir.stat().st_uid == pwd.getpwnam("mail").pw_uid


def test_over_quota_defers_and_keeps_the_message(mailstack_tree):
    layout = mailstack_tree(snapshot(hosted(mailboxes=(Mailbox("alice", "{PLAIN}a", quota_mb=1),))))
    big = make_message("s@else.example", "alice@hosted.example", body=("x" * 76 + "\n") * 20000)
    with dovecot_daemon(layout) as dovecot, exim_daemon(layout) as exim:
        exim.send("s@else.example", ["alice@hosted.example"], big)
        log = exim.wait_for_log(r" == alice@hosted\.example")
        assert dovecot.messages("alice@hosted.example") == []
    assert "452" in log or "4.2.2" in log
    queue = subprocess.run(["exim", "-C", layout.path("/etc/exim4/exim4.conf"), "-bpc"],
                           capture_output=True, text=True)
    assert queue.stdout.strip() == "1"


def test_sieve_script_applies_when_enabled(mailstack_tree):
    layout = mailstack_tree(snapshot(hosted(), sieve_enabled=True))
    home = layout.path("/var/mail/vhosts/hosted.example/alice")
    os.makedirs(home + "/sieve")
    with open(home + "/sieve/junk.sieve", "w") as f:
        f.write('require "fileinto";\nif header :contains "subject" "SPAM" { fileinto "Junk"; stop; }\n')
    os.symlink("sieve/junk.sieve", home + "/.dovecot.sieve")
    mail = pwd.getpwnam("mail")
    for root, dirs, files in os.walk(home):
        for name in [root, *(os.path.join(root, n) for n in files)]:
            os.lchown(name, mail.pw_uid, mail.pw_gid)
    os.lchown(home + "/.dovecot.sieve", mail.pw_uid, mail.pw_gid)
    with dovecot_daemon(layout) as dovecot, exim_daemon(layout) as exim:
        exim.send("s@else.example", ["alice@hosted.example"], make_message("s@else.example", "alice", "buy SPAM now"))
        exim.send("s@else.example", ["alice@hosted.example"], make_message("s@else.example", "alice", "hello"))
        assert len(dovecot.wait_for_messages("alice@hosted.example", 1, folder="Junk")) == 1
        assert len(dovecot.wait_for_messages("alice@hosted.example", 1)) == 1


def test_submission_authenticates_through_dovecot_and_stays_in_own_domain(mailstack_tree, smtp_sinks):
    sink = smtp_sinks()
    layout = mailstack_tree(snapshot(
        hosted(mailboxes=(Mailbox("alice", "{PLAIN}alice-pw"),)),
        hosted("other.example", mailboxes=(Mailbox("dave", "{PLAIN}d"),)),
        global_relay=Relay("127.0.0.1", sink.port, tls="none"),
    ))
    with dovecot_daemon(layout) as dovecot, exim_daemon(layout) as exim:
        with exim.smtp() as smtp:
            smtp.login("Alice@Hosted.Example", "alice-pw")
            smtp.sendmail("alice@hosted.example", ["friend@foreign.example", "dave@other.example"],
                          make_message("Alice <alice@HOSTED.example>", "friend@foreign.example"))
            with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
                smtp.sendmail("alice@other.example", ["friend@foreign.example"],
                              make_message("alice@other.example", "friend@foreign.example"))
            assert b"own domain" in refused.value.recipients["friend@foreign.example"][1]
            with pytest.raises(smtplib.SMTPDataError) as data_refused:
                smtp.sendmail("alice@hosted.example", ["friend@foreign.example"],
                              make_message("ceo@other.example", "friend@foreign.example"))
            assert b"From: header" in data_refused.value.smtp_error
        (msg,) = sink.wait_for_messages(1)
        assert msg.recipients == ("friend@foreign.example",)
        assert len(dovecot.wait_for_messages("dave@other.example")) == 1
        with exim.smtp() as smtp:
            smtp.ehlo()
            code, _ = smtp.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0alice@hosted.example\0wrong").decode())
            assert code == 535
        # $auth1 of Exim's dovecot driver is the name Dovecot normalised
        exim.wait_for_log("P=esmtpa A=dovecot_plain:alice@hosted.example")


def test_submission_auth_only_over_tls_once_there_is_a_certificate(mailstack_tree):
    layout = mailstack_tree(snapshot(hosted(mailboxes=(Mailbox("alice", "{PLAIN}alice-pw"),))),
                            tls=True)
    with dovecot_daemon(layout), exim_daemon(layout) as exim:
        with exim.smtp() as smtp:
            smtp.ehlo()
            assert smtp.has_extn("starttls") and not smtp.has_extn("auth")
            smtp.starttls(context=exim.client_tls_context())
            smtp.ehlo()
            assert "PLAIN" in smtp.esmtp_features["auth"]
            smtp.login("alice@hosted.example", "alice-pw")
        with exim.smtps() as smtps:  # implicit TLS, like 465
            smtps.login("alice@hosted.example", "alice-pw")
            smtps.sendmail("alice@hosted.example", ["alice@hosted.example"],
                           make_message("alice@hosted.example", "alice@hosted.example"))
        exim.wait_for_log(r"=> alice@hosted\.example R=local_mailbox|=> alice <alice@hosted\.example>")


def test_dovecot_runs_rootless_for_development(mailstack_tree):
    layout = mailstack_tree(snapshot(hosted(), sieve_enabled=True), dovecot_run_as="nobody:nogroup")
    subprocess.run(["chown", "-R", "nobody:nogroup", layout.root], check=True)
    with dovecot_daemon(layout) as dovecot:
        assert b'"IMPLEMENTATION"' in wait_for_banner(layout.sieve_port, b'"IMPLEMENTATION"')
        with smtplib.LMTP(layout.path(layout.dovecot_lmtp_socket)) as lmtp:
            lmtp.sendmail("s@else.example", ["alice@hosted.example"],
                          make_message("s@else.example", "alice@hosted.example"))
        with imaplib.IMAP4(LOOPBACK, layout.imap_port) as imap:
            imap.login("alice@hosted.example", "alice-pw")
            assert imap.select("INBOX") == ("OK", [b"1"])
    assert dovecot.maildir("alice@hosted.example").stat().st_uid == pwd.getpwnam("nobody").pw_uid


# -- sending identity: whose relay and DKIM key a message gets ------------------------


def smtp_session(layout, *extra_args, sender, rcpt, subject):
    """One message through ``exim -bs`` (queued, then a queue run)."""
    message = make_message(sender, rcpt, subject=subject).replace(b"\n", b"\r\n") + b"."
    lines = [b"EHLO client.example", f"MAIL FROM:<{sender}>".encode(), f"RCPT TO:<{rcpt}>".encode(),
             b"DATA", message, b"QUIT"]
    proc = _exim(layout, "-odq", *extra_args, "-bs", input=b"\r\n".join(lines) + b"\r\n")
    assert b"250 OK id=" in proc.stdout, proc.stdout + proc.stderr
    exim_queue_run(layout)


@pytest.fixture
def identity_tree(mailstack_tree, smtp_sinks, dkim_pem):
    """hosted.example with its own relay and key, mapped to the Unix user
    www-data only; a global relay to catch everything else."""
    own, server_wide = smtp_sinks(), smtp_sinks()
    snap = snapshot(
        hosted(dkim_enabled=True, dkim_private_pem=dkim_pem, local_senders=("www-data",),
               relay=Relay("127.0.0.1", own.port, tls="none"),
               aliases=(Alias("fwd", ("out@foreign.example",)),)),
        global_relay=Relay("127.0.0.1", server_wide.port, tls="none"),
    )
    return mailstack_tree(snap), own, server_wide


def test_a_local_user_not_mapped_to_the_domain_gets_neither_its_relay_nor_its_key(identity_tree):
    layout, own, server_wide = identity_tree
    # root runs this like any other tenant's PHP app: not www-data
    assert "router = smtp_relay_global" in exim_bt(layout, "x@foreign.example", "web@hosted.example")
    send_via(layout, "web@hosted.example")
    (msg,) = server_wide.wait_for_messages(1)
    assert b"DKIM-Signature" not in msg.data
    assert own.messages == []


def test_a_local_user_mapped_to_the_domain_gets_its_relay_and_key(identity_tree, dkim_pem):
    layout, own, server_wide = identity_tree
    # -oMt: root, a trusted caller, speaks for www-data (what exim sets for www-data itself)
    smtp_session(layout, "-oMt", "www-data", sender="web@hosted.example", rcpt="x@foreign.example",
                 subject="mapped")
    (msg,) = own.wait_for_messages(1)
    assert dkim_verify(msg.data, dkim_public_key_der(dkim_pem))["d"] == "hosted.example"
    assert server_wide.messages == []


def test_smtp_auth_by_a_mailbox_of_the_domain_gets_its_relay_and_key(identity_tree, dkim_pem):
    layout, own, server_wide = identity_tree
    smtp_session(layout, "-oMa", "192.0.2.50", "-oMaa", "dovecot_plain", "-oMai", "alice@hosted.example",
                 sender="alice@hosted.example", rcpt="x@foreign.example", subject="authenticated")
    (msg,) = own.wait_for_messages(1)
    assert dkim_verify(msg.data, dkim_public_key_der(dkim_pem))["d"] == "hosted.example"


def test_mail_from_outside_forwarded_on_keeps_the_domains_relay_and_key_out(identity_tree):
    layout, own, server_wide = identity_tree
    # anyone on the Internet may claim a hosted sender; an alias forwards it out
    smtp_session(layout, "-oMa", "192.0.2.50", sender="ceo@hosted.example", rcpt="fwd@hosted.example",
                 subject="spoofed")
    (msg,) = server_wide.wait_for_messages(1)
    assert b"DKIM-Signature" not in msg.data
    assert own.messages == []
