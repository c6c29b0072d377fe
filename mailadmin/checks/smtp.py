"""The one SMTP client: every conversation the panel has with a mail server —
the relay check ("Test relay", checks.relay), the panel's test mail
(services.panel_smtp) and the outbound port 25 check (SPEC §4.1) — goes
through Session. No ORM.

One deadline covers the whole conversation, the name lookup included. Every
step is recorded (what we sent, what the server answered), with the secrets
replaced in both: neither a password nor its base64 (nor the base64 of a
PLAIN token) ever appears in a transcript, even if a server echoes it back.

Raw sockets rather than smtplib: smtplib encodes credentials as ASCII (a
Unicode password would fail here but work in Exim), always sends LOGIN with
an initial response, which Exim never does, and hides the answers a
transcript must show."""

from __future__ import annotations

import base64
import concurrent.futures
import socket
import ssl
import time
from dataclasses import asdict, dataclass

from django.utils.translation import gettext as _

MAX_REPLY_BYTES = 64 * 1024
HIDDEN = "********"


@dataclass(frozen=True)
class Step:
    action: str  # what we did: "connect", "EHLO", "STARTTLS", "AUTH PLAIN", …
    sent: str  # the command line as shown (credentials replaced)
    reply: str  # the server's answer, or what went wrong
    ok: bool


