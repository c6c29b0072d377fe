"""Live DNS checks of a domain's records (SPEC §1.4, §1.5). No ORM.

Every lookup goes through `Lookups`: one resolver (from MAILPANEL_RESOLVERS),
one deadline for the whole check, a cache shared by the run. A resolver that
fails or times out makes a verdict "unknown", never "missing": only NXDOMAIN
or an empty answer from a resolver that did answer means missing.

SPF is judged by meaning: pyspf's check_host (RFC 7208), its lookups made
through `Lookups` (see "SPF" below). checkdmarc was considered: it can be
pointed at a nameserver, but it validates records and counts lookups without
answering "is this IP authorised", keeps a process-wide DNS cache (a "Check
now" right after fixing DNS would show the stale answer) and brings ten
dependencies.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import dns.exception
import spf
from django.utils.translation import gettext as _

from ..dnsrecords import OPTIONAL, Record
from .dnsclient import DnsFailure, DnsTimeout, StubResolver, system_nameservers

OK, MISSING, DIFFERENT, UNKNOWN = "ok", "missing", "different", "unknown"
SEVERITY = {MISSING: 3, DIFFERENT: 2, UNKNOWN: 1, OK: 0}

logger = logging.getLogger(__name__)

SPF_MAX_MX_NAMES = 10


# --- resolver ------------------------------------------------------------------


def parse_resolver(entry: str) -> tuple[str, int]:
    """'ip', 'ip:port', '[v6]:port' or a bare IPv6 address."""
    entry = entry.strip()
    if entry.startswith("["):
        host, _sep, rest = entry[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else 53
    elif entry.count(":") == 1:
        host, port_text = entry.split(":")
        port = int(port_text)
    else:
        host, port = entry, 53
    ipaddress.ip_address(host)  # raises ValueError for a host name
    if not 0 < port < 65536:
        raise ValueError(f"bad port in resolver {entry!r}")
    return host, port


def make_resolver(entries, timeout: float) -> StubResolver:
    """Empty `entries` = the system resolver (/etc/resolv.conf)."""
    if entries:
        nameservers = [parse_resolver(e) for e in entries]
    else:
        nameservers = system_nameservers()
    return StubResolver(nameservers, timeout)


@dataclass
class Answer:
    kind: str  # "ok" | "nxdomain" | "nodata" | "error"
    values: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def failed(self) -> bool:
        return self.kind == "error"

    @property
    def empty(self) -> bool:
        return self.kind in ("nxdomain", "nodata")


class Lookups:
    """Queries sharing one resolver, one deadline and one cache. Concurrent
    identical queries share one future."""

    def __init__(self, resolver, timeout: float, cache: dict | None = None):
        self.resolver = resolver
        self.timeout = timeout
        self.cache = {} if cache is None else cache

    def for_one_check(self) -> "Lookups":
        """Same resolver and cache, a fresh deadline starting now."""
        return _Bounded(self, time.monotonic() + self.timeout)

    async def query(self, name: str, rtype: str) -> Answer:
        return await self.for_one_check().query(name, rtype)

    def close(self):
        """Close the resolver's sockets (call at the end of the run)."""
        self.resolver.close()


class _Bounded(Lookups):
    def __init__(self, parent: Lookups, deadline: float):
        super().__init__(parent.resolver, parent.timeout, parent.cache)
        self.deadline = deadline

    def for_one_check(self):
        return self

    async def query(self, name: str, rtype: str) -> Answer:
        key = (name.lower().rstrip("."), rtype)
        remaining = self.deadline - time.monotonic()
        future = self.cache.get(key)
        if future is None:
            if remaining <= 0:
                return Answer("error", error=_("timed out"))
            # ours: the lookup itself ends by our deadline
            future = asyncio.ensure_future(self._resolve(key[0], rtype, remaining))
            self.cache[key] = future
            return await future
        if future.done():
            return future.result()
        # started by another check with its own deadline: wait no longer than ours
        try:
            return await asyncio.wait_for(asyncio.shield(future), max(remaining, 0.001))
        except TimeoutError:
            return Answer("error", error=_("timed out"))

    async def _resolve(self, name: str, rtype: str, lifetime: float) -> Answer:
        try:
            kind, rdatas = await self.resolver.query(name, rtype, lifetime=lifetime)
        except DnsTimeout:
            return Answer("error", error=_("timed out"))
        except DnsFailure as exc:
            return Answer("error", error=_("the resolver failed: %(why)s") % {"why": _short(exc)})
        except (dns.exception.DNSException, OSError, ValueError) as exc:
            return Answer("error", error=_short(exc))
        return Answer(kind, rdatas)


