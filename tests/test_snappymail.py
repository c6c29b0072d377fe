"""SnappyMail: install job from a tarball the test builds (SHA-256 checked), the
root-only credentials file, application.ini read back by real PHP, the
credentials shown only to admins and only until the file is deleted.

The helper runs as a real subprocess with --root under tmp_path."""

import base64
import hashlib
import io
import json
import logging
import random
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from mailadmin import snappymail_release as release
from mailadmin.models import AuditEntry, Job, JobKind, MailDomain, ServerSettings
from mailconf.render.snappymail import (
    application_ini_path,
    default_domain_path,
    ini_quote,
    render_application_ini,
    render_default_domain,
    render_snappymail,
)
from mailadmin.services import snappymail
from mailconf.params import code_params
from mailconf.snapshot import Layout, Snapshot, SnappyMail

pytestmark = pytest.mark.django_db

REPO = Path(__file__).resolve().parent.parent
HELPER = REPO / "deploy" / "mailpanel_helper.py"
PHP = shutil.which("php")
needs_php = pytest.mark.skipif(PHP is None, reason="php-cli is not installed")

INI = "var/lib/snappymail/data/_data_/_default_/configs/application.ini"
DEFAULT_JSON = "var/lib/snappymail/data/_data_/_default_/domains/default.json"
CREDENTIALS = "root/.snappymail"


# --- fixtures ---------------------------------------------------------------------


@pytest.fixture
def live_root(tmp_path, settings):
    root = tmp_path / "root"
    root.mkdir()
    settings.MAILPANEL_ROOT = str(root)
    settings.MAILPANEL_HELPER = f"{sys.executable} {HELPER} --root {root} --service-command true"
    settings.TASKS = {"default": {"BACKEND": "django.tasks.backends.immediate.ImmediateBackend"}}
    return root


