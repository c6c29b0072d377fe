"""Internal lookup (SPEC 2.5) and "mail hosted elsewhere" (SPEC 1.7), on real
Exim: with the switch on, mail for a hosted domain is delivered here; off, it
goes by MX (dnslookup). The per-domain flag does the same for one domain only,
and mail sent from that domain is still DKIM-signed."""

import io

import pytest
from django.core.management import call_command
from django.urls import reverse

from mailadmin.passwords import hash_password
from mailadmin.models import AuditEntry, MailAccount, MailDomain, ServerSettings
from mailadmin.services import apply
from mailadmin.services import domains as domain_service
from tests import exim_netns
from tests.mailstack import (
    dkim_public_key_der,
    dkim_verify,
    exim_conf,
    make_message,
    render_tree,
    require_root,
)

pytestmark = pytest.mark.django_db

REMOTE_MX = "127.0.0.9"  # "Gmail": inside the namespace, not one of Exim's own addresses


def _needs_exim_netns():
    require_root()
    if reason := exim_netns.available():
        pytest.skip(reason)


@pytest.fixture
def hosted(alice):
    """Two domains hosted here, each with a mailbox; their MX records point away."""
    for name in ("hosted.test", "elsewhere.test"):
        domain = domain_service.add_domain(None, alice, name)
        MailAccount.objects.create(domain=domain, local_part="alice", password_hash=hash_password("secret-password"))
    return MailDomain.objects.get(name="hosted.test"), MailDomain.objects.get(name="elsewhere.test")


MX_RECORDS = {
    "hosted.test": [("MX", "10 mx.remote.test")],
    "elsewhere.test": [("MX", "10 mx.remote.test")],
    "mx.remote.test": [("A", REMOTE_MX)],
}


def route(layout, *addresses):
    """`exim -bt` for each address, in the namespace with the MX records."""
    out = exim_netns.run_in_netns(
        MX_RECORDS, [{"argv": ["exim", "-C", exim_conf(layout), "-bt", a]} for a in addresses]
    )
    return [r["stdout"] + r["stderr"] for r in out["results"]]


def test_switch_on_delivers_hosted_domains_locally_and_off_routes_them_by_mx(
    admin_client_, hosted, tmp_path
):
    _needs_exim_netns()
    assert ServerSettings.load().internal_lookup  # on by default
    layout = render_tree(apply.build_snapshot(), tmp_path)
    [on] = route(layout, "alice@hosted.test")
    assert "router = local_mailbox" in on, on

    response = admin_client_.post(reverse("mailadmin:internal_lookup_save"), {})
    assert response.status_code == 302
    assert not ServerSettings.load().internal_lookup
    render_tree(apply.build_snapshot(), tmp_path, layout=layout)
    [off] = route(layout, "alice@hosted.test")
    assert "router = dnslookup" in off, off
    assert f"host mx.remote.test [{REMOTE_MX}]" in off
    assert "local_mailbox" not in off


def test_hosted_elsewhere_routes_only_that_domain_by_mx(hosted, tmp_path):
    _needs_exim_netns()
    _hosted, elsewhere = hosted
    call_command("mail", "domain", "set", "elsewhere.test", "--mail-hosted-elsewhere", "yes", stdout=io.StringIO())
    elsewhere.refresh_from_db()
    assert elsewhere.hosted_elsewhere
    assert ServerSettings.load().internal_lookup
    layout = render_tree(apply.build_snapshot(), tmp_path)
    here, away = route(layout, "alice@hosted.test", "alice@elsewhere.test")
    assert "router = local_mailbox" in here, here
    assert "router = dnslookup" in away and f"[{REMOTE_MX}]" in away, away

    call_command("mail", "domain", "set", "elsewhere.test", "--mail-hosted-elsewhere", "no", stdout=io.StringIO())
    render_tree(apply.build_snapshot(), tmp_path, layout=layout)
    [back] = route(layout, "alice@elsewhere.test")
    assert "router = local_mailbox" in back, back


def test_mail_from_a_hosted_elsewhere_domain_goes_to_its_mx_dkim_signed(hosted, tmp_path):
    """A web app here sends as the domain to the domain: the real mailbox is at
    the remote MX, and the mail arrives there signed with the domain's key."""
    _needs_exim_netns()
    _hosted, elsewhere = hosted
    # the web app runs as root here: an admin mapped it to the domain
    domain_service.update_domain(None, elsewhere, hosted_elsewhere=True, local_senders="root")
    layout = render_tree(apply.build_snapshot(), tmp_path)
    message = make_message("web@elsewhere.test", "alice@elsewhere.test", subject="contact form")
    out = exim_netns.run_in_netns(
        MX_RECORDS,
        [{
            "argv": ["exim", "-C", exim_conf(layout), "-odf", "-f", "web@elsewhere.test", "--",
                     "alice@elsewhere.test"],
            "input": message.decode(),
        }],
        sink_ip=REMOTE_MX,
        expect_messages=1,
    )
    assert len(out["received"]) == 1, out["results"]
    received = out["received"][0]
    assert received["recipients"] == ["alice@elsewhere.test"]
    data = received["data"].encode()
    tags = dkim_verify(data, dkim_public_key_der(elsewhere.dkim_private_key))
    assert tags["d"] == "elsewhere.test" and tags["s"] == "mail"


def test_internal_lookup_switch_explains_when_to_turn_it_off(admin_client_):
    html = admin_client_.get(reverse("mailadmin:server_settings")).content.decode()
    assert 'id="internal-lookup"' in html
    assert "Gmail" in html and "SMTP relay" in html
    assert "Mail for this domain is hosted elsewhere" in html  # the finer, per-domain tool


def test_htmx_toggle_returns_the_section_and_records_an_audit_entry(admin_client_):
    response = admin_client_.post(reverse("mailadmin:internal_lookup_save"), {}, HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert response.status_code == 200 and "<html" not in html
    assert "Internal lookup is off" in html
    response = admin_client_.post(
        reverse("mailadmin:internal_lookup_save"), {"internal_lookup": "on"}, HTTP_HX_REQUEST="true"
    )
    assert "Internal lookup is on" in response.content.decode()
    assert AuditEntry.objects.filter(action="server.internal_lookup").count() == 2


def test_cli_internal_lookup_on_off():
    call_command("mail", "internal-lookup", "off", stdout=io.StringIO())
    assert not ServerSettings.load().internal_lookup
    assert apply.build_snapshot().internal_lookup is False
    call_command("mail", "internal-lookup", "on", stdout=io.StringIO())
    assert ServerSettings.load().internal_lookup
