"""Live DNS checks of a domain's records (SPEC §1.4, §1.5). No ORM.

Every lookup goes through `Lookups`: one resolver (from MAILPANEL_RESOLVERS),
one deadline for the whole check, a cache shared by the run. A resolver that
fails or times out makes a verdict "unknown", never "missing": only NXDOMAIN
or an empty answer from a resolver that did answer means missing.

SPF is judged by meaning with the compact evaluator below (RFC 7208 check_host:
ip4, ip6, a, mx, include, redirect, exists, ptr, all, macros; 10-lookup and
2-void-lookup limits). checkdmarc was considered: it can be pointed at a
nameserver, but it validates records and counts lookups without answering "is
this IP authorised", keeps a process-wide DNS cache (a "Check now" right after
fixing DNS would show the stale answer) and brings ten dependencies; pyspf does
check_host but resolves through a module-global function, so it cannot take a
per-call resolver and deadline.
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
import dns.reversename
from django.utils.translation import gettext as _

from ..dnsrecords import OPTIONAL, Record
from .dnsclient import DnsFailure, DnsTimeout, StubResolver, system_nameservers

OK, MISSING, DIFFERENT, UNKNOWN = "ok", "missing", "different", "unknown"
SEVERITY = {MISSING: 3, DIFFERENT: 2, UNKNOWN: 1, OK: 0}

logger = logging.getLogger(__name__)

SPF_MAX_LOOKUPS = 10  # RFC 7208 §4.6.4
SPF_MAX_VOID_LOOKUPS = 2
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


class SpfPermError(Exception):
    pass


class SpfTempError(Exception):
    pass


def _malformed(term: str) -> SpfPermError:
    return SpfPermError(_("malformed term %(term)s") % {"term": term})


@dataclass
class SpfResult:
    result: str  # pass fail softfail neutral none permerror temperror
    reason: str = ""
    lookups: int = 0
    record: str = ""


QUALIFIERS = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}
_MACRO = re.compile(r"%\{([slodiphcrtv])(\d*)(r?)([.\-+,/_=]*)\}", re.I)
# RFC 7208 §4.6.1/§5: a record is published by anyone, so every term is parsed
# whole (fullmatch) and anything malformed is a permerror, never an exception.
_MODIFIER = re.compile(r"([a-zA-Z][a-zA-Z0-9_.-]*)=(.*)", re.S)
_MECHANISM = re.compile(r"([a-zA-Z][a-zA-Z0-9]*)(:?)(.*)", re.S)
# ip4-cidr-length "/" ("0" / %x31-39 0*1DIGIT), ip6 up to three digits; the
# lazy domain-spec leaves a trailing dual-cidr-length to the groups.
_DUAL_CIDR = re.compile(r"(.*?)(?:/(0|[1-9][0-9]?))?(?://(0|[1-9][0-9]{0,2}))?", re.S)
_IP_CIDR = re.compile(r"([0-9A-Fa-f.:]+)(?:/(0|[1-9][0-9]{0,2}))?")


class _Spf:
    def __init__(self, lookups, ip: str, sender_domain: str):
        self.lookups = lookups
        self.ip = ipaddress.ip_address(ip)
        self.sender_domain = sender_domain
        self.count = 0
        self.void = 0

    def charge(self):
        self.count += 1
        if self.count > SPF_MAX_LOOKUPS:
            raise SpfPermError(_("too many DNS lookups (more than 10)"))

    async def query(self, name: str, rtype: str) -> Answer:
        answer = await self.lookups.query(name, rtype)
        if answer.failed:
            raise SpfTempError(_("DNS lookup of %(name)s failed: %(why)s") % {"name": name, "why": answer.error})
        if answer.empty:
            self.void += 1
            if self.void > SPF_MAX_VOID_LOOKUPS:
                raise SpfPermError(_("too many lookups that found nothing (more than 2)"))
        return answer

    def expand(self, spec: str, domain: str) -> str:
        if "%" not in spec:
            return spec

        def letter_value(letter):
            letter = letter.lower()
            if letter == "i":
                if self.ip.version == 4:
                    return str(self.ip)
                return ".".join(self.ip.exploded.replace(":", ""))
            if letter in "dh":
                return domain
            if letter == "o":
                return self.sender_domain
            if letter == "s":
                return f"postmaster@{self.sender_domain}"
            if letter == "l":
                return "postmaster"
            if letter == "v":
                return "in-addr" if self.ip.version == 4 else "ip6"
            return "unknown"  # p, and c/r/t which are for exp= only

        def macro(match):
            letter, digits, reverse, delimiters = match.groups()
            if digits and int(digits) == 0:  # RFC 7208 §7.1: a zero is a syntax error
                raise SpfPermError(_("malformed macro in %(spec)s") % {"spec": spec})
            parts = re.split("[" + re.escape(delimiters or ".") + "]", letter_value(letter))
            if reverse:
                parts.reverse()
            if digits:
                parts = parts[-int(digits) :]
            return ".".join(parts)

        out = _MACRO.sub(macro, spec).replace("%%", "%").replace("%_", " ").replace("%-", "%20")
        if "%" in out.replace("%20", ""):
            raise SpfPermError(_("malformed macro in %(spec)s") % {"spec": spec})
        return out

    async def check_host(self, domain: str, depth: int = 0) -> SpfResult:
        answer = await self.query(domain, "TXT") if depth else await self._first_query(domain)
        records = [v for v in answer.values if re.match(r"(?i)v=spf1(\s|$)", v)]
        if not records:
            return SpfResult("none", _("no SPF record at %(domain)s") % {"domain": domain})
        if len(records) > 1:
            raise SpfPermError(_("several SPF records at %(domain)s") % {"domain": domain})
        redirect = None
        for term in records[0].split()[1:]:
            name_value = _MODIFIER.fullmatch(term)
            if name_value:
                if name_value.group(1).lower() == "redirect":
                    if redirect is not None:
                        raise SpfPermError(_("several redirect= modifiers at %(domain)s") % {"domain": domain})
                    redirect = name_value.group(2)
                continue
            qualifier = "+"
            if term[0] in QUALIFIERS:
                qualifier, term = term[0], term[1:]
            if await self.matches(term, domain, depth):
                return SpfResult(QUALIFIERS[qualifier], _("matched %(term)s at %(domain)s") % {"term": term, "domain": domain})
        if redirect is not None:
            self.charge()
            target = self.target(redirect, domain, "redirect=" + redirect)
            result = await self.check_host(target, depth + 1)
            if result.result == "none":
                raise SpfPermError(_("redirect to %(target)s finds no SPF record") % {"target": target})
            return result
        return SpfResult("neutral", _("no mechanism matched at %(domain)s") % {"domain": domain})

    async def _first_query(self, domain):
        answer = await self.lookups.query(domain, "TXT")
        if answer.failed:
            raise SpfTempError(answer.error)
        return answer

    def target(self, spec: str, domain: str, term: str) -> str:
        """A domain-spec, expanded: a name that can be looked up, else permerror."""
        if not spec:
            raise _malformed(term)
        name = self.expand(spec, domain).rstrip(".")
        labels = name.split(".")
        while len(name) > 253 and len(labels) > 1:  # §7.3: drop labels on the left
            labels.pop(0)
            name = ".".join(labels)
        if any(not label or len(label) > 63 or "/" in label for label in labels):
            raise _malformed(term)
        return name

    def _network(self, name: str, arg: str, term: str):
        """ip4:/ip6: → the network; wrong family, scope ids or prefixes too long
        for the family are a permerror."""
        match = _IP_CIDR.fullmatch(arg)
        want = 4 if name == "ip4" else 6
        try:
            if match is None:
                raise ValueError(arg)
            address = ipaddress.ip_address(match.group(1))
            prefix = int(match.group(2) or (32 if want == 4 else 128))
            if address.version != want or prefix > address.max_prefixlen:
                raise ValueError(arg)
            return ipaddress.ip_network((address, prefix), strict=False)
        except ValueError:
            raise _malformed(term) from None

    def _dual_cidr(self, rest: str, term: str) -> tuple[str, int, int]:
        """'example.com/24//64' → ('example.com', 24, 64); the domain-spec part
        may be empty (the current domain)."""
        spec, v4, v6 = _DUAL_CIDR.fullmatch(rest).groups()
        v4, v6 = int(v4 or 32), int(v6 or 128)
        if v4 > 32 or v6 > 128 or "/" in spec:
            raise _malformed(term)
        return spec, v4, v6

    def _in(self, addresses, v4: int, v6: int) -> bool:
        prefix = v4 if self.ip.version == 4 else v6
        for address in addresses:
            net = ipaddress.ip_network(f"{address}/{prefix}", strict=False)
            if net.version == self.ip.version and self.ip in net:
                return True
        return False

    async def matches(self, term: str, domain: str, depth: int) -> bool:
        parsed = _MECHANISM.fullmatch(term)
        if parsed is None:
            raise SpfPermError(_("unknown mechanism %(term)s") % {"term": term})
        name, colon, rest = parsed.group(1).lower(), parsed.group(2), parsed.group(3)
        if name == "all":
            if colon or rest:
                raise _malformed(term)
            return True
        if name in ("ip4", "ip6"):
            if not colon:
                raise _malformed(term)
            net = self._network(name, rest, term)
            return net.version == self.ip.version and self.ip in net
        rtype = "A" if self.ip.version == 4 else "AAAA"
        if name in ("a", "mx"):
            spec, v4, v6 = self._dual_cidr(rest, term)
            if colon and not spec or not colon and spec:
                raise _malformed(term)
            target = self.target(spec, domain, term) if colon else domain
            self.charge()
            if name == "a":
                return self._in((await self.query(target, rtype)).values, v4, v6)
            hosts = [v.split()[-1] for v in (await self.query(target, "MX")).values]
            if len(hosts) > SPF_MAX_MX_NAMES:
                raise SpfPermError(_("more than 10 MX names"))
            answers = await asyncio.gather(*(self.query(h, rtype) for h in hosts))
            return any(self._in(a.values, v4, v6) for a in answers)
        if name == "ptr":
            if colon and not rest or not colon and rest:
                raise _malformed(term)
            target = self.target(rest, domain, term) if colon else domain
        elif name in ("include", "exists"):
            if not colon:
                raise _malformed(term)
            target = self.target(rest, domain, term)
        else:
            raise SpfPermError(_("unknown mechanism %(term)s") % {"term": term})
        if name == "include":
            self.charge()
            result = await self.check_host(target, depth + 1)
            if result.result == "pass":
                return True
            if result.result in ("fail", "softfail", "neutral"):
                return False
            if result.result == "temperror":
                raise SpfTempError(result.reason)
            raise SpfPermError(_("include:%(target)s has no valid SPF record") % {"target": target})
        if name == "exists":
            self.charge()
            return bool((await self.query(target, "A")).values)
        if name == "ptr":
            self.charge()
            names = (await self.query(dns.reversename.from_address(str(self.ip)).to_text(), "PTR")).values
            for host in names[:10]:
                host = host.rstrip(".")
                if host == target or host.endswith("." + target):
                    if str(self.ip) in (await self.lookups.query(host, rtype)).values:
                        return True
            return False
        raise SpfPermError(_("unknown mechanism %(term)s") % {"term": term})


async def spf_check_host(lookups, ip: str, domain: str) -> SpfResult:
    spf = _Spf(lookups, ip, domain)
    try:
        result = await spf.check_host(domain)
    except SpfPermError as exc:
        result = SpfResult("permerror", str(exc))
    except SpfTempError as exc:
        result = SpfResult("temperror", str(exc))
    result.lookups = spf.count
    return result


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