def build_tarball(files: dict[str, bytes], extra=()) -> bytes:
    """A gzip tarball like SnappyMail's release: no top folder, "./" names."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        dirs = sorted({str(Path(name).parent) for name in files} - {"."})
        for d in dirs:
            info = tarfile.TarInfo("./" + d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        for name, content in sorted(files.items()):
            info = tarfile.TarInfo("./" + name)
            info.size = len(content)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(content))
        for info in extra:
            tar.addfile(info)
    return buf.getvalue()


def fake_release(version: str = "2.38.2") -> dict[str, bytes]:
    return {
        "index.php": b"<?php\n// fake SnappyMail " + version.encode() + b"\n",
        "_include.php": b"<?php\n",
        "data/.htaccess": b"Require all denied\n",
        f"snappymail/v/{version}/index.php": b"<?php\n",
    }


@pytest.fixture
def release_tarball(tmp_path, settings):
    data = build_tarball(fake_release())
    path = tmp_path / "snappymail-2.38.2.tar.gz"
    path.write_bytes(data)
    settings.MAILPANEL_SNAPPYMAIL_URL = path.as_uri()
    settings.MAILPANEL_SNAPPYMAIL_SHA256 = hashlib.sha256(data).hexdigest()
    return path


def install(actor, django_capture_on_commit_callbacks, **kwargs) -> Job:
    with django_capture_on_commit_callbacks(execute=True):
        job = snappymail.start_install(actor, **kwargs)
    job.refresh_from_db()
    return job


def read_credentials_file(root: Path) -> dict[str, str]:
    return release.parse_credentials_file((root / CREDENTIALS).read_text())


def php(code: str, *args: str) -> str:
    proc = subprocess.run([PHP, "-n", "-r", code, "--", *args], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def php_ini(path: Path) -> dict:
    return json.loads(php("echo json_encode(parse_ini_file($argv[1], true));", str(path)))


# --- the install job --------------------------------------------------------------


@needs_php
def test_install_job_unpacks_the_release_and_writes_credentials_php_accepts(
    live_root, release_tarball, admin_user, django_capture_on_commit_callbacks
):
    job = install(admin_user, django_capture_on_commit_callbacks)

    assert job.kind == JobKind.SNAPPYMAIL_INSTALL
    assert job.state == "done", job.log
    assert "SHA-256 verified" in job.log
    assert (live_root / "var/lib/snappymail/index.php").read_bytes().startswith(b"<?php")
    assert (live_root / "var/lib/snappymail/data/.htaccess").exists()

    # /root/.snappymail: root only, the FAQ's three lines
    cred_path = live_root / CREDENTIALS
    assert cred_path.stat().st_mode & 0o777 == 0o600
    assert cred_path.stat().st_uid == 0
    lines = cred_path.read_text().splitlines()
    assert len(lines) == 3
    assert re.fullmatch(r"Username: admin_[0-9a-f]{8}", lines[0])
    assert re.fullmatch(r"Password: \S{20,}", lines[1])
    assert re.fullmatch(r"Secret key: [A-Za-z0-9]{16,}", lines[2])
    creds = read_credentials_file(live_root)

    # application.ini as SnappyMail reads it (parse_ini_file), checked by PHP itself
    ini = php_ini(live_root / INI)
    assert ini["security"]["admin_login"] == creds["Username"]
    assert ini["admin_panel"]["key"] == creds["Secret key"]
    assert ini["security"]["admin_password"].startswith("$2y$")
    verified = php(
        "echo password_verify($argv[1], parse_ini_file($argv[2], true)['security']['admin_password']) ? 'yes' : 'no';",
        creds["Password"],
        str(live_root / INI),
    )
    assert verified == "yes"
    wrong = php(
        "echo password_verify($argv[1], parse_ini_file($argv[2], true)['security']['admin_password']) ? 'yes' : 'no';",
        creds["Password"] + "x",
        str(live_root / INI),
    )
    assert wrong == "no"

    server = ServerSettings.load()
    assert server.snappymail_installed and server.snappymail_credentials_file
    assert server.snappymail_admin_login == creds["Username"]
    assert server.snappymail_admin_key == creds["Secret key"]
    assert job.result == {"admin_login": creds["Username"]}

    domain = json.loads((live_root / DEFAULT_JSON).read_text())
    assert domain["IMAP"]["host"] == "localhost" and domain["SMTP"]["host"] == "localhost"
    assert domain["Sieve"]["enabled"] is False  # ManageSieve is off by default


def test_wrong_checksum_fails_the_job_and_installs_nothing(
    live_root, release_tarball, admin_user, settings, django_capture_on_commit_callbacks
):
    settings.MAILPANEL_SNAPPYMAIL_SHA256 = "0" * 64
    job = install(admin_user, django_capture_on_commit_callbacks)

    assert job.state == "failed"
    assert "SHA-256 mismatch" in job.log
    assert not (live_root / "var/lib/snappymail").exists()
    assert not (live_root / CREDENTIALS).exists()
    server = ServerSettings.load()
    assert not server.snappymail_installed
    assert server.snappymail_admin_login == "" and server.snappymail_admin_key == ""


def test_explicit_sha256_overrides_the_configured_one(
    live_root, release_tarball, admin_user, settings, django_capture_on_commit_callbacks
):
    settings.MAILPANEL_SNAPPYMAIL_SHA256 = "0" * 64
    good = hashlib.sha256(release_tarball.read_bytes()).hexdigest()
    job = install(admin_user, django_capture_on_commit_callbacks, tarball=str(release_tarball), sha256=good.upper())
    assert job.state == "done", job.log


def test_install_without_a_configured_release_is_refused_with_a_clear_message(
    live_root, admin_user, settings
):
    settings.MAILPANEL_SNAPPYMAIL_URL = ""
    with pytest.raises(Exception) as exc:
        snappymail.start_install(admin_user)
    assert "MAILPANEL_SNAPPYMAIL_URL" in " ".join(exc.value.messages)
    assert not Job.objects.exists()


def test_helper_itself_refuses_a_tarball_whose_checksum_differs(live_root, release_tarball):
    data = release_tarball.read_bytes()
    proc = subprocess.run(
        [sys.executable, str(HELPER), "--root", str(live_root)],
        input=json.dumps(
            {"op": "install_tarball", "tarball_b64": base64.b64encode(data).decode(), "sha256": "1" * 64}
        ).encode(),
        capture_output=True,
        timeout=60,
    )
    answer = json.loads(proc.stdout)
    assert proc.returncode == 2 and answer["rule"] == "checksum"
    assert not (live_root / "var/lib/snappymail").exists()


def test_reinstall_keeps_data_and_credentials_and_replaces_the_code(
    live_root, release_tarball, admin_user, settings, tmp_path, django_capture_on_commit_callbacks
):
    first = install(admin_user, django_capture_on_commit_callbacks)
    assert first.state == "done", first.log
    creds = read_credentials_file(live_root)
    user_data = live_root / "var/lib/snappymail/data/_data_/_default_/storage/alice.example/settings"
    user_data.parent.mkdir(parents=True)
    user_data.write_text("user settings")

    newer = build_tarball(fake_release("2.39.0"))
    path = tmp_path / "snappymail-2.39.0.tar.gz"
    path.write_bytes(newer)
    second = install(
        admin_user, django_capture_on_commit_callbacks,
        tarball=str(path), sha256=hashlib.sha256(newer).hexdigest(),
    )

    assert second.state == "done", second.log
    assert "kept the existing data folder" in second.log
    assert user_data.read_text() == "user settings"
    assert b"2.39.0" in (live_root / "var/lib/snappymail/index.php").read_bytes()
    assert not (live_root / "var/lib/snappymail/snappymail/v/2.38.2").exists()
    assert (live_root / INI).exists()
    assert read_credentials_file(live_root) == creds
    assert ServerSettings.load().snappymail_admin_login == creds["Username"]
    assert [p.name for p in (live_root / "var/lib").iterdir()] == ["snappymail"]  # no staging left


def _symlink(name, target):
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info


def _special(name, kind):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.devmajor, info.devminor = 1, 3
    if kind == tarfile.LNKTYPE:
        info.linkname = "./index.php"
    return info


def _file(name, content=b"x"):
    info = tarfile.TarInfo(name)
    info.size = len(content)
    return info, content


@pytest.mark.parametrize(
    "rule, entry",
    [
        ("absolute path in tarball", _file("/etc/cron.d/evil")),
        ("'..' in tarball", _file("./data/../../../etc/evil")),
        ("symlink leaving the tree", _symlink("./data/etc", "/etc")),
        ("symlink leaving the tree", _symlink("./snappymail/up", "../../..")),
        ("hard link in tarball", _special("./evil-link", tarfile.LNKTYPE)),
        ("device file in tarball", _special("./null", tarfile.CHRTYPE)),
        ("device file in tarball", _special("./fifo", tarfile.FIFOTYPE)),
    ],
)
def test_helper_refuses_unsafe_tarball_entries_and_unpacks_nothing(live_root, rule, entry):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        index = tarfile.TarInfo("./index.php")
        index.size = 5
        tar.addfile(index, io.BytesIO(b"<?php"))
        if isinstance(entry, tuple):
            tar.addfile(entry[0], io.BytesIO(entry[1]))
        else:
            tar.addfile(entry)
    data = buf.getvalue()
    proc = subprocess.run(
        [sys.executable, str(HELPER), "--root", str(live_root)],
        input=json.dumps(
            {
                "op": "install_tarball",
                "tarball_b64": base64.b64encode(data).decode(),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        ).encode(),
        capture_output=True,
        timeout=60,
    )
    answer = json.loads(proc.stdout)
    assert proc.returncode == 2, answer
    assert answer["rule"] == rule
    assert not (live_root / "var/lib/snappymail").exists()
    assert not (live_root / "etc").exists()


def test_helper_reads_back_only_the_credentials_file(live_root):
    (live_root / "etc").mkdir()
    (live_root / "etc/shadow").write_text("root:secret")
    for path in ("/etc/shadow", "/etc/dovecot/dovecot.conf", "/root/../etc/shadow"):
        proc = subprocess.run(
            [sys.executable, str(HELPER), "--root", str(live_root)],
            input=json.dumps({"op": "read", "path": path}).encode(),
            capture_output=True,
            timeout=30,
        )
        assert proc.returncode == 2, proc.stdout
        assert b"secret" not in proc.stdout


# --- the renderer -----------------------------------------------------------------

HASH = release.hash_admin_password("correct horse")
EDGE_VALUES = [
    'admin_"quoted"',
    "admin_$HOME",
    "admin_${HOME}",
    "admin_\\back\\slash\\",
    'tricky \\" ; = [x] $ {} \' ` ~ ! ^',
    "trailing\\",
    "密码_ünïcödé",
]


@needs_php
def test_ini_values_with_quotes_dollars_and_backslashes_round_trip_through_php(tmp_path):
    rng = random.Random(7)
    alphabet = '"$\\{}; =[]\'`!~^a1 ' + "é密"
    values = EDGE_VALUES + ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40))) for _ in range(200)]
    path = tmp_path / "values.ini"
    path.write_text(
        "[values]\n" + "".join(f"v{i} = {ini_quote(v)}\n" for i, v in enumerate(values)), encoding="utf-8"
    )
    parsed = php_ini(path)["values"]
    assert [parsed[f"v{i}"] for i in range(len(values))] == values


@needs_php
@pytest.mark.parametrize("login", EDGE_VALUES)
def test_application_ini_keeps_login_and_hash_byte_exact_for_php(tmp_path, login):
    snapshot = Snapshot(
        snappymail=SnappyMail(installed=True, admin_login=login, admin_password_hash=HASH, admin_key="k3y-" + "a" * 20)
    )
    path = tmp_path / "application.ini"
    path.write_bytes(render_application_ini(code_params(snapshot)))
    ini = php_ini(path)
    assert ini["security"]["admin_login"] == login
    assert ini["security"]["admin_password"] == HASH
    assert ini["admin_panel"]["key"] == "k3y-" + "a" * 20
    assert php(
        "echo password_verify('correct horse', parse_ini_file($argv[1], true)['security']['admin_password']) ? 'yes' : 'no';",
        str(path),
    ) == "yes"


@pytest.mark.parametrize("bad", ["line\nbreak", "nul\x00"])
def test_ini_values_that_cannot_be_represented_are_refused(bad):
    with pytest.raises(ValueError):
        ini_quote(bad)


def test_renderer_refuses_a_plaintext_admin_password_and_an_unsafe_key():
    with pytest.raises(ValueError, match="hash"):
        render_application_ini(
            code_params(Snapshot(snappymail=SnappyMail(True, "admin_1", "plaintext-password", "a" * 32)))
        )
    with pytest.raises(ValueError, match="key"):
        render_application_ini(code_params(Snapshot(snappymail=SnappyMail(True, "admin_1", HASH, "a b&c=d" * 3))))


def test_nothing_is_rendered_before_snappymail_is_installed():
    assert render_snappymail(Snapshot(), Layout()) == {}


def test_default_domain_json_carries_the_faq_sieve_settings_in_the_current_format():
    layout = Layout()
    on = json.loads(render_default_domain(Snapshot(sieve_enabled=True), layout))
    # SnappyMail ≥ 2.20 (RainLoop\Model\Domain::fromArray) needs these blocks
    assert set(on) == {"IMAP", "SMTP", "Sieve", "whiteList"}
    assert on["Sieve"]["enabled"] is True
    assert on["Sieve"]["host"] == "localhost"
    assert on["Sieve"]["port"] == 4190
    assert on["Sieve"]["type"] == 0  # sieve_secure = "None"
    assert on["IMAP"]["host"] == "localhost" and on["IMAP"]["type"] == 0
    # Exim advertises AUTH only over TLS: STARTTLS when offered (auto-detect)
    assert (on["SMTP"]["host"], on["SMTP"]["port"], on["SMTP"]["type"]) == ("localhost", 587, 9)
    assert on["SMTP"]["useAuth"] is True and on["SMTP"]["ssl"]["verify_peer"] is False
    off = json.loads(render_default_domain(Snapshot(sieve_enabled=False), layout))
    assert off["Sieve"]["enabled"] is False
    files = render_snappymail(
        Snapshot(snappymail=SnappyMail(True, "admin_1", HASH, "a" * 32)), layout
    )
    assert set(files) == {application_ini_path(layout), default_domain_path(layout)}
    assert default_domain_path(layout) == "/var/lib/snappymail/data/_data_/_default_/domains/default.json"


def test_generated_credentials_have_the_faq_shape():
    seen = set()
    for _ in range(20):
        creds = release.generate_credentials()
        assert re.fullmatch(r"admin_[0-9a-f]{8}", creds.login)
        assert len(creds.password) >= 20 and len(creds.password.encode()) <= 72
        assert re.fullmatch(r"[0-9a-f]{32}", creds.key)
        seen.add(creds.password)
        assert creds.password not in repr(creds) and creds.key not in repr(creds)
    assert len(seen) == 20


# --- secrets stay out of logs -----------------------------------------------------


def test_credentials_never_reach_the_job_log_the_audit_log_or_python_logging(
    live_root, release_tarball, admin_user, caplog, django_capture_on_commit_callbacks
):
    caplog.set_level(logging.DEBUG)
    job = install(admin_user, django_capture_on_commit_callbacks)
    assert job.state == "done", job.log
    creds = read_credentials_file(live_root)
    server = ServerSettings.load()
    secrets = [creds["Password"], creds["Secret key"], server.snappymail_admin_password_hash]
    audit_text = json.dumps(list(AuditEntry.objects.values("action", "target", "fields")))
    job_text = job.log + json.dumps(job.result)
    for secret in secrets:
        assert secret not in job_text
        assert secret not in caplog.text
        assert secret not in audit_text


# --- the panel --------------------------------------------------------------------


def test_admin_sees_the_credentials_until_the_file_is_deleted(
    live_root, release_tarball, admin_user, admin_client_, django_capture_on_commit_callbacks
):
    install(admin_user, django_capture_on_commit_callbacks)
    creds = read_credentials_file(live_root)
    MailDomain.objects.create(name="example.org", owner=admin_user)
    set_hostname("mail.server.test")

    settings_page = admin_client_.get(reverse("mailadmin:server_webmail"))
    assert settings_page.status_code == 200
    assert creds["Password"] not in settings_page.content.decode()  # only on its own page
    assert reverse("mailadmin:snappymail_credentials") in settings_page.content.decode()

    page = admin_client_.get(reverse("mailadmin:snappymail_credentials"))
    html = page.content.decode()
    assert page.status_code == 200
    assert "no-store" in page["Cache-Control"]
    assert creds["Username"] in html and creds["Password"] in html and creds["Secret key"] in html
    assert f'<code id="snappymail-admin-url">https://mail.server.test/webmail/?{creds["Secret key"]}</code>' in html

    response = admin_client_.post(reverse("mailadmin:snappymail_credentials_delete"))
    assert response.status_code == 302
    assert not (live_root / CREDENTIALS).exists()
    assert ServerSettings.load().snappymail_credentials_file is False

    after = admin_client_.get(reverse("mailadmin:snappymail_credentials")).content.decode()
    assert creds["Password"] not in after and creds["Secret key"] not in after
    assert "has been deleted" in after
    settings_after = admin_client_.get(reverse("mailadmin:server_webmail")).content.decode()
    assert "The credentials file has been deleted." in settings_after


def test_install_button_starts_the_job_and_the_page_shows_it(
    live_root, release_tarball, admin_client_, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client_.post(reverse("mailadmin:snappymail_install"))
    assert response.status_code == 302
    job = Job.objects.get(kind=JobKind.SNAPPYMAIL_INSTALL)
    assert job.state == "done", job.log
    page = admin_client_.get(reverse("mailadmin:server_webmail")).content.decode()
    assert f'id="job-{job.pk}"' in page
    assert "Re-install SnappyMail" in page


def test_install_button_answers_htmx_with_the_section(
    live_root, release_tarball, admin_client_, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):
        response = admin_client_.post(reverse("mailadmin:snappymail_install"), HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert response.status_code == 200
    assert html.strip().startswith('<section class="card" id="snappymail">')
    assert "being installed" in html


# --- the admin URL: never on a customer's domain (issue #12) ---------------------------

KEY = "AdminKey0123456789abcdef"


@pytest.fixture
def tenants(alice, bob, admin_user):
    """Customers' domains sorted before and after the server's own name."""
    for name, owner in [("aaa-alice.example", alice), ("alice.example", alice), ("zzz-bob.example", bob),
                        ("server.test", admin_user)]:
        MailDomain.objects.create(name=name, owner=owner)
    set_hostname("mail.server.test")
    return [name for name in MailDomain.objects.exclude(owner=admin_user).values_list("name", flat=True)]


def set_hostname(name: str) -> None:
    server = ServerSettings.load()
    server.hostname = name
    server.save(update_fields=["hostname"])


def assert_no_customer_domain(url: str, tenants):
    host = url.split("/")[2] if url else ""
    for name in tenants:
        assert name not in url
        assert host != name and not host.endswith("." + name)


def test_admin_url_is_on_the_server_hostname_whatever_the_customers_domains(tenants):
    url = snappymail.admin_url(KEY)
    assert url == f"https://mail.server.test/webmail/?{KEY}"
    assert_no_customer_domain(url, tenants)


def test_admin_url_comes_from_the_configured_url_when_set(tenants, settings):
    settings.MAILPANEL_SNAPPYMAIL_ADMIN_URL = "https://webmail.server.test/snappymail/"
    url = snappymail.admin_url(KEY)
    assert url == f"https://webmail.server.test/snappymail/?{KEY}"
    assert_no_customer_domain(url, tenants)


@pytest.mark.parametrize("hostname", ["alice.example", "mx.alice.example"])
def test_no_admin_url_when_the_server_hostname_lies_in_a_customers_domain(tenants, hostname, settings):
    """The customer runs that name's DNS: the key would go to their server."""
    set_hostname(hostname)
    assert snappymail.admin_url(KEY) == ""
    settings.MAILPANEL_SNAPPYMAIL_ADMIN_URL = "https://webmail.server.test/"
    assert snappymail.admin_url(KEY) == f"https://webmail.server.test/?{KEY}"


