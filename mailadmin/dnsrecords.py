"""The DNS records a mail domain needs (SPEC §1.3) — one source of truth.

The domain page, `mail dns`, the BIND export and the live checker all read the
list `build_records()` returns. Pure: no ORM, no I/O.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from django.utils.translation import gettext_lazy as _

from mailconf.snapshot import ServerIdentity

from . import mta_sts
from .client_config import SERVICES, Service

REQUIRED = "required"
RECOMMENDED = "recommended"
OPTIONAL = "optional"

LEVEL_LABELS = {
    REQUIRED: _("required"),
    RECOMMENDED: _("recommended"),
    OPTIONAL: _("optional"),
}

DKIM_SELECTOR = "mail"
MX_PREFERENCE = 10
DMARC_VALUE = "v=DMARC1; p=quarantine; sp=quarantine; adkim=s; aspf=s;"
DOMAINKEYS_POLICY = "t=y; o=~;"
VERIFY_LABEL = "_mailpanel-verify"


@dataclass(frozen=True)
class Record:
    name: str  # fully qualified, IDNA, no trailing dot
    type: str  # "A", "AAAA", "MX", "TXT", "SRV"
    value: str  # as a DNS UI takes it; MX as "10 mail.example.com.", SRV as "0 1 993 host.example.net."
    purpose: str  # a short machine name: mail_a, webmail_a, mx, spf, dkim, ...
    level: str  # REQUIRED | RECOMMENDED | OPTIONAL
    explanation: str

    @property
    def level_label(self) -> str:
        return str(LEVEL_LABELS[self.level])

    @property
    def proxy_sensitive(self) -> bool:
        """A/AAAA names that Cloudflare must not proxy (mail cannot pass it)."""
        return self.type in ("A", "AAAA")

    def as_dict(self) -> dict:
        data = asdict(self)
        data["explanation"] = str(self.explanation)
        return data


def spf_value(server: ServerIdentity) -> str:
    terms = ["v=spf1", "a", "mx"]
    if server.ipv4:
        terms.append(f"ip4:{server.ipv4}")
    if server.ipv6:
        terms.append(f"ip6:{server.ipv6}")
    terms.append("~all")
    return " ".join(terms)


def dkim_value(public_key_b64: str) -> str:
    return f"v=DKIM1; k=rsa; p={public_key_b64}"


def srv_value(service: Service, host: str) -> str:
    """RFC 6186: priority weight port target; "0 0 0 ." says "not offered"
    (RFC 2782), so a client does not try the service at all."""
    if not service.offered:
        return "0 0 0 ."
    return f"{service.priority} 1 {service.port} {host.rstrip('.')}."


def names_a_host(hostname: str) -> bool:
    """Whether the server's host name can be published as a target (not the
    unset default localhost.localdomain)."""
    labels = hostname.lower().rstrip(".").split(".")
    return len(labels) > 1 and labels[-1] not in ("localdomain", "localhost")


def client_records(domain: str, server: ServerIdentity, services=SERVICES) -> list[Record]:
    """How mail programs find this server: autoconfig./autodiscover. (A and
    AAAA, for Thunderbird's and Outlook's HTTPS lookups) and RFC 6186 SRV
    records naming the server's host name, whose certificate they will see."""
    records = []
    for label, purpose in (("autoconfig", "autoconfig"), ("autodiscover", "autodiscover")):
        for rtype, address in (("A", server.ipv4), ("AAAA", server.ipv6)):
            if address:
                records.append(
                    Record(
                        f"{label}.{domain}",
                        rtype,
                        address,
                        f"{purpose}_{rtype.lower()}",
                        OPTIONAL,
                        _("Lets Thunderbird and Outlook set themselves up for this domain. Must not be proxied."),
                    )
                )
    if not names_a_host(server.hostname):
        return records
    # Outlook looks this up after its HTTPS tries on the domain's own names
    # fail (no certificate for them): it then asks the host name, whose
    # certificate matches, and autodiscover answers there by the address.
    records.append(
        Record(
            f"_autodiscover._tcp.{domain}",
            "SRV",
            f"0 0 443 {server.hostname.rstrip('.')}.",
            "srv_autodiscover",
            OPTIONAL,
            _("Lets Outlook find its settings on this server's own name (HTTPS, port 443)."),
        )
    )
    for service in services:
        if not service.offered:
            explanation = _("Tells mail programs that %(service)s is not offered here.") % {
                "service": service.label
            }
        elif service.protocol == "imap":
            explanation = _("Lets mail programs find the IMAP server (port %(port)s).") % {"port": service.port}
        else:
            explanation = _("Lets mail programs find the server for sending (port %(port)s).") % {
                "port": service.port
            }
        records.append(
            Record(
                f"_{service.label}._tcp.{domain}",
                "SRV",
                srv_value(service, server.hostname),
                f"srv_{service.label}",
                OPTIONAL,
                explanation,
            )
        )
    return records


