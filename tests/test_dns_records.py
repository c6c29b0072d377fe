"""The records a domain needs (SPEC §1.3) and their BIND export."""

import dns.rdatatype
import dns.zone

from mailadmin import dkim
from mailadmin.dnsrecords import build_records
from mailconf.snapshot import ServerIdentity
from mailadmin.zonefile import render_zone, split_txt

SERVER = ServerIdentity(hostname="mail.panel.test", ipv4="192.0.2.10", ipv6="2001:db8::10")


def by_purpose(records):
    return {r.purpose: r for r in records}


def test_records_follow_the_spec_table():
    records = by_purpose(build_records("example.test", SERVER, "KEYDATA"))
    assert (records["mail_a"].name, records["mail_a"].type, records["mail_a"].value) == ("mail.example.test", "A", "192.0.2.10")
    assert (records["mail_aaaa"].type, records["mail_aaaa"].value) == ("AAAA", "2001:db8::10")
    assert (records["webmail_a"].name, records["webmail_a"].value) == ("webmail.example.test", "192.0.2.10")
    assert (records["mx"].name, records["mx"].value) == ("example.test", "10 mail.example.test.")
    assert records["spf"].value == "v=spf1 a mx ip4:192.0.2.10 ip6:2001:db8::10 ~all"
    assert (records["domainkeys_policy"].name, records["domainkeys_policy"].value) == ("_domainkey.example.test", "t=y; o=~;")
    assert (records["dkim"].name, records["dkim"].value) == ("mail._domainkey.example.test", "v=DKIM1; k=rsa; p=KEYDATA")
    assert (records["dmarc"].name, records["dmarc"].value) == (
        "_dmarc.example.test",
        "v=DMARC1; p=quarantine; sp=quarantine; adkim=s; aspf=s;",
    )


def test_every_record_is_labelled_required_recommended_or_optional():
    records = by_purpose(build_records("example.test", SERVER, "KEYDATA"))
    assert {r.level for r in records.values()} == {"required", "recommended", "optional"}
    assert records["mx"].level == records["spf"].level == records["dkim"].level == "required"
    assert records["dmarc"].level == "recommended"
    assert records["domainkeys_policy"].level == "optional"


def test_no_aaaa_without_server_ipv6_and_no_dkim_when_off():
    records = by_purpose(build_records("example.test", ServerIdentity(ipv4="192.0.2.10"), ""))
    assert "mail_aaaa" not in records and "dkim" not in records
    assert records["spf"].value == "v=spf1 a mx ip4:192.0.2.10 ~all"


def test_send_only_domain_gets_no_mx_record():
    records = by_purpose(build_records("example.test", SERVER, "K", receives_mail=False))
    assert "mx" not in records
    assert records["mail_a"].level == "optional"
    assert "spf" in records and "dkim" in records


def test_bind_export_loads_in_a_real_zone_parser_with_the_dkim_key_split():
    key = dkim.public_key_b64(dkim.generate_private_pem())
    records = build_records("example.test", SERVER, key)
    text = render_zone("example.test", records)
    zone = dns.zone.from_text(text, origin="example.test.", check_origin=False)
    dkim_rdata = zone.find_rdataset("mail._domainkey", dns.rdatatype.TXT)[0]
    assert len(dkim_rdata.strings) == 2
    assert all(len(s) <= 255 for s in dkim_rdata.strings)
    assert b"".join(dkim_rdata.strings).decode() == f"v=DKIM1; k=rsa; p={key}"
    mx = zone.find_rdataset("@", dns.rdatatype.MX)[0]
    assert (mx.preference, mx.exchange.derelativize(zone.origin).to_text()) == (10, "mail.example.test.")
    assert zone.find_rdataset("mail", dns.rdatatype.AAAA)[0].address == "2001:db8::10"
    spf = zone.find_rdataset("@", dns.rdatatype.TXT)[0]
    assert spf.strings == (b"v=spf1 a mx ip4:192.0.2.10 ip6:2001:db8::10 ~all",)


def test_txt_split_is_by_bytes():
    chunks = split_txt("é" * 200)  # 400 bytes
    assert [len(c) for c in chunks] == [255, 145]