@pytest.mark.parametrize(
    "bad", ["webmail.server.test", "javascript:alert(1)", "ftp://webmail.server.test/",
            "https://webmail.server.test/?x=1", "https://user@webmail.server.test/", "https:///path",
            "https://webmail.server.test/#frag", "https://web mail.test/"],
)
def test_a_malformed_configured_url_is_refused(db, settings, bad):
    from django.core.exceptions import ImproperlyConfigured

    settings.MAILPANEL_SNAPPYMAIL_ADMIN_URL = bad
    with pytest.raises(ImproperlyConfigured, match="MAILPANEL_SNAPPYMAIL_ADMIN_URL"):
        snappymail.admin_url(KEY)


def test_credentials_page_says_how_to_get_an_admin_url_when_the_hostname_is_a_customers(
    live_root, release_tarball, admin_user, admin_client_, alice, django_capture_on_commit_callbacks
):
    install(admin_user, django_capture_on_commit_callbacks)
    creds = read_credentials_file(live_root)
    MailDomain.objects.create(name="alice.example", owner=alice)
    set_hostname("mail.alice.example")
    html = admin_client_.get(reverse("mailadmin:snappymail_credentials")).content.decode()
    assert creds["Secret key"] in html  # the key itself, for the admin
    assert "alice.example/?" not in html and 'id="snappymail-admin-url"' not in html
    assert "MAILPANEL_SNAPPYMAIL_ADMIN_URL" in html


