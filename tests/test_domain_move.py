"""Moving a domain between nodes with its mail (services/domain_move.py): the
phases and what each node renders in each, the forward route on the old node
(data only: the moved_to file, its grammar, real exim -bV and -bt), the DNS
changes the move lists, refusals and retries. The whole move with real
Dovecot and Exim on two nodes: tests/test_domain_move_mailstack.py."""

import json
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from mailadmin.models import DEFAULT_NODE_NAME, DomainMove, Job, MailDomain, MailNode, MovePhase, NodeStatus, ServerSettings
from mailadmin.services import accounts, apply, domain_move, domains, jobs, nodes
from mailconf import grammar
from mailconf.render.exim import render_exim_data
from mailconf.snapshot import Domain, Layout, Mailbox, Snapshot
from tests import mailstack

HELPER = Path(__file__).resolve().parent.parent / "deploy" / "mailpanel_helper.py"
MOVED_TO = "/etc/exim4/domains/example.org/moved_to"


# -- the forward route: data rendered from the snapshot, checked, run by Exim -------


@pytest.mark.parametrize("host, port, expected", [
    ("192.0.2.7", 25, b"host: 192.0.2.7\nport: 25\n"),
    ("2001:DB8::7", 2525, b"host: 2001:db8::7\nport: 2525\n"),
    ("mx-b.example.net", 25, b"host: mx-b.example.net\nport: 25\n"),
])
def test_a_moving_domain_gets_its_forward_file_on_the_old_node(host, port, expected):
    domain = Domain("example.org", moved_to=host, moved_to_port=port)
    files = render_exim_data(Snapshot(domains=(domain,)), Layout())
    assert files[MOVED_TO].content == expected
    grammar.check("moved_to", expected)
    assert MOVED_TO not in render_exim_data(Snapshot(domains=(Domain("example.org"),)), Layout())


@pytest.mark.parametrize("host, port", [
    ("192.0.2.7\nport: 26", 25),
    ("a.example\rb", 25),
    ("${run{/bin/true}}", 25),
    ("host.example byname", 25),
    ("fe80::1%eth0", 25),
    ("192.0.2.7::26", 25),
    ("192.0.2.7", 0),
    ("192.0.2.7", 70000),
    ("192.0.2.7", True),
])
def test_hostile_forward_targets_are_refused_by_the_renderer(host, port):
    with pytest.raises(ValueError):
        render_exim_data(Snapshot(domains=(Domain("example.org", moved_to=host, moved_to_port=port),)), Layout())


@pytest.mark.parametrize("content", [
    b"host: 192.0.2.7\n",
    b"port: 25\nhost: 192.0.2.7\n",
    b"host: 192.0.2.7\nport: 25\nhost: 198.51.100.1\n",
    b"host: ${run{/bin/true}}\nport: 25\n",
    b"host: 192.0.2.7 : 198.51.100.1\nport: 25\n",
    b"host: 192.0.2.7\nport: 25 hosts_override\n",
    b"host: 192.0.2.7\nport: 99999\n",
    b"host: 192.0.2.7\r\nport: 25\n",
    b"host: 192.0.2.7\nport: 25",
    b"host:192.0.2.7\nport: 25\n",
])
def test_hostile_forward_files_are_refused_by_the_grammar(content):
    with pytest.raises(ValueError):
        grammar.check("moved_to", content)


def test_exim_takes_the_forward_route_for_a_moving_domain_only(mailstack_tree):
    """Real exim -bV on the rendered config, and -bt: every address of the
    moving domain (mailbox, alias, unknown) goes to the new node; another
    domain is still delivered here."""
    box = Mailbox("alice", mailstack.password_hash("x"))
    snapshot = Snapshot(domains=(
        Domain("example.org", dkim_enabled=False, mailboxes=(box,), moved_to="2001:db8::7", moved_to_port=2525),
        Domain("stays.example", dkim_enabled=False, mailboxes=(box,)),
    ))
    layout = mailstack_tree(snapshot)
    mailstack.exim_bv(layout)
    for address in ("alice@example.org", "unknown@example.org"):
        routing = mailstack.exim_bt(layout, address, "x@sender.test")
        assert "router = moved_domain" in routing and "2001:db8::7" in routing, routing
    assert "router = local_mailbox" in mailstack.exim_bt(layout, "alice@stays.example", "x@sender.test")