def _short(exc) -> str:
    return (str(exc) or type(exc).__name__)[:200]


# --- Cloudflare ----------------------------------------------------------------

CLOUDFLARE_DATA = Path(__file__).resolve().parent.parent / "data" / "cloudflare-ips.txt"


def parse_networks(text: str):
    nets = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            nets.append(ipaddress.ip_network(line, strict=False))
    return tuple(nets)


def load_cloudflare_networks(path: Path | str | None = None):
    return parse_networks(Path(path or CLOUDFLARE_DATA).read_text())


def in_networks(address: str, networks) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip.version == net.version and ip in net for net in networks)


# --- verdicts ------------------------------------------------------------------


@dataclass
class Verdict:
    name: str
    type: str
    purpose: str
    level: str
    status: str  # ok | missing | different | unknown
    expected: str
    found: list[str] = field(default_factory=list)
    fix: str = ""  # what to do, in plain words; "" when ok
    detail: str = ""
    cloudflare: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


def summarize(verdicts) -> str:
    """One word for the domain list: the worst verdict of the non-optional records."""
    statuses = [v.status for v in verdicts if v.level != OPTIONAL] or [OK]
    return max(statuses, key=SEVERITY.__getitem__)


def _verdict(record: Record, status: str, found=(), fix="", detail="", cloudflare=False):
    return Verdict(
        record.name,
        record.type,
        record.purpose,
        record.level,
        status,
        record.value,
        list(found),
        fix,
        detail,
        cloudflare,
    )


LONG_VALUE = 100  # longer values (a DKIM key) are not repeated in the advice


def _fix_missing(record: Record) -> str:
    if len(record.value) > LONG_VALUE:
        return _("Add a %(type)s record at %(name)s with the value from the DNS records list.") % {
            "type": record.type,
            "name": record.name,
        }
    return _("Add a %(type)s record at %(name)s with the value: %(value)s") % {
        "type": record.type,
        "name": record.name,
        "value": record.value,
    }


def _fix_different(record: Record) -> str:
    if len(record.value) > LONG_VALUE:
        return _("Replace the %(type)s record at %(name)s with the value from the DNS records list.") % {
            "type": record.type,
            "name": record.name,
        }
    return _("Change the %(type)s record at %(name)s to: %(value)s") % {
        "type": record.type,
        "name": record.name,
        "value": record.value,
    }


def _unknown(record: Record, answer: Answer) -> Verdict:
    return _verdict(
        record,
        UNKNOWN,
        fix=_("The DNS resolver did not answer; nothing can be said yet. Check again later."),
        detail=answer.error,
    )


def cloudflare_fix(name: str) -> str:
    return _(
        "%(name)s resolves into Cloudflare's proxy. Mail cannot pass through the proxy: "
        "in Cloudflare's DNS settings turn the proxy (orange cloud) off for %(name)s, "
        "so that it is \"DNS only\"."
    ) % {"name": name}


async def check_address(lookups, record: Record, cf_networks=()) -> Verdict:
    answer = await lookups.query(record.name, record.type)
    if answer.failed:
        return _unknown(record, answer)
    if answer.empty:
        return _verdict(record, MISSING, fix=_fix_missing(record))
    proxied = [ip for ip in answer.values if in_networks(ip, cf_networks)]
    if proxied:
        return _verdict(
            record, DIFFERENT, answer.values, cloudflare_fix(record.name), cloudflare=True
        )
    if record.value in answer.values:
        return _verdict(record, OK, answer.values)
    return _verdict(record, DIFFERENT, answer.values, _fix_different(record))


