"""DMARC aggregate reports (RFC 7489 §7.2, appendix C): from a mail as it
arrived to plain rows. Pure: bytes in, dataclasses out; no ORM, no sockets.

Anyone can send mail to the rua= address, so every report is hostile until
it parses: the mail, each attachment, the decompressed XML, the number of
elements and of records are bounded before anything is held in memory
(zip and gzip are read with a cap, never whole; a zip is one .xml member);
the XML goes through defusedxml with DTDs forbidden (no entity expansion,
no external entities) and is read incrementally, each <record> dropped once
read. Anything outside the schema refuses the whole report: a partial
report would show wrong totals.
"""

from __future__ import annotations

import email
import email.policy
import gzip
import io
import ipaddress
import logging
import re
import zipfile
import zlib
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException
from django.utils.translation import gettext as _

logger = logging.getLogger(__name__)

# The email parser holds about seven times a mail while it decodes it.
MAX_MESSAGE_BYTES = 5 * 1024 * 1024  # a report mail as fetched
MAX_ATTACHMENT_BYTES = 3 * 1024 * 1024  # one attachment, decoded, still compressed
MAX_XML_BYTES = 16 * 1024 * 1024  # one report, decompressed
MAX_PARTS = 20  # MIME parts looked at in one mail
MAX_REPORTS_PER_MESSAGE = 5
MAX_RECORDS = 20_000
MAX_ELEMENTS = 40 * MAX_RECORDS + 200  # a record has about 25 elements
MAX_ELEMENTS_PER_CHILD = 500  # inside one <record> or <report_metadata>
MAX_DEPTH = 8  # feedback/record/auth_results/dkim/result is 5 deep
MAX_TEXT = 255  # any one value
MAX_COUNT = 10**9
MAX_RANGE_SECONDS = 32 * 86400
READ_CHUNK = 64 * 1024

REPORT_TYPES = ("application/zip", "application/x-zip-compressed", "application/gzip", "application/x-gzip",
                "application/xml", "text/xml", "application/octet-stream")
REPORT_NAME = re.compile(r"(?i).*\.(zip|gz|gzip|xml)$")
DISPOSITIONS = ("none", "quarantine", "reject", "pass")  # "pass": DMARCbis
_PRINTABLE = re.compile(r"[^\x00-\x1f\x7f]+")
_DOMAIN = re.compile(r"(?i)[a-z0-9_](?:[a-z0-9_-]{0,62})(?:\.[a-z0-9_](?:[a-z0-9_-]{0,62}))*\.?")


class ReportRefused(ValueError):
    """Why a report (or a mail) was not read; safe for a log and the page."""


@dataclass(frozen=True)
class ReportRow:
    source_ip: str
    count: int
    disposition: str
    dkim_aligned: bool
    spf_aligned: bool
    header_from: str


@dataclass(frozen=True)
class AggregateReport:
    org_name: str
    report_id: str
    begin: datetime
    end: datetime
    policy_domain: str
    rows: tuple[ReportRow, ...] = field(default=())

    @property
    def day(self) -> date:
        return self.begin.date()


# --- the mail -------------------------------------------------------------------------