def ownership_record(domain: str, token: str) -> Record:
    """The TXT record that proves a customer holds the domain's DNS."""
    return Record(
        f"{VERIFY_LABEL}.{domain.lower().rstrip('.')}",
        "TXT",
        f"mailpanel-verify={token}",
        "ownership",
        REQUIRED,
        _(
            "Proves that you control this domain. Until it is found the domain is pending: "
            "this server neither receives nor signs mail for it. You may remove it once verified."
        ),
    )


def dmarc_value(rua: str = "") -> str:
    """The DMARC policy we suggest; with `rua`, aggregate reports go there."""
    return f"{DMARC_VALUE} rua=mailto:{rua};" if rua else DMARC_VALUE


def build_records(
    domain: str,
    server: ServerIdentity,
    dkim_public_key: str = "",
    *,
    receives_mail: bool = True,
    verify_token: str = "",
    dkim_selector: str = DKIM_SELECTOR,
    dkim_next: tuple[str, str] | None = None,
    dkim_old: tuple[str, str] | None = None,
    dmarc_rua: str = "",
    services=SERVICES,
    mta_sts_mode: str = mta_sts.TESTING,
    tlsrpt_rua: str = "",
    webmail_name: str = "SnappyMail",
) -> list[Record]:
    """The records for `domain` (IDNA). `dkim_public_key` is the base64 p= value
    ("" when DKIM is off) published under `dkim_selector`. A send-only domain
    (receives_mail=False, mail hosted elsewhere) keeps SPF/DKIM/DMARC but must
    not point MX here. `verify_token` (a pending domain's) adds the ownership
    record first. During a DKIM rotation `dkim_next` (the key that will sign
    once its record is seen) and `dkim_old` (the key that signed before, kept
    for mail still on its way) are (selector, p= value). `dmarc_rua`: the
    address aggregate reports go to. `services`: what client_records
    publishes for a domain that receives mail here. `webmail_name`: the
    webmail the server serves (ServerSettings.webmail), named in a label only."""
    domain = domain.lower().rstrip(".")
    mail_host = mx_host(domain)
    records = [ownership_record(domain, verify_token)] if verify_token else []
    if server.ipv4:
        records.append(
            Record(
                mail_host,
                "A",
                server.ipv4,
                "mail_a",
                REQUIRED if receives_mail else OPTIONAL,
                _("The mail server's address. Must not be proxied (no orange cloud)."),
            )
        )
    if server.ipv6:
        records.append(
            Record(
                mail_host,
                "AAAA",
                server.ipv6,
                "mail_aaaa",
                RECOMMENDED if receives_mail else OPTIONAL,
                _("The mail server's IPv6 address. Must not be proxied."),
            )
        )
    if server.ipv4:
        records.append(
            Record(
                f"webmail.{domain}",
                "A",
                server.ipv4,
                "webmail_a",
                RECOMMENDED,
                _("Webmail (%(app)s) at webmail.<domain>. Must not be proxied.") % {"app": webmail_name},
            )
        )
    if receives_mail:
        records.append(
            Record(
                domain,
                "MX",
                f"{MX_PREFERENCE} {mail_host}.",
                "mx",
                REQUIRED,
                _("Where other servers deliver mail for this domain."),
            )
        )
    records.append(
        Record(
            domain,
            "TXT",
            spf_value(server),
            "spf",
            REQUIRED,
            _("SPF: authorises this server to send mail for the domain."),
        )
    )
    records.append(
        Record(
            f"_domainkey.{domain}",
            "TXT",
            DOMAINKEYS_POLICY,
            "domainkeys_policy",
            OPTIONAL,
            _("Legacy DomainKeys policy; harmless, not needed by current receivers."),
        )
    )
    def dkim_record(selector, public_key, purpose, level, explanation):
        name = f"{selector}._domainkey.{domain}"
        records.append(Record(name, "TXT", dkim_value(public_key), purpose, level, explanation))

    if dkim_public_key:
        dkim_record(
            dkim_selector, dkim_public_key, "dkim", REQUIRED,
            _("DKIM public key (selector %(selector)s): receivers verify this server's signatures with it.")
            % {"selector": dkim_selector},
        )
    if dkim_next:
        dkim_record(
            *dkim_next, "dkim_next", REQUIRED,
            _(
                "The next DKIM key (selector %(selector)s): publish it beside the current one. "
                "The server signs with it once the check finds it."
            ) % {"selector": dkim_next[0]},
        )
    if dkim_old:
        dkim_record(
            *dkim_old, "dkim_old", RECOMMENDED,
            _(
                "The previous DKIM key (selector %(selector)s): keep it published for mail signed "
                "with it that is still on its way, until the DKIM section says it can go."
            ) % {"selector": dkim_old[0]},
        )
    records.append(
        Record(
            f"_dmarc.{domain}",
            "TXT",
            dmarc_value(dmarc_rua),
            "dmarc",
            RECOMMENDED,
            _("DMARC: tells receivers to quarantine mail that fails SPF and DKIM alignment.")
            + (" " + _("Their daily reports go to %(address)s.") % {"address": dmarc_rua} if dmarc_rua else ""),
        )
    )
    if receives_mail:
        records.extend(mta_sts_records(domain, server, mta_sts_mode, tlsrpt_rua))
        records.extend(client_records(domain, server, services))
    return records


