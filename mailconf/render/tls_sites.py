"""HTTPS for the web names of mail domains that have their own certificate.

One code file, /etc/nginx/conf.d/mailpanel-tls-sites.conf, rendered by the
helper from the SNI index's pairs (mailconf/tls.py; only names whose domain
certificate the helper loaded) and its own Layout:

- https://webmail.<d>/ — the webmail locations, the same include as the
  host name's server (install.sh), anything else sent to /webmail/;
- https://autoconfig.<d>/ — Thunderbird's two autoconfig paths, passed to
  the panel (its AutoconfigMiddleware answers by Host), nothing else;
- https://mta-sts.<d>/.well-known/mta-sts.txt — the MTA-STS policy, passed
  to the panel (views/mta_sts.py), nothing else;
- http:// of those names: ACME challenges from the installer's webroot (a
  renewal goes through here), everything else redirected to https.

Certificates by fixed paths (never nginx variables): nginx's master reads
them as root at reload, so the web server's workers (www-data, which also
runs the webmail's PHP) never need the private keys. A client naming any
other name gets the host name's default server.

Rendered only where the installer set nginx up (`layout.webmail_sites`) and
TLS is offered. Pure: same pairs, same bytes.
"""

from __future__ import annotations

import posixpath

from .. import tls
from .. import validate as v
from ..params import CodeParams
from ..snapshot import FileSpec, Layout
from ..tls import SniName
from .webmail import WEBMAIL_LOCATIONS, WEBMAIL_PATH

TLS_SITES = "/etc/nginx/conf.d/mailpanel-tls-sites.conf"
# Every webmail locations file in this folder (a glob that matches nothing
# is no error), as install.sh's host name server includes them.
WEBMAIL_SNIPPETS_DIR = posixpath.dirname(WEBMAIL_LOCATIONS)
WEBMAIL_SNIPPETS = "mailpanel-webmail*.conf"
AUTOCONFIG_PATHS = ("/mail/config-v1.1.xml", "/.well-known/autoconfig/mail/config-v1.1.xml")
MTA_STS_PATH = "/.well-known/mta-sts.txt"
WEB_PREFIXES = ("webmail.", "autoconfig.", "mta-sts.")
UPLOAD_MB = 25


def web_names(sni: tuple[SniName, ...]) -> tuple[SniName, ...]:
    """The pairs nginx serves: webmail., autoconfig. and mta-sts. of their
    domain (mail.<d> is Exim's and Dovecot's)."""
    return tuple(
        pair for pair in sorted({tls.check_pair(x) for x in sni})
        if any(pair.name == prefix + pair.domain for prefix in WEB_PREFIXES)
    )


def _listens(addresses, port: int, ssl: bool) -> list[str]:
    suffix = " ssl" if ssl else ""
    ips = [v.ip(ip, "listen address") for ip in addresses]
    if not ips:
        return [f"    listen {port}{suffix};", f"    listen [::]:{port}{suffix};"]
    return [f"    listen {f'[{ip}]' if ':' in ip else ip}:{port}{suffix};" for ip in ips]


def _upstream(layout: Layout) -> str:
    """http://<ip>:<port> of the panel; an address and a port, nothing else."""
    host, _sep, port = layout.panel_upstream.rpartition(":")
    host = v.ip(host.removeprefix("[").removesuffix("]"), "panel upstream")
    if not port.isascii() or not port.isdigit():
        raise ValueError(f"invalid panel upstream: {layout.panel_upstream!r}")
    port_number = v.port(int(port), "panel upstream port")
    return f"http://{f'[{host}]' if ':' in host else host}:{port_number}"


def _proxy(path: str, name: str, upstream: str) -> list[str]:
    # The Host is the name this server block answers (from root's index),
    # never the request's.
    return [
        f"    location = {path} {{",
        f"        proxy_pass {upstream};",
        f"        proxy_set_header Host {name};",
        "        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "        proxy_set_header X-Forwarded-Proto https;",
        "    }",
    ]


def render_sites(layout: Layout, sni: tuple[SniName, ...]) -> bytes:
    pairs = web_names(sni)
    acme = v.path(layout.path(layout.acme_webroot), "ACME webroot")
    upstream = _upstream(layout)
    http = _listens(layout.http_listen, v.port(layout.http_port, "HTTP port"), False)
    https = _listens(layout.https_listen, v.port(layout.https_port, "HTTPS port"), True)
    snippets = v.path(layout.path(WEBMAIL_SNIPPETS_DIR), "webmail snippets folder") + "/" + WEBMAIL_SNIPPETS
    lines = [
        "# Written by mailpanel: the web names of mail domains with their own certificate.",
        "# Changes here are replaced on the next apply.",
        "server {",
        *http,
        f"    server_name {' '.join(p.name for p in pairs)};",
        f"    location /.well-known/acme-challenge/ {{ root {acme}; }}",
        # $host is one of the exact names above: nginx matched it.
        "    location / { return 301 https://$host$request_uri; }",
        "}",
    ]
    for pair in pairs:
        cert, key = (v.path(layout.path(path), "TLS certificate") for path in tls.domain_cert_paths(pair.domain))
        lines += [
            "server {",
            *https,
            f"    server_name {pair.name};",
            f"    ssl_certificate {cert};",
            f"    ssl_certificate_key {key};",
            "    ssl_protocols TLSv1.2 TLSv1.3;",
            f"    location /.well-known/acme-challenge/ {{ root {acme}; }}",
        ]
        prefix = pair.name[: -len(pair.domain)]
        if prefix == "webmail.":
            lines += [
                f"    client_max_body_size {UPLOAD_MB + 1}m;",
                f"    include {snippets};",
                f"    location / {{ return 302 {WEBMAIL_PATH}; }}",
            ]
        elif prefix == "autoconfig.":
            for path in AUTOCONFIG_PATHS:
                lines += _proxy(path, pair.name, upstream)
            lines.append("    location / { return 404; }")
        else:
            lines += _proxy(MTA_STS_PATH, pair.name, upstream)
            lines.append("    location / { return 404; }")
        lines.append("}")
    lines.append("")
    return "\n".join(lines).encode("ascii")


def render_tls_sites(params: CodeParams, layout: Layout, sni: tuple[SniName, ...] = ()) -> dict[str, FileSpec]:
    if not layout.webmail_sites or not tls.offers_tls(layout) or not web_names(sni):
        return {}
    return {TLS_SITES: FileSpec(render_sites(layout, sni), "root", "root", 0o644, "nginx")}