async def check_mx(lookups, record: Record, server_ips=()) -> Verdict:
    answer = await lookups.query(record.name, "MX")
    if answer.failed:
        return _unknown(record, answer)
    if answer.empty:
        return _verdict(record, MISSING, fix=_fix_missing(record))
    expected_host = record.value.split()[-1].lower()
    hosts = [value.split()[-1] for value in answer.values]
    if expected_host in hosts:
        return _verdict(record, OK, answer.values)
    # Another name for this server is fine: judge by where the MX hosts point.
    addresses = await asyncio.gather(
        *(lookups.query(h, t) for h in hosts[:SPF_MAX_MX_NAMES] for t in ("A", "AAAA"))
    )
    if any(ip in server_ips for a in addresses for ip in a.values):
        return _verdict(record, OK, answer.values, detail=_("An MX host points at this server."))
    if any(a.failed for a in addresses):
        return _unknown(record, next(a for a in addresses if a.failed))
    return _verdict(
        record,
        DIFFERENT,
        answer.values,
        _fix_different(record),
        _("No MX host points at this server: mail for this domain goes elsewhere."),
    )


def parse_tags(text: str) -> dict[str, str]:
    """DKIM/DMARC tag lists: 'k=v; k=v'. Keys lower-cased, whitespace dropped."""
    tags = {}
    for part in text.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            tags[key.strip().lower()] = value.strip()
    return tags


async def check_dkim(lookups, record: Record) -> Verdict:
    answer = await lookups.query(record.name, "TXT")
    if answer.failed:
        return _unknown(record, answer)
    if answer.empty:
        return _verdict(record, MISSING, fix=_fix_missing(record))
    expected_key = "".join(parse_tags(record.value)["p"].split())
    keys = []
    for value in answer.values:
        tags = parse_tags(value)
        if "p" in tags:
            keys.append("".join(tags["p"].split()))
    if expected_key in keys:
        return _verdict(record, OK, answer.values)
    if not keys:
        detail = _("The record has no p= key.")
    elif "" in keys:
        detail = _("The published key is empty (p=): the key is revoked.")
    else:
        detail = _("The published p= key is not this domain's key.")
    return _verdict(record, DIFFERENT, answer.values, _fix_different(record), detail)


DKIM_PURPOSES = ("dkim", "dkim_next", "dkim_old")  # the signing key and a rotation's two others

DMARC_STRICTNESS = {"none": 0, "quarantine": 1, "reject": 2}


async def check_dmarc(lookups, record: Record) -> Verdict:
    answer = await lookups.query(record.name, "TXT")
    if answer.failed:
        return _unknown(record, answer)
    dmarc = [v for v in answer.values if v.replace(" ", "").lower().startswith("v=dmarc1")]
    if not dmarc:
        return _verdict(record, MISSING, answer.values, _fix_missing(record))
    if len(dmarc) > 1:
        return _verdict(
            record,
            DIFFERENT,
            answer.values,
            _fix_different(record),
            _("There are several DMARC records; receivers then ignore all of them. Keep one."),
        )
    want, tags = parse_tags(record.value), parse_tags(dmarc[0])
    policy = tags.get("p", "").lower()
    sub_policy = tags.get("sp", policy).lower()
    if policy not in DMARC_STRICTNESS:
        return _verdict(
            record,
            DIFFERENT,
            dmarc,
            _fix_different(record),
            _("The record has no valid p= policy (none, quarantine or reject)."),
        )
    weaker = [
        tag
        for tag, value in (("p", policy), ("sp", sub_policy))
        if DMARC_STRICTNESS.get(value, -1) < DMARC_STRICTNESS[want[tag]]
    ]
    if weaker:
        return _verdict(
            record,
            DIFFERENT,
            dmarc,
            _fix_different(record),
            _("The policy %(tags)s is weaker than %(want)s: failing mail is still delivered.")
            % {"tags": ", ".join(f"{t}={tags.get(t, policy)}" for t in weaker), "want": want["p"]},
        )
    missing_rua = _missing_report_addresses(want.get("rua", ""), tags.get("rua", ""))
    if missing_rua:
        return _verdict(
            record,
            DIFFERENT,
            dmarc,
            _fix_different(record),
            _("Aggregate reports do not come to %(address)s: its rua= does not name it.")
            % {"address": ", ".join(missing_rua)},
        )
    relaxed = [t for t in ("adkim", "aspf") if tags.get(t, "r").lower() != want[t]]
    detail = (
        _("Alignment is relaxed (%(tags)s); that is accepted.") % {"tags": ", ".join(relaxed)}
        if relaxed
        else ""
    )
    return _verdict(record, OK, dmarc, detail=detail)


