"""The helper's certificate ops (cert_key, cert_install, cert_remove), driven
as a compromised panel would drive them: hostile requests first. The helper
runs as a real process on a temporary root; certificates come from a small
CA made here (cryptography), signing whatever public key and names a test
wants — which is exactly what a panel in an attacker's hands could do."""

import base64
import json
import os
import re
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from tests.test_helper import Helper, code, needs_validators, service_script

TLS = "etc/mailpanel/tls"
NAMES = ["mail.example.org", "webmail.example.org"]


class CA:
    def __init__(self):
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test CA")])
        now = datetime.now(timezone.utc)
        self.cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self.key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )

    def issue(self, public_key, names, days=90, extra_san=()):
        now = datetime.now(timezone.utc)
        san = [x509.DNSName(n) for n in names] + list(extra_san)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else "x")]))
            .issuer_name(self.cert.subject).public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=2)).not_valid_after(now + timedelta(days=days))
        )
        if san:
            cert = cert.add_extension(x509.SubjectAlternativeName(san), critical=False)
        cert = cert.sign(self.key, hashes.SHA256())
        return (cert.public_bytes(serialization.Encoding.PEM)
                + self.cert.public_bytes(serialization.Encoding.PEM)).decode()


def csr_public_key(csr_pem):
    return x509.load_pem_x509_csr(csr_pem.encode()).public_key()


@pytest.fixture
def certs(tmp_path):
    root = tmp_path / "root"
    (root / "etc/mailpanel").mkdir(parents=True)
    (root / "etc/mailpanel/layout.json").write_text(json.dumps(
        {"tls_certificate": "/etc/mailpanel/tls/fullchain.pem", "tls_privatekey": "/etc/mailpanel/tls/privkey.pem"}))
    command, log = service_script(tmp_path, "service", "exit 0\n")
    helper = Helper(root, command)
    helper.reloads = log
    helper.ca = CA()
    return helper


def key_for(helper, names=NAMES, domain="example.org"):
    target = {"server": True} if domain is None else {"domain": domain}
    status, answer = helper.run({"op": "cert_key", **target, "names": names})
    assert status == 0, answer
    return answer["csr_pem"]


def install(helper, chain, domain="example.org"):
    target = {"server": True} if domain is None else {"domain": domain}
    return helper.run({"op": "cert_install", **target, "chain_pem": chain})


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
            and not p.is_symlink() and p.name != "mailpanel-helper.lock"}


def installed_pair(helper):
    """A valid certificate installed for example.org: (chain, snapshot)."""
    csr = key_for(helper)
    chain = helper.ca.issue(csr_public_key(csr), NAMES)
    status, answer = install(helper, chain)
    assert status == 0, answer
    return chain


# -- what it does when all is well


def test_key_stays_with_root_and_the_chain_is_swapped_in_with_the_index(certs):
    csr = key_for(certs)
    folder = certs.root / TLS / "domains/example.org"
    pending = folder / "privkey.pending.pem"
    assert "PRIVATE KEY" in pending.read_text() and "PRIVATE" not in csr
    assert pending.stat().st_mode & 0o777 == 0o600
    request = x509.load_pem_x509_csr(csr.encode())
    assert request.is_signature_valid
    assert request.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName) == NAMES

    status, answer = install(certs, certs.ca.issue(request.public_key(), NAMES))
    assert status == 0, answer
    assert answer["names"] == NAMES and answer["issuer"] == "CN=Test CA"
    assert set(answer["reloads"]) == {"exim4", "dovecot", "nginx"}
    assert not pending.exists() and not (folder / "pending_names").exists()
    assert (folder / "privkey.pem").stat().st_mode & 0o777 == 0o640
    assert (folder / "fullchain.pem").stat().st_mode & 0o777 == 0o644
    assert (certs.root / TLS / "sni_names").read_text() == (
        "mail.example.org example.org\nwebmail.example.org example.org\n")
    key = serialization.load_pem_private_key((folder / "privkey.pem").read_bytes(), None)
    leaf = x509.load_pem_x509_certificate((folder / "fullchain.pem").read_bytes())
    assert key.public_key().public_numbers() == leaf.public_key().public_numbers()
    assert certs.reloads.read_text().split("\n")[:3] == ["reload exim4", "reload dovecot", "reload nginx"]