class Refused(Exception):
    """The server answered, but not what the conversation needs."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def secret_forms(username: str, password: str) -> tuple[str, ...]:
    """A password as it could appear on the wire: raw, base64, PLAIN token."""
    if not password:
        return ()
    pw, user = password.encode("utf-8"), username.encode("utf-8")
    return (
        password,
        base64.b64encode(pw).decode(),
        base64.b64encode(b"\0" + user + b"\0" + pw).decode(),
        base64.b64encode(user + b"\0" + pw).decode(),
    )


class Session:
    """One conversation with host:port. `addresses` (already checked by
    checks.targets) replaces the name lookup; TLS still verifies the
    certificate against `host`."""

    def __init__(self, host: str, port: int, *, timeout: float, addresses=None, secrets=()):
        self.host, self.port = host, port
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.addresses = addresses
        self.secrets = tuple(sorted((s for s in secrets if s), key=len, reverse=True))
        self.sock: socket.socket | None = None
        self.buffer = b""
        self.steps: list[Step] = []
        self.pending = "connect"  # the step in progress, for a timeout's report

    # -- plumbing --------------------------------------------------------
    def remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("deadline")
        return left

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, HIDDEN)
        return text

    def step(self, action: str, sent: str, reply: str, ok: bool) -> None:
        self.steps.append(Step(action, self.redact(sent), self.redact(reply), ok))

    def send(self, line: bytes) -> None:
        self.sock.settimeout(self.remaining())
        self.sock.sendall(line + b"\r\n")

    def read_reply(self) -> tuple[int, str]:
        """One (possibly multi-line) reply: its code and its lines."""
        lines = []
        while True:
            while b"\n" not in self.buffer:
                if len(self.buffer) > MAX_REPLY_BYTES:
                    raise Refused(_("The server sent an overlong answer."))
                self.sock.settimeout(self.remaining())
                chunk = self.sock.recv(4096)
                if not chunk:
                    raise ConnectionResetError(_("the server closed the connection"))
                self.buffer += chunk
            raw, self.buffer = self.buffer.split(b"\n", 1)
            line = raw.rstrip(b"\r").decode("utf-8", "replace")
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                break
        try:
            code = int(lines[-1][:3])
        except ValueError:
            raise Refused(_("The server does not speak SMTP."))
        return code, "\n".join(lines)

    def command(self, action: str, line: str, shown: str | None = None) -> tuple[int, str]:
        self.pending = action
        self.send(line.encode("utf-8"))
        code, text = self.read_reply()
        self.step(action, line if shown is None else shown, text, code < 400)
        return code, text

    # -- the conversation's parts -------------------------------------------
    def connect(self) -> None:
        """create_connection, with the name lookup inside the deadline too
        (getaddrinfo itself has no timeout)."""
        if self.addresses is not None:
            addresses = [
                (socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM, 0, "", (ip, self.port))
                for ip in self.addresses
            ]
        else:
            addresses = self._getaddrinfo()
        error: OSError | None = None
        for family, kind, proto, _name, address in addresses:
            sock = socket.socket(family, kind, proto)
            try:
                sock.settimeout(self.remaining())
                sock.connect(address)
            except OSError as exc:
                sock.close()
                if isinstance(exc, (socket.timeout, TimeoutError)):
                    raise
                error = exc
                continue
            self.sock = sock
            self.step("connect", self.target, _("connected"), True)
            return
        raise error or OSError("no address")

    @property
    def target(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def _getaddrinfo(self) -> list:
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        try:
            future = pool.submit(socket.getaddrinfo, self.host, self.port, 0, socket.SOCK_STREAM)
            try:
                return future.result(timeout=self.remaining())
            except concurrent.futures.TimeoutError:
                raise socket.timeout("name lookup") from None
        finally:
            pool.shutdown(wait=False)

    def start_tls(self, context: ssl.SSLContext, server_name: str | None = None) -> None:
        """The TLS handshake on the open connection (implicit TLS, or after
        STARTTLS); the certificate is checked against the host name (or
        server_name, also sent as SNI)."""
        self.pending = "TLS"
        self.sock.settimeout(self.remaining())
        self.sock = context.wrap_socket(self.sock, server_hostname=server_name or self.host)
        self.buffer = b""
        cert = self.sock.getpeercert() or {}
        subject = ", ".join("=".join(part) for rdn in cert.get("subject", ()) for part in rdn)
        self.step(
            "TLS", "", _("%(version)s, certificate verified (%(subject)s)") % {"version": self.sock.version(), "subject": subject}, True
        )

    def greeting(self) -> tuple[int, str]:
        self.pending = "greeting"
        code, text = self.read_reply()
        self.step("greeting", "", text, code == 220)
        return code, text

    def ehlo(self, helo: str) -> list[str]:
        """The server's extensions; Refused unless it says 250."""
        code, text = self.command("EHLO", f"EHLO {helo}")
        if code != 250:
            raise Refused(_("The server refused EHLO (it answered %(code)s).") % {"code": code})
        return [line[4:] for line in text.splitlines()[1:]]

    def authenticate(self, mechanism: str, username: str, password: str) -> tuple[int, str]:
        """AUTH PLAIN (initial response, or after a 334) or AUTH LOGIN (never
        with an initial response, as Exim does it); the final answer."""
        user, pw = username.encode("utf-8"), password.encode("utf-8")
        hidden = _("(password hidden)")
        if mechanism == "PLAIN":
            token = base64.b64encode(b"\0" + user + b"\0" + pw).decode()
            code, text = self.command("AUTH PLAIN", f"AUTH PLAIN {token}", f"AUTH PLAIN {hidden}")
            if code == 334:  # a server without initial-response support
                code, text = self.command("AUTH PLAIN", token, hidden)
            return code, text
        code, text = self.command("AUTH LOGIN", "AUTH LOGIN")
        if code != 334:
            return code, text
        code, text = self.command("AUTH LOGIN", base64.b64encode(user).decode(), _("(user name %(user)s)") % {"user": username})
        if code != 334:
            return code, text
        return self.command("AUTH LOGIN", base64.b64encode(pw).decode(), hidden)

    def data(self, message: bytes) -> tuple[int, str]:
        """DATA, the message dot-stuffed (RFC 5321 §4.5.2), the final dot."""
        code, text = self.command("DATA", "DATA")
        if code != 354:
            return code, text
        lines = message.replace(b"\r\n", b"\n").split(b"\n")
        body = b"\r\n".join(b"." + line if line.startswith(b".") else line for line in lines)
        self.pending = "DATA"
        self.sock.settimeout(self.remaining())
        self.sock.sendall(body + (b"" if body.endswith(b"\r\n") else b"\r\n") + b".\r\n")
        code, text = self.read_reply()
        self.step("DATA", _("(the message, %(bytes)s bytes)") % {"bytes": len(message)}, text, code == 250)
        return code, text

    def quit(self) -> None:
        """Polite but optional: a server that hangs up first is fine."""
        try:
            self.command("QUIT", "QUIT")
        except (OSError, Refused):
            pass

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass

    def failed(self, exc: BaseException) -> str:
        """What went wrong with the network or TLS, recorded as the pending
        step and said in one line."""
        if isinstance(exc, (socket.timeout, TimeoutError)):
            reason = _("no answer within %(seconds)s s") % {"seconds": f"{self.timeout:g}"}
        elif isinstance(exc, ssl.SSLCertVerificationError):
            reason = _("TLS certificate not trusted: %(reason)s") % {"reason": exc.verify_message or exc.reason}
        elif isinstance(exc, ssl.SSLError):
            reason = _("TLS failed: %(reason)s") % {"reason": exc.reason or exc}
        elif isinstance(exc, ConnectionRefusedError):
            reason = _("connection refused")
        elif isinstance(exc, socket.gaierror):
            reason = _("host name not found (%(reason)s)") % {"reason": exc.strerror or exc}
        else:
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        self.step(self.pending, self.target if self.pending == "connect" else "", reason, False)
        return self.redact(reason)

    def transcript(self) -> list[str]:
        """The conversation as lines: → what we sent, ← what came back."""
        lines = []
        for step in self.steps:
            if step.sent:
                lines.append(f"→ {step.sent}" if step.action not in ("connect",) else f"→ connect {step.sent}")
            lines.extend(("← " if step.ok else "✗ ") + line for line in (step.reply.splitlines() or [""]))
        return lines


