"""A small asyncio DNS stub client for many concurrent lookups.

dnspython's asyncresolver opens a new datagram endpoint and builds message
objects per query (~1–2 ms of CPU each), which caps a 2-core machine at ~600
queries/s; a thousand-domain check needs ~10,000. This client keeps a few UDP
sockets (random source ports, random 16-bit ids; an answer must come from the
server asked and carry the question asked), reads only the record types the
checks use, retries over TCP when an answer is truncated, and follows CNAMEs
inside the answer.
It never caches: "Check now" must see DNS as it is now."""

from __future__ import annotations

import asyncio
import ipaddress
import random
import socket
import struct
import time
from dataclasses import dataclass

import dns.resolver

SOCKETS_PER_FAMILY = 8
EDNS_PAYLOAD = 1232  # a 2048-bit DKIM record fits without a TCP retry
MAX_CNAME_HOPS = 8


class DnsTimeout(Exception):
    pass


class DnsFailure(Exception):
    """The resolver answered with an error (SERVFAIL, REFUSED…) or garbage."""


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self):
        self.pending: dict[int, tuple] = {}
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        if len(data) < 12:
            return
        entry = self.pending.get(int.from_bytes(data[:2], "big"))
        if entry is None:
            return
        future, server = entry
        if (addr[0], addr[1]) != server or future.done():
            return  # not from the server we asked: ignore (spoofing / stray)
        future.set_result(data)

    def error_received(self, exc):
        pass  # ICMP port unreachable etc.: the query simply times out


class StubResolver:
    """Asks `nameservers` [(ip, port)] in turn until the lifetime is used up."""

    def __init__(self, nameservers, timeout: float):
        self.nameservers = list(nameservers)
        self.timeout = timeout
        self._endpoints: dict[int, list[_Endpoint]] = {}
        self._lock = None

    async def _endpoint(self, family: int) -> _Endpoint:
        pool = self._endpoints.get(family)
        if pool:
            return random.choice(pool)
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            pool = self._endpoints.get(family)
            if pool is None:
                loop = asyncio.get_running_loop()
                pool = []
                for _i in range(SOCKETS_PER_FAMILY):
                    sock = socket.socket(family, socket.SOCK_DGRAM)
                    sock.setblocking(False)
                    sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
                    _transport, protocol = await loop.create_datagram_endpoint(_Endpoint, sock=sock)
                    pool.append(protocol)
                self._endpoints[family] = pool
        return random.choice(pool)

    def close(self):
        for pool in self._endpoints.values():
            for endpoint in pool:
                if endpoint.transport is not None:
                    endpoint.transport.close()
        self._endpoints = {}

    async def query(self, name: str, rdtype: str, lifetime: float | None = None) -> tuple[str, list[str]]:
        """('ok' | 'nxdomain' | 'nodata', [value text]) or raises DnsTimeout / DnsFailure."""
        rdtype_value = TYPES[rdtype]
        deadline = time.monotonic() + (lifetime or self.timeout)
        last_error: Exception = DnsTimeout("timed out")
        # One try per nameserver, then again, until the deadline: a lost UDP
        # packet is retried after a while instead of eating the whole lifetime.
        per_try = max(1.0, (lifetime or self.timeout) / 3)
        while True:
            for host, port in self.nameservers:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise last_error
                try:
                    reply = await self._ask(name, rdtype_value, host, port, min(per_try, remaining))
                except (DnsTimeout, DnsFailure) as exc:
                    last_error = exc
                    continue
                return interpret(reply, name, rdtype_value)

    async def _ask(self, qname: str, rdtype: int, host: str, port: int, timeout: float) -> Reply:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        endpoint = await self._endpoint(family)
        qid = random.randint(0, 0xFFFF)
        while qid in endpoint.pending:
            qid = random.randint(0, 0xFFFF)
        request = build_query(qid, qname, rdtype)
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        endpoint.pending[qid] = (future, (host, port))
        # call_later rather than wait_for: this runs ten thousand times a check
        timer = loop.call_later(timeout, _expire, future)
        try:
            endpoint.transport.sendto(request, (host, port))
            wire = await future
        finally:
            timer.cancel()
            endpoint.pending.pop(qid, None)
        reply = parse_reply(wire, qid, qname, rdtype, host)
        if reply.truncated:
            reply = await self._ask_tcp(request, qid, qname, rdtype, host, port, timeout)
        if reply.rcode not in (RCODE_NOERROR, RCODE_NXDOMAIN):
            raise DnsFailure(f"{host} answered {RCODE_NAMES.get(reply.rcode, reply.rcode)}")
        return reply

    async def _ask_tcp(self, request, qid, qname, rdtype, host, port, timeout) -> Reply:
        async def exchange():
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(struct.pack("!H", len(request)) + request)
                await writer.drain()
                length = struct.unpack("!H", await reader.readexactly(2))[0]
                return await reader.readexactly(length)
            finally:
                writer.close()

        try:
            wire = await asyncio.wait_for(exchange(), timeout)
        except TimeoutError:
            raise DnsTimeout("timed out (TCP)")
        except (OSError, asyncio.IncompleteReadError) as exc:
            raise DnsFailure(f"TCP query to {host} failed: {exc}")
        return parse_reply(wire, qid, qname, rdtype, host)


def _expire(future):
    if not future.done():
        future.set_exception(DnsTimeout("timed out"))