def test_the_server_certificate_goes_to_the_tls_folder_and_not_into_the_index(certs):
    csr = key_for(certs, ["panel.example.net"], domain=None)
    status, answer = install(certs, certs.ca.issue(csr_public_key(csr), ["panel.example.net"]), domain=None)
    assert status == 0, answer
    assert (certs.root / TLS / "fullchain.pem").exists() and (certs.root / TLS / "privkey.pem").exists()
    assert not (certs.root / TLS / "sni_names").exists()


def test_remove_takes_the_names_out_of_the_index_first_and_reloads_nothing(certs):
    """No code file names the certificate yet (never rendered): its files go at once."""
    installed_pair(certs)
    other = key_for(certs, ["mail.example.net"], domain="example.net")
    assert install(certs, certs.ca.issue(csr_public_key(other), ["mail.example.net"]), "example.net")[0] == 0
    before = certs.reloads.read_text()
    status, answer = certs.run({"op": "cert_remove", "domain": "example.org"})
    assert status == 0 and answer["removed"] is True
    assert answer["deleted"] is True and answer["kept_until_apply"] is False
    assert not (certs.root / TLS / "domains/example.org").exists()
    assert (certs.root / TLS / "sni_names").read_text() == "mail.example.net example.net\n"
    assert certs.reloads.read_text() == before


def certificate_files_named(conf: str) -> list[str]:
    return re.findall(r"^\s*ssl_(?:cert|key) = <(\S+)$", conf, re.M)