def mx_host(domain: str) -> str:
    """The MX target this list suggests for a domain that receives mail here."""
    return f"mail.{domain.lower().rstrip('.')}"


def mta_sts_policy(domain: str, mode: str) -> str:
    """The MTA-STS policy text served for the domain (views/mta_sts.py) and
    hashed into its _mta-sts record: one mx line, the MX suggested above."""
    return mta_sts.policy_text(mode, (mx_host(domain),))


def mta_sts_records(domain: str, server: ServerIdentity, mode: str, tlsrpt_rua: str) -> list[Record]:
    """MTA-STS (RFC 8461): mta-sts.<domain> where the policy is served, the
    _mta-sts record whose id follows the policy's text (the mx line is the MX
    this list suggests); TLS-RPT (RFC 8460): where senders report TLS
    failures."""
    records = []
    for rtype, address in (("A", server.ipv4), ("AAAA", server.ipv6)):
        if address:
            records.append(
                Record(
                    f"{mta_sts.MTA_STS_LABEL}.{domain}",
                    rtype,
                    address,
                    f"mta_sts_{rtype.lower()}",
                    OPTIONAL,
                    _("Where senders fetch the MTA-STS policy (HTTPS). Must not be proxied."),
                )
            )
    policy, mail_host = mta_sts_policy(domain, mode), mx_host(domain)
    if mode == mta_sts.ENFORCE:
        explanation = _(
            "MTA-STS, enforce: senders deliver only over TLS to %(mx)s with a valid certificate for that name."
        ) % {"mx": mail_host}
    else:
        explanation = _(
            "MTA-STS, testing: senders report TLS problems with %(mx)s but deliver anyway. "
            "The id changes whenever the policy does."
        ) % {"mx": mail_host}
    records.append(Record(f"_mta-sts.{domain}", "TXT", mta_sts.sts_record_value(policy), "mta_sts", OPTIONAL,
                          explanation))
    if tlsrpt_rua:
        records.append(
            Record(
                f"_smtp._tls.{domain}",
                "TXT",
                mta_sts.tlsrpt_record_value(tlsrpt_rua),
                "tlsrpt",
                OPTIONAL,
                _("TLS-RPT: daily reports of TLS failures delivering to this domain go to %(address)s.")
                % {"address": tlsrpt_rua},
            )
        )
    return records
