"""Mail nodes (issue 18, step 1): each domain lives on one node; its DNS
records, diagnostics and rendered files use that node's identity; jobs are
per node; the node list flags a node that stopped answering; `mail node`."""

import json
import os
from datetime import timedelta
from io import StringIO

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from mailadmin.models import DEFAULT_NODE_NAME, Job, MailDomain, MailNode, ServerSettings
from mailadmin.services import apply, dns_checks, domains, nodes
from mailadmin.services.jobs import request_apply
from mailconf.render import render_all

pytestmark = pytest.mark.django_db


@pytest.fixture
def server():
    server = ServerSettings.load()
    server.hostname, server.ipv4, server.ipv6 = "mx.panel.test", "192.0.2.1", "2001:db8::1"
    server.save()
    return server


@pytest.fixture
def rq_mode(settings):
    """Nodes beyond the first need the RQ backend; enqueueing itself is not
    reached here (no on_commit runs in these tests)."""
    settings.MAILPANEL_TASK_BACKEND = "rq"


@pytest.fixture
def node_b(db):
    return MailNode.objects.create(name="b", hostname="mx-b.panel.test", ipv4="198.51.100.2")


def test_a_new_domain_lands_on_the_one_node_with_the_server_identity(alice, server):
    domain = domains.add_domain(None, alice, "example.org")
    assert MailNode.objects.count() == 1
    assert domain.node.name == DEFAULT_NODE_NAME
    identity = domain.node.identity(server)
    assert identity == server.identity()  # blank node fields: the server settings' identity


def test_dns_records_name_the_domains_node(alice, server, node_b):
    on_main = domains.add_domain(None, alice, "main.example")
    on_b = domains.add_domain(None, alice, "b.example")
    MailDomain.objects.filter(pk=on_b.pk).update(node=node_b)
    on_b.refresh_from_db()

    def records(domain):
        return {r.purpose: r for r in dns_checks.domain_records(domain, dns_checks.domain_identity(domain, server))}

    assert records(on_main)["mail_a"].value == "192.0.2.1"
    assert records(on_b)["mail_a"].value == "198.51.100.2"
    assert "ip4:198.51.100.2" in records(on_b)["spf"].value and "192.0.2.1" not in records(on_b)["spf"].value
    # No IPv6 of its own: node b has an own IPv4, so the server's NAT address is not its.
    assert records(on_b)["mail_aaaa"].value == "2001:db8::1"


def test_the_zone_download_and_client_settings_use_the_domains_node(admin_client_, alice, server, node_b):
    domain = domains.add_domain(None, alice, "b.example")
    MailDomain.objects.filter(pk=domain.pk).update(node=node_b)
    zone = admin_client_.get(reverse("mailadmin:domain_dns_zone", args=[domain.pk])).content.decode()
    assert "198.51.100.2" in zone and "192.0.2.1" not in zone
    clients = admin_client_.get(reverse("mailadmin:domain_clients", args=[domain.pk])).content.decode()
    assert "mx-b.panel.test" in clients


def test_a_nodes_snapshot_holds_only_its_domains_and_its_identity(alice, server, node_b):
    domains.add_domain(None, alice, "main.example")
    on_b = domains.add_domain(None, alice, "b.example")
    MailDomain.objects.filter(pk=on_b.pk).update(node=node_b)
    main = MailNode.objects.get(name=DEFAULT_NODE_NAME)
    snap_b = apply.build_snapshot(node=node_b)
    assert [d.name for d in snap_b.domains] == ["b.example"]
    assert snap_b.server.hostname == "mx-b.panel.test" and snap_b.server.ipv4 == "198.51.100.2"
    snap_main = apply.build_snapshot(node=main)
    assert [d.name for d in snap_main.domains] == ["main.example"]
    files = render_all(snap_main, apply.layout_from_settings())
    assert not any("/b.example/" in path for path in files)
    # The whole database is still one snapshot for `mail config render`.
    assert [d.name for d in apply.build_snapshot().domains] == ["b.example", "main.example"]


def test_a_domain_change_queues_an_apply_on_its_node_only(alice, server, node_b, rq_mode):
    domain = domains.add_domain(None, alice, "b.example")
    Job.objects.all().delete()
    MailDomain.objects.filter(pk=domain.pk).update(node=node_b)
    domain.refresh_from_db()
    job = request_apply(alice, domain=domain)
    assert job.node == node_b and job.scope == ["b.example"]
    assert Job.objects.count() == 1


