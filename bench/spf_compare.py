"""The panel's SPF verdicts (mailadmin.checks.dns.spf_check_host: pyspf's
check_host with its lookups through the panel's DNS client) against stock
pyspf, the RFC 7208 reference implementation (PyPI pyspf, Debian python3-spf).
Written to decide between the panel's own evaluator and pyspf: on the suite
below pyspf was right 201 times of 203, the panel's own 160, and on the
real-world corpus the one difference was pyspf's right answer; so the panel
now evaluates with pyspf and keeps what it did better (see checks/dns.py).

    .venv/bin/python bench/spf_compare.py [path/to/rfc7208-tests.yml]

Both read the same zones from memory (no network): ours through a Lookups
stand-in, pyspf through its module-level spf.DNSLookup, replaced the way its
own test driver does it. Two corpora:

- bench/spf_corpus.py: records as real domains publish them (providers'
  include chains, macros, redirect, a/mx/ptr, dual CIDR) and the mistakes
  seen in customers' zones. No expected results: where the two disagree, the
  line is printed for a person to judge.
- the openspf.org RFC 7208 test suite (rfc7208-tests.yml from pyspf's
  sources, given as the argument; not shipped here): expected results, so
  each evaluator gets a score. The panel asks one question — may this IP
  send for this domain — so tests of HELO-only identities, explanations
  (exp=) and local-part macros are counted apart.

Prints a table and every disagreement."""

import asyncio
import os
import re
import socket
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "panel.settings")

import django  # noqa: E402

django.setup()

import spf  # noqa: E402  (pyspf)

from mailadmin.checks.dns import Answer, spf_check_host  # noqa: E402

RESULTS = ("pass", "fail", "softfail", "neutral", "none", "permerror", "temperror")


class Zone:
    """name → [(type, value)] with TIMEOUT markers; TXT values are tuples of strings."""

    def __init__(self, data: dict):
        self.data = {name.lower().rstrip("."): records for name, records in data.items()}

    def answer(self, name: str, rtype: str):
        """(kind, values): kind ok | nxdomain | nodata | timeout."""
        records = self.data.get(name.lower().rstrip("."))
        if records is None:
            return "nxdomain", []
        if "TIMEOUT" in records or (rtype, "TIMEOUT") in records:
            return "timeout", []
        values = [value for kind, value in records if kind == rtype and value != "NONE"]
        return ("ok", values) if values else ("nodata", [])


class OurLookups:
    """What checks.dns.Lookups answers, from a Zone."""

    def __init__(self, zone: Zone):
        self.zone = zone

    async def query(self, name: str, rtype: str) -> Answer:
        kind, values = self.zone.answer(name, rtype)
        if kind == "timeout":
            return Answer("error", error="timed out")
        if rtype == "TXT":
            values = ["".join(v) if isinstance(v, tuple) else v for v in values]
        elif rtype == "MX":
            values = [v if isinstance(v, str) else f"{v[0]} {v[1]}" for v in values]
        return Answer(kind, [str(v) for v in values])


def pyspf_lookup(zone: Zone):
    """A replacement for spf.DNSLookup answering from the zone, in pyspf's
    ((name, type), data) shape."""

    def lookup(name, qtype, strict=True, timeout=None, level=0):
        if any(len(label) > 63 for label in name.split(".")):
            raise spf.TempError("DNS label too long")
        kind, values = zone.answer(name, qtype)
        if kind == "timeout":
            raise spf.TempError("DNS timeout")
        out = []
        for value in values:
            if qtype in ("TXT", "SPF"):
                parts = value if isinstance(value, tuple) else (value,)
                value = tuple(p.encode("utf-8") if isinstance(p, str) else p for p in parts)
            elif qtype == "AAAA":
                value = socket.inet_pton(socket.AF_INET6, value)
            elif qtype == "MX":
                value = tuple(value) if not isinstance(value, str) else (int(value.split()[0]), value.split()[1].rstrip("."))
            out.append(((name, qtype), value))
        return out

    return lookup


def ours(zone: Zone, ip: str, domain: str) -> str:
    return asyncio.run(spf_check_host(OurLookups(zone), ip, domain)).result


def theirs(zone: Zone, ip: str, domain: str, sender: str = "", helo: str = "") -> str:
    spf.DNSLookup = pyspf_lookup(zone)
    result, _code, _explanation = spf.query(i=ip, s=sender or f"postmaster@{domain}", h=helo or domain).check()
    return {"unknown": "permerror", "error": "temperror"}.get(result, result)


