"""Roundcube, the admin's second choice of webmail (issue #15), in Chromium:
Debian's roundcube-core served by a real nginx and the webmail's own PHP-FPM
master from our rendered files (pool, /webmail/ locations, config.inc.php)
on 127.0.0.1, against the rendered Exim and Dovecot of a hosted domain.

A mailbox logs in, reads a message real Exim delivered, and sends one to a
second mailbox through Exim's submission port (STARTTLS + AUTH); the second
mailbox finds it over IMAPS. The server's certificate names the host name
(not localhost): Roundcube checks that name on IMAP and SMTP."""

import contextlib
import datetime
import imaplib
import os
import shutil
import ssl
import time
from pathlib import Path

import bcrypt
import pytest

from mailconf.managed import ROUNDCUBE_DES_KEY, WEBMAIL_USER
from mailconf.snapshot import Domain, Layout, Mailbox, ServerIdentity, Snapshot
from tests import mailstack
from tests.test_browser import CHROMIUM, browser_page, chromium  # noqa: F401 (fixtures)
from tests.test_webmail_sites import get, php_fpm_binary, webmail_servers

HOSTNAME = "mail.example.net"
ALICE, BOB = "alice@example.org", "bob@example.org"
PASSWORDS = {ALICE: "Alice-webmail-0", BOB: "Bob-webmail-1"}

pytestmark = [
    pytest.mark.skipif(shutil.which("dovecot") is None, reason="dovecot is not installed"),
    pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed"),
    pytest.mark.skipif(php_fpm_binary() is None, reason="php-fpm is not installed"),
    pytest.mark.skipif(not os.path.isfile("/var/lib/roundcube/public_html/index.php"),
                       reason="roundcube-core is not installed (deploy/apt-packages-test.txt)"),
    pytest.mark.skipif(not shutil.which(CHROMIUM), reason="Debian chromium is not installed"),
]


def _blf(password: str) -> str:
    return "{BLF-CRYPT}" + bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()


