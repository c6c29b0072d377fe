"""Pebble, Let's Encrypt's test ACME CA (Debian package `pebble`), on loopback.

The recipe of /work/shared/NOTES-debian-box.md: its own HTTPS certificate made
here, names resolved through a DNS server on 127.0.0.1 (tests/dnsserver.py,
`-dnsserver`), HTTP-01 validated on `httpPort` where a small HTTP server
serves the panel's webroot (what nginx serves on port 80 in production).
PEBBLE_VA_NOSLEEP=1; PEBBLE_VA_ALWAYS_VALID unset: every challenge is really
fetched. No Django here.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

from tests.dnsserver import DnsServer
from tests.mailstack import free_port

PEBBLE = shutil.which("pebble")


class Webroot:
    """Serves <folder>/.well-known/acme-challenge/ on 127.0.0.1:port."""

    def __init__(self, folder: Path, port: int):
        self.folder, self.port = folder, port
        self.server = None

    def start(self) -> "Webroot":
        handler = functools.partial(_QuietHandler, directory=str(self.folder))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self):
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


class Pebble:
    def __init__(self, folder: Path, dns: DnsServer, webroot: Path):
        self.folder, self.dns, self.webroot_dir = folder, dns, webroot
        self.port, self.management_port, self.http_port = free_port(), free_port(), free_port()
        self.process = None
        self.webroot = Webroot(webroot, self.http_port)

    @property
    def directory(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"

    @property
    def ca_bundle(self) -> str:
        """Verifies Pebble's own HTTPS listener (not what it issues)."""
        return str(self.folder / "cert.pem")

    def start(self) -> "Pebble":
        self.folder.mkdir(parents=True, exist_ok=True)
        self.webroot_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
             "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
             "-keyout", str(self.folder / "key.pem"), "-out", str(self.folder / "cert.pem")],
            check=True, capture_output=True, timeout=60,
        )
        config = {"pebble": {
            "listenAddress": f"127.0.0.1:{self.port}",
            "managementListenAddress": f"127.0.0.1:{self.management_port}",
            "certificate": str(self.folder / "cert.pem"), "privateKey": str(self.folder / "key.pem"),
            "httpPort": self.http_port, "tlsPort": free_port(),
            "ocspResponderURL": "", "externalAccountBindingRequired": False,
        }}
        (self.folder / "pebble.json").write_text(json.dumps(config))
        env = {k: v for k, v in os.environ.items() if k != "PEBBLE_VA_ALWAYS_VALID"}
        env.update(PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0", PEBBLE_AUTHZREUSE="0")
        self.log = open(self.folder / "pebble.log", "wb")
        self.process = subprocess.Popen(
            [PEBBLE, "-config", str(self.folder / "pebble.json"), "-dnsserver", self.dns.address],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=self.folder,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("pebble did not start: " + (self.folder / "pebble.log").read_text()[-2000:])
                time.sleep(0.1)
        self.webroot.start()
        return self

    def root_pem(self) -> str:
        """The root that signs what Pebble issues (made fresh at each start)."""
        context = ssl.create_default_context(cafile=self.ca_bundle)
        with urllib.request.urlopen(f"https://127.0.0.1:{self.management_port}/roots/0", context=context,
                                    timeout=10) as answer:
            return answer.read().decode("ascii")

    def stop(self):
        self.webroot.stop()
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
            self.log.close()


def serve_tls_once(fullchain: Path, privkey: Path):
    """A TLS listener on 127.0.0.1 presenting this chain: (port, stop)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(fullchain), str(privkey))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(10)

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            try:
                with context.wrap_socket(conn, server_side=True) as tls_conn:
                    tls_conn.recv(1)
            except (OSError, ssl.SSLError):
                pass

    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()[1], listener.close


def verified_names(port: int, names, root_pem: str) -> dict:
    """{name: issuer CN or the ssl error} for a handshake per name with
    hostname checking on, trusting only root_pem."""
    results = {}
    for name in names:
        context = ssl.create_default_context(cadata=root_pem)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                with context.wrap_socket(raw, server_hostname=name) as conn:
                    issuer = dict(x[0] for x in conn.getpeercert()["issuer"])
                    results[name] = issuer.get("commonName", "")
        except (OSError, ssl.SSLError) as exc:
            results[name] = f"error: {exc}"
    return results
