"""Deliverability diagnostics (SPEC §4.2–4.5). No ORM: the service passes the
server's addresses, the DNSBL zones and the records in.

Each check is a small async function taking a `Lookups` (resolver + deadline)
and returning plain dicts, so results go straight into the job's JSON."""

from __future__ import annotations

import asyncio
import ipaddress

import dns.reversename
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from . import dns as dnscheck
from .smtp import check_port25

OK, MISSING, DIFFERENT, UNKNOWN = dnscheck.OK, dnscheck.MISSING, dnscheck.DIFFERENT, dnscheck.UNKNOWN
LISTED, NOT_LISTED, REFUSED = "listed", "not_listed", "refused"


# --- receiving (§4.2) ------------------------------------------------------------


async def receiving(lookups, domain: str, server_ips=(), cf_networks=(), connect_port: int | None = None, connect_timeout: float = 5.0, expect_here: bool = True) -> dict:
    """MX hosts of `domain`, their addresses, whether they point at this server,
    Cloudflare, and (connect_port set) whether each address answers SMTP."""
    lookups = lookups.for_one_check()
    mx = await lookups.query(domain, "MX")
    result = {"domain": domain, "hosts": [], "status": OK, "fixes": [], "detail": ""}
    if mx.failed:
        result.update(status=UNKNOWN, detail=mx.error, fixes=[_("The DNS resolver did not answer; check again later.")])
        return result
    if mx.empty:
        result.update(
            status=MISSING,
            fixes=[_("Add an MX record: %(domain)s MX 10 mail.%(domain)s.") % {"domain": domain}],
        )
        return result
    entries = sorted((int(v.split()[0]), v.split()[1]) for v in mx.values)
    answers = await asyncio.gather(
        *(lookups.query(host, rtype) for _pref, host in entries for rtype in ("A", "AAAA"))
    )
    any_here = any_failed = False
    for index, (preference, host) in enumerate(entries):
        a, aaaa = answers[2 * index], answers[2 * index + 1]
        addresses = a.values + aaaa.values
        here = [ip for ip in addresses if ip in server_ips]
        proxied = [ip for ip in addresses if dnscheck.in_networks(ip, cf_networks)]
        any_here |= bool(here)
        any_failed |= a.failed or aaaa.failed
        hostname = host.rstrip(".")
        entry = {
            "preference": preference,
            "host": hostname,
            "addresses": addresses,
            "points_here": bool(here),
            "cloudflare": bool(proxied),
            "unresolved": not addresses and not (a.failed or aaaa.failed),
            "smtp": [],
        }
        if proxied:
            result["fixes"].append(dnscheck.cloudflare_fix(hostname))
        if entry["unresolved"]:
            result["fixes"].append(
                _("The MX host %(host)s has no A/AAAA record: add one pointing at this server.") % {"host": hostname}
            )
        result["hosts"].append(entry)
    if connect_port:
        targets = [(e, ip) for e in result["hosts"] for ip in e["addresses"]]
        outcomes = await asyncio.gather(
            *(asyncio.to_thread(check_port25, _hostport(ip, connect_port), connect_timeout) for _e, ip in targets)
        )
        for (entry, _ip), outcome in zip(targets, outcomes):
            entry["smtp"].append(outcome.as_dict())
    if any(e["cloudflare"] for e in result["hosts"]):
        result["status"] = DIFFERENT
    elif not any_here and not expect_here:
        result["detail"] = _("Mail for this domain is hosted elsewhere (send-only): MX hosts pointing elsewhere is expected.")
    elif not any_here:
        result["status"] = UNKNOWN if any_failed else DIFFERENT
        if not server_ips:
            result["fixes"].append(_("Set the server's public IP address in the server settings."))
        result["fixes"].append(
            _("No MX host points at this server, so mail for %(domain)s is delivered elsewhere. "
              "If it should arrive here, point the MX record at mail.%(domain)s and give that name this server's address.")
            % {"domain": domain}
        )
    return result