# -- the phases ----------------------------------------------------------------------


@pytest.fixture
def moving(db, alice, settings, monkeypatch):
    """example.org with a mailbox on node main; node b at 198.51.100.2. The
    tasks the phases queue are recorded as (queue, task, args)."""
    settings.MAILPANEL_TASK_BACKEND = "rq"
    settings.MAILPANEL_NODE_SMTP_PORT = 2525
    node_b = MailNode.objects.create(name="b", hostname="mx-b.panel.test", ipv4="198.51.100.2")
    main = MailNode.objects.get(name=DEFAULT_NODE_NAME)
    MailNode.objects.filter(pk=main.pk).update(hostname="mx-a.panel.test", ipv4="192.0.2.1")
    domain = domains.add_domain(None, alice, "example.org", dkim_enabled=False)
    accounts.add_account(None, domain, "info", "Str0ng-enough-pass")
    Job.objects.all().delete()
    queued = []
    monkeypatch.setattr(
        jobs, "enqueue_on_node",
        lambda node_id, task, *args: queued.append((MailNode.objects.get(pk=node_id).queue_name, task.rsplit(".", 1)[1], args)),
    )
    main.refresh_from_db()
    return domain, main, node_b, queued


def rendered(node):
    return {d.name: d for d in apply.build_snapshot(node=node).domains}


def test_each_node_renders_the_moving_domain_as_its_phase_says(moving):
    domain, main, node_b, queued = moving
    assert set(rendered(main)) == {"example.org"} and rendered(node_b) == {}
    nodes.move_domain(None, domain, node_b)
    move = DomainMove.objects.get()
    assert rendered(node_b)["example.org"].moved_to == ""
    for phase, forward in ((MovePhase.PREPARING, ""), (MovePhase.COPYING, ""),
                           (MovePhase.FORWARDING, "198.51.100.2"), (MovePhase.FINISHING, "198.51.100.2")):
        DomainMove.objects.filter(pk=move.pk).update(phase=phase)
        old = rendered(main)["example.org"]
        assert (old.moved_to, old.moved_to_port, [b.local_part for b in old.mailboxes]) == (forward, 2525, ["info"])
    DomainMove.objects.filter(pk=move.pk).update(phase=MovePhase.DONE)
    assert rendered(main) == {} and set(rendered(node_b)) == {"example.org"}


def test_the_move_queues_each_phase_on_the_node_that_does_it(moving, settings, tmp_path):
    domain, main, node_b, queued = moving
    change = nodes.move_domain(None, domain, node_b)
    move = DomainMove.objects.get()
    assert change.job.node == node_b and change.job.scope == ["example.org"]
    assert queued == [("node-b", "domain_move_arrived", (move.pk,))]
    # b's helper has no files of the domain yet: the phase stays and says why.
    settings.MAILPANEL_HELPER = f"{sys.executable} {HELPER} --root {tmp_path} --no-chown"
    with pytest.raises(RuntimeError, match="no files of the domain"):
        domain_move.arrived(move.pk)
    move.refresh_from_db()
    assert move.phase == MovePhase.PREPARING and "no files" in move.error
    domain_move.retry(None, move)
    assert queued[-1] == ("node-b", "domain_move_arrived", (move.pk,))
    with pytest.raises(ValidationError, match="confirmed once"):
        domain_move.confirm(None, move)
    # A task that finds its move past its phase does nothing (a repeated delivery).
    DomainMove.objects.filter(pk=move.pk).update(phase=MovePhase.FORWARDING)
    domain_move.arrived(move.pk)
    domain_move.copy(move.pk)
    assert DomainMove.objects.get().phase == MovePhase.FORWARDING and len(queued) == 2
    move.refresh_from_db()
    domain_move.confirm(None, move)
    assert DomainMove.objects.get().phase == MovePhase.FINISHING
    assert queued[-1] == ("node-main", "domain_move_finish", (move.pk,))


