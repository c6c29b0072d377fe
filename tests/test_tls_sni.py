"""TLS chosen by SNI (issue #14): the index's grammar, the renderers' use of
it, and real Exim, Dovecot and nginx presenting each mail domain's own chain
on 25 (STARTTLS), 465, 587 (STARTTLS), 993 and 4190 (ManageSieve STARTTLS),
checked with Python's ssl and hostname checking on. A test CA made with
cryptography signs certificates for mail.a.test, mail.b.test and the server
name, laid out as the contract says (/work/agents/notes/tls-contract.md)."""

from __future__ import annotations

import datetime
import os
import shutil
import socket
import ssl
import stat
import subprocess
import time
from pathlib import Path

import pytest

from mailconf import tls
from mailconf.params import CodeParams
from mailconf.render import render_all, render_code
from mailconf.render.dovecot import render_dovecot
from mailconf.render.exim import render_exim_conf
from mailconf.render.tls_sites import TLS_SITES, render_tls_sites
from mailconf.snapshot import Domain, Layout, ServerIdentity, Snapshot
from mailconf.tls import SniName
from tests import mailstack
from tests.test_helper import load_helper_module
from tests.test_helper_queue import plant_cache

SERVER_NAME = "mx.server.test"
TLS_LAYOUT = dict(tls_certificate="/etc/mailpanel/tls/fullchain.pem", tls_privatekey="/etc/mailpanel/tls/privkey.pem")
PAIRS = tuple(sorted((
    SniName("autoconfig.a.test", "a.test"),
    SniName("mail.a.test", "a.test"),
    SniName("mta-sts.a.test", "a.test"),
    SniName("webmail.a.test", "a.test"),
    SniName("mail.b.test", "b.test"),
)))
PARAMS = CodeParams(hostname=SERVER_NAME, sieve_enabled=True)


# --- the index's grammar -------------------------------------------------------------------


def test_the_index_round_trips_through_its_grammar():
    content = tls.render_sni_index(reversed(PAIRS))
    assert content.startswith(b"autoconfig.a.test a.test\nmail.a.test a.test\n")
    assert tls.parse_sni_index(content) == tuple(sorted(PAIRS))
    assert tls.parse_sni_index(b"") == ()


@pytest.mark.parametrize("line", [
    b"/etc/shadow a.test",
    b"mail.a.test ../../etc",
    b"mail.a.test a.test/../b.test",
    b"../mail.a.test a.test",
    b"*.a.test a.test",
    b"mail.a.test *.test",
    b"mail.a.test\ta.test",
    b"mail.a.test  a.test",
    b"mail.a.test a.test extra",
    b"mail.a.test a.test\r",
    b"mail.a.test\x00 a.test",
    b"mail.a.test a.test\x1b[0m",
    b"MAIL.A.TEST a.test",
    b"mail.b.test a.test",  # a name outside its domain
    b"mail.evila.test a.test",  # ends with the letters, not with ".a.test"
    b"a.test.evil.test a.test",
    b"mail.a.test",
    b" mail.a.test a.test",
    b"mail.a.test a.test.",
    b"m\xc3\xa4il.a.test a.test",
    b"-mail.a.test a.test",
    b"mail.a.test localhost",
])
def test_a_hostile_line_refuses_the_whole_index(line):
    with pytest.raises(ValueError) as refused:
        tls.parse_sni_index(b"mail.0.test 0.test\n" + line + b"\n")
    assert "line 2" in str(refused.value) or "ASCII" in str(refused.value)
    assert "shadow" not in str(refused.value) and "\x1b" not in str(refused.value)


@pytest.mark.parametrize("content", [
    b"mail.b.test b.test\nmail.a.test a.test\n",  # not sorted
    b"mail.a.test a.test\nmail.a.test a.test\n",  # twice
    b"mail.a.test a.test",  # no final line break
])
def test_an_unsorted_repeated_or_cut_index_is_refused(content):
    with pytest.raises(ValueError):
        tls.parse_sni_index(content)


def test_a_huge_index_is_refused_before_it_is_parsed():
    with pytest.raises(ValueError, match="larger than"):
        tls.parse_sni_index(b"x" * (tls.MAX_SNI_INDEX_BYTES + 1))