@needs_validators
def test_remove_keeps_the_files_a_live_dovecot_conf_names_until_the_next_apply_renders_without_them(certs):
    """Dovecot reads every file its configuration names at each (re)start:
    between cert_remove and the panel's next apply, dovecot.conf still names
    the domain's certificate, so the files stay (a restart then works: real
    doveconf reads them); the apply renders dovecot.conf from the index
    without them and only then deletes them."""
    csr = key_for(certs, ["mail.example.net"], domain=None)  # the server's, named by dovecot.conf too
    assert install(certs, certs.ca.issue(csr_public_key(csr), ["mail.example.net"]), domain=None)[0] == 0
    installed_pair(certs)
    status, answer = certs.apply(code=code())
    assert status == 0, answer
    conf_path = certs.live("/etc/dovecot/dovecot.conf")
    folder = certs.root / TLS / "domains/example.org"
    named = certificate_files_named(conf_path.read_text())
    assert f"{folder}/fullchain.pem" in named and f"{folder}/privkey.pem" in named, named

    status, answer = certs.run({"op": "cert_remove", "domain": "example.org"})
    assert status == 0 and answer["removed"] is True, answer
    assert not (certs.root / TLS / "sni_names").read_text()  # out of the index at once
    assert all(Path(path).is_file() for path in certificate_files_named(conf_path.read_text()))
    check = subprocess.run(["doveconf", "-n", "-c", str(conf_path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert answer["deleted"] is False and answer["kept_until_apply"] is True

    status, answer = certs.apply(code=code())
    assert status == 0, answer
    assert answer["certificates_deleted"] == ["example.org"]
    assert str(folder) not in conf_path.read_text()
    assert not folder.exists()
    check = subprocess.run(["doveconf", "-n", "-c", str(conf_path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


@needs_validators
def test_an_apply_keeps_a_pending_key_and_the_certificates_still_in_the_index(certs):
    """An order under way (cert_key done, the CA not yet answered) has only a
    pending key, in no index: an apply meanwhile must not take it away."""
    installed_pair(certs)
    key_for(certs, ["mail.example.net"], domain="example.net")
    status, answer = certs.apply(code=code())
    assert status == 0 and "certificates_deleted" not in answer, answer
    assert (certs.root / TLS / "domains/example.net/privkey.pending.pem").is_file()
    assert (certs.root / TLS / "domains/example.org/fullchain.pem").is_file()


@needs_validators
def test_the_apply_never_deletes_through_a_symlinked_certificate_folder(certs, tmp_path):
    """A link planted among the domain folders (not in the index, so a
    candidate for deletion) is not followed: what it points to stays."""
    outside = tmp_path / "outside"
    outside.mkdir()
    for name in ("fullchain.pem", "privkey.pem"):
        (outside / name).write_text("untouched\n")
    (certs.root / TLS / "domains").mkdir(parents=True)
    (certs.root / TLS / "domains/evil.test").symlink_to(outside)
    (certs.root / TLS / "domains/not a domain").mkdir()
    (certs.root / TLS / "domains/not a domain/fullchain.pem").write_text("untouched\n")
    status, answer = certs.apply(code=code())
    assert status == 0 and "certificates_deleted" not in answer, answer
    assert sorted(p.name for p in outside.iterdir()) == ["fullchain.pem", "privkey.pem"]
    assert (certs.root / TLS / "domains/not a domain/fullchain.pem").exists()
    status, answer = certs.run({"op": "cert_remove", "domain": "evil.test"})
    assert status == 2 and answer["rule"] == "symlink", answer
    assert sorted(p.name for p in outside.iterdir()) == ["fullchain.pem", "privkey.pem"]


# -- hostile: what a compromised panel could send


@pytest.mark.parametrize("names, domain, rule", [
    (["mail.example.net"], "example.org", "name outside the domain"),
    (["example.org.evil.test"], "example.org", "name outside the domain"),
    (["*.example.org"], "example.org", "bad name"),
    (["MAIL.example.org"], "example.org", "bad name"),
    (["mail.example.org\nDNS:evil.test"], "example.org", "bad name"),
    (["mail.example.org,DNS:evil.test"], "example.org", "bad name"),
    (["mail.example.org/../../x"], "example.org", "bad name"),
    ([], "example.org", "bad request"),
    (["mail.example.org"] * 2, "example.org", "bad request"),
    ([f"n{i}.example.org" for i in range(101)], "example.org", "bad request"),
    (["mail.example.org"], "../../etc", "bad request"),
    (["mail.example.org"], "Example.org", "bad request"),
])
def test_cert_key_refuses_names_that_are_not_the_domains_own(certs, names, domain, rule):
    status, answer = certs.run({"op": "cert_key", "domain": domain, "names": names})
    assert status == 2 and answer["rule"] == rule, answer
    assert not (certs.root / TLS).exists()


def test_cert_key_refuses_both_or_neither_target(certs):
    for request in ({"op": "cert_key", "names": NAMES},
                    {"op": "cert_key", "server": True, "domain": "example.org", "names": NAMES},
                    {"op": "cert_key", "server": "yes", "names": NAMES},
                    {"op": "cert_key", "domain": "example.org", "names": NAMES, "path": "/etc/shadow"}):
        status, answer = certs.run(request)
        assert status == 2, (request, answer)


def test_a_chain_for_another_key_is_refused_and_the_old_certificate_stays(certs):
    installed_pair(certs)
    key_for(certs)
    before = snapshot(certs.root)
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    status, answer = install(certs, certs.ca.issue(stranger, NAMES))
    assert status == 2 and answer["rule"] == "key mismatch", answer
    assert snapshot(certs.root) == before


@pytest.mark.parametrize("names, rule", [
    (["mail.example.org", "mail.evil.test"], "name outside the domain"),
    (["mail.example.org", "autoconfig.example.org"], "name outside the domain"),  # not asked for
    (["mail.example.org", "*.example.org"], "names"),
    ([], "names"),
])
def test_a_chain_with_names_outside_what_was_asked_is_refused(certs, names, rule):
    csr = key_for(certs)
    before = snapshot(certs.root)
    status, answer = install(certs, certs.ca.issue(csr_public_key(csr), names))
    assert status == 2 and answer["rule"] == rule, answer
    assert snapshot(certs.root) == before


def test_an_ip_address_in_the_names_is_refused(certs):
    import ipaddress
    csr = key_for(certs)
    chain = certs.ca.issue(csr_public_key(csr), NAMES, extra_san=[x509.IPAddress(ipaddress.ip_address("10.0.0.1"))])
    status, answer = install(certs, chain)
    assert status == 2 and answer["rule"] == "names", answer


def test_an_expired_certificate_is_refused(certs):
    csr = key_for(certs)
    status, answer = install(certs, certs.ca.issue(csr_public_key(csr), NAMES, days=-1))
    assert status == 2 and answer["rule"] == "expired", answer


GOOD_BLOCK = "-----BEGIN CERTIFICATE-----\n%s\n-----END CERTIFICATE-----\n"


@pytest.mark.parametrize("chain, rule", [
    ("", "not a certificate chain"),
    ("hello", "not a certificate chain"),
    ("-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n", "not a certificate chain"),
    (GOOD_BLOCK % base64.b64encode(b"\x30" + os.urandom(300)).decode(), "not a certificate chain"),
    (GOOD_BLOCK % base64.b64encode(b"\x02" + os.urandom(300)).decode(), "not a certificate chain"),
    ("-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n", "not a certificate chain"),
    ("x" * (64 * 1024 + 1), "oversize"),
])
def test_garbage_instead_of_a_chain_is_refused(certs, chain, rule):
    key_for(certs)
    before = snapshot(certs.root)
    status, answer = install(certs, chain)
    assert status == 2 and answer["rule"] == rule, answer
    assert snapshot(certs.root) == before


def test_text_around_the_blocks_and_too_many_certificates_are_refused(certs):
    csr = key_for(certs)
    chain = certs.ca.issue(csr_public_key(csr), NAMES)
    for bad, rule in (("include /etc/shadow\n" + chain, "not a certificate chain"),
                      (chain + "ssl_key = </etc/shadow\n", "not a certificate chain"),
                      (chain + chain.split("-----END CERTIFICATE-----\n", 1)[1] * 5, "oversize")):
        status, answer = install(certs, bad)
        assert status == 2 and answer["rule"] == rule, answer


def test_no_pending_key_no_install(certs):
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    status, answer = install(certs, certs.ca.issue(ca_key.public_key(), NAMES))
    assert status == 1 and "cert_key" in answer["error"], answer


def test_a_symlinked_certificate_folder_is_refused(certs, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (certs.root / TLS / "domains").mkdir(parents=True)
    (certs.root / TLS / "domains/example.org").symlink_to(outside)
    status, answer = certs.run({"op": "cert_key", "domain": "example.org", "names": NAMES})
    assert status == 2 and answer["rule"] == "symlink", answer
    assert list(outside.iterdir()) == []


def test_a_symlinked_key_or_index_is_never_written_through(certs, tmp_path):
    csr = key_for(certs)
    chain = certs.ca.issue(csr_public_key(csr), NAMES)
    target = tmp_path / "victim"
    target.write_text("untouched\n")
    (certs.root / TLS / "domains/example.org/privkey.pem").symlink_to(target)
    status, answer = install(certs, chain)
    assert status == 2 and answer["rule"] == "symlink", answer
    assert target.read_text() == "untouched\n"
    (certs.root / TLS / "domains/example.org/privkey.pem").unlink()
    (certs.root / TLS / "sni_names").symlink_to(target)
    status, answer = install(certs, chain)
    assert status == 2 and answer["rule"] == "symlink", answer
    assert target.read_text() == "untouched\n"