def test_a_server_wide_change_queues_one_apply_per_node_and_coalesces_per_node(alice, server, node_b, rq_mode):
    domain = domains.add_domain(None, alice, "b.example")
    Job.objects.all().delete()
    request_apply(None)
    assert sorted(Job.objects.values_list("node__name", "scope")) == [("b", None), ("main", None)]
    request_apply(None)  # the same requester's pending jobs take it: still one per node
    MailDomain.objects.filter(pk=domain.pk).update(node=node_b)
    domain.refresh_from_db()
    request_apply(None, domain=domain)
    assert Job.objects.count() == 2 and Job.objects.get(node=node_b).scope is None


def test_moving_a_domain_applies_it_on_the_new_node_and_prunes_it_on_the_old(alice, server, node_b, rq_mode):
    domain = domains.add_domain(None, alice, "b.example")
    Job.objects.all().delete()
    change = nodes.move_domain(None, domain, node_b)
    assert change.changed == ("node",) and MailDomain.objects.get(pk=domain.pk).node == node_b
    assert sorted(Job.objects.values_list("node__name", "scope")) == [("b", ["b.example"]), ("main", ["b.example"])]


def test_node_list_flags_a_node_that_stopped_answering(admin_client_, settings, node_b, rq_mode):
    settings.MAILPANEL_NODE_STALE_SECONDS = 60
    now = timezone.now()
    main = MailNode.objects.get(name=DEFAULT_NODE_NAME)
    MailNode.objects.filter(pk=main.pk).update(heartbeat_at=now, version="0.1.0", last_apply_at=now)
    MailNode.objects.filter(pk=node_b.pk).update(heartbeat_at=now - timedelta(seconds=61), version="0.0.9")
    page = admin_client_.get(reverse("mailadmin:node_list")).content.decode()
    assert 'id="node-main" data-stale="no"' in page and 'id="node-b" data-stale="yes"' in page
    assert "0.0.9" in page and "not answering" in page


def test_customers_do_not_see_nodes_nor_move_domains(alice_client, alice):
    domain = domains.add_domain(None, alice, "example.org")
    assert alice_client.get(reverse("mailadmin:node_list")).status_code == 404
    assert alice_client.post(reverse("mailadmin:node_list"), {"name": "evil"}).status_code == 404
    assert alice_client.post(reverse("mailadmin:domain_move", args=[domain.pk]), {"node": 1}).status_code == 404
    assert MailNode.objects.count() == 1


def test_admin_moves_a_domain_on_its_settings_tab(admin_client_, alice, node_b, rq_mode):
    domain = domains.add_domain(None, alice, "example.org")
    page = admin_client_.get(reverse("mailadmin:domain_settings", args=[domain.pk])).content.decode()
    assert 'id="domain-node"' in page and f'value="{node_b.pk}"' in page
    response = admin_client_.post(reverse("mailadmin:domain_move", args=[domain.pk]), {"node": node_b.pk})
    assert response.status_code == 302
    assert MailDomain.objects.get(pk=domain.pk).node == node_b


@pytest.mark.parametrize(
    "name", ["A", "-b", "b-", "b_c", "../etc", "b c", "node;id", "x" * 33, "ä", "b\n", ""]
)
def test_hostile_node_names_are_refused(name, rq_mode):
    with pytest.raises(CommandError):
        call_command("mail", "node", "add", name)
    assert MailNode.objects.count() == 1


@pytest.mark.parametrize(
    "option, value",
    [("--hostname", "mx.example.org\nmain_domain = evil"), ("--hostname", "-x.example"), ("--ipv4", "300.1.1.1"),
     ("--ipv4", "2001:db8::1"), ("--ipv6", "fe80::1%eth0")],
)
def test_hostile_node_addresses_are_refused(option, value, rq_mode):
    with pytest.raises(CommandError):
        call_command("mail", "node", "add", "b", option, value)
    assert not MailNode.objects.filter(name="b").exists()


def test_a_second_node_needs_the_rq_backend():
    with pytest.raises(CommandError, match="MAILPANEL_TASK_BACKEND=rq"):
        call_command("mail", "node", "add", "b")
    assert MailNode.objects.count() == 1