def test_a_move_is_refused_where_it_cannot_work(moving, settings):
    domain, main, node_b, queued = moving
    with pytest.raises(ValidationError, match="already"):
        domain_move.start_move(None, domain, main)
    MailNode.objects.filter(pk=node_b.pk).update(status=NodeStatus.DRAINING)
    node_b.refresh_from_db()
    with pytest.raises(ValidationError, match="no new domains"):
        nodes.move_domain(None, domain, node_b)
    MailNode.objects.filter(pk=node_b.pk).update(status=NodeStatus.ACTIVE)
    node_b.refresh_from_db()
    settings.MAILPANEL_TASK_BACKEND = "database"
    with pytest.raises(ValidationError, match="RQ"):
        nodes.move_domain(None, domain, node_b)
    settings.MAILPANEL_TASK_BACKEND = "rq"
    nodes.move_domain(None, domain, node_b)
    third = MailNode.objects.create(name="c")
    domain.refresh_from_db()
    with pytest.raises(ValidationError, match="moving already"):
        nodes.move_domain(None, domain, third)
    assert DomainMove.objects.count() == 1 and not queued[1:]


def test_the_move_lists_the_dns_records_to_change(moving):
    domain, main, node_b, queued = moving
    nodes.move_domain(None, domain, node_b)
    changes = {(c.name, c.type, c.purpose): (c.old, c.new) for c in domain_move.dns_changes(DomainMove.objects.get(), ServerSettings.load())}
    assert changes[("mail.example.org", "A", "mail_a")] == ("192.0.2.1", "198.51.100.2")
    old_spf, new_spf = changes[("example.org", "TXT", "spf")]
    assert "192.0.2.1" in old_spf and "198.51.100.2" in new_spf
    assert all(old != new for old, new in changes.values())
    assert not any(name.startswith("mail._domainkey") for name, _t, _p in changes)  # the same key on both nodes


# -- the pages and the CLI -------------------------------------------------------------


def test_the_settings_tab_shows_the_move_and_confirms_it(moving, admin_client_, alice):
    domain, main, node_b, queued = moving
    url = reverse("mailadmin:domain_move", args=[domain.pk])
    response = admin_client_.post(url, {"node": node_b.pk})
    assert response.status_code in (200, 302), response
    move = DomainMove.objects.get()
    page = admin_client_.get(reverse("mailadmin:domain_settings", args=[domain.pk])).content.decode()
    assert "Moving from main to b" in page and 'value="confirm"' not in page  # not forwarding yet
    assert "198.51.100.2" in page and "192.0.2.1" in page  # the A record to change, old and new
    response = admin_client_.post(url, {"action": "confirm"}, follow=True)
    assert "confirmed once" in response.content.decode() and DomainMove.objects.get().phase == MovePhase.PREPARING
    DomainMove.objects.filter(pk=move.pk).update(phase=MovePhase.FORWARDING)
    assert 'value="confirm"' in admin_client_.get(reverse("mailadmin:domain_settings", args=[domain.pk])).content.decode()
    owner = Client()
    owner.force_login(alice)
    assert owner.post(url, {"action": "confirm"}).status_code == 404  # the owner does not run nodes
    assert DomainMove.objects.get().phase == MovePhase.FORWARDING
    admin_client_.post(url, {"action": "confirm"})
    assert DomainMove.objects.get().phase == MovePhase.FINISHING
    assert queued[-1] == ("node-main", "domain_move_finish", (move.pk,))


def test_the_dns_tab_says_what_to_change_while_the_domain_moves(moving, alice_client):
    domain, main, node_b, queued = moving
    url = reverse("mailadmin:domain_dns", args=[domain.pk])
    assert "domain-move-dns" not in alice_client.get(url).content.decode()
    nodes.move_domain(None, domain, node_b)
    page = alice_client.get(url).content.decode()
    assert 'id="domain-move-dns"' in page
    notice = page[page.index('id="domain-move-dns"'):page.index("</section>", page.index('id="domain-move-dns"'))]
    assert "mail.example.org" in notice and "<code>192.0.2.1</code>" in notice and "<code>198.51.100.2</code>" in notice