def _hostport(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


# --- blacklists (§4.3) -----------------------------------------------------------

# Spamhaus return codes; other DNSBLs use 127.0.0.2 for "listed" too.
ZEN_CODES = {
    "127.0.0.2": gettext_lazy("SBL: Spamhaus Block List (known spam source)"),
    "127.0.0.3": gettext_lazy("CSS: Spamhaus CSS (snowshoe spam)"),
    "127.0.0.4": gettext_lazy("XBL: exploited / infected host (CBL)"),
    "127.0.0.5": gettext_lazy("XBL: exploited / infected host"),
    "127.0.0.6": gettext_lazy("XBL: exploited / infected host"),
    "127.0.0.7": gettext_lazy("XBL: exploited / infected host"),
    "127.0.0.9": gettext_lazy("DROP: hijacked network (do not route or peer)"),
    "127.0.0.10": gettext_lazy("PBL: ISP-maintained policy list (dynamic / end-user range)"),
    "127.0.0.11": gettext_lazy("PBL: Spamhaus-maintained policy list (should not send direct mail)"),
    "127.0.0.30": gettext_lazy("BCL: botnet controller"),
}
REFUSED_CODES = {
    "127.255.255.252": gettext_lazy("typing error in the DNSBL name"),
    "127.255.255.254": gettext_lazy("query refused: sent through a public / open resolver"),
    "127.255.255.255": gettext_lazy("query refused: rate limited (too many queries)"),
}


def explain_code(code: str) -> tuple[str, str]:
    """(status, explanation). 127.255.255.x means the list refused to answer —
    never a listing (HestiaCP #4366 rejected all mail by treating it as one)."""
    if code.startswith("127.255.255."):
        return REFUSED, str(REFUSED_CODES.get(code, _("query refused by the DNSBL")))
    if code in ZEN_CODES:
        return LISTED, str(ZEN_CODES[code])
    if code.startswith("127.0.1."):
        return LISTED, _("domain listing (DBL-style zone)")
    if code.startswith("127."):
        return LISTED, _("listed (return code %(code)s)") % {"code": code}
    return UNKNOWN, _("unexpected answer %(code)s: not a DNSBL return code") % {"code": code}


def dnsbl_query_name(ip: str, zone: str) -> str:
    address = ipaddress.ip_address(ip)
    reverse = dns.reversename.from_address(str(address)).to_text(omit_final_dot=True)
    reverse = reverse.rsplit(".in-addr.arpa", 1)[0].rsplit(".ip6.arpa", 1)[0]
    return f"{reverse}.{zone}"


async def blacklist(lookups, ip: str, zone: str, zone_label: str) -> dict:
    """One IP against one zone. `zone_label` is what may be shown: the zone with
    a DQS key masked — the key never reaches a page, a log or the job result."""
    lookups = lookups.for_one_check()
    answer = await lookups.query(dnsbl_query_name(ip, zone), "A")
    row = {"ip": ip, "zone": zone_label, "status": NOT_LISTED, "codes": [], "explanation": "", "fix": ""}
    if answer.failed:
        row.update(status=UNKNOWN, explanation=_("the DNS lookup failed or timed out"))
        return row
    if answer.empty:
        row["explanation"] = _("not listed")
        return row
    row["codes"] = sorted(answer.values)
    explained = [explain_code(code) for code in row["codes"]]
    statuses = {status for status, _text in explained}
    row["explanation"] = "; ".join(f"{code}: {text}" for code, (_s, text) in zip(row["codes"], explained))
    if LISTED in statuses:
        row["status"] = LISTED
        row["fix"] = _(
            "%(ip)s is listed. Find and stop what sent spam, then ask the list for removal "
            "(Spamhaus: check.spamhaus.org). Until then send through an SMTP relay."
        ) % {"ip": ip}
    elif REFUSED in statuses:
        row["status"] = REFUSED
        row["fix"] = _(
            "The list refused to answer (not a listing). Query it through your own resolver, "
            "or for Spamhaus use a free DQS key in the server settings."
        )
    else:
        row["status"] = UNKNOWN
    return row


async def blacklists(lookups, ips, zones) -> list[dict]:
    """zones: [(zone, label)]. Rows ordered by IP then zone."""
    return list(await asyncio.gather(*(blacklist(lookups, ip, z, label) for ip in ips for z, label in zones)))


# --- reverse DNS (§4.4) ----------------------------------------------------------


async def reverse_dns(lookups, ip: str, hostname: str) -> dict:
    lookups = lookups.for_one_check()
    hostname = hostname.lower().rstrip(".")
    row = {"ip": ip, "ptr": [], "matches_hostname": False, "forward_confirmed": False, "status": OK, "fixes": [], "detail": ""}
    answer = await lookups.query(dns.reversename.from_address(ip).to_text(), "PTR")
    if answer.failed:
        row.update(status=UNKNOWN, detail=answer.error)
        return row
    fix_ptr = _(
        "Ask your hosting provider (who owns %(ip)s) to set its reverse DNS (PTR) to %(hostname)s."
    ) % {"ip": ip, "hostname": hostname}
    if answer.empty:
        row.update(status=MISSING, fixes=[fix_ptr])
        return row
    names = [n.rstrip(".") for n in answer.values]
    row["ptr"] = names
    row["matches_hostname"] = hostname in names
    rtype = "A" if ipaddress.ip_address(ip).version == 4 else "AAAA"
    forward = await asyncio.gather(*(lookups.query(n, rtype) for n in names[:10]))
    row["forward_confirmed"] = any(ip in f.values for f in forward)
    if not row["matches_hostname"]:
        row["status"] = DIFFERENT
        row["fixes"].append(fix_ptr)
    if not row["forward_confirmed"]:
        if any(f.failed for f in forward):
            row["status"] = UNKNOWN if row["status"] == OK else row["status"]
            row["detail"] = _("the forward lookup failed")
        else:
            row["status"] = DIFFERENT
            row["fixes"].append(
                _("Make %(name)s resolve to %(ip)s (an %(type)s record), so the reverse name is confirmed.")
                % {"name": names[0], "ip": ip, "type": rtype}
            )
    return row


async def reverse_dns_all(lookups, ips, hostname: str) -> list[dict]:
    return list(await asyncio.gather(*(reverse_dns(lookups, ip, hostname) for ip in ips)))


# --- sending readiness per domain (§4.5) -----------------------------------------

SENDING_PURPOSES = ("spf", "dkim", "dmarc")


async def sending_readiness(lookups, records, sending_ips=()) -> dict:
    """SPF authorises the server IP, DKIM record matches the key, DMARC present."""
    wanted = [r for r in records if r.purpose in SENDING_PURPOSES]
    verdicts = await dnscheck.check_records(lookups, wanted, sending_ips=sending_ips)
    rows = [v.as_dict() for v in verdicts]
    if not any(r.purpose == "dkim" for r in wanted):
        rows.append(
            {
                "name": "",
                "type": "TXT",
                "purpose": "dkim",
                "level": "required",
                "status": DIFFERENT,
                "expected": "",
                "found": [],
                "fix": _("DKIM signing is off for this domain: turn it on so receivers can verify its mail."),
                "detail": "",
                "cloudflare": False,
            }
        )
    status = max((r["status"] for r in rows), key=dnscheck.SEVERITY.__getitem__)
    return {"status": status, "checks": rows}
