"""A real authoritative DNS server on 127.0.0.1 for tests and benchmarks.

Serves records given as zone-file lines ("mail.example.test. 300 IN A 192.0.2.10")
over UDP and TCP on one free port. Unknown names get NXDOMAIN, known names
without the asked type get an empty NOERROR answer (NODATA), names listed in
`servfail` get SERVFAIL. CNAMEs are followed inside the served data.

Run it in a thread (`DnsServer(lines).start()`), or as its own process for
benchmarks (`python tests/dnsserver.py FILE` prints the port, serves until
stdin closes) so the server does not share the GIL with the client.

Also here: `SilentResolver`, a UDP+TCP socket pair on 127.0.0.1 that reads
queries and never answers (a resolver that times out).
"""

from __future__ import annotations

import socket
import socketserver
import struct
import sys
import threading
from collections import defaultdict

from dnslib import QTYPE, RCODE, RR, DNSRecord


def _key(name) -> str:
    return str(name).lower().rstrip(".")


class Records:
    def __init__(self, lines=(), servfail=()):
        self.by_name: dict[str, list[RR]] = defaultdict(list)
        self.servfail = {_key(n) for n in servfail}
        self.add(lines)

    def add(self, lines):
        for line in lines:
            line = line.strip()
            if line and not line.startswith(";"):
                for rr in RR.fromZone(line):
                    self.by_name[_key(rr.rname)].append(rr)

    def answer(self, request: DNSRecord) -> bytes:
        reply = request.reply()  # aa=1, same id and question
        qname = _key(request.q.qname)
        qtype = request.q.qtype
        if qname in self.servfail:
            reply.header.rcode = RCODE.SERVFAIL
            return reply.pack()
        for _hop in range(8):
            rrs = self.by_name.get(qname)
            if rrs is None:
                if not reply.rr:
                    reply.header.rcode = RCODE.NXDOMAIN
                break
            matching = [rr for rr in rrs if rr.rtype == qtype or qtype == QTYPE.ANY]
            if matching:
                reply.rr.extend(matching)
                break
            cnames = [rr for rr in rrs if rr.rtype == QTYPE.CNAME]
            if not cnames:
                break  # NODATA
            reply.rr.append(cnames[0])
            qname = _key(cnames[0].rdata.label)
        return reply.pack()


class _Udp:
    """One loop thread: no thread per packet. Answers are cached per question
    (name, type) and only the id is patched in, so the server costs ~20 µs a
    query and a benchmark measures the panel, not this server."""

    def __init__(self, sock, records):
        self.sock, self.records = sock, records
        self.cache: dict[bytes, bytes] = {}

    def answer(self, data: bytes) -> bytes:
        end = 12
        while data[end]:
            end += data[end] + 1
        question = data[12 : end + 5].lower()  # name, type, class
        cached = self.cache.get(question)
        if cached is None:
            request = DNSRecord.parse(data)
            request.ar = []
            cached = bytes(self.records.answer(request))
            if len(cached) > 1232:
                reply = request.reply()
                reply.header.tc = 1
                cached = reply.pack()
            self.cache[question] = cached
        # same question at offset 12 with the same length: compression pointers hold
        return data[:2] + cached[2:12] + data[12 : end + 5] + cached[end + 5 :]

    def warm(self, types=("A", "AAAA", "MX", "TXT", "PTR")):
        """Precompute the answers of every served name (for the benchmark)."""
        for name in list(self.records.by_name):
            for qtype in types:
                request = DNSRecord.question(name + ".", qtype)
                request.header.id = 0
                self.answer(bytes(request.pack()))

    def serve(self):
        while True:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            try:
                answer = self.answer(data)
            except Exception:
                continue
            try:
                self.sock.sendto(answer, peer)
            except OSError:
                return


class _TcpHandler(socketserver.BaseRequestHandler):
    def handle(self):
        conn = self.request
        conn.settimeout(5)
        try:
            while True:
                head = _recv_exact(conn, 2)
                if not head:
                    return
                data = _recv_exact(conn, struct.unpack("!H", head)[0])
                answer = self.server.records.answer(DNSRecord.parse(data))
                conn.sendall(struct.pack("!H", len(answer)) + answer)
        except (OSError, Exception):
            return


def _recv_exact(conn, n):
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return b""
        buf += chunk
    return buf


class _TcpServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


