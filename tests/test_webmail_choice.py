"""Which webmail https://<host name>/webmail/ serves (issue #15): SnappyMail
by default, Roundcube (Debian's package) as the admin's second choice, set
on the server settings' webmail tab or with `mail webmail set`; the choice
goes into the snapshot and from there into the rendered sites."""

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from mailadmin.models import AuditEntry, Job, JobKind, MailDomain, ServerSettings
from mailadmin.services import webmail
from mailadmin.services.apply import build_snapshot
from mailconf.params import code_params
from mailconf.render import render_code
from mailconf.render.webmail import WEBMAIL_LOCATIONS
from mailconf.snapshot import Layout

pytestmark = pytest.mark.django_db


@pytest.fixture
def no_roundcube(settings, tmp_path):
    """A host without Debian's roundcube-core (the Layout's folder is empty)."""
    settings.MAILPANEL_LAYOUT = {**(getattr(settings, "MAILPANEL_LAYOUT", {}) or {}),
                                 "roundcube_dir": str(tmp_path / "no-roundcube")}


def served(snapshot) -> str:
    files = render_code(code_params(snapshot), Layout(webmail_sites=True))
    return files[WEBMAIL_LOCATIONS].content.decode() if WEBMAIL_LOCATIONS in files else ""


def test_snappymail_is_the_default():
    assert ServerSettings.load().webmail == "snappymail"
    assert build_snapshot().webmail == "snappymail"


def test_cli_sets_roundcube_and_back_and_each_change_is_an_apply(capsys):
    call_command("mail", "webmail", "set", "roundcube")
    assert "webmail: roundcube; apply job #" in capsys.readouterr().out
    assert ServerSettings.load().webmail == "roundcube"
    snapshot = build_snapshot()
    assert snapshot.webmail == "roundcube"
    assert "alias /var/lib/roundcube/public_html/;" in served(snapshot)
    assert Job.objects.filter(kind=JobKind.APPLY).exists()
    assert AuditEntry.objects.filter(action="webmail.set").count() == 1
    call_command("mail", "webmail", "show", "--json")
    assert '"webmail": "roundcube"' in capsys.readouterr().out
    call_command("mail", "webmail", "set", "snappymail")
    assert ServerSettings.load().webmail == "snappymail"


@pytest.mark.parametrize("app", ["squirrelmail", "roundcube; rm -rf /", ""])
def test_cli_refuses_anything_but_the_two_webmails(app):
    with pytest.raises((CommandError, SystemExit)):
        call_command("mail", "webmail", "set", app)
    assert ServerSettings.load().webmail == "snappymail"


def test_roundcube_cannot_be_chosen_where_its_package_is_missing(no_roundcube, admin_client_):
    with pytest.raises(CommandError, match="not installed"):
        call_command("mail", "webmail", "set", "roundcube")
    response = admin_client_.post(reverse("mailadmin:webmail_save"), {"webmail": "roundcube"}, HTTP_HX_REQUEST="true")
    page = response.content.decode()
    assert 'role="alert"' in page and "not installed" in page
    assert 'value="roundcube" id="id_webmail_roundcube" disabled' in page
    assert ServerSettings.load().webmail == "snappymail"
    assert not Job.objects.exists()


def test_admin_chooses_roundcube_on_the_webmail_tab(admin_client_):
    page = admin_client_.get(reverse("mailadmin:server_webmail")).content.decode()
    assert 'id="webmail-app"' in page and 'value="snappymail" id="id_webmail_snappymail" checked' in page
    response = admin_client_.post(reverse("mailadmin:webmail_save"), {"webmail": "roundcube"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    page = response.content.decode()
    assert "Roundcube will answer at /webmail/" in page
    assert 'value="roundcube" id="id_webmail_roundcube" checked' in page
    assert ServerSettings.load().webmail == "roundcube"
    assert Job.objects.filter(kind=JobKind.APPLY).count() == 1


def test_a_hostile_choice_from_the_form_changes_nothing(admin_client_):
    response = admin_client_.post(reverse("mailadmin:webmail_save"), {"webmail": "roundcube\nuser = root"})
    assert response.status_code == 302
    assert ServerSettings.load().webmail == "snappymail"
    assert not Job.objects.exists()


def test_customer_cannot_choose_the_webmail(alice_client):
    response = alice_client.post(reverse("mailadmin:webmail_save"), {"webmail": "roundcube"})
    assert response.status_code == 404
    assert ServerSettings.load().webmail == "snappymail"


def test_the_domains_webmail_link_appears_once_roundcube_serves_it(alice, alice_client, admin_user):
    domain = MailDomain.objects.create(name="example.org", owner=alice, dkim_enabled=False)
    url = reverse("mailadmin:domain_clients", args=[domain.pk])
    assert 'id="webmail"' not in alice_client.get(url).content.decode()  # SnappyMail not installed
    webmail.set_webmail(admin_user, "roundcube")
    page = alice_client.get(url).content.decode()
    assert 'id="webmail"' in page and "/webmail/" in page