def test_a_name_in_two_domains_cannot_be_written():
    with pytest.raises(ValueError):
        tls.render_sni_index([("mail.a.test", "a.test"), ("mail.a.test", "mail.a.test")])


# --- rendering -------------------------------------------------------------------------------


def test_without_domain_certificates_dovecot_23_is_byte_identical():
    for layout in (Layout(), Layout(**TLS_LAYOUT)):
        plain = render_dovecot(PARAMS, layout)
        assert render_dovecot(PARAMS, layout, ()) == plain
        assert b"local_name" not in plain["/etc/dovecot/dovecot.conf"].content
    # No TLS offered: the pairs change nothing at all.
    assert render_dovecot(PARAMS, Layout(), PAIRS) == render_dovecot(PARAMS, Layout())


@pytest.mark.parametrize("version, cert, key", [
    ("2.3", "ssl_cert = <", "ssl_key = <"),
    ("2.4", "ssl_server_cert_file = ", "ssl_server_key_file = "),
])
def test_dovecot_gets_a_local_name_block_per_name_in_its_dialect(version, cert, key):
    layout = Layout(dovecot_version=version, **TLS_LAYOUT)
    with_pairs = render_dovecot(PARAMS, layout, PAIRS)["/etc/dovecot/dovecot.conf"].content.decode()
    block = (f"local_name mail.b.test {{\n  {cert}/etc/mailpanel/tls/domains/b.test/fullchain.pem\n"
             f"  {key}/etc/mailpanel/tls/domains/b.test/privkey.pem\n}}\n")
    assert block in with_pairs
    assert with_pairs.count("local_name ") == len(PAIRS)
    without = render_dovecot(PARAMS, layout)["/etc/dovecot/dovecot.conf"].content.decode()
    # the blocks are the only difference
    stripped = "".join(chunk.split("}\n", 1)[1] if i else chunk
                       for i, chunk in enumerate(with_pairs.split("local_name ")))
    assert stripped == without


def test_exims_certificate_comes_from_the_index_by_an_untainted_lookup():
    conf = render_exim_conf(PARAMS, Layout(**TLS_LAYOUT))["/etc/exim4/exim4.conf"].content.decode()
    assert "${lookup{$tls_in_sni}lsearch{MP_SNI_INDEX}}" in conf
    assert "tls_certificate = ${if MP_SNI_FOUND{MP_SNI_CERT}{/etc/mailpanel/tls/fullchain.pem}}" in conf
    assert "tls_privatekey = ${if MP_SNI_FOUND{MP_SNI_KEY}{/etc/mailpanel/tls/privkey.pem}}" in conf
    # never a file name built from the client's SNI itself
    assert "/$tls_in_sni" not in conf and "{$tls_in_sni}/" not in conf


def test_the_sites_file_is_rendered_only_for_web_names_with_a_certificate():
    layout = Layout(webmail_sites=True, **TLS_LAYOUT)
    assert render_tls_sites(PARAMS, layout, ()) == {}
    assert render_tls_sites(PARAMS, layout, (SniName("mail.a.test", "a.test"),)) == {}
    assert render_tls_sites(PARAMS, Layout(webmail_sites=True), PAIRS) == {}  # no TLS offered
    assert render_tls_sites(PARAMS, Layout(**TLS_LAYOUT), PAIRS) == {}  # nginx not set up
    site = render_tls_sites(PARAMS, layout, PAIRS)[TLS_SITES].content.decode()
    assert site == render_tls_sites(PARAMS, layout, tuple(reversed(PAIRS)))[TLS_SITES].content.decode()
    assert "server_name webmail.a.test;" in site and "server_name mail.a.test;" not in site
    assert "proxy_set_header Host mta-sts.a.test;" in site and "$http_host" not in site
    assert "location = /.well-known/mta-sts.txt {" in site
    assert "include /etc/nginx/snippets/mailpanel-webmail*.conf;" in site
    assert set(render_code(PARAMS, layout, PAIRS)) - set(render_code(PARAMS, layout)) == {TLS_SITES}


