"""DMARC aggregate reports (issue #17): hostile report files first — each
refused with a clear reason, in bounded memory and time, measured in a fresh
process — then the hand-written fixtures of real receivers' formats, then
the mailbox, the job, the page and who may see it (tests/test_dmarc_mailbox.py
reads them from real Dovecot)."""

import gzip
import io
import json
import os
import subprocess
import sys
import time
import zipfile
import zlib
from email.message import EmailMessage
from pathlib import Path

import pytest

from mailadmin import dmarc_reports as dr

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "dmarc"
REPO = Path(__file__).resolve().parent.parent
GiB = 1 << 30


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def zipped(xml: bytes, name: str = "report.xml") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, xml)
    return buf.getvalue()


def report_mail(*attachments: tuple[str, bytes, str], subject="Report domain: example.org") -> bytes:
    message = EmailMessage()
    message["From"] = "noreply-dmarc-support@google.com"
    message["To"] = "dmarc@example.org"
    message["Subject"] = subject
    message.set_content("This is an aggregate report from google.com.")
    for name, payload, ctype in attachments:
        maintype, subtype = ctype.split("/")
        message.add_attachment(payload, maintype=maintype, subtype=subtype, filename=name)
    return message.as_bytes()


# --- the bombs, built by streaming so the test itself stays small ------------------------------