# --- one message, start to end ------------------------------------------------------


@dataclass
class Delivery:
    ok: bool
    summary: str  # the server's last answer, or what failed
    transcript: list[str]  # what was said, secrets replaced


def send_message(
    host: str,
    port: int,
    *,
    security: str,  # "none" | "starttls" | "ssl"
    username: str,
    password: str,
    sender: str,
    recipients: list[str],
    message: bytes,
    context: ssl.SSLContext,
    timeout: float,
    helo: str = "localhost",
) -> Delivery:
    """Send one message (to every recipient, or to none) and say how each step went. Never raises for a
    network, TLS or SMTP failure: the failure is the result. AUTH is PLAIN
    when the server offers it, else LOGIN (what Exim and the usual providers
    speak)."""
    session = Session(host, port, timeout=timeout, secrets=secret_forms(username, password))

    def done(ok: bool, summary: str) -> Delivery:
        return Delivery(ok, session.redact(summary), session.transcript())

    def answer(text: str) -> str:
        return " / ".join(text.splitlines())

    try:
        session.connect()
        if security == "ssl":
            session.start_tls(context)
        code, text = session.greeting()
        if code != 220:
            return done(False, answer(text))
        extensions = session.ehlo(helo)
        if security == "starttls":
            if "STARTTLS" not in extensions:
                return done(False, _("the server does not offer STARTTLS"))
            code, text = session.command("STARTTLS", "STARTTLS")
            if code != 220:
                return done(False, answer(text))
            session.start_tls(context)
            extensions = session.ehlo(helo)
        if username:
            offered = [word.upper() for ext in extensions if ext.upper().startswith("AUTH") for word in ext.replace("=", " ").split()[1:]]
            mechanism = "PLAIN" if "PLAIN" in offered else "LOGIN" if "LOGIN" in offered else ""
            if not mechanism:
                return done(False, _("the server offers no authentication the panel can use"))
            code, text = session.authenticate(mechanism, username, password)
            if code != 235:
                return done(False, answer(text))
        code, text = session.command("MAIL FROM", f"MAIL FROM:<{sender}>")
        if code != 250:
            return done(False, answer(text))
        for recipient in recipients:
            code, text = session.command("RCPT TO", f"RCPT TO:<{recipient}>")
            if code not in (250, 251):
                return done(False, answer(text))
        code, text = session.data(message)
        session.quit()
        return done(code == 250, answer(text))
    except Refused as exc:
        return done(False, exc.message)
    except (OSError, ssl.SSLError) as exc:
        return done(False, session.failed(exc))
    finally:
        session.close()




# --- the outbound port 25 check ------------------------------------------------------

OK, REFUSED, TIMEOUT, ERROR = "ok", "refused", "timeout", "error"


@dataclass
class Port25Result:
    target: str
    status: str  # ok | refused | timeout | error
    banner: str = ""
    detail: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == OK

    def as_dict(self) -> dict:
        return asdict(self)


def parse_target(target: str, default_port: int = 25) -> tuple[str, int]:
    """'host:port', 'host', '[v6]:port'."""
    target = target.strip()
    if target.startswith("["):
        host, _sep, rest = target[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    if target.count(":") == 1:
        host, port = target.split(":")
        return host, int(port)
    return target, default_port


def fixes() -> list[str]:
    """The two ways out the FAQ gives when port 25 is blocked."""
    return [
        _("Ask your hosting provider to open outbound port 25 for this server."),
        _("Or send through an SMTP relay (SMTP2GO, Brevo, Amazon SES…): set a global relay in the server settings."),
    ]


def check_port25(target: str, timeout: float) -> Port25Result:
    """Connect, read the greeting, say QUIT. Many hosting providers block
    outbound port 25: the connection is then refused or (more often) silently
    dropped, which shows up as a timeout (FAQ "我无法发送电子邮件")."""
    host, port = parse_target(target)
    label = f"{host}:{port}"
    started = time.monotonic()
    session = Session(host, port, timeout=timeout)
    try:
        session.connect()
        code, banner = session.greeting()
        session.quit()
    except ConnectionRefusedError:
        return Port25Result(label, REFUSED, detail=_("connection refused"), seconds=time.monotonic() - started)
    except (socket.timeout, TimeoutError):
        detail = _("no answer within %(seconds)s s") % {"seconds": timeout}
        return Port25Result(label, TIMEOUT, detail=detail, seconds=time.monotonic() - started)
    except (OSError, Refused) as exc:
        detail = exc.message if isinstance(exc, Refused) else (str(exc) or type(exc).__name__)
        return Port25Result(label, ERROR, detail=detail, seconds=time.monotonic() - started)
    finally:
        session.close()
    elapsed = time.monotonic() - started
    if code != 220:
        return Port25Result(label, ERROR, banner, _("the server did not greet with 220"), elapsed)
    return Port25Result(label, OK, banner, seconds=elapsed)