# --- wire format (RFC 1035): just what the checks need -----------------------------
# Building and parsing by hand costs ~20 µs a query; dnspython's message objects
# cost ~1 ms, which is the whole budget of a thousand-domain check.

RCODE_NOERROR, RCODE_NXDOMAIN = 0, 3
RCODE_NAMES = {1: "FORMERR", 2: "SERVFAIL", 4: "NOTIMP", 5: "REFUSED"}
TYPES = {"A": 1, "NS": 2, "CNAME": 5, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28, "SRV": 33}
CNAME = 5


# Anyone publishes DNS data: control characters in a name or a TXT string are
# shown in presentation format (\DDD, RFC 1035 §5.1) so none reaches a page,
# a log or a JSON column raw (PostgreSQL's jsonb refuses \u0000).
_ESCAPE_CONTROLS = {c: f"\\{c:03d}" for c in (*range(0x20), 0x7F)}


@dataclass
class Reply:
    rcode: int
    truncated: bool
    records: list  # [(owner, type, value text)]


def encode_name(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        raw = label.encode("idna") if not label.isascii() else label.encode()
        if not raw or len(raw) > 63:
            raise DnsFailure(f"bad name {name!r}")
        out += bytes([len(raw)]) + raw
    return out + b"\0"


def build_query(qid: int, qname: str, rdtype: int) -> bytes:
    # header: id, RD, 1 question, 1 additional (EDNS0 OPT with a 1232-byte payload:
    # a 2048-bit DKIM record fits without a TCP retry)
    header = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 1)
    opt = b"\0" + struct.pack("!HHIH", 41, EDNS_PAYLOAD, 0, 0)
    return header + encode_name(qname) + struct.pack("!HH", rdtype, 1) + opt


def _read_name(wire: bytes, offset: int) -> tuple[str, int]:
    labels, end, jumps = [], None, 0
    while True:
        length = wire[offset]
        if length & 0xC0 == 0xC0:
            if end is None:
                end = offset + 2
            offset = ((length & 0x3F) << 8) | wire[offset + 1]
            jumps += 1
            if jumps > 64:
                raise ValueError("compression loop")
            continue
        offset += 1
        if length == 0:
            break
        label = wire[offset : offset + length].decode("ascii", "replace").lower()
        labels.append(label.translate(_ESCAPE_CONTROLS))
        offset += length
    return ".".join(labels) + ".", (end if end is not None else offset)


def _rdata_text(wire: bytes, rtype: int, start: int, length: int) -> str | None:
    rdata = wire[start : start + length]
    if rtype == 1 and length == 4:
        return str(ipaddress.IPv4Address(rdata))
    if rtype == 28 and length == 16:
        return str(ipaddress.IPv6Address(rdata))
    if rtype in (2, 5, 12):
        return _read_name(wire, start)[0]
    if rtype == 15:
        return f"{struct.unpack('!H', rdata[:2])[0]} {_read_name(wire, start + 2)[0]}"
    if rtype == 33 and length >= 7:  # RFC 2782: priority weight port target
        priority, weight, port = struct.unpack("!HHH", rdata[:6])
        return f"{priority} {weight} {port} {_read_name(wire, start + 6)[0]}"
    if rtype == 16:
        strings, i = [], 0
        while i < length:
            n = rdata[i]
            strings.append(rdata[i + 1 : i + 1 + n])
            i += 1 + n
        return b"".join(strings).decode("utf-8", "replace").translate(_ESCAPE_CONTROLS)
    return None


def parse_reply(wire: bytes, qid: int, qname: str, rdtype: int, host: str) -> Reply:
    try:
        rid, flags, qdcount, ancount, _ns, _ar = struct.unpack("!HHHHHH", wire[:12])
        if rid != qid or not flags & 0x8000 or qdcount != 1:
            raise ValueError("not the answer to our question")
        name, offset = _read_name(wire, 12)
        qtype, _qclass = struct.unpack("!HH", wire[offset : offset + 4])
        if name != qname.lower().rstrip(".") + "." or qtype != rdtype:
            raise ValueError("answer for another question")
        offset += 4
        records = []
        for _i in range(ancount):
            owner, offset = _read_name(wire, offset)
            rtype, rclass, _ttl, length = struct.unpack("!HHIH", wire[offset : offset + 10])
            offset += 10
            if rclass == 1:
                value = _rdata_text(wire, rtype, offset, length)
                if value is not None:
                    records.append((owner, rtype, value))
            offset += length
    except (ValueError, IndexError, struct.error) as exc:
        raise DnsFailure(f"malformed answer from {host}: {exc}")
    return Reply(flags & 0x000F, bool(flags & 0x0200), records)


def interpret(reply: Reply, qname: str, rdtype: int) -> tuple[str, list[str]]:
    """('ok' | 'nxdomain' | 'nodata', values), following CNAMEs in the answer."""
    name = qname.lower().rstrip(".") + "."
    for _hop in range(MAX_CNAME_HOPS):
        values = [v for owner, t, v in reply.records if owner == name and t == rdtype]
        if values:
            return "ok", values
        targets = [v for owner, t, v in reply.records if owner == name and t == CNAME]
        if not targets:
            break
        name = targets[0]
    if reply.rcode == RCODE_NXDOMAIN:
        return "nxdomain", []
    return "nodata", []


def system_nameservers() -> list[tuple[str, int]]:
    """The nameservers of /etc/resolv.conf."""
    resolver = dns.resolver.Resolver()
    return [(getattr(ns, "address", str(ns)), resolver.port) for ns in resolver.nameservers]