def _stream_zeros(write, total: int, chunk: bytes = b"\0" * (1 << 20)) -> None:
    for _i in range(total // len(chunk)):
        write(chunk)


@pytest.fixture(scope="module")
def zip_bomb() -> bytes:
    """One member that unpacks to 1 GiB (about 1 MB zipped); its central
    directory tells the truth, so also a variant that lies."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        info = zipfile.ZipInfo("report.xml")
        info.compress_type = zipfile.ZIP_DEFLATED
        with archive.open(info, "w", force_zip64=True) as member:
            member.write(b"<feedback>")
            _stream_zeros(member.write, GiB)
    return buf.getvalue()


def lying(zip_bytes: bytes, size: int = 1000) -> bytes:
    """The same zip with its central directory claiming `size` bytes unpacked
    (what zipfile trusts; the local header defers to a data descriptor)."""
    data = bytearray(zip_bytes)
    cd = data.rfind(b"PK\x01\x02")
    assert int.from_bytes(data[cd + 24:cd + 28], "little") == GiB + len(b"<feedback>")
    data[cd + 24:cd + 28] = size.to_bytes(4, "little")
    assert zipfile.ZipFile(io.BytesIO(bytes(data))).infolist()[0].file_size == size
    return bytes(data)


@pytest.fixture(scope="module")
def gzip_bomb() -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip container
    out = [compressor.compress(b"<feedback>")]
    _stream_zeros(lambda chunk: out.append(compressor.compress(chunk)), GiB)
    out.append(compressor.flush())
    return b"".join(out)


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<feedback><report_metadata><org_name>&lol9;</org_name></report_metadata></feedback>
"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE feedback [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<feedback><report_metadata><org_name>&xxe;</org_name></report_metadata></feedback>
"""


def measure(tmp_path, payload: bytes, mail: bool = False) -> dict:
    """Parse `payload` in a fresh Python: the outcome, the peak resident
    memory the parse added (Linux VmHWM, reset just before) and the time."""
    path = tmp_path / "payload"
    path.write_bytes(payload)
    code = f"""
import json, os, sys, time
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "panel.settings")
import django; django.setup()
from mailadmin import dmarc_reports as dr
payload = open({str(path)!r}, "rb").read()

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])  # kB

with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak (VmHWM) to the current resident size
before = status("VmRSS")
start = time.perf_counter()
try:
    if {mail!r}:
        reports, problems = dr.read_message(payload)
        outcome = "; ".join(problems) if problems else "parsed"
    else:
        dr.parse_report(payload)
        outcome = "parsed"
except dr.ReportRefused as exc:
    outcome = str(exc)
seconds = time.perf_counter() - start
grew = status("VmHWM") - before
print(json.dumps({{"outcome": outcome, "seconds": seconds, "grew_mib": grew / 1024}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"measured: {result}")  # shown with -s; the report quotes these
    return result


# --- hostile first -------------------------------------------------------------------------------


def test_a_zip_bomb_is_refused_from_its_directory_before_anything_is_unpacked(tmp_path, zip_bomb):
    assert len(zip_bomb) < 2 * 1024 * 1024
    result = measure(tmp_path, zip_bomb)
    assert "larger than 16 MB when unpacked" in result["outcome"]
    assert result["grew_mib"] < 20 and result["seconds"] < 1


def test_a_zip_bomb_whose_directory_lies_is_read_no_further_than_it_claims(tmp_path, zip_bomb):
    result = measure(tmp_path, lying(zip_bomb))
    assert result["outcome"] in ("the attachment is a damaged zip or gzip file",
                                 "the XML is malformed (line 1)")
    assert result["grew_mib"] < 20 and result["seconds"] < 1


def test_a_gzip_bomb_is_cut_at_the_limit(tmp_path, gzip_bomb):
    assert len(gzip_bomb) < 2 * 1024 * 1024
    result = measure(tmp_path, gzip_bomb)
    assert "larger than 16 MB when unpacked" in result["outcome"]
    assert result["grew_mib"] < 60 and result["seconds"] < 2


def test_a_zip_in_a_zip_and_a_zip_of_many_files_are_refused():
    inner = zipped(fixture("google.xml"))
    with pytest.raises(dr.ReportRefused, match="not XML"):
        dr.parse_report(zipped(inner, "report.zip"))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for i in range(2000):
            archive.writestr(f"r{i}.xml", b"<feedback/>")
    started = time.perf_counter()
    with pytest.raises(dr.ReportRefused, match="holds 2000 files"):
        dr.parse_report(buf.getvalue())
    assert time.perf_counter() - started < 1


def test_an_encrypted_or_damaged_zip_is_refused():
    good = zipped(fixture("google.xml"))
    flagged = bytearray(good)
    flagged[6] |= 1  # local header: encrypted
    cd = flagged.rfind(b"PK\x01\x02")
    flagged[cd + 8] |= 1  # central directory: encrypted
    with pytest.raises(dr.ReportRefused, match="encrypted"):
        dr.parse_report(bytes(flagged))
    with pytest.raises(dr.ReportRefused, match="damaged"):
        dr.parse_report(good[: len(good) // 2])
    with pytest.raises(dr.ReportRefused, match="damaged"):
        dr.parse_report(b"\x1f\x8b" + b"garbage" * 10)


def test_billion_laughs_is_refused_without_expanding(tmp_path):
    result = measure(tmp_path, BILLION_LAUGHS)
    assert "DTD or entities" in result["outcome"]
    assert result["grew_mib"] < 5 and result["seconds"] < 0.5
    result = measure(tmp_path, gzip.compress(BILLION_LAUGHS))
    assert "DTD or entities" in result["outcome"]


def test_an_external_entity_is_refused_and_never_read():
    with pytest.raises(dr.ReportRefused, match="DTD") as refused:
        dr.parse_report(EXTERNAL_ENTITY)
    assert "root:" not in str(refused.value)


def test_100_mb_of_xml_is_refused_before_parsing(tmp_path):
    record = fixture("google.xml").split(b"<record>", 1)[1].split(b"</record>", 1)[0]
    head = fixture("google.xml").split(b"<record>", 1)[0]
    one = b"<record>" + record + b"</record>\n"
    body = one * (100 * 1024 * 1024 // len(one) + 1)
    xml = head + body + b"</feedback>\n"
    assert len(xml) >= 100 * 1024 * 1024
    result = measure(tmp_path, xml)
    assert "larger than 16 MB" in result["outcome"]
    assert result["grew_mib"] < 5 and result["seconds"] < 0.5
    # the same gzipped (about 1 MB): cut at 16 MB while unpacking
    packed = gzip.compress(xml, 6)
    assert len(packed) < 3 * 1024 * 1024
    result = measure(tmp_path, packed)
    assert "larger than 16 MB when unpacked" in result["outcome"]
    assert result["grew_mib"] < 60 and result["seconds"] < 2
    # as a mail: the attachment is over the limit before it is even unpacked
    result = measure(tmp_path, report_mail(("big.xml", xml[: 3_500_000], "application/xml")), mail=True)
    assert "larger than 3 MB" in result["outcome"]
    assert result["grew_mib"] < 50 and result["seconds"] < 2


def test_an_element_flood_within_the_size_limit_is_refused_in_bounded_memory(tmp_path):
    flood = b"<feedback>" + b"<x/>" * (15 * 1024 * 1024 // 4) + b"</feedback>"
    result = measure(tmp_path, flood)
    assert "more elements than a report can have" in result["outcome"]
    assert result["grew_mib"] < 40 and result["seconds"] < 10
    one_record = b"<feedback><record>" + b"<y/>" * 600 + b"</record></feedback>"
    with pytest.raises(dr.ReportRefused, match="more elements"):
        dr.parse_report(one_record)
    deep = b"<feedback>" + b"<a>" * 20 + b"</a>" * 20 + b"</feedback>"
    with pytest.raises(dr.ReportRefused, match="nested more than 8"):
        dr.parse_report(deep)


def test_more_records_than_the_limit_are_refused(tmp_path):
    xml = fixture("google.xml")
    record = b"<record>" + xml.split(b"<record>", 1)[1].split(b"</record>", 1)[0] + b"</record>"
    many = xml.split(b"<record>", 1)[0] + record * (dr.MAX_RECORDS + 1) + b"</feedback>"
    assert len(many) < dr.MAX_XML_BYTES
    result = measure(tmp_path, many)
    assert "more than 20000 records" in result["outcome"]
    assert result["grew_mib"] < 40 and result["seconds"] < 10


def _google(replace: tuple[bytes, bytes]) -> bytes:
    xml = fixture("google.xml")
    assert replace[0] in xml
    return xml.replace(replace[0], replace[1], 1)


WRONG_SCHEMA = {
    "html": (b"<html><body>hi</body></html>", "no <feedback>"),
    "json": (b'{"feedback": {}}', "not XML"),
    "empty": (b"", "not XML"),
    "binary": (os.urandom(64).replace(b"<", b"") + b"<", "not XML"),
    "malformed": (b"<feedback><report_metadata></feedback>", "malformed"),
    "undefined entity": (b"<feedback>&nope;</feedback>", "malformed"),
    "no metadata": (_google((b"<report_metadata>", b"<report_metadatx>")), "malformed"),
    "no report_id": (_google((b"<report_id>13283714906346237861</report_id>", b"")), "<report_id>"),
    "empty org": (_google((b"<org_name>google.com</org_name>", b"<org_name> </org_name>")), "<org_name> is empty"),
    "control char": (_google((b"<org_name>google.com", b"<org_name>goo\tgle.com")), "control characters"),
    "long value": (_google((b"<report_id>13283714906346237861", b"<report_id>" + b"9" * 300)), "too long"),
    "bad ip": (_google((b"<source_ip>192.0.2.10", b"<source_ip>192.0.2.300")), "not an IP address"),
    "ip with text": (_google((b"<source_ip>192.0.2.10", b"<source_ip>192.0.2.10; rm -rf")), "not an IP address"),
    "negative count": (_google((b"<count>42", b"<count>-42")), "<count>"),
    "huge count": (_google((b"<count>42", b"<count>99999999999")), "<count>"),
    "unicode digits": (_google((b"<count>42", "<count>\u0664\u0662".encode())), "<count>"),
    "disposition": (_google((b"<disposition>none", b"<disposition>delete")), "<disposition>"),
    "dkim verdict": (_google((b"<dkim>pass</dkim>\n        <spf>", b"<dkim>maybe</dkim>\n        <spf>")), "<dkim>"),
    "no header_from": (_google((b"<header_from>example.org</header_from>", b"")), "<header_from>"),
    "header_from not a domain": (_google((b"<header_from>example.org", b"<header_from>a b@c")), "<header_from>"),
    "reversed range": (_google((b"<begin>1767225600", b"<begin>1767999999")), "<date_range>"),
    "year range": (_google((b"<begin>1767225600", b"<begin>1")), "<date_range>"),
    "no records": (fixture("google.xml").split(b"<record>", 1)[0] + b"</feedback>", "no <record>"),
    "policy domain": (_google((b"<domain>example.org</domain>\n    <adkim>", b"<domain>-</domain>\n    <adkim>")), "not a domain"),
}


@pytest.mark.parametrize("case", list(WRONG_SCHEMA))
def test_a_file_outside_the_schema_is_refused_with_what_is_wrong(case):
    payload, reason = WRONG_SCHEMA[case]
    with pytest.raises(dr.ReportRefused) as refused:
        dr.parse_report(payload)
    assert reason in str(refused.value)
    assert len(str(refused.value)) < 120 and "\n" not in str(refused.value)


def test_hostile_mails_are_refused():
    with pytest.raises(dr.ReportRefused, match="no report attached"):
        dr.attachments(report_mail())
    with pytest.raises(dr.ReportRefused, match="larger than 5 MB"):
        dr.attachments(b"x" * (dr.MAX_MESSAGE_BYTES + 1))
    many = report_mail(*[(f"r{i}.xml", b"<feedback/>", "application/xml") for i in range(25)])
    with pytest.raises(dr.ReportRefused, match="more than 20 parts"):
        dr.attachments(many)
    six = report_mail(*[(f"r{i}.xml", b"<feedback/>", "application/xml") for i in range(6)])
    with pytest.raises(dr.ReportRefused, match="more than 5 attachments"):
        dr.attachments(six)
    nested = b"Content-Type: multipart/mixed; boundary=b0\n\n"
    for i in range(1, 3000):
        nested += f"--b{i - 1}\nContent-Type: multipart/mixed; boundary=b{i}\n\n".encode()
    with pytest.raises(dr.ReportRefused, match="parts"):
        dr.attachments(nested)
    reports, problems = dr.read_message(report_mail(("a.xml", BILLION_LAUGHS, "application/xml")))
    assert reports == [] and problems == ["a.xml: the XML declares a DTD or entities (refused: they can expand without bound)"]


# --- good reports -----------------------------------------------------------------------------


def test_a_google_zip_report_is_parsed():
    report = dr.parse_report(zipped(fixture("google.xml"), "google.com!example.org!1767225600!1767311999.xml"))
    assert (report.org_name, report.report_id, report.policy_domain) == ("google.com", "13283714906346237861", "example.org")
    assert report.begin.isoformat() == "2026-01-01T00:00:00+00:00" and str(report.day) == "2026-01-01"
    assert [(r.source_ip, r.count, r.disposition, r.dkim_aligned, r.spf_aligned) for r in report.rows] == [
        ("192.0.2.10", 42, "none", True, True),
        ("203.0.113.77", 3, "quarantine", False, False),
        ("2001:db8::10", 5, "none", True, False),
    ]
    assert report.rows[2].header_from == "news.example.org"


def test_an_outlook_gzip_report_and_a_dmarcbis_namespaced_one_are_parsed():
    mail = report_mail(
        ("enterprise.protection.outlook.com!example.org!1767139200!1767225600.xml.gz",
         gzip.compress(fixture("outlook.xml")), "application/gzip"),
        ("receiver.example!example.org!1767312000!1767398399.xml", fixture("dmarcbis.xml"), "text/xml"),
    )
    reports, problems = dr.read_message(mail)
    assert problems == []
    outlook, bis = reports
    assert outlook.org_name == "Enterprise Outlook" and outlook.rows[0].source_ip == "198.51.100.25"
    assert (outlook.rows[0].dkim_aligned, outlook.rows[0].spf_aligned) == (True, False)
    assert bis.report_id == "rcv-2026-01-02-example.org" and bis.rows[0].disposition == "pass"


def test_a_mail_with_one_good_and_one_bad_report_keeps_the_good_one():
    mail = report_mail(("good.zip", zipped(fixture("google.xml")), "application/zip"),
                       ("bad.xml", b"<html/>", "application/xml"))
    reports, problems = dr.read_message(mail)
    assert [r.org_name for r in reports] == ["google.com"]
    assert problems == ["bad.xml: the XML is not a DMARC aggregate report (no <feedback>)"]


# --- the mailbox, storing and summing (database; real Dovecot in test_dmarc_mailbox.py) -----------

BAD_LOCAL_PARTS = ["", "a b", "../x", "x/y", "x+tag", "${run{/bin/id}}", "a" * 65, "dmarc@example.org", "é", "a\nb", ".x"]


@pytest.fixture
def domain(db, alice):
    from mailadmin.services import domains as domain_service

    return domain_service.add_domain(None, alice, "example.org")


@pytest.mark.django_db
@pytest.mark.parametrize("local", BAD_LOCAL_PARTS)
def test_a_reports_mailbox_name_that_is_not_a_local_part_is_refused(domain, local):
    from django.core.exceptions import ValidationError
    from django.core.management import call_command
    from django.core.management.base import CommandError

    from mailadmin.models import DmarcMailbox, MailAccount
    from mailadmin.services import dmarc_reports as svc

    with pytest.raises(ValidationError):
        svc.set_mailbox(None, domain, local)
    with pytest.raises(CommandError):
        call_command("mail", "dmarc", "set", "example.org", local, stdout=io.StringIO())
    assert not DmarcMailbox.objects.exists() and not MailAccount.objects.exists()


@pytest.mark.django_db
def test_an_existing_mailbox_or_alias_or_a_send_only_domain_is_refused(domain, alice):
    from django.core.exceptions import ValidationError

    from mailadmin.models import DmarcMailbox
    from mailadmin.services import accounts
    from mailadmin.services import dmarc_reports as svc
    from mailadmin.services import domains as domain_service

    accounts.add_account(alice, domain, "info", "Str0ng-enough-pass")
    accounts.add_alias(alice, domain, "sales", "info@example.org")
    for taken in ("info", "sales"):
        with pytest.raises(ValidationError, match="already a mailbox or alias"):
            svc.set_mailbox(alice, domain, taken)
    domain_service.update_domain(None, domain, hosted_elsewhere=True)
    with pytest.raises(ValidationError, match="hosted elsewhere"):
        svc.set_mailbox(alice, domain, "dmarc")
    assert not DmarcMailbox.objects.exists()


@pytest.mark.django_db
def test_the_dmarc_record_names_the_mailbox_and_the_check_wants_it(domain, alice):
    from mailadmin.checks import dns as dnscheck
    from mailadmin.models import MailAccount, ServerSettings
    from mailadmin.services import dmarc_reports as svc
    from mailadmin.services import dns_checks

    identity = dns_checks.server_identity(ServerSettings.load())
    plain = {r.purpose: r for r in dns_checks.domain_records(domain, identity)}["dmarc"]
    assert "rua=" not in plain.value
    first = svc.set_mailbox(alice, domain, "dmarc").object
    domain.refresh_from_db()
    record = {r.purpose: r for r in dns_checks.domain_records(domain, identity)}["dmarc"]
    assert record.value.endswith(" rua=mailto:dmarc@example.org;")
    # choosing another name moves the reports there; the panel's old mailbox goes
    svc.set_mailbox(alice, domain, "reports")
    assert list(MailAccount.objects.values_list("local_part", flat=True)) == ["reports"]
    assert not MailAccount.objects.filter(pk=first.account_id).exists()
    domain.refresh_from_db()
    record = {r.purpose: r for r in dns_checks.domain_records(domain, identity)}["dmarc"]
    assert "rua=mailto:reports@example.org;" in record.value
    assert dnscheck._missing_report_addresses(record.value.split("rua=")[1].rstrip(";"), "mailto:other@x.example") == [
        "reports@example.org"
    ]
    assert dnscheck._missing_report_addresses("mailto:reports@example.org", "mailto:Reports@Example.org!10m") == []
    svc.clear_mailbox(alice, domain)
    assert not MailAccount.objects.exists()


def _store_fixtures(domain):
    from mailadmin.services import dmarc_reports as svc

    known = {"192.0.2.10": svc.SERVER, "2001:db8::10": svc.SERVER, "198.51.100.25": svc.RELAY}
    stored = [svc.store(domain, dr.parse_report(fixture(name)), known) for name in ("google.xml", "outlook.xml", "dmarcbis.xml")]
    return stored


@pytest.mark.django_db
def test_reports_are_summed_per_day_and_source_and_others_are_marked(domain):
    import datetime

    from mailadmin.services import dmarc_reports as svc

    assert _store_fixtures(domain) == [True, True, True]
    assert _store_fixtures(domain) == [False, False, False]  # the same (org, id): once
    rows = svc.source_rows(domain, today=datetime.date(2026, 1, 10))
    assert [(str(r["day"]), r["source_ip"], r["source"], r["messages"], r["dkim"], r["spf"], r["delivered"], r["quarantined"])
            for r in rows] == [
        ("2026-01-02", "192.0.2.10", "server", 12, 12, 12, 12, 0),
        ("2026-01-01", "192.0.2.10", "server", 42, 42, 42, 42, 0),
        ("2026-01-01", "2001:db8::10", "server", 5, 5, 0, 5, 0),
        ("2026-01-01", "203.0.113.77", "other", 3, 0, 0, 0, 3),
        ("2025-12-31", "198.51.100.25", "relay", 7, 7, 0, 7, 0),
    ]
    assert svc.source_rows(domain, today=datetime.date(2026, 3, 1)) == []  # older than 31 days


@pytest.mark.django_db
def test_cli_show_json_and_housekeeping_drops_old_reports(domain, settings):
    from django.core.management import call_command
    from django.utils import timezone

    from mailadmin.models import DmarcReport, DmarcRow
    from mailadmin.services import housekeeping

    _store_fixtures(domain)
    out = io.StringIO()
    call_command("mail", "dmarc", "show", "example.org", "--days", "100000", "--json", stdout=out)
    data = json.loads(out.getvalue())
    assert len(data["rows"]) == 5 and {r["source"] for r in data["rows"]} == {"server", "relay", "other"}
    settings.MAILPANEL_KEEP_DMARC_DAYS = 400
    oldest_end = DmarcReport.objects.order_by("end").first().end
    newest_end = DmarcReport.objects.order_by("-end").first().end
    kept = housekeeping.prune(now=oldest_end + timezone.timedelta(days=399))
    assert kept["mailadmin.DmarcReport"] == 0 and DmarcReport.objects.count() == 3
    gone = housekeeping.prune(now=newest_end + timezone.timedelta(days=401))
    assert gone["mailadmin.DmarcReport"] == 3 and not DmarcRow.objects.exists()


def test_the_reports_timer_runs_mail_dmarc_read(tmp_path):
    from tests.test_deploy import assert_timer_units

    assert_timer_units("mailpanel-dmarc-reports", "mail dmarc read", tmp_path)


# --- the page ---------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("local", ["a b", "../x", "x+tag", "${run{/bin/id}}", "a" * 65, "é"])
def test_the_page_refuses_a_bad_mailbox_name_and_says_why(alice_client, domain, local):
    from django.urls import reverse

    from mailadmin.models import DmarcMailbox, MailAccount

    url = reverse("mailadmin:domain_dmarc", args=[domain.pk])
    response = alice_client.post(url, {"local_part": local}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and 'id="dmarc-error"' in response.content.decode()
    assert alice_client.post(url, {"local_part": local}).status_code == 400
    assert not DmarcMailbox.objects.exists() and not MailAccount.objects.exists()


@pytest.mark.django_db
def test_the_tab_shows_each_source_per_day_and_marks_the_unknown_ones(alice_client, domain, django_assert_max_num_queries):
    from django.urls import reverse

    from mailadmin.models import DmarcRow

    alice_client.post(reverse("mailadmin:domain_dmarc", args=[domain.pk]), {"local_part": "dmarc"})
    _store_fixtures(domain)
    DmarcRow.objects.update(day=__import__("datetime").date.today())  # inside the last 31 days
    with django_assert_max_num_queries(12):
        page = alice_client.get(reverse("mailadmin:domain_dmarc", args=[domain.pk])).content.decode()
    assert "dmarc@example.org" in page and "rua=mailto:dmarc@example.org" in page
    rows = page.split('id="dmarc-sources"', 1)[1].split("</table>", 1)[0]
    assert rows.count("<tr class=") == 4  # one day: four addresses
    other = rows.split('data-source="other"', 1)[1].split("</tr>", 1)[0]
    assert "203.0.113.77" in other and "not this server or its relay" in other
    assert 'class="dmarc-other bad"' in rows
    assert rows.count('data-source="server"') == 2 and rows.count('data-source="relay"') == 1
    dns = alice_client.get(reverse("mailadmin:domain_dns", args=[domain.pk])).content.decode()
    assert "rua=mailto:dmarc@example.org;" in dns


@pytest.mark.django_db
def test_the_live_check_finds_a_dmarc_record_without_our_rua(domain, alice, settings):
    from mailadmin.checks import dns as dnscheck
    from mailadmin.models import ServerSettings
    from mailadmin.services import dmarc_reports as svc
    from mailadmin.services import dns_checks
    from tests.dnsserver import DnsServer, txt

    svc.set_mailbox(alice, domain, "dmarc")
    domain.refresh_from_db()
    (record,) = [r for r in dns_checks.domain_records(domain, dns_checks.server_identity(ServerSettings.load()))
                 if r.purpose == "dmarc"]
    policy = "v=DMARC1; p=quarantine; sp=quarantine; adkim=s; aspf=s;"
    with DnsServer([f"_dmarc.example.org. 300 IN TXT {txt(policy)}",
                    f"_dmarc.ours.example. 300 IN TXT {txt(policy + ' rua=mailto:elsewhere@x.example,mailto:DMARC@example.org!10m;')}"]) as server:
        settings.MAILPANEL_RESOLVERS = [server.address]
        settings.MAILPANEL_CHECK_TIMEOUT = 2.0
        ours = dnscheck.Record("_dmarc.ours.example", "TXT", record.value, "dmarc", record.level, "")
        (without, with_rua) = [v[0] for v in dns_checks.check_record_sets([(1, [record]), (2, [ours])]).values()]
    assert without.status == dnscheck.DIFFERENT and "do not come to dmarc@example.org" in without.detail
    assert with_rua.status == dnscheck.OK


def test_input_nobody_foresaw_is_refused_not_a_crashed_job(monkeypatch):
    def boom(payload):
        raise TypeError("a bug meeting odd input")

    monkeypatch.setattr(dr, "parse_report", boom)
    reports, problems = dr.read_message(report_mail(("r.xml", fixture("google.xml"), "text/xml")))
    assert reports == [] and problems == ["r.xml: the report cannot be parsed"]
