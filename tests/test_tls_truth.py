"""The truth about TLS on the domain page (issue #14): the "Mail client
settings" box and the autoconfig answers name only ports that really offer
TLS given the Layout, and the names on the certificate clients get; the
"name served" diagnostic asks real Exim and Dovecot for mail.<domain> by SNI
on 993, 465 and 587 and compares the certificate's names."""

import datetime
import hashlib
import plistlib
import xml.etree.ElementTree as ET

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from mailadmin import client_config as cc
from mailadmin.models import Certificate, MailAccount, MailDomain, ServerSettings
from mailadmin.services import client_config as service
from mailadmin.services import dns_checks
from mailconf.snapshot import Layout
from tests import mailstack
from tests.test_tls_sni import SERVER_NAME, sni_stack  # noqa: F401  (the real daemons)

pytestmark = pytest.mark.django_db
TLS = {"tls_certificate": "/etc/mailpanel/tls/fullchain.pem", "tls_privatekey": "/etc/mailpanel/tls/privkey.pem"}
HOSTNAME = "mail.hoster.test"


def offered(services):
    return [(s.label, s.port, s.tls) for s in services if s.offered]


def test_without_a_certificate_nothing_claims_tls():
    assert offered(cc.offered_services(Layout())) == [("imap", 143, "plain"), ("submission", 587, "plain")]


def test_with_one_the_layouts_ports_and_modes():
    assert offered(cc.offered_services(Layout(**TLS))) == [
        ("imaps", 993, "SSL"), ("imap", 143, "STARTTLS"), ("submissions", 465, "SSL"), ("submission", 587, "STARTTLS")]
    layout = Layout(**TLS, smtp_ports=(25, 2525), smtps_ports=(), imaps_port=1993)
    assert offered(cc.offered_services(layout)) == [
        ("imaps", 1993, "SSL"), ("imap", 143, "STARTTLS"), ("submission", 2525, "STARTTLS")]


@pytest.fixture
def hosted(alice):
    ServerSettings.objects.update_or_create(pk=1, defaults={"hostname": HOSTNAME})
    domain = MailDomain.objects.create(name="example.org", owner=alice)
    MailAccount.objects.create(domain=domain, local_part="info", password_hash="{PLAIN}x")
    return domain


def own_certificate(domain, names=("mail.example.org", "webmail.example.org"), days=60):
    return Certificate.objects.create(domain=domain, names=list(names), issuer="Test CA",
                                      not_after=timezone.now() + datetime.timedelta(days=days))


def autoconfig(host="autoconfig.example.org"):
    response = Client().get("/mail/config-v1.1.xml", HTTP_HOST=host)
    provider = ET.fromstring(response.content).find("emailProvider")
    return [(e.findtext("hostname"), e.findtext("port"), e.findtext("socketType"))
            for e in provider if e.tag in ("incomingServer", "outgoingServer")]


def test_autoconfig_without_tls_says_plain_and_offers_no_ssl_port(hosted, settings):
    settings.MAILPANEL_LAYOUT = {}
    assert autoconfig() == [(HOSTNAME, "143", "plain"), (HOSTNAME, "587", "plain")]
    profile = plistlib.loads(cc.mobileconfig(service.client_settings(hosted), "info@example.org"))
    (mail,) = profile["PayloadContent"]
    assert (mail["IncomingMailServerPortNumber"], mail["IncomingMailServerUseSSL"]) == (143, False)
    assert (mail["OutgoingMailServerPortNumber"], mail["OutgoingMailServerUseSSL"]) == (587, False)
    answer = cc.autodiscover_response(service.client_settings(hosted), "info@example.org").decode()
    assert "<SSL>off</SSL>" in answer and "<SSL>on</SSL>" not in answer and "<Encryption>" not in answer


def test_clients_use_mail_dot_domain_once_its_own_certificate_names_it(hosted, settings):
    settings.MAILPANEL_LAYOUT = TLS
    assert autoconfig()[0] == (HOSTNAME, "993", "SSL")
    own_certificate(hosted, names=("webmail.example.org",))  # not the mail. name: still the host name
    assert autoconfig()[0] == (HOSTNAME, "993", "SSL")
    Certificate.objects.all().delete()
    own_certificate(hosted, days=-1)  # expired: not what anyone should be sent to
    assert autoconfig()[0] == (HOSTNAME, "993", "SSL")
    Certificate.objects.all().delete()
    own_certificate(hosted)
    assert autoconfig() == [("mail.example.org", "993", "SSL"), ("mail.example.org", "143", "STARTTLS"),
                            ("mail.example.org", "465", "SSL"), ("mail.example.org", "587", "STARTTLS")]


def clients_box(client, domain):
    page = client.get(reverse("mailadmin:domain_clients", args=[domain.pk])).content.decode()
    start = page.index('id="client-settings"')
    return page[start:page.index("</section>", start)]


def test_the_box_without_tls_says_so_and_promises_no_ssl_port(alice_client, hosted, settings):
    settings.MAILPANEL_LAYOUT = {}
    box = clients_box(alice_client, hosted)
    assert "993" not in box and "465" not in box and "SSL/TLS" not in box and "STARTTLS" not in box
    assert "<code>143</code>" in box and "<code>587</code>" in box and "no encryption" in box
    assert "offers no TLS" in box


