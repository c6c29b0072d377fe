"""The panel's SPF verdicts are pyspf's check_host (RFC 7208's reference)
with the lookups made through the panel's own DNS client: on a corpus of
records as real domains publish them, every verdict is what stock pyspf
says; and the one reading where RFC 7208 is stricter than pyspf is ours."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from spf_compare import Zone, ours, theirs  # noqa: E402
from spf_corpus import QUERIES, ZONES  # noqa: E402


@pytest.mark.parametrize("domain, ip", QUERIES, ids=[f"{d}-{ip}" for d, ip in QUERIES])
def test_each_real_world_verdict_is_the_reference_implementations(domain, ip):
    zone = Zone(ZONES)
    assert ours(zone, ip, domain) == theirs(zone, ip, domain)


def test_the_verdicts_are_not_all_alike():
    """The corpus does ask different questions: every result occurs."""
    zone = Zone(ZONES)
    assert {ours(zone, ip, domain) for domain, ip in QUERIES} == {
        "pass", "fail", "softfail", "neutral", "none", "permerror", "temperror"
    }


def test_a_zero_digit_macro_is_a_permerror_as_rfc_7208_says_not_every_part():
    zone = Zone({"zero.example": [("TXT", "v=spf1 a:%{d0}.example -all")]})
    assert ours(zone, "192.0.2.1", "zero.example") == "permerror"
    assert theirs(zone, "192.0.2.1", "zero.example") == "fail"  # pyspf's reading