def _report_addresses(rua: str) -> set[str]:
    """rua=mailto:a@x!10m,mailto:b@y → {"a@x", "b@y"} (RFC 7489 §6.2)."""
    addresses = set()
    for uri in rua.split(","):
        uri = uri.strip()
        if uri[:7].lower() == "mailto:":
            addresses.add(uri[7:].split("!", 1)[0].strip().lower())
    return addresses


def _missing_report_addresses(wanted: str, found: str) -> list[str]:
    return sorted(_report_addresses(wanted) - _report_addresses(found))


async def check_txt_tags(lookups, record: Record) -> Verdict:
    """A plain tag record such as the legacy DomainKeys policy."""
    answer = await lookups.query(record.name, "TXT")
    if answer.failed:
        return _unknown(record, answer)
    if answer.empty:
        return _verdict(record, MISSING, fix=_fix_missing(record))
    want = parse_tags(record.value)
    if any(parse_tags(v) == want for v in answer.values):
        return _verdict(record, OK, answer.values)
    return _verdict(record, DIFFERENT, answer.values, _fix_different(record))


def parse_srv(value: str) -> tuple[int, int, int, str] | None:
    """'0 1 993 host.example.' → (0, 1, 993, 'host.example'); the root
    target '.' (service not offered, RFC 2782) becomes ''."""
    parts = value.split()
    if len(parts) != 4 or not all(p.isdigit() for p in parts[:3]):
        return None
    priority, weight, port = (int(p) for p in parts[:3])
    return priority, weight, port, parts[3].lower().rstrip(".")


async def check_srv(lookups, record: Record) -> Verdict:
    """RFC 6186 service records: the port and the target must be the ones
    suggested (a client checks the certificate against the target, so
    another name of this server will not do); priorities and weights are
    the domain owner's to choose."""
    answer = await lookups.query(record.name, "SRV")
    if answer.failed:
        return _unknown(record, answer)
    if answer.empty:
        return _verdict(record, MISSING, fix=_fix_missing(record))
    want = parse_srv(record.value)
    found = [parse_srv(v) for v in answer.values]
    if want[3] == "":
        if len(found) == 1 and found[0] is not None and found[0][3] == "":
            return _verdict(record, OK, answer.values)
        return _verdict(
            record, DIFFERENT, answer.values, _fix_different(record),
            _("Mail programs would try this service here, but the server does not offer it."),
        )
    if any(f is not None and (f[2], f[3]) == (want[2], want[3]) for f in found):
        return _verdict(record, OK, answer.values)
    if any(f is not None and f[3] == "" for f in found):
        detail = _("The record says the service is not offered, so mail programs will not use it.")
    else:
        detail = _("Mail programs would connect to another host or port than this server's %(host)s port %(port)s.") % {
            "host": want[3], "port": want[2]
        }
    return _verdict(record, DIFFERENT, answer.values, _fix_different(record), detail)


# --- SPF -----------------------------------------------------------------------
#
# check_host is pyspf's (RFC 7208's reference implementation): on the openspf
# test suite it is right 201 times of 203, the evaluator this module had 160
# (bench/spf_compare.py). What stays ours is what it measurably does better:
# every lookup goes through the run's Lookups (one resolver from
# MAILPANEL_RESOLVERS, one deadline, the cache shared with the other checks;
# pyspf's own lookup is a module-global function with no per-call resolver
# or deadline) and the reasons a person reads are translated.


@dataclass
class SpfResult:
    result: str  # pass fail softfail neutral none permerror temperror
    reason: str = ""
    lookups: int = 0


_ZERO_DIGITS = re.compile(r"%\{[a-zA-Z]0+(?![0-9])")


class _NeedAnswer(Exception):
    """pyspf asked for a name this round has no answer for yet."""

    def __init__(self, name: str, rtype: str):
        super().__init__(name, rtype)
        self.key = (name, rtype)