@pytest.mark.parametrize("field, value", [
    ("panel_upstream", "127.0.0.1:8000; include /etc/shadow"),
    ("panel_upstream", "evil.example:80"),
    ("https_listen", ("0.0.0.0 ssl; include /etc/shadow",)),
    ("https_port", 0),
])
def test_a_hostile_layout_value_is_refused(field, value):
    with pytest.raises(ValueError):
        render_tls_sites(PARAMS, Layout(webmail_sites=True, **TLS_LAYOUT, **{field: value}), PAIRS)


def test_a_hostile_pair_never_reaches_a_renderer():
    for pair in (SniName("mail.a.test;", "a.test"), SniName("mail.b.test", "a.test"),
                 SniName("mail.a.test", "../a.test"), SniName("*.a.test", "a.test")):
        with pytest.raises(ValueError):
            render_dovecot(PARAMS, Layout(**TLS_LAYOUT), (pair,))
        with pytest.raises(ValueError):
            render_tls_sites(PARAMS, Layout(webmail_sites=True, **TLS_LAYOUT), (pair,))


# --- a test CA and a tree laid out per the contract ------------------------------------------


def _leaf(ca, ca_key, names):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return mailstack._pem_cert(cert), mailstack._pem_key(key)


CERT_NAMES = {
    None: [SERVER_NAME],
    "a.test": ["mail.a.test", "webmail.a.test", "autoconfig.a.test", "mta-sts.a.test"],
    "b.test": ["mail.b.test"],
}


def _put(path: Path, content: bytes, mode: int, group: str = "root"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    path.chmod(mode)
    mailstack._chown(str(path), "root", group)


def write_tls_tree(layout: Layout, index_pairs=PAIRS) -> dict:
    """The server's and two domains' certificates, the index; returns the
    CA file and the leaf PEMs by domain (None = the server's)."""
    ca, ca_key = mailstack._make_ca("SNI test CA")
    leaves = {domain: _leaf(ca, ca_key, names) for domain, names in CERT_NAMES.items()}
    root = Path(layout.root)
    for domain, (cert, key) in leaves.items():
        folder = tls.TLS_DIR if domain is None else tls.domain_folder(domain)
        _put(root / folder.lstrip("/") / tls.CERT_FILE, cert, 0o644)
        _put(root / folder.lstrip("/") / tls.KEY_FILE, key, 0o640, layout.exim_group)
    for folder in (tls.TLS_DIR, tls.TLS_DIR + "/domains", tls.domain_folder("a.test"), tls.domain_folder("b.test")):
        (root / folder.lstrip("/")).chmod(0o750)
        mailstack._chown(str(root / folder.lstrip("/")), "root", layout.exim_group)
    _put(root / tls.SNI_INDEX.lstrip("/"), tls.render_sni_index(index_pairs), 0o644)
    ca_file = root / "sni-ca.pem"
    ca_file.write_bytes(mailstack._pem_cert(ca))
    return {"ca": str(ca_file), "leaves": leaves}


def _names(der: bytes) -> set[str]:
    from cryptography import x509

    cert = x509.load_der_x509_certificate(der)
    return set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName))


# --- talking TLS the way clients do, with hostname checking on ---------------------------------


def _lines_until(sock, done) -> bytes:
    data = b""
    while not done(data):
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    return data


def _smtp_starttls(sock):
    _lines_until(sock, lambda d: b"\r\n" in d and d.split(b"\r\n")[-2][3:4] == b" ")
    sock.sendall(b"EHLO client.test\r\n")
    ehlo = _lines_until(sock, lambda d: d.endswith(b"\r\n") and d.split(b"\r\n")[-2][3:4] == b" ")
    assert b"STARTTLS" in ehlo, ehlo
    sock.sendall(b"STARTTLS\r\n")
    assert _lines_until(sock, lambda d: d.endswith(b"\r\n")).startswith(b"220")


def _sieve_starttls(sock):
    greeting = _lines_until(sock, lambda d: b"\r\nOK" in d or d.startswith(b"OK"))
    assert b'"STARTTLS"' in greeting, greeting
    sock.sendall(b"STARTTLS\r\n")
    assert _lines_until(sock, lambda d: d.endswith(b"\r\n")).startswith(b"OK")


