"""The panel's own nftables table: /etc/nftables.d/mailpanel.nft.

A table of our own (`inet mailpanel`) so the admin's ruleset stays theirs. The
file first declares and deletes the table, then defines it: loading it again
(`nft -f`, the helper's firewall reload) replaces our rules instead of piling up
copies, and never touches another table.

In nftables an accept only ends one base chain; a drop anywhere is final. So:
- external ManageSieve on: TCP <sieve port> is accepted here (a host firewall
  with a default-drop policy still needs its own rule; the page says so);
- off: TCP <sieve port> from anything but loopback is dropped here, which
  closes it whatever the other tables say. SnappyMail talks to Dovecot over
  localhost and keeps working.
- with mail peers on other machines (root's mail-peers.json, mailconf/peers.py):
  Dovecot's doveadm port accepts the peers' addresses and drops the rest.

Pure: same parameters, same bytes.
"""

from __future__ import annotations

import ipaddress

from ..params import CodeParams
from ..peers import NO_PEERS, MailPeers
from ..snapshot import FileSpec, Layout

FIREWALL_RULES = "/etc/nftables.d/mailpanel.nft"
TABLE = "inet mailpanel"


def render_firewall_rules(params: CodeParams, layout: Layout, peers: MailPeers = NO_PEERS) -> bytes:
    port = int(layout.sieve_port)
    if not 0 < port < 65536:
        raise ValueError(f"invalid sieve port: {port!r}")
    external = params.sieve_enabled and params.sieve_external
    if external:
        rules = [
            f'tcp dport {port} accept comment "ManageSieve for external mail clients"',
        ]
    else:
        rules = [
            'iifname "lo" accept',
            f'tcp dport {port} drop comment "ManageSieve: local clients only"',
        ]
    rules += _doveadm_rules(peers)
    lines = [
        "#!/usr/sbin/nft -f",
        "# Written by mailpanel; changes here are replaced on the next apply.",
        f"table {TABLE}",
        f"delete table {TABLE}",
        "",
        f"table {TABLE} {{",
        "\tchain input {",
        "\t\ttype filter hook input priority filter - 1; policy accept;",
        *[f"\t\t{rule}" for rule in rules],
        "\t}",
        "}",
        "",
    ]
    return "\n".join(lines).encode("ascii")


def _doveadm_rules(peers: MailPeers) -> list[str]:
    """Dovecot's doveadm listener (mail copies between nodes): the peers'
    addresses only; everyone else is dropped (a drop is final)."""
    listener = peers.listener
    if listener is None:
        return []
    port = int(listener.port)
    if not 0 < port < 65536:
        raise ValueError(f"invalid doveadm port: {port!r}")
    rules = []
    for family, version in (("ip", 4), ("ip6", 6)):
        addresses = [str(a) for a in map(ipaddress.ip_address, listener.peer_addresses) if a.version == version]
        if addresses:
            rules.append(f'{family} saddr {{ {", ".join(addresses)} }} tcp dport {port} accept'
                         ' comment "doveadm: mail copies from the other mail nodes"')
    return rules + [f'tcp dport {port} drop comment "doveadm: other mail nodes only"']


def render_firewall(params: CodeParams, layout: Layout, peers: MailPeers = NO_PEERS) -> dict[str, FileSpec]:
    """The nftables table, a code file: the helper renders it itself."""
    return {
        FIREWALL_RULES: FileSpec(
            render_firewall_rules(params, layout, peers), "root", "root", 0o644, "firewall"
        )
    }
