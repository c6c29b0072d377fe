"""MTA-STS (RFC 8461) and TLS-RPT (RFC 8460): the policy a domain publishes
and the values of its DNS records. Pure: no ORM, no I/O, no clock.

The policy is served at https://mta-sts.<domain>/.well-known/mta-sts.txt
(views/mta_sts.py); the ``_mta-sts`` TXT record carries an id that senders
compare to decide whether to fetch the policy again. The id is derived from
the policy's text (its SHA-256), so it changes exactly when the text changes
and never otherwise: no counter to keep, the same on every render.
"""

from __future__ import annotations

import hashlib

TESTING, ENFORCE = "testing", "enforce"
MODES = (TESTING, ENFORCE)
# A week: long enough to protect between a sender's visits, short enough that
# a mistake (enforce without a matching certificate) heals within days.
MAX_AGE = 604800
MTA_STS_LABEL = "mta-sts"
POLICY_PATH = "/.well-known/mta-sts.txt"
CONTENT_TYPE = "text/plain; charset=utf-8"  # RFC 8461 §3.2: text/plain


def mode_of(enforce: bool) -> str:
    return ENFORCE if enforce else TESTING


def policy_text(mode: str, mx_hosts: tuple[str, ...], max_age: int = MAX_AGE) -> str:
    """The policy file: ``version``, ``mode``, one ``mx`` line per MX host
    (sorted, deduplicated), ``max_age``; CRLF line ends as RFC 8461's
    examples."""
    if mode not in MODES:
        raise ValueError(f"not an MTA-STS mode: {mode!r}")
    if not mx_hosts:
        raise ValueError("an MTA-STS policy needs at least one mx")
    lines = ["version: STSv1", f"mode: {mode}"]
    lines += [f"mx: {host.rstrip('.').lower()}" for host in sorted({h.rstrip(".").lower() for h in mx_hosts})]
    lines.append(f"max_age: {int(max_age)}")
    return "".join(line + "\r\n" for line in lines)


def policy_id(text: str) -> str:
    """1–32 letters and digits (RFC 8461 §3.1): the first 32 hex digits of
    the policy's SHA-256."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def sts_record_value(text: str) -> str:
    return f"v=STSv1; id={policy_id(text)}"


def tlsrpt_record_value(address: str) -> str:
    return f"v=TLSRPTv1; rua=mailto:{address}"
