"""Client-side checks of `make test-install`, run in the box's network namespace
(tests/testbox.py starts this file with nsenter -n): everything here talks to
the box's own loopback, as a mail client or a browser would.

    python box_checks.py CHECK '{"json": "arguments"}'   (passwords in BOX_PASSWORD*)

Standard library only. Exit 0 and a JSON line on success; exit 1 with the
reason otherwise. Certificates are verified against the box's certificate
(--cafile) for the box's host name, not waved through.
"""

from __future__ import annotations

import email.message
import http.client
import imaplib
import json
import os
import re
import smtplib
import socket
import ssl
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from managesieve import ManageSieve  # noqa: E402  (a script: its own folder)

LOOPBACK = "127.0.0.1"


def tls_context(args) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=args["cafile"])


class IMAPS(imaplib.IMAP4_SSL):
    """IMAPS to the box's loopback, the certificate checked for its host name."""

    def __init__(self, args):
        self.sni = args["hostname"]
        super().__init__(LOOPBACK, 993, ssl_context=tls_context(args), timeout=30)

    def _create_socket(self, timeout):
        sock = socket.create_connection((self.host, self.port), timeout)
        return self.ssl_context.wrap_socket(sock, server_hostname=self.sni)


def message(args) -> bytes:
    msg = email.message.EmailMessage()
    msg["From"] = args["from"]
    msg["To"] = args["to"]
    msg["Subject"] = args["subject"]
    msg["Message-ID"] = f"<{time.time_ns()}@box-checks.example.test>"
    body = "hello from the box checks\n"
    if args.get("size_kb"):
        body += ("y" * 76 + "\n") * (args["size_kb"] * 1024 // 77)
    msg.set_content(body)
    return msg.as_bytes()


def smtp_send(args) -> dict:
    """Port 25 without AUTH, or submission (587) with STARTTLS then AUTH."""
    with smtplib.SMTP(LOOPBACK, args["port"], local_hostname="client.example.test", timeout=60) as smtp:
        smtp.ehlo()
        if args.get("user"):
            if "AUTH" in smtp.esmtp_features:
                raise AssertionError("AUTH offered before STARTTLS on the submission port")
            smtp._host = args["hostname"]  # the name STARTTLS checks the certificate for
            smtp.starttls(context=tls_context(args))
            smtp.ehlo()
            smtp.login(args["user"], os.environ["BOX_PASSWORD"])
        refused = smtp.sendmail(args["from"], [args["to"]], message(args))
    return {"refused": refused}


def imap_wait(args) -> dict:
    """Log in over IMAPS 993 (certificate checked) and wait for a subject."""
    deadline = time.monotonic() + args.get("timeout", 60)
    folder = args.get("folder", "INBOX")
    while True:
        with IMAPS(args) as imap:
            imap.login(args["user"], os.environ["BOX_PASSWORD"])
            status, _ = imap.select(f'"{folder}"', readonly=True)
            if status == "OK":
                status, data = imap.search(None, "SUBJECT", f'"{args["subject"]}"')
                numbers = data[0].split() if status == "OK" and data and data[0] else []
                if numbers:
                    _, fetched = imap.fetch(numbers[-1], "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
                    return {"folder": folder, "count": len(numbers), "header": fetched[0][1].decode().strip()}
        if time.monotonic() > deadline:
            raise AssertionError(f"no message with subject {args['subject']!r} in {folder} of {args['user']}")
        time.sleep(1)


def imap_login_fails(args) -> dict:
    with IMAPS(args) as imap:
        try:
            imap.login(args["user"], os.environ["BOX_PASSWORD"])
        except imaplib.IMAP4.error as exc:
            return {"refused": str(exc)}
    raise AssertionError(f"{args['user']} logged in with a wrong password")


def sieve_put(args) -> dict:
    """Upload and activate a script over ManageSieve (4190) as the account."""
    client = ManageSieve(args.get("port", 4190), LOOPBACK)
    greeting = b"\n".join(client.greeting)
    assert b'"IMPLEMENTATION" "Dovecot Pigeonhole"' in greeting, greeting
    answer = client.authenticate(args["user"], os.environ["BOX_PASSWORD"])
    assert answer[-1].startswith(b"OK"), answer
    for line, literal in (('PUTSCRIPT "filters"', args["script"].encode()), ('SETACTIVE "filters"', None)):
        answer = client.command(line, literal)
        assert answer[-1].startswith(b"OK"), (line, answer)
    client.close()
    return {"greeting": greeting.decode()[:200]}


def https(args, method: str, path: str, body: bytes | None = None, headers=None):
    conn = http.client.HTTPSConnection(LOOPBACK, 443, context=tls_context(args), timeout=30)
    # SNI and certificate name are the box's host name, the socket goes to loopback
    conn.sock = tls_context(args).wrap_socket(
        socket.create_connection((LOOPBACK, 443), timeout=30), server_hostname=args["hostname"]
    )
    conn.request(method, path, body=body, headers={"Host": args["hostname"], **(headers or {})})
    response = conn.getresponse()
    return response, response.read()


def web_login(args) -> dict:
    """The login page through nginx over HTTPS, then a real login as the
    first admin (CSRF through the proxy, secure cookies)."""
    response, page = https(args, "GET", "/login/")
    assert response.status == 200, response.status
    text = page.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', text).group(1)
    cookies = "; ".join(c.split(";", 1)[0] for c in response.headers.get_all("Set-Cookie") or [])
    assert "Secure" in (response.headers.get("Set-Cookie") or ""), "cookies must be Secure behind TLS"
    form = urllib.parse.urlencode({"csrfmiddlewaretoken": token, "username": args["user"],
                                   "password": os.environ["BOX_PASSWORD"]}).encode()
    origin = f"https://{args['hostname']}"
    response, _ = https(args, "POST", "/login/", form, {
        "Content-Type": "application/x-www-form-urlencoded", "Cookie": cookies,
        "Origin": origin, "Referer": origin + "/login/"})
    assert response.status == 302, f"login answered {response.status}, not a redirect"
    session = "; ".join(c.split(";", 1)[0] for c in response.headers.get_all("Set-Cookie") or [])
    response, page = https(args, "GET", response.headers["Location"], headers={"Cookie": session})
    assert response.status == 200, response.status
    assert args["expect"] in page.decode(), f"{args['expect']!r} not on the page after login"
    return {"login_page": len(text), "after_login": len(page)}


def http_port_80(args) -> dict:
    conn = http.client.HTTPConnection(LOOPBACK, 80, timeout=30)
    conn.request("GET", "/login/?x=1", headers={"Host": args["hostname"]})
    response = conn.getresponse()
    response.read()
    assert response.status == 301, response.status
    assert response.headers["Location"] == f"https://{args['hostname']}/login/?x=1", response.headers["Location"]
    conn.request("GET", "/.well-known/acme-challenge/no-such-token", headers={"Host": args["hostname"]})
    challenge = conn.getresponse()
    challenge.read()
    assert challenge.status == 404, f"ACME challenge path answered {challenge.status}, must not redirect"
    return {"redirect": response.headers["Location"]}


def http_80(path: str, host: str):
    conn = http.client.HTTPConnection(LOOPBACK, 80, timeout=30)
    conn.request("GET", path, headers={"Host": host})
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


def client_autoconfig(args) -> dict:
    """Thunderbird's and Outlook's requests as they arrive: Host
    autoconfig.<domain> / autodiscover.<domain> through nginx to the panel,
    answered with the box's host name (the certificate's); plain-HTTP
    autoconfig redirected to the host name with the address kept."""
    import xml.etree.ElementTree as ET

    domain, address = args["domain"], "info@" + args["domain"]
    path = "/mail/config-v1.1.xml?emailaddress=" + urllib.parse.quote(address)
    response, body = https(args, "GET", path, headers={"Host": "autoconfig." + domain})
    assert response.status == 200, response.status
    provider = ET.fromstring(body).find("emailProvider")
    servers = [(e.findtext("hostname"), e.findtext("port"), e.findtext("socketType"))
               for e in provider if e.tag in ("incomingServer", "outgoingServer")]
    assert provider.get("id") == domain and servers[0] == (args["hostname"], "993", "SSL"), servers
    request = (
        '<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="http://schemas.microsoft.com/'
        'exchange/autodiscover/outlook/requestschema/2006"><Request><EMailAddress>' + address
        + "</EMailAddress><AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/"
        "outlook/responseschema/2006a</AcceptableResponseSchema></Request></Autodiscover>"
    ).encode()
    response, body = https(args, "POST", "/autodiscover/autodiscover.xml", request,
                           {"Host": "autodiscover." + domain, "Content-Type": "text/xml"})
    assert response.status == 200 and f"<LoginName>{address}</LoginName>".encode() in body, body[:300]
    assert f"<Server>{args['hostname']}</Server>".encode() in body
    redirect = http_80(path, "autoconfig." + domain)
    assert redirect.status == 301 and redirect.headers["Location"] == f"https://{args['hostname']}{path}"
    response, body = https(args, "GET", path)
    assert response.status == 200 and f'id="{domain}"'.encode() in body
    return {"autoconfig": len(body), "servers": servers}


def webmail(args) -> dict:
    """SnappyMail (the stand-in release the harness installed) at
    https://<host name>/webmail/ through its own PHP-FPM; its data/ and any
    other PHP file refused; http://webmail.<domain>/ sent there."""
    response, body = https(args, "GET", "/webmail/")
    assert response.status == 200 and args["expect"] in body.decode(), (response.status, body[:300])
    for path in ("/webmail/data/.htaccess", "/webmail/_include.php"):
        response, _ = https(args, "GET", path)
        assert response.status == 403, (path, response.status)
    redirect = http_80("/", "webmail." + args["domain"])
    assert redirect.status == 301 and redirect.headers["Location"] == f"https://{args['hostname']}/webmail/"
    return {"webmail": body.decode()[:100]}


def roundcube(args) -> dict:
    """Roundcube (Debian's package, `mail webmail set roundcube`) at
    https://<host name>/webmail/ through its own pool: the login form, a
    static file of its skin, and its plugins' config files and other PHP
    refused."""
    response, body = https(args, "GET", "/webmail/")
    text = body.decode(errors="replace")
    assert response.status == 200 and 'name="_user"' in text and "rcmloginuser" in text, (response.status, text[:300])
    response, _ = https(args, "GET", "/webmail/skins/elastic/images/favicon.ico")
    assert response.status == 200, response.status
    for path in ("/webmail/plugins/managesieve/config.inc.php", "/webmail/plugins/managesieve/managesieve.php",
                 "/webmail/plugins/managesieve/localization/en_US.inc"):
        response, _ = https(args, "GET", path)
        assert response.status == 403, (path, response.status)
    return {"roundcube": "login form"}


def pebble_root(args) -> str:
    """Pebble's root of this run (made at its start), from its management
    listener (whose own certificate is the box's self-signed one)."""
    context = ssl.create_default_context(cafile=args["pebble_listener_ca"])
    conn = http.client.HTTPSConnection(LOOPBACK, 15000, context=context, timeout=30)
    conn.request("GET", "/roots/0")
    response = conn.getresponse()
    body = response.read().decode()
    assert response.status == 200 and "BEGIN CERTIFICATE" in body, (response.status, body[:200])
    return body


def served_names(port: int, sni: str, context: ssl.SSLContext, starttls: str = "") -> list[str]:
    """Handshake on the box's loopback with this SNI, the chain verified
    against Pebble's root with hostname checking on; the leaf's DNS names."""
    sock = socket.create_connection((LOOPBACK, port), timeout=30)
    try:
        reader = sock.makefile("rb")
        if starttls == "smtp":
            assert reader.readline().startswith(b"220"), "no SMTP greeting"
            sock.sendall(b"EHLO client.example.test\r\n")
            while (line := reader.readline())[3:4] == b"-":
                pass
            sock.sendall(b"STARTTLS\r\n")
            assert reader.readline().startswith(b"220"), "STARTTLS refused"
        elif starttls == "sieve":
            while not (line := reader.readline()).startswith((b"OK", b"NO", b"BYE")):
                pass
            sock.sendall(b"STARTTLS\r\n")
            assert reader.readline().startswith(b"OK"), "ManageSieve STARTTLS refused"
        with context.wrap_socket(sock, server_hostname=sni) as tls:
            cert = tls.getpeercert()
            sock = None
            return sorted(value for kind, value in cert.get("subjectAltName", ()) if kind == "DNS")
    finally:
        if sock is not None:
            sock.close()


def https_name(args, context: ssl.SSLContext, name: str, path: str, headers=None):
    """GET https://<name><path> at the box's loopback: SNI, Host and the
    certificate check all for <name>."""
    conn = http.client.HTTPSConnection(LOOPBACK, 443, context=context, timeout=30)
    conn.sock = context.wrap_socket(socket.create_connection((LOOPBACK, 443), timeout=30), server_hostname=name)
    conn.request("GET", path, headers={"Host": name, **(headers or {})})
    response = conn.getresponse()
    return response, response.read()


def domain_certificate(args) -> dict:
    """A mail domain's own ACME certificate (Pebble in the box), chosen by
    SNI: Dovecot 2.4's local_name on 993 and 4190, Exim 4.98's $tls_in_sni
    on 25, 465 and 587, nginx for webmail./autoconfig./mta-sts.; the host
    name still gets the server's. Every chain verified against Pebble's
    root with hostname checking on."""
    import xml.etree.ElementTree as ET

    context = ssl.create_default_context(cadata=pebble_root(args))
    domain, host = args["domain"], args["hostname"]
    mail = "mail." + domain
    served = {}
    ports = ((993, ""), (4190, "sieve"), (25, "smtp"), (465, ""), (587, "smtp"))
    for port, starttls in ports:
        names = served_names(port, mail, context, starttls)
        assert mail in names and host not in names, (port, names)
        served[port] = names
        if port != 4190:  # the host name's own certificate on the same port
            names = served_names(port, host, context, starttls)
            assert host in names and mail not in names, (port, "host name", names)
    names = served_names(443, host, context)
    assert host in names, ("443 host name", names)
    response, body = https_name(args, context, "webmail." + domain, "/")
    assert response.status in (301, 302) and response.headers["Location"].endswith("/webmail/"), (
        response.status, response.headers.get("Location"))
    response, body = https_name(args, context, "webmail." + domain, "/webmail/")
    assert response.status == 200 and args["webmail_expect"] in body.decode(errors="replace"), (
        response.status, body[:300])
    address = "info@" + domain
    response, body = https_name(args, context, "autoconfig." + domain,
                                "/mail/config-v1.1.xml?emailaddress=" + urllib.parse.quote(address))
    assert response.status == 200, (response.status, body[:300])
    provider = ET.fromstring(body).find("emailProvider")
    servers = [(e.findtext("hostname"), e.findtext("port"), e.findtext("socketType"))
               for e in provider if e.tag in ("incomingServer", "outgoingServer")]
    assert provider.get("id") == domain, provider.get("id")
    assert (mail, "993", "SSL") in servers and all(s[0] == mail for s in servers), servers
    response, body = https_name(args, context, "mta-sts." + domain, "/.well-known/mta-sts.txt")
    policy = body.decode(errors="replace")
    assert response.status == 200 and response.headers["Content-Type"].startswith("text/plain"), (
        response.status, policy[:300])
    lines = policy.splitlines()
    assert lines[0] == "version: STSv1" and "mode: testing" in lines, lines
    assert any(line.startswith("mx: ") for line in lines) and any(line.startswith("max_age: ") for line in lines), lines
    return {"served": {str(port): names for port, names in served.items()}, "autoconfig": servers,
            "mta_sts": lines}


def sni_993(args) -> dict:
    """After a Dovecot restart: 993 still serves the domain's chain."""
    context = ssl.create_default_context(cadata=pebble_root(args))
    names = served_names(993, args["name"], context)
    assert args["name"] in names, names
    return {"993": names}


CHECKS = {
    "domain-certificate": domain_certificate,
    "sni-993": sni_993,
    "smtp-send": smtp_send,
    "imap-wait": imap_wait,
    "imap-login-fails": imap_login_fails,
    "sieve-put": sieve_put,
    "web-login": web_login,
    "http-port-80": http_port_80,
    "client-autoconfig": client_autoconfig,
    "webmail": webmail,
    "roundcube": roundcube,
}


def main(argv: list[str]) -> int:
    name, args = argv[1], json.loads(argv[2])
    try:
        result = CHECKS[name](args)
    except Exception as exc:  # one line for the harness, whatever went wrong
        print(f"{name}: {type(exc).__name__}: {exc}")
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