def test_cli_node_add_list_show(alice, rq_mode):
    out = StringIO()
    call_command("mail", "node", "add", "b", "--hostname", "mx-b.example.net", "--ipv4", "198.51.100.2", stdout=out)
    assert "node-b" in out.getvalue()
    domains.add_domain(None, alice, "example.org")
    call_command("mail", "node", "move", "example.org", "b", stdout=StringIO())
    out = StringIO()
    call_command("mail", "node", "list", "--json", stdout=out)
    rows = {row["name"]: row for row in json.loads(out.getvalue())}
    assert rows["b"]["domains"] == 1 and rows["b"]["ipv4"] == "198.51.100.2"
    assert rows["b"]["not_answering"] is True and rows["b"]["heartbeat_at"] is None
    out = StringIO()
    call_command("mail", "node", "show", "b", "--json", stdout=out)
    assert json.loads(out.getvalue())["domain_names"] == ["example.org"]
    with pytest.raises(CommandError, match="no mail node"):
        call_command("mail", "node", "show", "nope")


def test_node_worker_refuses_the_database_backend():
    with pytest.raises(CommandError, match="MAILPANEL_TASK_BACKEND=rq"):
        call_command("node_worker", "main")


def test_node_worker_refuses_an_unknown_node(rq_mode):
    with pytest.raises(CommandError, match="no mail node 'nope'"):
        call_command("node_worker", "nope")


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:6379/0", "redis://", "redis://127.0.0.1:notaport/0", "redis://127.0.0.1:6379/zero",
     "unix://", "127.0.0.1:6379"],
)
def test_redis_url_setting_is_strict(url):
    from django.core.exceptions import ImproperlyConfigured

    from panel.rq import redis_url

    with pytest.raises(ImproperlyConfigured):
        redis_url("MAILPANEL_REDIS_URL", url)
    assert redis_url("MAILPANEL_REDIS_URL", "redis://127.0.0.1:6379/13") == "redis://127.0.0.1:6379/13"


@pytest.mark.parametrize("value, ok", [("rq", True), ("database", True), ("", True), ("RQ", False), ("redis", False)])
def test_task_backend_setting_is_strict(value, ok):
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); from django.conf import settings; print(settings.TASKS['default']['BACKEND'])"],
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "panel.settings", "MAILPANEL_TASK_BACKEND": value},
        capture_output=True, text=True,
    )
    assert (proc.returncode == 0) is ok, proc.stderr
    if value == "rq":
        assert proc.stdout.strip() == "panel.rq_backend.NodeRQBackend"
    elif ok:
        assert proc.stdout.strip() == "django_tasks_db.DatabaseBackend"


