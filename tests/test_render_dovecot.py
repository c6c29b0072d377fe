"""Dovecot: one behaviour, two configuration dialects (2.3 on Debian 12, 2.4
on Debian 13), chosen by Layout.dovecot_version.

Pure checks here. The 2.3 text runs under the real Dovecot of this machine in
tests/test_accounts_mailstack.py and tests/test_sieve.py; the 2.4 text is
checked by Debian 13's own doveconf and run (LMTP quota, IMAP, ManageSieve,
Exim's AUTH) inside the booted box of `make test-install` (tests/testbox.py).
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess

import pytest

from mailconf.params import CodeParams
from mailconf.render.dovecot import DOVECOT_CONF, render_dovecot
from mailconf.snapshot import Layout

PARAMS = CodeParams(hostname="mail.example.org", sieve_enabled=True)
TLS = dict(tls_certificate="/etc/mailpanel/tls/fullchain.pem", tls_privatekey="/etc/mailpanel/tls/privkey.pem")


def conf(params: CodeParams = PARAMS, **layout) -> str:
    return render_dovecot(params, Layout(**layout))[DOVECOT_CONF].content.decode()


def settings(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


@pytest.mark.parametrize("version", ["2.5", "2", "", "2.4\n!include /etc/shadow", "2.3 "])
def test_an_unknown_dovecot_version_is_refused_not_guessed(version):
    with pytest.raises(ValueError, match="Dovecot version"):
        conf(dovecot_version=version)


def test_the_default_is_the_23_dialect_of_debian_12():
    text = conf(**TLS)

    assert Layout().dovecot_version == "2.3"
    assert "dovecot_config_version" not in text
    assert "mail_location = maildir:~/Maildir" in text
    assert "ssl_cert = </etc/mailpanel/tls/fullchain.pem" in text


def test_24_starts_with_the_config_version_then_the_storage_version():
    lines = settings(conf(dovecot_version="2.4", **TLS))

    assert lines[0] == "dovecot_config_version = 2.4.0"
    assert lines[1] == "dovecot_storage_version = 2.4.0"


def test_24_has_none_of_the_23_settings_that_2_4_refuses():
    text = conf(dovecot_version="2.4", **TLS)

    for gone in ("mail_location", "disable_plaintext_auth", "args =", "default_fields", "plugin {",
                 "ssl_cert =", "ssl_key =", "$mail_plugins", "quota_rule =", "sieve = file:"):
        assert gone not in text, gone
    # no one-letter %variables (%d, %n, %Lu): 2.4 refuses them
    assert not re.search(r"%[A-Za-z]", text.replace("%{", ""))


def test_24_reads_the_passwd_file_exim_shares_per_domain_by_local_part():
    text = conf(dovecot_version="2.4")

    for db in ("passdb", "userdb"):
        block = re.search(rf"(?ms)^{db} passwd-file {{\n(.*?)^}}", text).group(1)
        assert "passwd_file_path = /etc/exim4/domains/%{user | domain}/passwd" in block
        assert "auth_username_format = %{user | lower | username}" in block
    assert "auth_username_format = %{user | lower}" in text  # Alice@Example.org logs in


def test_24_quota_comes_from_the_shared_passwd_field_with_23s_grace_and_tempfails():
    text = conf(dovecot_version="2.4")

    assert "quota_storage_size = %{passwd_file:quota_rule | default('*:storage=0') | substr(10)}" in text
    assert "quota_storage_grace = %{passwd_file:quota_rule | default('*:storage=0M') | substr(10, -1) * 102}k" in text
    assert 'quota "User quota" {\n  driver = maildir\n}' in text  # the helper reads maildirsize
    assert "quota_full_tempfail = yes" in settings(text)  # 452, Exim keeps the message
    assert "lmtp_rcpt_check_quota = yes" in settings(text)


def test_24_exims_auth_socket_speaks_the_legacy_protocol_to_the_exim_group():
    text = conf(dovecot_version="2.4")

    block = re.search(r"(?ms)^service auth {\n(.*?)^}", text).group(1)
    assert "unix_listener auth-client {\n    type = auth-legacy\n    mode = 0660\n    group = Debian-exim\n  }" in block
    assert "extra_groups = Debian-exim" in block


def test_24_tls_names_and_cleartext_only_over_tls():
    with_tls = settings(conf(dovecot_version="2.4", **TLS))
    without = settings(conf(dovecot_version="2.4"))

    assert "ssl_server_cert_file = /etc/mailpanel/tls/fullchain.pem" in with_tls
    assert "ssl_server_key_file = /etc/mailpanel/tls/privkey.pem" in with_tls
    assert "auth_allow_cleartext = no" in with_tls
    assert "ssl = no" in without and "auth_allow_cleartext = yes" in without


def test_24_sieve_storage_and_plugins_follow_the_switch():
    on = conf(dovecot_version="2.4")
    off = conf(dataclasses.replace(PARAMS, sieve_enabled=False), dovecot_version="2.4")

    assert "sieve_script personal {\n  driver = file\n  path = ~/sieve\n  active_path = ~/.dovecot.sieve\n}" in on
    assert "protocol lmtp {\n  mail_plugins {\n    sieve = yes\n  }" in on
    assert "managesieve_implementation_string = Dovecot Pigeonhole" in on
    assert "protocols = imap lmtp sieve" in on
    for text in ("sieve_script", "sieve = yes", "managesieve-login", "protocols = imap lmtp sieve"):
        assert text not in off


def test_both_dialects_are_pure_and_differ_only_by_the_version_field():
    layout = Layout(dovecot_version="2.4", **TLS)

    assert render_dovecot(PARAMS, layout) == render_dovecot(PARAMS, layout)
    assert conf(dovecot_version="2.3", **TLS) == conf(**TLS)
    assert conf(dovecot_version="2.4", **TLS) != conf(**TLS)


@pytest.mark.skipif(shutil.which("doveconf") is None, reason="doveconf is not installed")
def test_the_local_dovecot_accepts_the_dialect_of_its_own_version(tmp_path):
    """Whichever Dovecot this machine has (2.3 on Debian 12), its doveconf
    accepts that dialect and refuses the other: the version field matters."""
    version = subprocess.run(["dovecot", "--version"], capture_output=True, text=True).stdout
    mine = "2.4" if version.startswith("2.4") else "2.3"
    other = "2.3" if mine == "2.4" else "2.4"
    results = {}
    for dialect in (mine, other):
        path = tmp_path / f"dovecot-{dialect}.conf"
        path.write_text(conf(dovecot_version=dialect, dovecot_run_as="nobody:nogroup"))
        results[dialect] = subprocess.run(["doveconf", "-n", "-c", str(path)], capture_output=True, text=True)

    assert results[mine].returncode == 0, results[mine].stderr
    assert results[other].returncode != 0


@pytest.mark.parametrize("version", ["2.3", "2.4"])
def test_vacation_replies_and_redirects_go_to_exim_over_smtp_on_loopback(version):
    """Sieve's vacation and redirect hand their mail to this host's Exim on
    port 25 of 127.0.0.1 (its ACL lets localhost relay), not to Debian's
    sendmail binary; the implicit-TLS port (465) is never the one."""
    assert settings(conf(dovecot_version=version, **TLS)).count("submission_host = 127.0.0.1:25") == 1
    tests_layout = dict(smtp_ports=(2525, 4465), smtps_ports=(4465,), smtp_listen=("127.0.0.1",))
    assert "submission_host = 127.0.0.1:2525" in settings(conf(dovecot_version=version, **tests_layout))
    elsewhere = dict(smtp_ports=(25,), smtp_listen=("192.0.2.7",))
    assert "submission_host = 192.0.2.7:25" in settings(conf(dovecot_version=version, **elsewhere))


@pytest.mark.parametrize("version", ["2.3", "2.4"])
def test_a_hostile_smtp_listen_address_never_reaches_submission_host(version):
    with pytest.raises(ValueError):
        conf(dovecot_version=version, smtp_ports=(25,), smtp_listen=("192.0.2.7:25\n!include /etc/shadow",))