def _bind_pair(host="127.0.0.1"):
    """A UDP and a TCP socket on the same free port."""
    for _attempt in range(50):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind((host, 0))
        port = udp.getsockname()[1]
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            tcp.bind((host, port))
        except OSError:
            udp.close()
            tcp.close()
            continue
        return udp, tcp, port
    raise RuntimeError("no free port pair on 127.0.0.1")


class DnsServer:
    def __init__(self, lines=(), servfail=()):
        self.records = Records(lines, servfail)
        self.host = "127.0.0.1"
        self.port = 0

    @property
    def address(self) -> str:
        """What MAILPANEL_RESOLVERS takes."""
        return f"{self.host}:{self.port}"

    def add(self, lines):
        self.records.add(lines)
        if hasattr(self, "_udp"):
            self._udp.cache.clear()

    def remove(self, name: str):
        """Every record of `name` (it answers NXDOMAIN from now on)."""
        self.records.by_name.pop(_key(name), None)
        if hasattr(self, "_udp"):
            self._udp.cache.clear()

    def start(self, warm: bool = False) -> "DnsServer":
        self._udp_sock, tcp_sock, self.port = _bind_pair(self.host)
        self._udp_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self._tcp = _TcpServer((self.host, self.port), _TcpHandler, bind_and_activate=False)
        self._tcp.socket.close()
        self._tcp.socket = tcp_sock
        self._tcp.server_activate()
        self._tcp.records = self.records
        self._udp = _Udp(self._udp_sock, self.records)
        if warm:
            self._udp.warm()
        threading.Thread(target=self._udp.serve, daemon=True).start()
        threading.Thread(target=self._tcp.serve_forever, daemon=True).start()
        return self

    def stop(self):
        self._tcp.shutdown()
        self._tcp.server_close()
        try:
            self._udp_sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._udp_sock.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class SilentResolver:
    """Reads every query and never answers: a resolver that times out."""

    def __init__(self):
        self.port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "SilentResolver":
        self._udp, self._tcp, self.port = _bind_pair()
        self._tcp.listen(16)
        self._stop = threading.Event()
        threading.Thread(target=self._drain_udp, daemon=True).start()
        threading.Thread(target=self._hold_tcp, daemon=True).start()
        return self

    def _drain_udp(self):
        while not self._stop.is_set():
            try:
                self._udp.recvfrom(4096)
            except OSError:
                return

    def _hold_tcp(self):
        held = []
        while not self._stop.is_set():
            try:
                conn, _ = self._tcp.accept()
            except OSError:
                break
            held.append(conn)  # accepted, read by nobody, never answered
        for conn in held:
            conn.close()

    def stop(self):
        self._stop.set()
        for sock in (self._udp, self._tcp):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def main(argv):
    """`python tests/dnsserver.py ZONEFILE`: serve its lines, print the port,
    stop when stdin closes (the parent process ends it by closing the pipe)."""
    with open(argv[1]) as f:
        server = DnsServer(f.read().splitlines()).start(warm=True)
    print(server.port, flush=True)
    sys.stdin.read()
    server.stop()


if __name__ == "__main__":
    main(sys.argv)


# --- the test world: one server, domains whose records are right, missing or wrong ----

SERVER_V4 = "192.0.2.10"
SERVER_V6 = "2001:db8::10"
SERVER_HOSTNAME = "mail.panel.test"
CLOUDFLARE_IP = "104.16.1.1"  # inside Cloudflare's 104.16.0.0/13
DNSBL_LISTING = "dnsbl.test"  # lists the server: 127.0.0.2
DNSBL_REFUSING = "refusing.test"  # answers 127.255.255.254 (query refused)
DNSBL_CLEAN = "clean-bl.test"  # lists nothing


def txt(value: str) -> str:
    """A TXT rdata split into 255-byte strings, as a zone file must hold it."""
    chunks = [value[i : i + 255] for i in range(0, len(value), 255)] or [""]
    return " ".join('"' + c.replace("\\", "\\\\").replace('"', '\\"') + '"' for c in chunks)


def reverse_v4(ip: str) -> str:
    return ".".join(reversed(ip.split(".")))


def reverse_v6(ip: str) -> str:
    import ipaddress

    return ".".join(reversed(ipaddress.ip_address(ip).exploded.replace(":", "")))