def presented(port: int, server_name: str | None, cafile: str, starttls=None, check_hostname=True) -> set[str]:
    """The DNS names of the certificate the server presents for this SNI,
    after Python's ssl verified the chain (and the host name, when on)."""
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.check_hostname = check_hostname
    with socket.create_connection((mailstack.LOOPBACK, port), timeout=10) as raw:
        if starttls:
            starttls(raw)
        with ctx.wrap_socket(raw, server_hostname=server_name) as conn:
            return _names(conn.getpeercert(binary_form=True))


@pytest.fixture
def sni_stack(tmp_path):
    """Real Exim (25/465/587 on loopback ports) and Dovecot (993, 4190)
    from the rendered tree, certificates chosen by the index."""
    mailstack.require_root()
    root = mailstack.new_tree_root(tmp_path)
    p25, p465, p587 = (mailstack.free_port() for _ in range(3))
    layout = mailstack.loopback_layout(root, tls=True, smtp_ports=(p25, p465, p587), smtps_ports=(p465,),
                                       **TLS_LAYOUT)
    # an index line whose domain has no files: Exim falls back, the helper drops it
    pairs = PAIRS + (SniName("mail.c.test", "c.test"),)
    pki = write_tls_tree(layout, pairs)
    snapshot = Snapshot(server=ServerIdentity(hostname=SERVER_NAME), domains=(Domain("a.test"), Domain("b.test")),
                        sieve_enabled=True)
    helper = load_helper_module()
    usable, skipped = helper.sni_pairs(helper.Tree(str(root), chown=False), layout)
    assert usable == PAIRS and set(skipped) == {"c.test"}
    mailstack.render_tree(snapshot, tmp_path, layout=layout)
    mailstack.write_rendered(render_all(snapshot, layout, usable), layout)
    with mailstack.exim_daemon(layout), mailstack.dovecot_daemon(layout):
        yield {"ports": {"25": p25, "465": p465, "587": p587, "993": layout.imaps_port,
                         "4190": layout.sieve_port}, "layout": layout, **pki}


PORTS = {"25": _smtp_starttls, "465": None, "587": _smtp_starttls, "993": None, "4190": _sieve_starttls}


def test_each_port_presents_each_domains_own_chain_and_the_servers_otherwise(sni_stack):
    ca, ports = sni_stack["ca"], sni_stack["ports"]
    for label, starttls in PORTS.items():
        port = ports[label]
        assert "webmail.a.test" in presented(port, "mail.a.test", ca, starttls), label
        assert presented(port, "mail.b.test", ca, starttls) == {"mail.b.test"}, label
        assert presented(port, SERVER_NAME, ca, starttls) == {SERVER_NAME}, label
        # an unknown name, a name whose certificate is missing, no SNI at all: the server's
        for name in ("unknown.test", "mail.c.test"):
            assert presented(port, name, ca, starttls, check_hostname=False) == {SERVER_NAME}, (label, name)
        assert presented(port, None, ca, starttls, check_hostname=False) == {SERVER_NAME}, label
        # hostname checking is on: the server's certificate does not pass for a domain's name
        with pytest.raises(ssl.SSLCertVerificationError):
            presented(port, "mail.c.test", ca, starttls)


# --- the helper: which pairs reach the renderers ----------------------------------------------


def test_the_helper_leaves_out_a_missing_broken_or_mismatched_certificate(tmp_path):
    mailstack.require_root()
    root = mailstack.new_tree_root(tmp_path)
    layout = Layout(root=str(root), **TLS_LAYOUT)
    pairs = PAIRS + (SniName("mail.c.test", "c.test"), SniName("mail.d.test", "d.test"),
                     SniName("mail.e.test", "e.test"))
    write_tls_tree(layout, pairs)
    tree_root = root / tls.TLS_DIR.lstrip("/")
    a_key = (tree_root / "domains/a.test/privkey.pem").read_bytes()
    _put(tree_root / "domains/d.test/fullchain.pem", b"-----BEGIN CERTIFICATE-----\nnot one\n", 0o644)
    _put(tree_root / "domains/d.test/privkey.pem", a_key, 0o640)
    shutil.copy(tree_root / "domains/b.test/fullchain.pem", tree_root / "domains/e.test.pem")
    (tree_root / "domains/e.test").mkdir()
    (tree_root / "domains/e.test/fullchain.pem").symlink_to(tree_root / "domains/b.test/fullchain.pem")
    _put(tree_root / "domains/e.test/privkey.pem", a_key, 0o640)
    helper = load_helper_module()
    usable, skipped = helper.sni_pairs(helper.Tree(str(root), chown=False), layout)
    assert usable == PAIRS
    assert set(skipped) == {"c.test", "d.test", "e.test"}
    assert "symlink" in skipped["e.test"]
    # a certificate with another domain's key does not load as a pair
    _put(tree_root / "domains/b.test/privkey.pem", a_key, 0o640)
    usable, skipped = helper.sni_pairs(helper.Tree(str(root), chown=False), layout)
    assert "b.test" in skipped and all(p.domain == "a.test" for p in usable)