class _PanelSpfQuery(spf.query):
    """pyspf's query, its DNS answered from `answers` ({(name, type):
    Answer}) that the event loop fills in between rounds."""

    def __init__(self, answers: dict, ip: str, domain: str):
        super().__init__(i=ip, s=f"postmaster@{domain}", h=domain, strict=True)
        self._answers = answers

    def expand(self, spec, stripdot=True):
        # RFC 7208 §7.3: a macro's DIGIT transformer MUST be nonzero; pyspf
        # reads %{d0} as "every part" (the one case bench/spf_compare.py found
        # where the evaluator this replaced was right and pyspf is not).
        if _ZERO_DIGITS.search(spec):
            raise spf.PermError("Invalid macro", spec)
        return super().expand(spec, stripdot)

    def dns(self, name, qtype, cnames=None, ignore_void=False):
        # The resolver follows CNAMEs itself; the rest is pyspf's dns(): names
        # DNS cannot carry find nothing, and empty answers count as void.
        name = str(name or "").rstrip(".").lower()
        if not name:
            raise spf.PermError("Invalid query")
        if not all(0 < len(label) < 64 for label in name.split(".")):
            return []
        key = (name, "TXT" if qtype == "SPF" else qtype)
        if key not in self._answers:
            raise _NeedAnswer(*key)
        answer = self._answers[key]
        if answer.failed:
            raise spf.TempError(answer.error)
        result = [_pyspf_value(qtype, value) for value in answer.values]
        if not result and not ignore_void:
            self.void_lookups += 1
            if self.void_lookups > spf.MAX_VOID_LOOKUPS:
                raise spf.PermError("Void lookup limit of %d exceeded" % spf.MAX_VOID_LOOKUPS)
        return result


def _pyspf_value(qtype: str, value: str):
    """An Answer's value in the shape pyspf's DNS lookups give."""
    if qtype in ("TXT", "SPF"):
        return [value.encode("utf-8", "surrogateescape")]
    if qtype == "MX":
        preference, _sep, host = value.partition(" ")
        return (int(preference), host.rstrip("."))
    if qtype == "PTR":
        return value.rstrip(".")
    return value


# pyspf's permanent errors a person meets, in words the panel translates.
_PERM_REASONS = (
    ("Too many DNS lookups", lambda e: _("too many DNS lookups (more than 10)")),
    ("Void lookup limit", lambda e: _("too many lookups that found nothing (more than 2)")),
    ("Too many MX lookups", lambda e: _("more than 10 MX names")),
    ("Two or more type TXT spf records found", lambda e: _("several SPF records")),
)


def _reason(query: _PanelSpfQuery, result: str, domain: str, explanation: str) -> str:
    if result == "permerror":
        error = query.perm_error
        for prefix, words in _PERM_REASONS:
            if error is not None and error.msg.startswith(prefix):
                return words(error)
        if error is not None and error.mech:
            return _("malformed term %(term)s") % {"term": error.mech}
        return error.msg if error is not None else result
    if result == "none":
        return _("no SPF record at %(domain)s") % {"domain": domain}
    if result == "temperror":
        return _("a DNS lookup failed: %(why)s") % {"why": explanation.rpartition(": ")[2] or result}
    if query.mechanism:
        return _("matched %(term)s at %(domain)s") % {"term": query.mechanism, "domain": domain}
    return _("no mechanism matched at %(domain)s") % {"domain": domain}


def _evaluate(answers: dict, ip: str, domain: str) -> SpfResult:
    query = _PanelSpfQuery(answers, ip, domain)
    result, _code, explanation = query.check()
    result = {"unknown": "permerror", "error": "temperror", "ambiguous": "permerror"}.get(result, result)
    return SpfResult(result, _reason(query, result, domain, explanation or ""), query.lookups)


# More than any record can make pyspf ask (10 mechanisms, 10 names each for mx
# and ptr, their addresses, the void lookups).
MAX_SPF_ROUNDS = 128


async def spf_check_host(lookups, ip: str, domain: str) -> SpfResult:
    """RFC 7208 check_host(ip, domain, postmaster@domain), pyspf's. pyspf is
    synchronous and asks one name at a time: it runs in rounds, each stopping
    at the first name not yet answered, which the run's Lookups then resolve
    (in this event loop, within the check's deadline, through the shared
    cache). A round costs a fraction of a lookup; no thread waits."""
    answers: dict = {}
    for _round in range(MAX_SPF_ROUNDS):
        try:
            return _evaluate(answers, ip, domain)
        except _NeedAnswer as need:
            answers[need.key] = await lookups.query(*need.key)
    return SpfResult("permerror", _("too many DNS lookups (more than 10)"))


