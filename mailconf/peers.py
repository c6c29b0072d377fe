"""Root's list of the mail nodes this node copies mail to: /etc/mailpanel/mail-peers.json.

Written by root on each node (never by the panel), read by the helper: for the
``sync_mail`` op (where a peer's mail is) and, when it names other machines,
for the code files (Dovecot's doveadm listener, the firewall's opening for
it). Pure: bytes in, frozen data out; a ValueError that names the entry and
the field, never the value (hostile text stays out of logs).

    {"n1": {"this_node": true, "address": "192.0.2.1", "port": 24245},
     "n2": {"host": "mx2.example.net", "address": "192.0.2.2", "port": 24245},
     "n3": {"mail_root": "/var/mail/vhosts-b"}}

- ``this_node``: this node's own doveadm listener: bound to ``address`` (an
  IP literal of this machine), TLS with the node's certificate, the shared
  password from DOVEADM_PASSWORD_FILE. Required as soon as a peer is on
  another machine (every node may be a move's destination), at most one.
- ``host``/``address``/``port``: a peer on another machine. The mail copy
  runs ``doveadm sync -1 -u USER tcps:HOST:PORT`` (TLS; HOST must be a name
  in the peer's certificate: its host name, or an IPv4 literal); the firewall
  lets ``address`` (an IP literal) reach this node's listener.
- ``mail_root``: a peer on this same machine (a plain absolute path).

The password is one secret shared by every node (Dovecot's doveadm client
sends the ``doveadm_password`` of its own configuration, so a secret per node
would have to go on doveadm's command line, readable in /proc): root puts it
in DOVEADM_PASSWORD_FILE (root:root 0600) on each node, and dovecot.conf only
names the file (``doveadm_password = <FILE``).
"""

from __future__ import annotations

import ipaddress
import json
import posixpath
import re
from dataclasses import dataclass

MAIL_PEERS_FILE = "/etc/mailpanel/mail-peers.json"
DOVEADM_PASSWORD_FILE = "/etc/mailpanel/doveadm.password"
MAX_PEERS_BYTES = 64 * 1024
MAX_PEERS = 256
NODE_NAME_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?")
PEER_PATH_RE = re.compile(r"/(?:[A-Za-z0-9_.-]+/?)*")
HOST_NAME_RE = re.compile(r"(?=.{1,253}\Z)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
# base64 / base64url / hex: 32 to 256 characters, one line (a trailing newline
# allowed: Dovecot's "<file" drops it). Nothing Dovecot's parser could read as
# syntax, and long enough to be a real secret.
PASSWORD_RE = re.compile(rb"[A-Za-z0-9+/=_-]{32,256}\n?")


@dataclass(frozen=True)
class LocalPeer:
    name: str
    mail_root: str


@dataclass(frozen=True)
class RemotePeer:
    name: str
    host: str
    address: str
    port: int

    @property
    def destination(self) -> str:
        """doveadm's destination: TLS to the peer's listener."""
        return f"tcps:{self.host}:{self.port}"


@dataclass(frozen=True)
class Listener:
    """This node's doveadm listener and who may reach it."""

    address: str
    port: int
    peer_addresses: tuple[str, ...]  # sorted, unique


@dataclass(frozen=True)
class MailPeers:
    peers: tuple[LocalPeer | RemotePeer, ...] = ()
    listener: Listener | None = None  # set exactly when a peer is remote

    def get(self, name: str) -> LocalPeer | RemotePeer | None:
        return next((p for p in self.peers if p.name == name), None)


NO_PEERS = MailPeers()


def _ip(value: object, what: str) -> str:
    if not isinstance(value, str) or "%" in value:
        raise ValueError(f"{what} must be an IP address")
    try:
        canonical = str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"{what} must be an IP address") from None
    if canonical != value:
        raise ValueError(f"{what} must be an IP address in its canonical form")
    return canonical


def _port(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise ValueError(f"{what} must be a port number, 1 to 65535")
    return value


def _host(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a host name or an IPv4 address")
    try:
        if isinstance(ipaddress.ip_address(value), ipaddress.IPv4Address) and value == _ip(value, what):
            return value
    except ValueError:
        pass
    if not HOST_NAME_RE.fullmatch(value):
        raise ValueError(f"{what} must be a host name (lower case) or an IPv4 address")
    return value


def _exact(entry: dict, keys: set[str], what: str) -> None:
    if set(entry) != keys:
        raise ValueError(f"{what}: expected exactly the keys {', '.join(sorted(keys))}")


def parse_mail_peers(content: bytes) -> MailPeers:
    """Parse root's peers file; ValueError (never quoting a value)."""
    if len(content) > MAX_PEERS_BYTES:
        raise ValueError("too large")
    try:
        data = json.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ValueError("not a JSON object") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    if len(data) > MAX_PEERS:
        raise ValueError(f"more than {MAX_PEERS} entries")
    peers, listener = [], None
    for name in sorted(data):
        entry = data[name]
        if not isinstance(name, str) or not NODE_NAME_RE.fullmatch(name):
            raise ValueError("an entry's name is not a node name")
        what = f"peer {name}"
        if not isinstance(entry, dict):
            raise ValueError(f"{what}: not an object")
        if "mail_root" in entry:
            _exact(entry, {"mail_root"}, what)
            root = entry["mail_root"]
            if (not isinstance(root, str) or not PEER_PATH_RE.fullmatch(root)
                    or posixpath.normpath(root) != root or root == "/"):
                raise ValueError(f"{what}: mail_root must be a plain absolute path")
            peers.append(LocalPeer(name, root))
        elif "this_node" in entry:
            _exact(entry, {"this_node", "address", "port"}, what)
            if entry["this_node"] is not True:
                raise ValueError(f"{what}: this_node must be true")
            if listener is not None:
                raise ValueError("more than one entry is this_node")
            listener = (_ip(entry["address"], f"{what}: address"), _port(entry["port"], f"{what}: port"))
        else:
            _exact(entry, {"host", "address", "port"}, what)
            peers.append(RemotePeer(name, _host(entry["host"], f"{what}: host"),
                                    _ip(entry["address"], f"{what}: address"),
                                    _port(entry["port"], f"{what}: port")))
    remote = sorted({p.address for p in peers if isinstance(p, RemotePeer)})
    if remote and listener is None:
        raise ValueError("peers on other machines need this node's own entry (this_node)")
    if listener is not None and not remote:
        raise ValueError("this_node without a peer on another machine")
    return MailPeers(tuple(peers), Listener(*listener, tuple(remote)) if listener else None)


def check_password(content: bytes) -> None:
    """The shared doveadm password file's grammar (ValueError, never quoting)."""
    if not PASSWORD_RE.fullmatch(content):
        raise ValueError(f"{DOVEADM_PASSWORD_FILE} must hold one line of 32 to 256 characters "
                         "from A-Z a-z 0-9 + / = _ -")