def test_the_helper_refuses_a_hostile_or_huge_index_and_renders_without_sni(tmp_path):
    root = tmp_path / "root"
    layout = Layout(root=str(root), **TLS_LAYOUT)
    index = root / tls.SNI_INDEX.lstrip("/")
    index.parent.mkdir(parents=True)
    helper = load_helper_module()
    tree = helper.Tree(str(root), chown=False)
    for content in (b"mail.a.test /etc/shadow\n", b"*.a.test a.test\n"):
        index.write_bytes(content)
        assert helper.sni_pairs(tree, layout) == ((), {"index": helper.sni_pairs(tree, layout)[1]["index"]})
        assert "refused" in helper.sni_pairs(tree, layout)[1]["index"]
    with open(index, "wb") as f:
        f.truncate(tls.MAX_SNI_INDEX_BYTES + 1)  # sparse: refused by its size, never read
    pairs, skipped = helper.sni_pairs(tree, layout)
    assert pairs == () and "larger than" in skipped["index"]
    index.unlink()
    index.symlink_to("/etc/passwd")
    pairs, skipped = helper.sni_pairs(tree, layout)
    assert pairs == () and "symlink" in skipped["index"]
    assert helper.sni_pairs(tree, Layout(root=str(root))) == ((), {})  # no TLS: the index is not even read


# --- the helper's verdict cache: only changed pairs are loaded again ----------------------------

SNI_CACHE = Path("var/cache/mailpanel-helper/sni-pairs")


def _counting_loads(helper, monkeypatch) -> list:
    """The domains whose pair the helper actually loads with ssl."""
    loaded, real = [], helper._loads_as_pair

    def counting(folder, cert, key):
        loaded.append(cert)
        return real(folder, cert, key)

    monkeypatch.setattr(helper, "_loads_as_pair", counting)
    return loaded


def _pair_key(folder: Path) -> list:
    return [v for name in ("fullchain.pem", "privkey.pem") for st in [os.lstat(folder / name)]
            for v in (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)]


def _forged_sni_cache(root: Path, loads: dict, folder: str | None = None) -> bytes:
    import hashlib
    import json

    body = json.dumps({"tls": folder or str(root / tls.TLS_DIR.lstrip("/")), "loads": loads}).encode()
    return b"mailpanel-sni-pairs 1 " + hashlib.sha256(body).hexdigest().encode() + b"\n" + body


@pytest.fixture
def settled_sni(tmp_path, monkeypatch):
    """a.test's and b.test's certificates, unchanged for over 2 s, checked
    once (the cache written); returns (helper, tree, layout, root, loaded)."""
    mailstack.require_root()
    root = mailstack.new_tree_root(tmp_path)
    layout = Layout(root=str(root), **TLS_LAYOUT)
    write_tls_tree(layout)
    helper = load_helper_module()
    tree = helper.Tree(str(root), chown=False)
    loaded = _counting_loads(helper, monkeypatch)
    assert helper.sni_pairs(tree, layout) == (PAIRS, {})
    assert len(loaded) == 2 and not (root / SNI_CACHE).exists()  # just written: no verdict kept
    time.sleep(2.1)
    assert helper.sni_pairs(tree, layout) == (PAIRS, {}) and len(loaded) == 4
    loaded.clear()
    return helper, tree, layout, root, loaded