# --- client autoconfiguration: autoconfig./autodiscover. and RFC 6186 SRV ------------


def test_srv_records_name_the_server_hostname_with_implicit_tls_preferred():
    records = by_purpose(build_records("example.test", SERVER, "K"))
    srv = {p: (r.name, r.type, r.value, r.level) for p, r in records.items() if p.startswith("srv_")}
    assert srv == {
        "srv_imaps": ("_imaps._tcp.example.test", "SRV", "0 1 993 mail.panel.test.", "optional"),
        "srv_imap": ("_imap._tcp.example.test", "SRV", "10 1 143 mail.panel.test.", "optional"),
        "srv_submissions": ("_submissions._tcp.example.test", "SRV", "0 1 465 mail.panel.test.", "optional"),
        "srv_submission": ("_submission._tcp.example.test", "SRV", "10 1 587 mail.panel.test.", "optional"),
        # Outlook: https://<host name>/autodiscover/autodiscover.xml, where the certificate matches
        "srv_autodiscover": ("_autodiscover._tcp.example.test", "SRV", "0 0 443 mail.panel.test.", "optional"),
    }
    for purpose in ("autoconfig_a", "autodiscover_a"):
        assert (records[purpose].type, records[purpose].value) == ("A", "192.0.2.10")
    assert records["autoconfig_aaaa"].name == "autoconfig.example.test"
    assert records["autodiscover_aaaa"].value == "2001:db8::10"


def test_a_service_not_offered_gets_the_root_target():
    from dataclasses import replace

    from mailadmin.client_config import SERVICES

    services = tuple(replace(s, offered=False) if s.label == "imap" else s for s in SERVICES)
    records = by_purpose(build_records("example.test", SERVER, "K", services=services))
    assert records["srv_imap"].value == "0 0 0 ."
    assert records["srv_imaps"].value == "0 1 993 mail.panel.test."


def test_send_only_domain_gets_no_client_records():
    records = by_purpose(build_records("example.test", SERVER, "K", receives_mail=False))
    assert not [p for p in records if p.startswith(("srv_", "autoconfig", "autodiscover"))]


def test_no_srv_records_while_the_server_hostname_is_unset():
    unset = ServerIdentity(ipv4="192.0.2.10")  # localhost.localdomain
    records = by_purpose(build_records("example.test", unset, "K"))
    assert not [p for p in records if p.startswith("srv_")]
    assert "autoconfig_a" in records


def test_bind_export_of_srv_records_loads_in_a_real_zone_parser():
    from dataclasses import replace

    from mailadmin.client_config import SERVICES

    services = tuple(replace(s, offered=False) if s.label == "imap" else s for s in SERVICES)
    zone = dns.zone.from_text(
        render_zone("example.test", build_records("example.test", SERVER, "K", services=services)),
        origin="example.test.",
        check_origin=False,
    )
    imaps = zone.find_rdataset("_imaps._tcp", dns.rdatatype.SRV)[0]
    assert (imaps.priority, imaps.weight, imaps.port, imaps.target.to_text()) == (0, 1, 993, "mail.panel.test.")
    submission = zone.find_rdataset("_submission._tcp", dns.rdatatype.SRV)[0]
    assert (submission.priority, submission.port) == (10, 587)
    imap = zone.find_rdataset("_imap._tcp", dns.rdatatype.SRV)[0]
    assert (imap.port, imap.target.to_text()) == (0, ".")


def test_the_webmail_label_names_the_chosen_webmail_and_the_record_stays_the_same():
    snappy = by_purpose(build_records("example.test", SERVER, "KEYDATA"))["webmail_a"]
    roundcube = by_purpose(build_records("example.test", SERVER, "KEYDATA", webmail_name="Roundcube"))["webmail_a"]
    assert "Webmail (SnappyMail)" in str(snappy.explanation)
    assert "Webmail (Roundcube)" in str(roundcube.explanation) and "SnappyMail" not in str(roundcube.explanation)
    assert (roundcube.name, roundcube.type, roundcube.value, roundcube.level) == (
        snappy.name, snappy.type, snappy.value, snappy.level)