# --- corpus 1: real-world records ------------------------------------------------------


def compare_corpus():
    from spf_corpus import QUERIES, ZONES

    zone = Zone(ZONES)
    same, diff = 0, []
    for domain, ip in QUERIES:
        a, b = ours(zone, ip, domain), theirs(zone, ip, domain)
        if a == b:
            same += 1
        else:
            diff.append((domain, ip, a, b))
    return same, diff


# --- corpus 2: the RFC 7208 test suite ---------------------------------------------------


def suite_zone(zonedata: dict) -> Zone:
    """The suite's zones: SPF-type records stand in for TXT where a name has
    no TXT of its own (its drivers do the same)."""
    data = {}
    for name, records in zonedata.items():
        out, has_txt = [], any(isinstance(r, dict) and "TXT" in r for r in records)
        for record in records:
            if record == "TIMEOUT":
                out.append("TIMEOUT")
                continue
            (kind, value), = record.items()
            if kind in ("TXT", "SPF"):
                value = tuple(value) if isinstance(value, list) else (value,)
                if value == ("NONE",):
                    continue
            if kind == "SPF":
                if has_txt:
                    continue
                kind = "TXT"
            if kind == "MX":
                value = (int(value[0]), value[1])
            out.append((kind, value if value != "TIMEOUT" else "TIMEOUT"))
        data[name] = out
    return Zone(data)


def scenario_tests(path: str):
    import yaml

    for scenario in yaml.safe_load_all(Path(path).read_text(encoding="utf-8", errors="surrogateescape")):
        zone = suite_zone(scenario["zonedata"])
        for name, test in scenario["tests"].items():
            expected = test["result"] if isinstance(test["result"], list) else [test["result"]]
            yield scenario["description"], name, test, zone, expected


def out_of_scope(test: dict, zone: Zone) -> str:
    """Why the panel's question (this IP, this domain) is not what a test asks."""
    if not test.get("mailfrom") or "@" not in test["mailfrom"]:
        return "HELO identity"
    local = test["mailfrom"].rsplit("@", 1)[0]
    text = " ".join(str(v) for records in zone.data.values() for r in records if r != "TIMEOUT" for v in r[1:])
    if local.lower() != "postmaster" and re.search(r"%\{[lLsS]", text):
        return "local-part macro"
    return ""


def compare_suite(path: str):
    rows = {"ours": [0, 0], "pyspf": [0, 0], "scoped": {"ours": [0, 0], "pyspf": [0, 0]}}
    misses = []
    for description, name, test, zone, expected in scenario_tests(path):
        domain = test["mailfrom"].rsplit("@", 1)[1] if "@" in (test.get("mailfrom") or "") else test["helo"]
        try:
            a = ours(zone, test["host"], domain)
        except Exception as exc:  # an evaluator must not crash on a published record
            a = f"crash {type(exc).__name__}"
        try:
            b = theirs(zone, test["host"], domain, test.get("mailfrom") or "", test["helo"])
        except Exception as exc:
            b = f"crash {type(exc).__name__}"
        scope = out_of_scope(test, zone)
        for who, got in (("ours", a), ("pyspf", b)):
            rows[who][0] += got in expected
            rows[who][1] += 1
            if not scope:
                rows["scoped"][who][0] += got in expected
                rows["scoped"][who][1] += 1
        if a not in expected or b not in expected:
            misses.append((description, name, scope, "/".join(expected), a, b))
    return rows, misses


def main():
    same, diff = compare_corpus()
    print(f"real-world corpus: {same + len(diff)} queries, the two agree on {same}")
    for domain, ip, a, b in diff:
        print(f"  differ: {domain} {ip}: ours {a}, pyspf {b}")
    if len(sys.argv) > 1:
        rows, misses = compare_suite(sys.argv[1])
        print(f"RFC 7208 test suite: ours {rows['ours'][0]}/{rows['ours'][1]}, pyspf {rows['pyspf'][0]}/{rows['pyspf'][1]}")
        scoped = rows["scoped"]
        print(f"  the panel's question only (mail-from domain, no local-part macro): "
              f"ours {scoped['ours'][0]}/{scoped['ours'][1]}, pyspf {scoped['pyspf'][0]}/{scoped['pyspf'][1]}")
        for description, name, scope, expected, a, b in misses:
            print(f"  {description} / {name}{' [' + scope + ']' if scope else ''}: expected {expected}, ours {a}, pyspf {b}")


if __name__ == "__main__":
    main()