def test_unchanged_pairs_are_not_loaded_again_and_the_cache_is_roots_alone(settled_sni):
    helper, tree, layout, root, loaded = settled_sni
    cache = root / SNI_CACHE
    assert (cache.parent.stat().st_mode & 0o777, cache.stat().st_mode & 0o777) == (0o700, 0o600)
    assert (cache.stat().st_uid, cache.parent.stat().st_uid, cache.stat().st_nlink) == (0, 0, 1)
    assert helper.sni_pairs(tree, layout) == (PAIRS, {}) and loaded == []
    # a domain that left the index leaves the cache; nothing else is loaded again
    (root / tls.SNI_INDEX.lstrip("/")).write_bytes(tls.render_sni_index([p for p in PAIRS if p.domain == "a.test"]))
    assert helper.sni_pairs(tree, layout)[0] == tuple(p for p in PAIRS if p.domain == "a.test") and loaded == []
    assert b"b.test" not in cache.read_bytes()


@pytest.mark.parametrize("how", ["rewritten in place, mtime set back", "renamed into place", "a symlink"])
def test_a_swapped_key_of_the_same_size_is_checked_again(settled_sni, how):
    helper, tree, layout, root, loaded = settled_sni
    folder = root / tls.domain_folder("b.test").lstrip("/")
    key = folder / "privkey.pem"
    ca, ca_key = mailstack._make_ca("another CA")
    other = _leaf(ca, ca_key, ["mail.b.test"])[1]
    assert len(other) == key.stat().st_size  # same size: only inode/ctime tell
    before = key.stat()
    if how == "rewritten in place, mtime set back":
        with open(key, "r+b") as f:
            f.write(other)
        os.utime(key, ns=(before.st_atime_ns, before.st_mtime_ns))
        assert key.stat().st_ino == before.st_ino and key.stat().st_mtime_ns == before.st_mtime_ns
    elif how == "renamed into place":
        _put(folder / "new.pem", other, 0o640)
        os.utime(folder / "new.pem", ns=(before.st_atime_ns, before.st_mtime_ns))
        os.replace(folder / "new.pem", key)
    else:
        _put(folder / "elsewhere.pem", other, 0o640)
        key.unlink()
        key.symlink_to(folder / "elsewhere.pem")
    usable, skipped = helper.sni_pairs(tree, layout)
    assert all(p.domain == "a.test" for p in usable) and set(skipped) == {"b.test"}
    assert ("symlink" if how == "a symlink" else "does not load") in skipped["b.test"]
    assert len(loaded) == (0 if how == "a symlink" else 1)  # a.test from the cache
    assert b"b.test" not in (root / SNI_CACHE).read_bytes()


def _break_b(root: Path) -> list:
    """b.test's key swapped for a.test's (a broken pair); its files' keys."""
    folder = root / tls.domain_folder("b.test").lstrip("/")
    _put(folder / "privkey.pem", (root / tls.domain_folder("a.test").lstrip("/") / "privkey.pem").read_bytes(), 0o640)
    return _pair_key(folder)


def test_a_roots_own_intact_cache_is_believed(settled_sni):
    """The forged verdict below is taken when root's own, intact cache says
    so: the tamper cases that follow can fail."""
    helper, tree, layout, root, loaded = settled_sni
    cache = root / SNI_CACHE
    loads = {"b.test": _break_b(root)}
    cache.write_bytes(_forged_sni_cache(root, loads))
    cache.chmod(0o600)
    assert helper.sni_pairs(tree, layout)[0] == PAIRS and len(loaded) == 1  # a.test was not in it


@pytest.mark.parametrize(
    "tamper", ["symlink", "bad checksum", "not the cache's shape", "another tls folder", "oversize",
               "another owner", "group-readable", "hard link", "a folder"],
)
def test_a_forged_usable_verdict_is_not_trusted_unless_roots_and_intact(settled_sni, tmp_path, tamper):
    helper, tree, layout, root, loaded = settled_sni
    cache = root / SNI_CACHE
    forged = _forged_sni_cache(root, {"b.test": _break_b(root)})
    cache.unlink()
    if tamper == "bad checksum":
        forged = forged.replace(b"pairs 1 ", b"pairs 1 0")
    elif tamper == "not the cache's shape":
        forged = _forged_sni_cache(root, {"b.test": _break_b(root)[:7] + [True]})
    elif tamper == "another tls folder":
        forged = _forged_sni_cache(root, {"b.test": _break_b(root)}, folder="/elsewhere")
    plant_cache(cache, forged, tamper, tmp_path, 64 * 1024 * 1024)

    usable, skipped = helper.sni_pairs(tree, layout)
    assert set(skipped) == {"b.test"} and all(p.domain == "a.test" for p in usable)
    if tamper == "symlink":
        assert (tmp_path / "planted").read_bytes() == forged  # replaced, not followed
    if tamper != "a folder":
        st = os.lstat(cache)  # rebuilt: root's own plain file, without the forged verdict
        assert stat.S_ISREG(st.st_mode) and (st.st_uid, st.st_nlink, st.st_mode & 0o777) == (0, 1, 0o600)
        assert b"b.test" not in cache.read_bytes()