def attachments(raw: bytes) -> list[tuple[str, bytes]]:
    """(file name, decoded payload) of each part that may be a report."""
    if len(raw) > MAX_MESSAGE_BYTES:
        raise ReportRefused(_("the mail is larger than %(mb)d MB") % {"mb": MAX_MESSAGE_BYTES // 2**20})
    try:
        message = email.message_from_bytes(raw, policy=email.policy.default)
        parts = []
        for number, part in enumerate(message.walk()):
            if number >= MAX_PARTS:
                raise ReportRefused(_("the mail has more than %(n)d parts") % {"n": MAX_PARTS})
            if not part.is_multipart():
                parts.append(part)
    except RecursionError:
        raise ReportRefused(_("the mail's parts are nested too deeply")) from None
    found = []
    for part in parts:
        name = part.get_filename() or ""
        if part.get_content_type() not in REPORT_TYPES and not REPORT_NAME.fullmatch(name):
            continue
        try:
            payload = part.get_payload(decode=True) or b""
        except Exception:  # a broken transfer encoding; email raises many kinds
            raise ReportRefused(_("an attachment cannot be decoded")) from None
        if len(payload) > MAX_ATTACHMENT_BYTES:
            raise ReportRefused(_("an attachment is larger than %(mb)d MB") % {"mb": MAX_ATTACHMENT_BYTES // 2**20})
        found.append((_printable(name)[:MAX_TEXT], payload))
    if not found:
        raise ReportRefused(_("the mail has no report attached (zip, gzip or XML)"))
    if len(found) > MAX_REPORTS_PER_MESSAGE:
        raise ReportRefused(_("the mail has more than %(n)d attachments") % {"n": MAX_REPORTS_PER_MESSAGE})
    return found


# --- zip, gzip, XML -------------------------------------------------------------------------


def _capped_read(stream) -> bytes:
    """At most MAX_XML_BYTES from a decompressing stream, whatever it claims."""
    out = bytearray()
    while True:
        chunk = stream.read(READ_CHUNK)
        if not chunk:
            return bytes(out)
        out += chunk
        if len(out) > MAX_XML_BYTES:
            raise ReportRefused(
                _("the report is larger than %(mb)d MB when unpacked") % {"mb": MAX_XML_BYTES // 2**20}
            )


def unpack(payload: bytes) -> bytes:
    """The XML inside a zip (one .xml member), a gzip, or the payload itself;
    told apart by their first bytes, not by what the sender called them."""
    try:
        if payload[:4] == b"PK\x03\x04":
            with zipfile.ZipFile(io.BytesIO(payload)) as archive:
                members = archive.infolist()
                if len(members) != 1:
                    raise ReportRefused(_("the zip file holds %(n)d files, not one report") % {"n": len(members)})
                member = members[0]
                if member.flag_bits & 0x1 or member.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                    raise ReportRefused(_("the zip file is encrypted or uses an unknown compression"))
                if member.file_size > MAX_XML_BYTES:
                    raise ReportRefused(
                        _("the report is larger than %(mb)d MB when unpacked") % {"mb": MAX_XML_BYTES // 2**20}
                    )
                with archive.open(member) as stream:
                    xml = _capped_read(stream)
        elif payload[:2] == b"\x1f\x8b":
            with gzip.GzipFile(fileobj=io.BytesIO(payload)) as stream:
                xml = _capped_read(stream)
        else:
            xml = payload
    except (zipfile.BadZipFile, zipfile.LargeZipFile, gzip.BadGzipFile, zlib.error, EOFError, OSError):
        raise ReportRefused(_("the attachment is a damaged zip or gzip file")) from None
    if len(xml) > MAX_XML_BYTES:
        raise ReportRefused(_("the report is larger than %(mb)d MB") % {"mb": MAX_XML_BYTES // 2**20})
    head = xml[:64].lstrip(b"\xef\xbb\xbf \t\r\n")
    if not head.startswith(b"<"):
        raise ReportRefused(_("the attachment is not XML (nor zip or gzip of XML)"))
    return xml


def _printable(value: str) -> str:
    return "".join(_PRINTABLE.findall(value)).strip()


# The values read, by path below <feedback>; everything else is only counted.
METADATA_PATHS = {
    ("report_metadata", "org_name"): "org_name",
    ("report_metadata", "report_id"): "report_id",
    ("report_metadata", "date_range", "begin"): "begin",
    ("report_metadata", "date_range", "end"): "end",
    ("policy_published", "domain"): "domain",
}
RECORD_PATHS = {
    ("record", "row", "source_ip"): "source_ip",
    ("record", "row", "count"): "count",
    ("record", "row", "policy_evaluated", "disposition"): "disposition",
    ("record", "row", "policy_evaluated", "dkim"): "dkim",
    ("record", "row", "policy_evaluated", "spf"): "spf",
    ("record", "identifiers", "header_from"): "header_from",
}


class _Reader:
    """An expat target (start, data, end; no tree is built): keeps the few
    values a report needs, counts the rest, and raises ReportRefused at the
    first thing outside RFC 7489 appendix C or over a limit."""

    def __init__(self):
        self.stack: list[tuple[str, ...]] = []
        self.elements = self.in_child = 0
        self.metadata: dict[str, str] = {}
        self.record: dict[str, str] | None = None
        self.rows: list[ReportRow] = []
        self.capture: str | None = None  # the name of the value being read
        self.text: list[str] = []
        self.text_length = 0

    def start(self, tag, attrib):
        tag = tag.rsplit("}", 1)[-1]
        stack = self.stack
        if not stack:
            if tag != "feedback":
                raise ReportRefused(_("the XML is not a DMARC aggregate report (no <feedback>)"))
            stack.append(())  # paths below <feedback>, as tuples
            self.elements += 1
            return
        path = stack[-1] + (tag,)
        stack.append(path)
        self.elements += 1
        self.in_child = 0 if len(path) == 1 else self.in_child + 1
        if len(path) >= MAX_DEPTH:
            raise ReportRefused(_("the XML is nested more than %(n)d deep") % {"n": MAX_DEPTH})
        if self.elements > MAX_ELEMENTS or self.in_child > MAX_ELEMENTS_PER_CHILD:
            raise ReportRefused(_("the XML has more elements than a report can have"))
        if path == ("record",):
            self.record = {}
        self.capture = RECORD_PATHS.get(path) or METADATA_PATHS.get(path)
        if self.capture is not None:
            self.text, self.text_length = [], 0

    def data(self, text):
        if self.capture is not None and self.text_length <= MAX_TEXT:
            self.text.append(text)
            self.text_length += len(text)

    def end(self, tag):
        path = self.stack.pop()
        if self.capture is not None:
            values = self.record if path[0] == "record" else self.metadata
            values.setdefault(self.capture, "".join(self.text))  # the first one counts
            self.capture = None
        if path == ("record",):
            self.rows.append(self._row(self.record))
            if len(self.rows) > MAX_RECORDS:
                raise ReportRefused(_("the report has more than %(n)d records") % {"n": MAX_RECORDS})
            self.record = None

    def close(self):
        return None

    @staticmethod
    def value(values: dict, name: str) -> str:
        value = values.get(name)
        if value is None:
            raise ReportRefused(_("the report has no <%(tag)s>") % {"tag": name})
        value = value.strip()
        if len(value) > MAX_TEXT or _printable(value) != value:
            raise ReportRefused(_("<%(tag)s> is too long or holds control characters") % {"tag": name})
        if not value:
            raise ReportRefused(_("<%(tag)s> is empty") % {"tag": name})
        return value

    def _row(self, values: dict) -> ReportRow:
        try:
            ip = str(ipaddress.ip_address(self.value(values, "source_ip")))
        except ValueError:
            raise ReportRefused(_("<source_ip> is not an IP address")) from None
        count = self.value(values, "count")
        if not count.isdigit() or not count.isascii() or int(count) > MAX_COUNT:
            raise ReportRefused(_("<count> is not a number of messages"))
        disposition = self.value(values, "disposition").lower()
        if disposition not in DISPOSITIONS:
            raise ReportRefused(_("<disposition> is not none, quarantine or reject"))
        aligned = {}
        for method in ("dkim", "spf"):
            verdict = self.value(values, method).lower()
            if verdict not in ("pass", "fail"):
                raise ReportRefused(_("<%(tag)s> is not pass or fail") % {"tag": method})
            aligned[method] = verdict == "pass"
        header_from = self.value(values, "header_from").lower()
        if len(header_from) > 253 or not _DOMAIN.fullmatch(header_from):
            raise ReportRefused(_("<header_from> is not a domain"))
        return ReportRow(ip, int(count), disposition, aligned["dkim"], aligned["spf"], header_from)

    def report(self) -> AggregateReport:
        if not self.elements:
            raise ReportRefused(_("the XML is empty"))
        values = self.metadata
        org, report_id = self.value(values, "org_name"), self.value(values, "report_id")
        begin, end = self.value(values, "begin"), self.value(values, "end")
        if not (begin.isdigit() and end.isdigit() and begin.isascii() and end.isascii()):
            raise ReportRefused(_("<date_range> is not two times in seconds"))
        begin_s, end_s = int(begin), int(end)
        if not (946684800 <= begin_s <= end_s <= 4102444800 and end_s - begin_s <= MAX_RANGE_SECONDS):
            raise ReportRefused(_("<date_range> is not a range of at most a month since 2000"))
        domain = self.value(values, "domain").lower().rstrip(".")
        if len(domain) > 253 or not _DOMAIN.fullmatch(domain):
            raise ReportRefused(_("<policy_published><domain> is not a domain"))
        if not self.rows:
            raise ReportRefused(_("the report has no <record>"))
        return AggregateReport(
            org[:200], report_id[:200], datetime.fromtimestamp(begin_s, UTC), datetime.fromtimestamp(end_s, UTC),
            domain, tuple(self.rows),
        )


def parse_xml(xml: bytes) -> AggregateReport:
    reader = _Reader()
    parser = SafeET.DefusedXMLParser(target=reader, forbid_dtd=True)
    try:
        for offset in range(0, len(xml), READ_CHUNK):
            parser.feed(xml[offset : offset + READ_CHUNK])
        parser.close()
    except DefusedXmlException:
        raise ReportRefused(_("the XML declares a DTD or entities (refused: they can expand without bound)")) from None
    except SafeET.ParseError as exc:
        raise ReportRefused(_("the XML is malformed (line %(line)s)") % {"line": exc.position[0]}) from None
    return reader.report()


def parse_report(payload: bytes) -> AggregateReport:
    """One attachment (zip, gzip or XML) → the report, or ReportRefused."""
    return parse_xml(unpack(payload))


def read_message(raw: bytes) -> tuple[list[AggregateReport], list[str]]:
    """Every report a mail carries, and why the others were refused. Input
    nobody foresaw is refused too (and logged), never a crashed job."""
    try:
        found = attachments(raw)
    except ReportRefused as exc:
        return [], [str(exc)]
    except Exception:
        logger.exception("a DMARC report mail could not be parsed")
        return [], [_("the mail cannot be parsed")]
    reports, problems = [], []
    for name, payload in found:
        try:
            reports.append(parse_report(payload))
        except ReportRefused as exc:
            problems.append(f"{name or _('attachment')}: {exc}")
        except Exception:
            logger.exception("a DMARC report could not be parsed")
            problems.append(f"{name or _('attachment')}: {_('the report cannot be parsed')}")
    return reports, problems
