"""BIND zone-file snippet for a domain's records. Pure.

A TXT character-string holds at most 255 bytes (RFC 1035 §3.3), so long values
(a 2048-bit DKIM key is ~400 bytes) are written as several quoted strings on one
record; resolvers hand them back concatenated."""

from __future__ import annotations

from collections.abc import Iterable

from .dnsrecords import Record

DEFAULT_TTL = 3600
MAX_STRING = 255


def split_txt(value: str, size: int = MAX_STRING) -> list[bytes]:
    data = value.encode()
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


def quote_txt(chunk: bytes) -> str:
    out = []
    for byte in chunk:
        char = chr(byte)
        if char in '"\\':
            out.append("\\" + char)
        elif 0x20 <= byte < 0x7F:
            out.append(char)
        else:
            out.append(f"\\{byte:03d}")
    return '"' + "".join(out) + '"'


def rdata_text(record: Record) -> str:
    if record.type == "TXT":
        return " ".join(quote_txt(chunk) for chunk in split_txt(record.value))
    return record.value


def render_zone(domain: str, records: Iterable[Record], ttl: int = DEFAULT_TTL) -> str:
    domain = domain.lower().rstrip(".")
    lines = [
        f"; mail records for {domain} (mailpanel)",
        "; mail. and webmail. must not be proxied by Cloudflare (DNS only, grey cloud)",
        f"$ORIGIN {domain}.",
        f"$TTL {ttl}",
    ]
    for record in records:
        lines.append(f"; {record.level}: {record.purpose}")
        lines.append(f"{record.name}.\t{ttl}\tIN\t{record.type}\t{rdata_text(record)}")
    return "\n".join(lines) + "\n"