@pytest.mark.parametrize("tamper", ["another owner", "group-writable", "symlink"])
def test_a_cache_folder_that_is_not_roots_alone_is_not_used_for_sni(settled_sni, tmp_path, tamper):
    helper, tree, layout, root, loaded = settled_sni
    folder = (root / SNI_CACHE).parent
    (folder / SNI_CACHE.name).write_bytes(_forged_sni_cache(root, {"b.test": _break_b(root)}))
    if tamper == "another owner":
        os.chown(folder, 65534, 65534)
    elif tamper == "group-writable":
        folder.chmod(0o770)
    else:
        folder.rename(tmp_path / "elsewhere")
        folder.symlink_to(tmp_path / "elsewhere")
    before = (folder / SNI_CACHE.name).read_bytes()
    usable, skipped = helper.sni_pairs(tree, layout)
    assert set(skipped) == {"b.test"} and len(loaded) == 2  # every pair loaded: no cache at all
    assert (folder / SNI_CACHE.name).read_bytes() == before  # neither read nor written


# --- nginx -------------------------------------------------------------------------------------

needs_nginx = pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx missing")


@needs_nginx
def test_the_sites_pass_the_helpers_nginx_check_and_a_broken_one_does_not():
    validators = load_helper_module().VALIDATORS
    site = render_tls_sites(PARAMS, Layout(webmail_sites=True, **TLS_LAYOUT), PAIRS)[TLS_SITES].content
    assert validators["nginx-tls"](site) == (True, "")
    ok, output = validators["nginx-tls"](site.replace(b"location / { return 404; }", b"location / { nonsense; }"))
    assert ok is False and "nonsense" in output


@needs_nginx
def test_real_nginx_t_accepts_the_rendered_sites_with_the_real_certificates(tmp_path):
    mailstack.require_root()
    root = mailstack.new_tree_root(tmp_path)
    http, https = mailstack.free_port(), mailstack.free_port()
    layout = Layout(root=str(root), webmail_sites=True, http_port=http, http_listen=("127.0.0.1",),
                    https_port=https, https_listen=("127.0.0.1",), **TLS_LAYOUT)
    pki = write_tls_tree(layout)
    site = root / TLS_SITES.lstrip("/")
    _put(site, render_tls_sites(PARAMS, layout, PAIRS)[TLS_SITES].content, 0o644)
    conf = root / "nginx.conf"
    conf.write_text(f"""pid {root}/nginx.pid;
error_log {root}/nginx-error.log;
events {{}}
http {{
    client_body_temp_path {root}/body; proxy_temp_path {root}/proxy; fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi; scgi_temp_path {root}/scgi;
    access_log off;
    server {{
        listen 127.0.0.1:{https} ssl default_server;
        ssl_certificate {root}/etc/mailpanel/tls/fullchain.pem;
        ssl_certificate_key {root}/etc/mailpanel/tls/privkey.pem;
        location / {{ return 200 "panel\\n"; }}
    }}
    include {site};
}}
""")
    check = subprocess.run(["nginx", "-t", "-c", str(conf), "-e", f"{root}/nginx-error.log"],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    from tests.test_webmail_sites import _listening, started

    with started(["nginx", "-c", str(conf), "-e", f"{root}/nginx-error.log", "-g", "daemon off;"],
                 lambda: _listening(https), "nginx"):
        assert "mta-sts.a.test" in presented(https, "mta-sts.a.test", pki["ca"])
        assert presented(https, "unknown.test", pki["ca"], check_hostname=False) == {SERVER_NAME}
    assert os.path.exists(site)