def host_certificate(cert_path: str, key_path: str) -> None:
    """A self-signed certificate for the host name alone (as install.sh makes
    before ACME), over the tree's loopback one."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOSTNAME)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOSTNAME)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    Path(cert_path).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    Path(key_path).write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()))


@pytest.fixture
def webmail(mailstack_tree):
    """Exim, Dovecot (with ManageSieve), PHP-FPM and nginx from one rendered
    tree; Roundcube is the chosen webmail."""
    mailstack.ensure_webmail_user()
    snapshot = Snapshot(
        server=ServerIdentity(hostname=HOSTNAME),
        domains=(Domain("example.org", dkim_enabled=False,
                        mailboxes=tuple(Mailbox(a.split("@")[0], _blf(p)) for a, p in PASSWORDS.items())),),
        sieve_enabled=True,
        webmail="roundcube",
    )
    smtp, smtps, http = mailstack.free_port(), mailstack.free_port(), mailstack.free_port()
    layout = mailstack_tree(snapshot, tls=True, smtp_ports=(smtp, smtps), smtps_ports=(smtps,),
                            submission_port=smtp, webmail_sites=True, http_port=mailstack.free_port(),
                            http_listen=("127.0.0.1",))
    host_certificate(layout.path(layout.tls_certificate), layout.path(layout.tls_privatekey))
    # What the helper makes on the first apply (tests/test_webmail_sites.py
    # checks that) and what install.sh makes: the des_key and the state folder.
    des_key = Path(layout.path(ROUNDCUBE_DES_KEY))
    des_key.write_text("0123456789abcdefghijklmn\n")
    mailstack.chown_to(des_key, "root", WEBMAIL_USER)
    state = Path(layout.path(layout.roundcube_state_dir))
    (state / "temp").mkdir(parents=True)
    for folder in (state, state / "temp"):
        mailstack.chown_to(folder, WEBMAIL_USER, WEBMAIL_USER)
        folder.chmod(0o750)
    for parent in state.parents:
        if str(parent) == layout.root.rstrip("/"):
            break
        parent.chmod(0o755)
    run = Path(layout.path(layout.webmail_roundcube_socket)).parent
    run.mkdir(parents=True)
    run.chmod(0o755)
    socket = Path(layout.path(layout.webmail_roundcube_socket))
    with contextlib.ExitStack() as stack:
        dovecot = stack.enter_context(mailstack.dovecot_daemon(layout))
        exim = stack.enter_context(mailstack.exim_daemon(layout))
        stack.enter_context(webmail_servers(layout, http, socket))
        yield {"layout": layout, "exim": exim, "dovecot": dovecot, "url": f"http://127.0.0.1:{http}/webmail/",
               "port": http}


def imaps_subjects(layout: Layout, address: str) -> list[str]:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with imaplib.IMAP4_SSL("127.0.0.1", layout.imaps_port, ssl_context=context, timeout=10) as imap:
        imap.login(address, PASSWORDS[address])
        imap.select("INBOX", readonly=True)
        _typ, data = imap.search(None, "ALL")
        subjects = []
        for number in data[0].split():
            _typ, fetched = imap.fetch(number, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            subjects.append(fetched[0][1].decode().split(":", 1)[1].strip())
        return subjects


def wait_for_subject(layout: Layout, address: str, subject: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while subject not in (found := imaps_subjects(layout, address)):
        assert time.monotonic() < deadline, f"{subject!r} not in {address}'s INBOX: {found}"
        time.sleep(0.2)


def test_a_mailbox_reads_in_roundcube_what_exim_delivered_and_sends_to_a_second_mailbox(webmail, browser_page):
    layout, page = webmail["layout"], browser_page
    webmail["exim"].send("someone@remote.example", [ALICE], mailstack.make_message(
        "someone@remote.example", ALICE, subject="Delivered by Exim", body="The body Roundcube shows.\n"))
    webmail["dovecot"].wait_for_messages(ALICE)

    page.goto(webmail["url"])
    page.fill("#rcmloginuser", ALICE)
    page.fill("#rcmloginpwd", PASSWORDS[ALICE])
    page.click("#rcmloginsubmit")
    row = page.locator("#messagelist tr", has_text="Delivered by Exim")
    row.first.wait_for()
    row.first.click()
    preview = page.frame_locator("#messagecontframe")
    preview.locator("#messagebody", has_text="The body Roundcube shows.").wait_for()

    page.goto(webmail["url"] + "?_task=mail&_action=compose")
    to = page.locator("#compose_to input, #_to").first
    to.fill(BOB + ", ")
    page.fill("#compose-subject", "Sent from Roundcube")
    page.fill("#composebody", "Hello Bob, through Exim's submission port.")
    page.locator("button.send, a.send, #rcmbtn_send").first.click()
    # Roundcube goes back to the message list once Exim took the message.
    page.wait_for_url(lambda url: "_action=compose" not in url, timeout=20000)

    wait_for_subject(layout, BOB, "Sent from Roundcube")
    submitted = [line for line in webmail["exim"].mainlog().splitlines() if "<= alice@example.org" in line]
    assert submitted and " A=" in submitted[-1] and " X=TLS" in submitted[-1]  # AUTH over STARTTLS


@pytest.mark.parametrize("path, status", [
    ("/webmail/", 200),
    ("/webmail/skins/elastic/images/favicon.ico", 200),
    ("/webmail/plugins/managesieve/managesieve.js", 200),
    ("/webmail/plugins/managesieve/config.inc.php", 403),
    ("/webmail/plugins/managesieve/managesieve.php", 403),
    ("/webmail/plugins/managesieve/localization/en_US.inc", 403),
    ("/webmail/plugins/managesieve/composer.json", 403),
    ("/webmail/skins/elastic/meta.json", 403),
    ("/webmail/.htaccess", 403),
    ("/webmail/program/include/rcmail.php", 403),  # any other PHP: refused before a lookup
    ("/webmail/config/config.inc.php", 403),
])
def test_only_roundcubes_public_files_and_index_php_are_served(webmail, path, status):
    got, _headers, body = get(webmail["port"], path)
    assert got == status, (path, body[:300])
    assert "<?php" not in body and "$config" not in body
    if path == "/webmail/":
        assert 'id="rcmloginuser"' in body and "Internal Error" not in body