@pytest.mark.parametrize(
    "method, name",
    [
        ("get", "snappymail_credentials"),
        ("post", "snappymail_credentials_delete"),
        ("post", "snappymail_install"),
    ],
)
def test_customer_gets_404_on_snappymail_urls(
    live_root, release_tarball, admin_user, alice_client, django_capture_on_commit_callbacks, method, name
):
    install(admin_user, django_capture_on_commit_callbacks)
    response = getattr(alice_client, method)(reverse(f"mailadmin:{name}"))
    assert response.status_code == 404
    assert (live_root / CREDENTIALS).exists()
    assert Job.objects.filter(kind=JobKind.SNAPPYMAIL_INSTALL).count() == 1


def test_customer_domain_clients_tab_has_the_webmail_link_once_installed(
    live_root, release_tarball, admin_user, alice, alice_client, django_capture_on_commit_callbacks
):
    domain = MailDomain.objects.create(name="alice.example", owner=alice)
    clients_tab = reverse("mailadmin:domain_clients", args=[domain.pk])
    before = alice_client.get(clients_tab).content.decode()
    assert 'id="webmail"' not in before
    install(admin_user, django_capture_on_commit_callbacks)
    html = alice_client.get(clients_tab).content.decode()
    section = html[html.index('<section class="card" id="webmail">'):]
    section = section[: section.index("</section>")]
    # on the host name, whose certificate is valid; webmail.<domain> redirects there
    assert f'href="https://{ServerSettings.load().hostname}/webmail/"' in section
    assert "http://webmail.alice.example/" in section
    assert "Open webmail" in section
    creds = read_credentials_file(live_root)
    assert creds["Secret key"] not in html and creds["Password"] not in html