def test_the_cli_shows_confirms_and_retries_a_move(moving):
    domain, main, node_b, queued = moving
    out = StringIO()
    call_command("mail", "node", "move", "example.org", "b", stdout=out)
    assert "with its mail" in out.getvalue()
    out = StringIO()
    call_command("mail", "node", "moves", "--json", stdout=out)
    (row,) = json.loads(out.getvalue())
    assert (row["domain"], row["from"], row["to"], row["phase"]) == ("example.org", "main", "b", "preparing")
    assert {"name": "mail.example.org", "type": "A", "old": "192.0.2.1", "new": "198.51.100.2"} in row["dns_changes"]
    with pytest.raises(CommandError, match="confirmed once"):
        call_command("mail", "node", "confirm", "example.org")
    call_command("mail", "node", "retry", "example.org", stdout=StringIO())
    assert queued[-1] == ("node-b", "domain_move_arrived", (DomainMove.objects.get().pk,))
    DomainMove.objects.update(phase=MovePhase.FORWARDING)
    call_command("mail", "node", "confirm", "example.org", stdout=StringIO())
    assert DomainMove.objects.get().phase == MovePhase.FINISHING
    domains.add_domain(None, domain.owner, "other.example")
    with pytest.raises(CommandError, match="not moving"):
        call_command("mail", "node", "confirm", "other.example")


def test_a_moving_domains_changes_reach_both_nodes_until_the_move_is_done(moving):
    domain, main, node_b, queued = moving
    nodes.move_domain(None, domain, node_b)
    assert list(Job.objects.values_list("node__name", flat=True)) == ["b"]  # the old node has it all already
    Job.objects.all().delete()
    domain.refresh_from_db()
    accounts.add_account(None, domain, "new", "Str0ng-enough-pass")
    assert sorted(Job.objects.values_list("node__name", "scope")) == [("b", ["example.org"]), ("main", ["example.org"])]
    Job.objects.all().delete()
    DomainMove.objects.update(phase=MovePhase.DONE)
    accounts.add_account(None, domain, "later", "Str0ng-enough-pass")
    assert list(Job.objects.values_list("node__name", flat=True)) == ["b"]


def test_a_domain_deleted_while_it_moves_leaves_both_nodes(moving):
    domain, main, node_b, queued = moving
    nodes.move_domain(None, domain, node_b)
    Job.objects.all().delete()
    del queued[:]
    domain.refresh_from_db()
    domains.delete_domain(None, domain)
    assert sorted(Job.objects.values_list("node__name", "scope")) == [("b", ["example.org"]), ("main", ["example.org"])]
    assert sorted(queued) == [("node-b", "retire_domain_mail", ("example.org",)),
                              ("node-main", "retire_domain_mail", ("example.org",))]
    assert not DomainMove.objects.exists()


def test_a_long_copy_goes_on_in_another_task_where_it_stopped(moving, settings, tmp_path, monkeypatch):
    """RQ ends a job after its queue's timeout: past the budget a copy task
    queues the rest of the mailboxes on the same node."""
    domain, main, node_b, queued = moving
    accounts.add_account(None, domain, "another", "Str0ng-enough-pass")
    nodes.move_domain(None, domain, node_b)
    move = DomainMove.objects.get()
    DomainMove.objects.filter(pk=move.pk).update(phase=MovePhase.COPYING)
    peers = tmp_path / "etc/mailpanel/mail-peers.json"
    peers.parent.mkdir(parents=True)
    peers.write_text('{"b": {"mail_root": "/nonexistent/peer"}}')
    settings.MAILPANEL_HELPER = f"{sys.executable} {HELPER} --root {tmp_path} --no-chown"
    monkeypatch.setattr(domain_move, "COPY_BUDGET_SECONDS", 0)
    domain_move.copy(move.pk)  # "another" copied, then out of time
    assert queued[-1] == ("node-main", "domain_move_copy", (move.pk, "another"))
    assert DomainMove.objects.get().phase == MovePhase.COPYING
    domain_move.copy(move.pk, "another")  # "info", the last one
    move.refresh_from_db()
    assert move.phase == MovePhase.FORWARDING and "copied 1 mailbox(es) with dsync" in move.log, move.log