def test_the_box_names_the_certificate_clients_get(alice_client, hosted, settings, tmp_path):
    pki = mailstack.mail_pki()  # its server certificate names localhost and 127.0.0.1
    settings.MAILPANEL_ROOT = str(tmp_path)
    cert = tmp_path / "etc/mailpanel/tls/fullchain.pem"
    cert.parent.mkdir(parents=True)
    cert.write_bytes(open(pki.server_cert, "rb").read())
    settings.MAILPANEL_LAYOUT = TLS
    box = clients_box(alice_client, hosted)
    assert "<code>993</code> SSL/TLS" in box and "<code>587</code> STARTTLS" in box and "no encryption" not in box
    assert f"<code>{HOSTNAME}</code>" in box and "<code>localhost</code>" in box  # the server's file, read
    Certificate.objects.create(server=True, names=[HOSTNAME], not_after=timezone.now() + datetime.timedelta(days=60))
    box = clients_box(alice_client, hosted)
    assert "<code>localhost</code>" not in box  # the ACME record of the server's certificate wins over the file
    own_certificate(hosted)
    box = clients_box(alice_client, hosted)
    assert "<code>mail.example.org</code> · " in box and "<code>webmail.example.org</code>" in box


# --- the "name served" diagnostic, against real Exim and Dovecot -------------------------------


def test_the_name_served_check_compares_the_certificate_each_port_presents(sni_stack, alice, settings):  # noqa: F811
    layout = sni_stack["layout"]
    # the stack's stand-in for 25 is a free port, not 25: leave it out (mail programs never use 25)
    settings.MAILPANEL_LAYOUT = {
        "tls_certificate": layout.tls_certificate,
        "smtp_ports": [sni_stack["ports"]["465"], sni_stack["ports"]["587"]],
        "smtps_ports": list(layout.smtps_ports), "imaps_port": layout.imaps_port}
    settings.MAILPANEL_TLS_CHECK_HOST = "127.0.0.1"
    ServerSettings.objects.update_or_create(pk=1, defaults={"hostname": SERVER_NAME})
    ports = sorted([sni_stack["ports"][p] for p in ("465", "587", "993")])

    def served(name, names=None):
        domain = MailDomain.objects.create(name=name, owner=alice)
        if names:
            own_certificate(domain, names)
        plan = dns_checks.name_served_plan(domain, dns_checks.domain_identity(domain, ServerSettings.load()))
        assert sorted(p.port for p in plan["ports"]) == ports and plan["host"] == "127.0.0.1"
        return dns_checks.run_async(lambda report: dns_checks.name_served(plan, 5.0))

    a = served("a.test", ["mail.a.test"])
    assert a["status"] == "ok" and a["name"] == "mail.a.test" and not a["hint"]
    assert all("mail.a.test" in p["names"] for p in a["ports"])
    # no certificate of its own (the index has no files for c.test): the server's is served
    c = served("c.test")
    assert c["status"] == "different" and {tuple(p["names"]) for p in c["ports"]} == {(SERVER_NAME,)}
    assert SERVER_NAME in c["hint"]
    assert all("mail.c.test" in p["detail"] for p in c["ports"])


def test_the_diagnostics_page_shows_it(admin_client_):
    result = {"what": "domain", "domain": {
        "domain": "c.test", "domain_id": 1,
        "receiving": {"status": "ok", "hosts": []}, "sending": {"status": "ok", "checks": []},
        "tls": {"name": "mail.c.test", "status": "different", "hint": "no certificate of its own",
                "ports": [{"port": 993, "status": "different", "names": ["mx.server.test"], "detail": "asked for"}]}}}
    from django.template.loader import render_to_string

    html = render_to_string("mailadmin/diagnostics_results.html", {"result": result})
    assert 'id="diag-tls"' in html and "mail.c.test" in html and "<code>mx.server.test</code>" in html
    assert 'data-port="993"' in html and "no certificate of its own" in html


# --- the panel renders what the helper will: a new certificate re-renders the code files --------


def test_the_panel_reads_the_index_and_a_new_certificate_sends_the_code(settings, tmp_path):
    from mailconf import tls
    from mailconf.render import render_all
    from mailconf.render.tls_sites import TLS_SITES
    from mailadmin.services.apply import build_snapshot, layout_from_settings, plan_changes, sni_pairs

    settings.MAILPANEL_ROOT = str(tmp_path)
    settings.MAILPANEL_LAYOUT = {**TLS, "webmail_sites": True}
    layout = layout_from_settings()
    assert sni_pairs(layout) == ()  # no index yet
    index = tmp_path / tls.SNI_INDEX.lstrip("/")
    index.parent.mkdir(parents=True)
    index.write_bytes(b"mail.a.test a.test\nmail.b.test b.test\nwebmail.a.test a.test\n")
    assert sni_pairs(layout) == ()  # no certificate files: nothing the helper would render
    cert = tmp_path / tls.domain_cert_paths("a.test")[0].lstrip("/")
    cert.parent.mkdir(parents=True)
    cert.write_text("-----BEGIN CERTIFICATE-----\n")
    assert sni_pairs(layout) == (tls.SniName("mail.a.test", "a.test"), tls.SniName("webmail.a.test", "a.test"))
    snapshot = build_snapshot()
    before = render_all(snapshot, layout)
    live = {path: hashlib.sha256(spec.content).hexdigest() for path, spec in before.items()}
    after = render_all(snapshot, layout, sni_pairs(layout))
    plan = plan_changes(after, live)
    assert plan.code_changed and "/etc/dovecot/dovecot.conf" in plan.write and TLS_SITES in plan.write
    # the last certificate gone: the live sites file is no longer rendered, the helper must hear of it
    live_after = {path: hashlib.sha256(spec.content).hexdigest() for path, spec in after.items()}
    assert plan_changes(before, live_after).code_changed
    index.write_bytes(b"mail.a.test /etc/shadow\n")
    assert sni_pairs(layout) == ()  # the grammar refuses the whole file
