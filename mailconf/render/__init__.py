"""Renderers: pure functions → {production path: FileSpec}.

Two kinds (see mailconf.managed): code files come from CodeParams and are
rendered by the helper itself; data files come from the snapshot and are sent
to the helper, which checks each against its grammar. ``render_all`` is both,
for the panel's diff and for ``mail config render``. A path rendered twice is a
bug and raises.
"""

from __future__ import annotations

from ..params import CodeParams, code_params
from ..peers import NO_PEERS, MailPeers
from ..snapshot import FileSpec, Layout, Snapshot
from ..tls import SniName
from .dovecot import render_dovecot
from .exim import render_exim_conf, render_exim_data
from .firewall import render_firewall
from .roundcube import render_roundcube
from .snappymail import render_snappymail_code, render_snappymail_data
from .tls_sites import render_tls_sites
from .webmail import render_webmail

CODE_RENDERERS = (
    render_exim_conf, render_dovecot, render_firewall, render_snappymail_code, render_webmail, render_tls_sites,
    render_roundcube,
)
# Code files that also depend on which names have a domain certificate (the
# SNI index's pairs, read by the helper: mailconf/tls.py).
SNI_RENDERERS = (render_dovecot, render_tls_sites)
# Code files that also depend on root's mail peers (mailconf/peers.py, read by
# the helper): Dovecot's doveadm listener and the firewall's opening for it.
PEER_RENDERERS = (render_dovecot, render_firewall)
DATA_RENDERERS = (render_exim_data, render_snappymail_data)


def render_code(params: CodeParams, layout: Layout, sni: tuple[SniName, ...] = (),
                peers: MailPeers = NO_PEERS) -> dict[str, FileSpec]:
    def one(renderer):
        args = (sni,) if renderer in SNI_RENDERERS else ()
        kwargs = {"peers": peers} if renderer in PEER_RENDERERS else {}
        return renderer(params, layout, *args, **kwargs)

    return _merge(one(renderer) for renderer in CODE_RENDERERS)


def render_data(snapshot: Snapshot, layout: Layout) -> dict[str, FileSpec]:
    return _merge(renderer(snapshot, layout) for renderer in DATA_RENDERERS)


def render_all(snapshot: Snapshot, layout: Layout, sni: tuple[SniName, ...] = (),
               peers: MailPeers = NO_PEERS) -> dict[str, FileSpec]:
    return _merge([render_code(code_params(snapshot), layout, sni, peers), render_data(snapshot, layout)])


def _merge(parts) -> dict[str, FileSpec]:
    merged: dict[str, FileSpec] = {}
    for files in parts:
        for path, spec in files.items():
            if path in merged:
                raise ValueError(f"{path} rendered twice")
            merged[path] = spec
    return dict(sorted(merged.items()))