@pytest.mark.parametrize(
    "unit, command, instance_name",
    [("mailpanel-node-worker@.service", "manage.py node_worker %i", "b"),
     ("mailpanel-rq-worker@.service", "manage.py rqworker --job-class django_tasks_rq.Job %i", "checks")],
)
def test_rq_unit_templates_pass_systemd_verify(tmp_path, unit, command, instance_name):
    import shutil
    import subprocess

    from tests.test_deploy import DEPLOY, _verifiable_copy

    template = DEPLOY / "systemd" / unit
    text = template.read_text()
    assert f"ExecStart=/opt/mailpanel/.venv/bin/python {command}" in text
    assert "\nUser=mailpanel\n" in text and "\nEnvironmentFile=/etc/mailpanel/env\n" in text
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze missing (systemd is listed in deploy/apt-packages.txt)")
    instance = tmp_path / "unit" / unit.replace("@.", f"@{instance_name}.")
    instance.parent.mkdir()
    copy = _verifiable_copy(template, tmp_path)
    instance.write_text(copy.read_text())
    proc = subprocess.run(["systemd-analyze", "verify", str(instance)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stdout + proc.stderr


def test_config_render_with_several_nodes_names_the_node(alice, server, node_b, tmp_path):
    on_b = domains.add_domain(None, alice, "b.example", node=node_b)
    domains.add_domain(None, alice, "main.example")
    with pytest.raises(CommandError, match="--node"):
        call_command("mail", "config", "render", "--out", str(tmp_path / "x"))
    call_command("mail", "config", "render", "--out", str(tmp_path / "b"), "--node", "b", stdout=StringIO())
    folders = sorted(p.name for p in (tmp_path / "b/etc/exim4/domains").iterdir())
    assert folders == [on_b.name]
    assert "mx-b.panel.test" in (tmp_path / "b/etc/exim4/exim4.conf").read_text()
    with pytest.raises(CommandError, match="no mail node 'zz'"):
        call_command("mail", "config", "apply", "--node", "zz")


NODE_INSTALL = ["--node", "b", "--panel-db", "postgres://mailpanel:s3cr%40t@10.0.0.1:5432/mailpanel",
                "--redis", "redis://10.0.0.1:6379/0", "--hostname", "mx2.example.com", "--ipv4", "203.0.113.6"]


@pytest.mark.skipif(os.geteuid() != 0, reason="install.sh refuses non-root first")
def test_node_install_check_accepts_a_node_without_admin_email(tmp_path):
    from tests.test_install_script import install

    proc = install(tmp_path, "--check", *NODE_INSTALL)
    assert proc.returncode == 0, proc.stderr
    assert "(mail node b)" in proc.stdout and "nothing was changed" in proc.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="install.sh refuses non-root first")
@pytest.mark.parametrize(
    "option, value, complaint",
    [
        ("--node", "B", "--node"),
        ("--node", "b;reboot", "--node"),
        ("--node", "b\nMAILPANEL_HELPER=x", "--node"),
        ("--panel-db", 'postgres://u:p"w@h/db', "--panel-db"),
        ("--panel-db", "postgres://h/db $(id)", "--panel-db"),
        ("--panel-db", "mysql://h/db", "--panel-db"),
        ("--redis", "http://10.0.0.1:6379/0", "--redis"),
        ("--redis", "redis://h/0`id`", "--redis"),
        ("--redis", "", "go together"),
    ],
)
def test_node_install_refuses_hostile_options(tmp_path, option, value, complaint):
    from tests.test_install_script import install

    args = list(NODE_INSTALL)
    args[args.index(option) + 1] = value
    proc = install(tmp_path, "--check", *args)
    assert proc.returncode == 2, proc.stdout
    assert complaint in proc.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="install.sh refuses non-root first")
@pytest.mark.parametrize(
    "extra, complaint",
    [
        (["--acme-directory", "https://ca.example.com/dir"], "--admin-email"),  # the ACME account's contact
        (["--acme-directory", "http://ca.example.com/dir", "--admin-email", "a@example.com"], "--acme-directory"),
        (["--acme-directory", "https://ca.example.com/d'ir", "--admin-email", "a@example.com"], "--acme-directory"),
        (["--acme-directory", "https://ca.example.com/dir", "--admin-email", 'a"@example.com'], "--admin-email"),
        (["--acme-ca-bundle", "/nonexistent/ca.pem"], "--acme-ca-bundle"),
        (["--hostname", "mx2.example.com;reboot"], "--hostname"),
    ],
)
def test_node_install_refuses_hostile_acme_options(tmp_path, extra, complaint):
    """A node orders its host name's certificate itself (nginx serves the
    webroot on its port 80): the same ACME options, refused the same way."""
    from tests.test_install_script import install

    proc = install(tmp_path, "--check", *NODE_INSTALL, *extra)
    assert proc.returncode == 2, proc.stdout
    assert complaint in proc.stderr
    good = install(tmp_path, "--check", *NODE_INSTALL, "--acme-directory", "https://ca.example.com/dir",
                   "--admin-email", "a@example.com")
    assert good.returncode == 0, good.stderr


def test_an_apply_jobs_log_is_saved_once_for_all_the_files_it_wrote(alice, settings, tmp_path):
    """The node bench's first apply (13,000 files a node) spent minutes
    rewriting the growing log once per file."""
    import sys

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from tests.test_apply_pipeline import HELPER

    root = tmp_path / "root"
    root.mkdir()
    settings.MAILPANEL_ROOT = str(root)
    settings.MAILPANEL_HELPER = f"{sys.executable} {HELPER} --root {root} --service-command true"
    for i in range(6):
        domains.add_domain(None, alice, f"d{i}.example")
    job = Job.objects.get(state="pending")
    with CaptureQueriesContext(connection) as queries:
        apply.run_apply_job(job.pk)
    job.refresh_from_db()
    assert job.state == "done" and len(job.changed_files) > 30, job.log
    log_updates = [q for q in queries if q["sql"].startswith("UPDATE") and '"log"' in q["sql"]]
    assert len(log_updates) <= 15, len(log_updates)  # a few per step, not one per file
    assert job.log.count("\nwrote ") + job.log.startswith("wrote ") >= 30