# --- the CLI ----------------------------------------------------------------------


def test_cli_install_credentials_and_delete_credentials(live_root, release_tarball, capsys, settings):
    settings.MAILPANEL_SNAPPYMAIL_URL = ""
    sha = hashlib.sha256(release_tarball.read_bytes()).hexdigest()
    call_command("mail", "snappymail", "install", "--tarball", str(release_tarball), "--sha256", sha)
    out = capsys.readouterr().out
    assert "SnappyMail is installed" in out
    creds = read_credentials_file(live_root)
    assert creds["Password"] not in out

    call_command("mail", "snappymail", "credentials")
    out = capsys.readouterr().out
    assert out == (live_root / CREDENTIALS).read_text()

    call_command("mail", "snappymail", "delete-credentials")
    assert "deleted /root/.snappymail" in capsys.readouterr().out
    assert not (live_root / CREDENTIALS).exists()
    with pytest.raises(CommandError, match="has been deleted"):
        call_command("mail", "snappymail", "credentials")


def test_cli_install_with_a_wrong_checksum_exits_with_an_error(live_root, release_tarball):
    with pytest.raises(CommandError, match="failed"):
        call_command("mail", "snappymail", "install", "--tarball", str(release_tarball), "--sha256", "ab" * 32)
    assert not (live_root / "var/lib/snappymail").exists()
    job = Job.objects.get(kind=JobKind.SNAPPYMAIL_INSTALL)
    assert job.state == "failed" and "SHA-256 mismatch" in job.log


def test_cli_rejects_a_malformed_sha256(live_root, release_tarball):
    with pytest.raises(CommandError, match="64 hexadecimal"):
        call_command("mail", "snappymail", "install", "--tarball", str(release_tarball), "--sha256", "xyz")
    assert not Job.objects.exists()


def test_install_progress_is_saved_line_by_line_while_the_job_runs(live_root, release_tarball, admin_user):
    job = snappymail.create_install_job(admin_user)
    source, sha256 = snappymail.install_source()
    seen = []

    def echo(line):
        row = Job.objects.get(pk=job.pk)
        # saved before it is echoed (an apply saves the files it wrote in one update)
        seen.append((row.state, line in row.log.splitlines()))

    job = snappymail.run_install_job(job.pk, source, sha256, echo=echo)
    assert job.state == "done", job.log
    assert len(seen) >= 5
    assert all(state == "running" and saved for state, saved in seen)
