"""Check the DNS records of 1,000 domains against a local DNS server (SPEC §8.3).

Starts tests/dnsserver.py as its own process on 127.0.0.1 (a free port) serving
every record of 1,000 domains, runs the same checks "Check now" runs (all
records of every domain, SPF evaluated by meaning, DKIM by its 2048-bit key) and
prints the wall time. Target: ≤ 5 s on a 2-core machine. Nothing leaves 127.0.0.1.

    .venv/bin/python bench/dns_checks.py [N]
"""

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "panel.settings")

import django  # noqa: E402

django.setup()

from mailadmin import dkim  # noqa: E402
from mailadmin.checks import dns as dnscheck  # noqa: E402
from mailadmin.dnsrecords import build_records  # noqa: E402
from mailconf.snapshot import ServerIdentity  # noqa: E402
from tests.dnsserver import txt  # noqa: E402

V4, V6 = "192.0.2.10", "2001:db8::10"
SERVER = ServerIdentity(hostname="mail.panel.test", ipv4=V4, ipv6=V6)
TIMEOUT = 5.0


def zone_lines(names, key):
    lines = []
    for name in names:
        for record in build_records(name, SERVER, key):
            rdata = txt(record.value) if record.type == "TXT" else record.value
            lines.append(f"{record.name}. 300 IN {record.type} {rdata}")
        lines.append(f"{name}. 300 IN A {V4}")  # the web site, which SPF "a" finds
    return lines


def main():
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    key = dkim.public_key_b64(dkim.generate_private_pem())
    names = [f"d{i:05d}.bench.test" for i in range(count)]
    with tempfile.NamedTemporaryFile("w", suffix=".zone", delete=False) as f:
        f.write("\n".join(zone_lines(names, key)))
        zone_file = f.name
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "dnsserver.py"), zone_file],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        port = int(server.stdout.readline())
        jobs = [(name, build_records(name, SERVER, key)) for name in names]
        cf = dnscheck.load_cloudflare_networks()

        async def run():
            lookups = dnscheck.Lookups(dnscheck.make_resolver([f"127.0.0.1:{port}"], TIMEOUT), TIMEOUT)
            try:
                return await dnscheck.check_many(lookups, jobs, (V4, V6), (V4, V6), cf), len(lookups.cache)
            finally:
                lookups.close()

        started, cpu_started = time.perf_counter(), time.process_time()
        results, queries = asyncio.run(run())
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    finally:
        server.stdin.close()
        server.wait(timeout=10)
        os.unlink(zone_file)
    summaries = Counter(dnscheck.summarize(v) for v in results.values())
    verdicts = Counter(v.status for vs in results.values() for v in vs)
    print(f"records checked: {sum(verdicts.values())} ({dict(verdicts)}), DNS queries: {queries}")
    print(f"domain summaries: {dict(summaries)}; panel CPU {cpu:.2f} s; load average {os.getloadavg()[0]:.1f}")
    print(f"{count} domains checked in {elapsed:.2f} s ({queries / elapsed:.0f} queries/s)")
    if summaries.get("ok") != count:
        sys.exit("not every domain came out ok: the benchmark measured failures")


if __name__ == "__main__":
    main()