async def check_spf(lookups, record: Record, sending_ips=()) -> Verdict:
    answer = await lookups.query(record.name, "TXT")
    if answer.failed:
        return _unknown(record, answer)
    found = [v for v in answer.values if re.match(r"(?i)v=spf1(\s|$)", v)]
    if not found:
        return _verdict(record, MISSING, fix=_fix_missing(record))
    if not sending_ips:
        return _verdict(
            record,
            UNKNOWN,
            found,
            _("Set the server's public IP address in the server settings first."),
        )
    results = await asyncio.gather(*(spf_check_host(lookups, ip, record.name) for ip in sending_ips))
    for ip, result in zip(sending_ips, results):
        if result.result == "pass":
            continue
        if result.result == "temperror":
            return _verdict(
                record,
                UNKNOWN,
                found,
                _("A DNS lookup needed to evaluate SPF failed; check again later."),
                result.reason,
            )
        if result.result == "permerror":
            return _verdict(
                record,
                DIFFERENT,
                found,
                _("The SPF record is broken (%(why)s), so receivers treat it as an error. Replace it with: %(value)s")
                % {"why": result.reason, "value": record.value},
                _("permerror: %(why)s") % {"why": result.reason},
            )
        return _verdict(
            record,
            DIFFERENT,
            found,
            _("The SPF record does not authorise this server's address %(ip)s. Add ip4:/ip6: for it, or use: %(value)s")
            % {"ip": ip, "value": record.value},
            _("%(ip)s gets %(result)s (%(why)s)") % {"ip": ip, "result": result.result, "why": result.reason},
        )
    return _verdict(
        record,
        OK,
        found,
        detail=_("Authorises %(ips)s (%(n)s DNS lookups).")
        % {"ips": ", ".join(sending_ips), "n": max(r.lookups for r in results)},
    )


# --- a whole domain --------------------------------------------------------------


async def check_record(lookups, record: Record, server_ips=(), sending_ips=(), cf_networks=()):
    lookups = lookups.for_one_check()
    if record.purpose == "spf":
        return await check_spf(lookups, record, sending_ips)
    if record.purpose in DKIM_PURPOSES:
        return await check_dkim(lookups, record)
    if record.purpose == "dmarc":
        return await check_dmarc(lookups, record)
    if record.type == "MX":
        return await check_mx(lookups, record, server_ips)
    if record.type == "SRV":
        return await check_srv(lookups, record)
    if record.type in ("A", "AAAA"):
        return await check_address(lookups, record, cf_networks)
    return await check_txt_tags(lookups, record)


async def check_records(lookups, records, server_ips=(), sending_ips=(), cf_networks=()):
    """All records of a domain concurrently; verdicts in the records' order.

    A check that raises (a bug meeting data nobody foresaw) makes that record
    "unknown" and is logged; the domain's other records, and every other
    domain of a check_many run, keep their verdicts."""
    outcomes = await asyncio.gather(
        *(check_record(lookups, r, server_ips, sending_ips, cf_networks) for r in records),
        return_exceptions=True,
    )
    return [_crashed(r, o) if isinstance(o, BaseException) else o for r, o in zip(records, outcomes)]


def _crashed(record: Record, exc: BaseException) -> Verdict:
    if not isinstance(exc, Exception):  # cancelled, KeyboardInterrupt: not ours to swallow
        raise exc
    # Only the record's public name and type: DNS checks hold no secrets, and
    # the message stays free of whatever the exception carries.
    logger.error(
        "DNS check of the %s record %s failed", record.type, record.name,
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    return _verdict(
        record,
        UNKNOWN,
        fix=_("The check failed unexpectedly; the error was logged for the administrator. Check again later."),
    )


async def check_many(lookups, jobs, server_ips=(), sending_ips=(), cf_networks=(), concurrency=200, progress=None):
    """jobs: [(key, records)] -> {key: [Verdict]}; at most `concurrency`
    domains in flight so a thousand domains do not open a thousand sockets."""
    gate = asyncio.Semaphore(concurrency)
    out = {}

    async def one(key, records):
        async with gate:
            out[key] = await check_records(lookups, records, server_ips, sending_ips, cf_networks)
            if progress:
                progress(key, out[key])

    await asyncio.gather(*(one(key, records) for key, records in jobs))
    return {key: out[key] for key, _records in jobs}