def world(dkim_value: str, other_dkim_value: str) -> list[str]:
    good_spf = f"v=spf1 a mx ip4:{SERVER_V4} ip6:{SERVER_V6} ~all"
    dmarc = "v=DMARC1; p=quarantine; sp=quarantine; adkim=s; aspf=s;"
    from mailadmin import mta_sts  # pure: the id the record builder computes for mx mail.good.test

    good_sts = mta_sts.sts_record_value(mta_sts.policy_text(mta_sts.TESTING, ("mail.good.test",)))
    lines = [
        # the server itself, with forward-confirmed reverse DNS for IPv4 only
        f"{SERVER_HOSTNAME}. 300 IN A {SERVER_V4}",
        f"{SERVER_HOSTNAME}. 300 IN AAAA {SERVER_V6}",
        f"{reverse_v4(SERVER_V4)}.in-addr.arpa. 300 IN PTR {SERVER_HOSTNAME}.",
        f"{reverse_v6(SERVER_V6)}.ip6.arpa. 300 IN PTR host-10.provider.test.",
        # good.test: every record right, DKIM key split into 255-byte strings
        f"good.test. 300 IN A {SERVER_V4}",
        f"mail.good.test. 300 IN A {SERVER_V4}",
        f"mail.good.test. 300 IN AAAA {SERVER_V6}",
        f"webmail.good.test. 300 IN A {SERVER_V4}",
        "good.test. 300 IN MX 10 mail.good.test.",
        f"good.test. 300 IN TXT {txt(good_spf)}",
        "good.test. 300 IN TXT \"google-site-verification=abc\"",
        f"_domainkey.good.test. 300 IN TXT {txt('t=y; o=~;')}",
        f"mail._domainkey.good.test. 300 IN TXT {txt(dkim_value)}",
        f"_dmarc.good.test. 300 IN TXT {txt(dmarc)}",
        f"autoconfig.good.test. 300 IN A {SERVER_V4}",
        f"autoconfig.good.test. 300 IN AAAA {SERVER_V6}",
        f"autodiscover.good.test. 300 IN A {SERVER_V4}",
        f"autodiscover.good.test. 300 IN AAAA {SERVER_V6}",
        f"_imaps._tcp.good.test. 300 IN SRV 0 1 993 {SERVER_HOSTNAME}.",
        f"_imap._tcp.good.test. 300 IN SRV 10 1 143 {SERVER_HOSTNAME}.",
        f"_submissions._tcp.good.test. 300 IN SRV 0 1 465 {SERVER_HOSTNAME}.",
        f"_submission._tcp.good.test. 300 IN SRV 5 2 587 {SERVER_HOSTNAME}.",  # own priority, weight: fine
        f"_autodiscover._tcp.good.test. 300 IN SRV 0 0 443 {SERVER_HOSTNAME}.",
        f"mta-sts.good.test. 300 IN A {SERVER_V4}",
        f"mta-sts.good.test. 300 IN AAAA {SERVER_V6}",
        f"_mta-sts.good.test. 300 IN TXT {txt(good_sts)}",
        f"_smtp._tls.good.test. 300 IN TXT {txt('v=TLSRPTv1; rua=mailto:postmaster@good.test')}",
        # plain.test: the SRV records of a server that offers no TLS (RFC 6186
        # target "." for IMAPS and submissions, IMAP and submission in plain text)
        "_imaps._tcp.plain.test. 300 IN SRV 0 0 0 .",
        f"_imap._tcp.plain.test. 300 IN SRV 10 1 143 {SERVER_HOSTNAME}.",
        "_submissions._tcp.plain.test. 300 IN SRV 0 0 0 .",
        f"_submission._tcp.plain.test. 300 IN SRV 10 1 587 {SERVER_HOSTNAME}.",
        # missing.test: the name exists (NS) but none of the mail records do
        "missing.test. 300 IN NS ns.missing.test.",
        # different.test: every record present with another value
        "mail.different.test. 300 IN A 198.51.100.7",
        "mail.different.test. 300 IN AAAA 2001:db8:ffff::7",
        "webmail.different.test. 300 IN A 198.51.100.7",
        "different.test. 300 IN MX 10 mx.elsewhere.test.",
        "mx.elsewhere.test. 300 IN A 198.51.100.8",
        f"different.test. 300 IN TXT {txt('v=spf1 ip4:198.51.100.0/24 -all')}",
        f"_domainkey.different.test. 300 IN TXT {txt('o=-')}",
        f"mail._domainkey.different.test. 300 IN TXT {txt(other_dkim_value)}",
        f"_dmarc.different.test. 300 IN TXT {txt('v=DMARC1; p=none')}",
        "autoconfig.different.test. 300 IN A 198.51.100.7",
        "autoconfig.different.test. 300 IN AAAA 2001:db8:ffff::7",
        "autodiscover.different.test. 300 IN A 198.51.100.7",
        "autodiscover.different.test. 300 IN AAAA 2001:db8:ffff::7",
        "_imaps._tcp.different.test. 300 IN SRV 0 1 993 mail.different.test.",  # not the certificate's name
        "_imap._tcp.different.test. 300 IN SRV 10 1 143 imap.elsewhere.test.",
        "_autodiscover._tcp.different.test. 300 IN SRV 0 0 443 autodiscover.elsewhere.test.",
        "_submission._tcp.different.test. 300 IN SRV 0 0 0 .",  # "not offered"
        f"_submissions._tcp.different.test. 300 IN SRV 0 1 4650 {SERVER_HOSTNAME}.",  # wrong port
        "mta-sts.different.test. 300 IN A 198.51.100.7",
        "mta-sts.different.test. 300 IN AAAA 2001:db8:ffff::7",
        f"_mta-sts.different.test. 300 IN TXT {txt('v=STSv1; id=20190429T010101')}",  # an older policy's id
        f"_smtp._tls.different.test. 300 IN TXT {txt('v=TLSRPTv1; rua=mailto:tls@elsewhere.test')}",
        # include.test: SPF authorises the server two include: hops down
        f"include.test. 300 IN TXT {txt('v=spf1 include:_spf.include.test -all')}",
        f"_spf.include.test. 300 IN TXT {txt('v=spf1 include:_spf2.include.test ~all')}",
        f"_spf2.include.test. 300 IN TXT {txt('v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all')}",
        # redirect.test: redirect= to a record that uses mx
        f"redirect.test. 300 IN TXT {txt('v=spf1 redirect=_spf.redirect.test')}",
        f"_spf.redirect.test. 300 IN TXT {txt('v=spf1 mx -all')}",
        "_spf.redirect.test. 300 IN MX 10 out.redirect.test.",
        f"out.redirect.test. 300 IN A {SERVER_V4}",
        f"out.redirect.test. 300 IN AAAA {SERVER_V6}",
        # toomany.test: 11 DNS lookups before the ip4: that would match
        "toomany.test. 300 IN TXT "
        + txt("v=spf1 " + " ".join(f"a:h{i}.toomany.test" for i in range(1, 12)) + f" ip4:{SERVER_V4} -all"),
        # cloudflare.test: mail. and webmail. proxied (orange cloud)
        f"mail.cloudflare.test. 300 IN A {CLOUDFLARE_IP}",
        f"webmail.cloudflare.test. 300 IN A {CLOUDFLARE_IP}",
        "cloudflare.test. 300 IN MX 10 mail.cloudflare.test.",
        # DNSBL zones
        f"{reverse_v4(SERVER_V4)}.{DNSBL_LISTING}. 300 IN A 127.0.0.2",
        f"{reverse_v4(SERVER_V4)}.{DNSBL_LISTING}. 300 IN TXT \"listed: see https://bl.test/\"",
        f"{reverse_v4(SERVER_V4)}.{DNSBL_REFUSING}. 300 IN A 127.255.255.254",
        f"{reverse_v6(SERVER_V6)}.{DNSBL_REFUSING}. 300 IN A 127.255.255.254",
        f"{DNSBL_CLEAN}. 300 IN NS ns.{DNSBL_CLEAN}.",
    ]
    lines += [f"h{i}.toomany.test. 300 IN A 203.0.113.{i}" for i in range(1, 12)]
    return lines


# --- pytest fixtures (import them into a test module to use them) -------------------

try:
    import pytest
except ImportError:  # the benchmark runs this file without pytest
    pytest = None

if pytest is not None:

    class World:
        """The running server plus the DKIM keys its zones publish."""

        def __init__(self, server, good_pem, other_pem):
            from mailadmin import dkim

            self.server = server
            self.address = server.address
            self.good_pem, self.other_pem = good_pem, other_pem
            self.good_key = dkim.public_key_b64(good_pem)
            self.other_key = dkim.public_key_b64(other_pem)

    @pytest.fixture(scope="session")
    def dns_world():
        from mailadmin import dkim

        good_pem, other_pem = dkim.generate_private_pem(), dkim.generate_private_pem()
        server = DnsServer(
            world(dkim.dns_value(good_pem), dkim.dns_value(other_pem)),
            servfail=["broken.test", "_dmarc.broken.test", "mail.broken.test"],
        ).start()
        yield World(server, good_pem, other_pem)
        server.stop()
