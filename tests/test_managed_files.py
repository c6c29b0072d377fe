"""One managed-file table (mailconf.managed.MANAGED_FILES): what the
renderers say about each file they write agrees with it. The helper writes
owner, group and mode from the table, never from a request; `mail config
render --out` writes the renderers' modes. Were they to disagree, a file
would change its mode between a render and an apply."""

import dataclasses
import re

from mailadmin import dkim
from mailconf import managed
from mailconf import snapshot as snap
from mailconf.render import render_all
from mailconf.tls import SniName

KEY = dkim.generate_private_pem(1024)
LIMITS = snap.SendLimits(per_hour=50, per_day=200, recipients=20)


def everything() -> snap.Snapshot:
    """A snapshot that makes every renderer write every file it can write."""
    relay = snap.Relay(host="smtp.relay.example", username="u", password="p")
    domain = snap.Domain(
        name="example.org",
        dkim_private_pem=KEY,
        dkim_selector="s2026",
        relay=relay,
        mailboxes=(snap.Mailbox("info", "{PLAIN}x", send_limits=LIMITS),),
        aliases=(snap.Alias("sales", ("info@example.org",)),),
        forwards=(snap.Forward("info", ("out@elsewhere.example",)),),
        role_address="owner@elsewhere.example",
        local_senders=("www-data",),
        send_limits=LIMITS,
        held_senders=("info",),
        moved_to="192.0.2.7",  # moving to another node: its forward
    )
    send_only = snap.Domain(name="send-only.example", dkim_private_pem=KEY, hosted_elsewhere=True, subaddressing=False)
    return snap.Snapshot(
        server=snap.ServerIdentity(hostname="mail.example.net", ipv4="192.0.2.1"),
        domains=(domain, send_only),
        global_relay=relay,
        dnsbl_zones=("zen.spamhaus.org",),
        sieve_enabled=True,
        snappymail=snap.SnappyMail(installed=True, admin_login="admin", admin_password_hash="$2y$10$" + "a" * 53, admin_key="k" * 16),
        send_limits=LIMITS,
    )


def rule_of(path: str):
    """The table's row for a production path; {domain} is a domain name (a
    dotted name: SnappyMail's default.json is not the domain "default")."""
    domain = r"[a-z0-9-]+(?:\.[a-z0-9-]+)+"
    rows = [
        row for row in managed.MANAGED_FILES
        if re.fullmatch(domain.join(re.escape(part) for part in row[0].split("{domain}")), path)
    ]
    assert len(rows) == 1, (path, rows)
    return rows[0]


def test_every_rendered_file_has_the_owner_group_mode_and_service_of_its_table_row():
    files = render_all(everything(), snap.Layout())
    assert len(files) >= 20
    for path, spec in files.items():
        _pattern, owner, group, mode, _kind, _check, service = rule_of(path)
        assert (spec.owner, spec.group, spec.mode) == (owner, group, mode), path
        assert (spec.service or None) == service, path


def test_every_row_of_the_table_is_a_file_some_renderer_writes():
    """No row the renderers forgot (the SnappyMail credentials are written once
    by the install, the webmail sites only where the installer enabled them)."""
    layout = snap.Layout()
    if "webmail_sites" in {f.name for f in dataclasses.fields(snap.Layout)}:
        layout = dataclasses.replace(layout, webmail_sites=True)
    # the per-name HTTPS sites only for a web name with its own certificate (SNI index)
    layout = dataclasses.replace(layout, tls_certificate="/etc/mailpanel/tls/fullchain.pem")
    sni = (SniName("webmail.example.org", "example.org"),)
    rendered = {rule_of(path)[0] for path in render_all(everything(), layout, sni)}
    # Roundcube's config only while it is the chosen webmail
    roundcube = dataclasses.replace(everything(), webmail="roundcube")
    rendered |= {rule_of(path)[0] for path in render_all(roundcube, layout, sni)}
    written_elsewhere = {"/root/.snappymail"}
    assert {row[0] for row in managed.MANAGED_FILES} - rendered == written_elsewhere


def test_a_file_whose_mode_disagreed_with_the_table_would_be_caught():
    """The check above can fail: a renderer's FileSpec with another mode."""
    path, spec = next(iter(render_all(everything(), snap.Layout()).items()))
    wrong = dataclasses.replace(spec, mode=0o666)
    assert (wrong.owner, wrong.group, wrong.mode) != rule_of(path)[1:4]
