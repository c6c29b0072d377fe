"""Renderers: pure functions snapshot + layout → {production path: FileSpec}.

To add a renderer (SnappyMail, firewall, …) append it to RENDERERS; a path
rendered by two renderers is a bug and raises.
"""

from __future__ import annotations

from collections.abc import Callable

from ..snapshot import FileSpec, Layout, Snapshot
from .dovecot import render_dovecot
from .exim import render_exim
from .firewall import render_firewall
from .snappymail import render_snappymail

Renderer = Callable[[Snapshot, Layout], dict[str, FileSpec]]

RENDERERS: list[Renderer] = [render_exim, render_dovecot, render_firewall, render_snappymail]


def render_all(snapshot: Snapshot, layout: Layout) -> dict[str, FileSpec]:
    merged: dict[str, FileSpec] = {}
    for renderer in RENDERERS:
        for path, spec in renderer(snapshot, layout).items():
            if path in merged:
                raise ValueError(f"{path} rendered twice ({renderer.__name__})")
            merged[path] = spec
    return dict(sorted(merged.items()))