def test_a_draining_node_takes_no_new_domains_and_a_new_identity_applies_on_that_node(alice, rq_mode):
    call_command("mail", "node", "add", "b", stdout=StringIO())
    call_command("mail", "node", "set", "main", "--status", "draining", stdout=StringIO())
    domain = domains.add_domain(None, alice, "new.example")
    assert domain.node.name == "b"
    with pytest.raises(ValidationError):
        nodes.move_domain(None, domain, MailNode.objects.get(name="main"))
    Job.objects.all().delete()
    out = StringIO()
    call_command("mail", "node", "set", "b", "--hostname", "mx-b.example.net", "--ipv4", "198.51.100.7", stdout=out)
    assert "hostname" in out.getvalue() and "ipv4" in out.getvalue()
    assert list(Job.objects.values_list("node__name", "scope")) == [("b", None)]
    node = MailNode.objects.get(name="b")
    assert (node.hostname, node.ipv4, node.status) == ("mx-b.example.net", "198.51.100.7", "active")
    with pytest.raises(CommandError):
        call_command("mail", "node", "set", "b", "--ipv4", "198.51.100.7\nx")
    out = StringIO()
    call_command("mail", "node", "set", "b", "--ipv4", "198.51.100.7", stdout=out)
    assert "nothing changed" in out.getvalue()


def test_cli_domain_add_places_the_domain_on_a_node(alice, rq_mode):
    call_command("mail", "node", "add", "b", stdout=StringIO())
    call_command("mail", "domain", "add", "alice", "placed.example", "--node", "b", stdout=StringIO())
    assert MailDomain.objects.get(name="placed.example").node.name == "b"
    with pytest.raises(CommandError, match="no mail node"):
        call_command("mail", "domain", "add", "alice", "other.example", "--node", "nope")


def test_a_domain_with_mailboxes_moves_with_its_mail_in_phases(alice, node_b, rq_mode):
    """Its mail is copied (services/domain_move.py, tests/test_domain_move*.py):
    the move starts in phases; the old node keeps the domain until confirmed."""
    from mailadmin.models import DomainMove, MailAccount

    domain = domains.add_domain(None, alice, "mail.example")
    MailAccount.objects.create(domain=domain, local_part="info", password_hash="{BLF-CRYPT}x")
    Job.objects.all().delete()
    change = nodes.move_domain(None, domain, node_b)
    assert change.changed == ("node",) and MailDomain.objects.get(pk=domain.pk).node == node_b
    assert DomainMove.objects.get().phase == "preparing"
    assert [d.name for d in apply.build_snapshot(node=MailNode.objects.get(name=DEFAULT_NODE_NAME)).domains] == ["mail.example"]
    MailDomain.objects.filter(pk=domain.pk).update(hosted_elsewhere=True, node=MailNode.objects.get(name=DEFAULT_NODE_NAME))
    DomainMove.objects.all().delete()
    domain.refresh_from_db()
    assert nodes.move_domain(None, domain, node_b).changed == ("node",)  # send-only: no mail of its own here
    assert not DomainMove.objects.exists()


def test_status_page_flags_a_silent_node_only_with_several_nodes(admin_client_, settings, node_b):
    settings.MAILPANEL_NODE_STALE_SECONDS = 60
    page = admin_client_.get(reverse("mailadmin:server_status")).content.decode()
    assert 'id="status-nodes"' not in page  # one server, db_worker: no heartbeats to judge
    assert 'data-stale="no"' in admin_client_.get(reverse("mailadmin:node_list")).content.decode()
    settings.MAILPANEL_TASK_BACKEND = "rq"
    MailNode.objects.update(heartbeat_at=timezone.now())
    MailNode.objects.filter(pk=node_b.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=5))
    page = admin_client_.get(reverse("mailadmin:server_status")).content.decode()
    assert 'id="status-nodes" data-state="bad"' in page and "Not answering: b." in page
    MailNode.objects.update(heartbeat_at=timezone.now())
    page = admin_client_.get(reverse("mailadmin:server_status")).content.decode()
    assert 'id="status-nodes" data-state="ok"' in page
