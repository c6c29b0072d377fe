""""Test relay": one real SMTP conversation with a relay, step by step.

connect → (implicit TLS) → greeting → EHLO → STARTTLS → EHLO → AUTH → QUIT,
all within one deadline. The transcript keeps every server answer, but what we
send for AUTH is shown as a placeholder: neither the password nor its base64
(nor the base64 of the PLAIN token) ever appears in it, even if a server
echoes it back.

Written on raw sockets rather than smtplib: smtplib encodes credentials as
ASCII (a Unicode password would fail here but work in Exim) and always sends
LOGIN with an initial response, which Exim never does.
"""

from __future__ import annotations

import base64
import concurrent.futures
import socket
import ssl
import time
from dataclasses import asdict, dataclass, field

from django.utils.translation import gettext as _

from mailconf.snapshot import Relay

OK = "ok"
AUTH_FAILED = "auth_failed"
MECHANISM_NOT_OFFERED = "mechanism_not_offered"
CONNECTION_REFUSED = "connection_refused"
TIMEOUT = "timeout"
TLS_FAILED = "tls_failed"
HOST_NOT_FOUND = "host_not_found"
UNREACHABLE = "unreachable"
REJECTED = "rejected"  # the server answered with an error we did not expect
TARGET_REFUSED = "target_refused"  # a customer named a non-public host (checks.targets)

MAX_REPLY_BYTES = 64 * 1024


@dataclass(frozen=True)
class Step:
    action: str  # what we did: "connect", "EHLO", "STARTTLS", "AUTH PLAIN", …
    sent: str  # the command line as shown (credentials replaced)
    reply: str  # the server's answer, or what went wrong
    ok: bool


@dataclass
class RelayTestResult:
    outcome: str
    message: str
    steps: list[Step] = field(default_factory=list)
    offered_mechanisms: tuple[str, ...] = ()
    suggested_auth: str = ""  # "plain"/"login" when switching would help
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return self.outcome == OK

    def as_dict(self) -> dict:
        data = asdict(self)
        data["ok"] = self.ok
        data["offered_mechanisms"] = list(self.offered_mechanisms)
        return data

    def transcript(self) -> str:
        lines = []
        for step in self.steps:
            mark = "ok " if step.ok else "ERR"
            lines.append(f"[{mark}] {step.action}: {step.sent}".rstrip(": "))
            for reply_line in step.reply.splitlines() or [""]:
                lines.append(f"      {reply_line}")
        return "\n".join(lines)


class _Stop(Exception):
    """Ends the conversation with an outcome."""

    def __init__(self, outcome: str, message: str):
        super().__init__(message)
        self.outcome = outcome
        self.message = message


class _Conversation:
    def __init__(self, relay: Relay, deadline: float, secrets: tuple[str, ...], addresses=None):
        self.relay = relay
        self.addresses = addresses
        self.deadline = deadline
        self.secrets = tuple(s for s in secrets if s)
        self.sock: socket.socket | None = None
        self.buffer = b""
        self.steps: list[Step] = []
        self.cafile: str | None = None
        self.pending = "connect"  # the step in progress, for the timeout report

    # -- plumbing --------------------------------------------------------
    def remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("deadline")
        return left

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "********")
        return text

    def step(self, action: str, sent: str, reply: str, ok: bool) -> None:
        self.steps.append(Step(action, self.redact(sent), self.redact(reply), ok))

    def send(self, line: bytes) -> None:
        self.sock.settimeout(self.remaining())
        self.sock.sendall(line + b"\r\n")

    def read_reply(self) -> tuple[int, str]:
        """One (possibly multi-line) SMTP reply: code and the text lines."""
        lines = []
        while True:
            while b"\n" not in self.buffer:
                if len(self.buffer) > MAX_REPLY_BYTES:
                    raise _Stop(REJECTED, _("The server sent an overlong answer."))
                self.sock.settimeout(self.remaining())
                chunk = self.sock.recv(4096)
                if not chunk:
                    raise ConnectionResetError("connection closed by the server")
                self.buffer += chunk
            raw, self.buffer = self.buffer.split(b"\n", 1)
            line = raw.rstrip(b"\r").decode("utf-8", "replace")
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                break
        try:
            code = int(lines[-1][:3])
        except ValueError:
            raise _Stop(REJECTED, _("The server does not speak SMTP."))
        return code, "\n".join(lines)

    def command(self, action: str, line: str, shown: str | None = None) -> tuple[int, str]:
        self.pending = action
        self.send(line.encode("utf-8"))
        code, text = self.read_reply()
        self.step(action, line if shown is None else shown, text, code < 400)
        return code, text

    def start_tls(self, action: str) -> None:
        self.pending = action
        context = ssl.create_default_context(cafile=self.cafile)
        self.sock.settimeout(self.remaining())
        try:
            self.sock = context.wrap_socket(self.sock, server_hostname=self.relay.host)
        except ssl.SSLError as exc:
            reason = getattr(exc, "verify_message", "") or exc.reason or str(exc)
            self.step(action, "", str(reason), False)
            raise _Stop(
                TLS_FAILED,
                _("The TLS handshake failed: %(reason)s. Exim would refuse this relay too.")
                % {"reason": reason},
            )
        self.buffer = b""
        cert = self.sock.getpeercert() or {}
        subject = ", ".join("=".join(part) for rdn in cert.get("subject", ()) for part in rdn)
        self.step(
            action,
            "",
            _("%(version)s, certificate verified (%(subject)s)")
            % {"version": self.sock.version(), "subject": subject},
            True,
        )

    def connect(self, host: str, port: int) -> socket.socket:
        """create_connection, with the name lookup inside the deadline too
        (getaddrinfo itself has no timeout). Given addresses (already checked
        by checks.targets), only those are tried: the name is not looked up again."""
        if self.addresses is not None:
            addresses = [
                (socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM, 0, "", (ip, port))
                for ip in self.addresses
            ]
        else:
            addresses = self._getaddrinfo(host, port)
        error: OSError | None = None
        for family, kind, proto, _name, address in addresses:
            sock = socket.socket(family, kind, proto)
            try:
                sock.settimeout(self.remaining())
                sock.connect(address)
                return sock
            except ConnectionRefusedError as exc:
                sock.close()
                error = exc
            except OSError as exc:
                sock.close()
                if isinstance(exc, (socket.timeout, TimeoutError)):
                    raise
                error = exc
        raise error or OSError("no address")

    def _getaddrinfo(self, host: str, port: int) -> list:
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        try:
            future = pool.submit(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM)
            try:
                return future.result(timeout=self.remaining())
            except concurrent.futures.TimeoutError:
                raise socket.timeout("name lookup") from None
        finally:
            pool.shutdown(wait=False)

    # -- the conversation ------------------------------------------------
    def run(self, helo: str, cafile: str | None) -> tuple[str, str, tuple[str, ...], str]:
        relay = self.relay
        self.cafile = cafile
        target = f"{relay.host}:{relay.port}"
        try:
            self.sock = self.connect(relay.host, relay.port)
        except socket.gaierror as exc:
            self.step("connect", target, str(exc), False)
            raise _Stop(HOST_NOT_FOUND, _("The host name %(host)s does not resolve.") % {"host": relay.host})
        except ConnectionRefusedError:
            self.step("connect", target, _("connection refused"), False)
            raise _Stop(
                CONNECTION_REFUSED,
                _("%(target)s refused the connection: nothing listens there, or a firewall rejects it.")
                % {"target": target},
            )
        self.step("connect", target, _("connected"), True)
        if relay.tls == "ssl":
            self.start_tls("TLS")
        self.pending = "greeting"
        code, text = self.read_reply()
        self.step("greeting", "", text, code == 220)
        if code != 220:
            raise _Stop(REJECTED, _("The server did not greet us (it answered %(code)s).") % {"code": code})
        extensions = self.ehlo(helo)
        if relay.tls == "starttls":
            if "STARTTLS" not in extensions:
                self.quit()
                raise _Stop(
                    TLS_FAILED,
                    _("The server does not offer STARTTLS. Choose implicit TLS (usually port 465) or another port."),
                )
            code, _text = self.command("STARTTLS", "STARTTLS")
            if code != 220:
                raise _Stop(TLS_FAILED, _("The server refused STARTTLS (it answered %(code)s).") % {"code": code})
            self.start_tls("TLS")
            extensions = self.ehlo(helo)
        offered = mechanisms(extensions)
        if not relay.username:
            self.quit()
            return OK, _("The relay accepts connections; no authentication is configured."), offered, ""
        wanted = relay.auth.upper()
        if wanted not in offered:
            self.quit()
            other = {"LOGIN": "PLAIN", "PLAIN": "LOGIN"}[wanted]
            if other in offered:
                return (
                    MECHANISM_NOT_OFFERED,
                    _("The server does not offer %(wanted)s; it offers %(offered)s. Switch the authentication to %(other)s.")
                    % {"wanted": wanted, "offered": ", ".join(offered), "other": other},
                    offered,
                    other.lower(),
                )
            if offered:
                message = _("The server does not offer %(wanted)s; it offers only %(offered)s, which the mail server cannot use.") % {
                    "wanted": wanted,
                    "offered": ", ".join(offered),
                }
            else:
                message = _("The server offers no authentication on this connection (often it does only after STARTTLS).")
            return MECHANISM_NOT_OFFERED, message, offered, ""
        code, text = self.authenticate(wanted)
        if code == 235:
            self.quit()
            return OK, _("The relay accepted the user name and password."), offered, ""
        self.quit()
        if code == 535:
            return AUTH_FAILED, _("The relay rejected the user name or password (535)."), offered, ""
        if code == 504:
            return MECHANISM_NOT_OFFERED, _("The server refused the %(wanted)s mechanism (504).") % {"wanted": wanted}, offered, ""
        return AUTH_FAILED, _("Authentication failed: the server answered %(code)s.") % {"code": code}, offered, ""

    def ehlo(self, helo: str) -> list[str]:
        code, text = self.command("EHLO", f"EHLO {helo}")
        if code != 250:
            raise _Stop(REJECTED, _("The server refused EHLO (it answered %(code)s).") % {"code": code})
        return [line[4:] for line in text.splitlines()[1:]]

    def authenticate(self, mechanism: str) -> tuple[int, str]:
        user = self.relay.username.encode("utf-8")
        password = self.relay.password.encode("utf-8")
        hidden = _("(password hidden)")
        if mechanism == "PLAIN":
            token = base64.b64encode(b"\0" + user + b"\0" + password).decode()
            code, text = self.command("AUTH PLAIN", f"AUTH PLAIN {token}", f"AUTH PLAIN {hidden}")
            if code == 334:  # server without initial-response support
                code, text = self.command("AUTH PLAIN", token, hidden)
            return code, text
        code, text = self.command("AUTH LOGIN", "AUTH LOGIN")
        if code != 334:
            return code, text
        code, text = self.command(
            "AUTH LOGIN", base64.b64encode(user).decode(), _("(user name %(user)s)") % {"user": self.relay.username}
        )
        if code != 334:
            return code, text
        return self.command("AUTH LOGIN", base64.b64encode(password).decode(), hidden)

    def quit(self) -> None:
        """Polite but optional: a server that hangs up first is fine."""
        try:
            self.command("QUIT", "QUIT")
        except (OSError, _Stop):
            pass

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass


def mechanisms(extensions: list[str]) -> tuple[str, ...]:
    """AUTH mechanisms from EHLO lines ("AUTH LOGIN PLAIN", old "AUTH=LOGIN")."""
    found: list[str] = []
    for ext in extensions:
        words = ext.replace("=", " ", 1).split()
        if words and words[0].upper() == "AUTH":
            for word in words[1:]:
                if word.upper() not in found:
                    found.append(word.upper())
    return tuple(found)


def _secret_forms(relay: Relay) -> tuple[str, ...]:
    """The password as it could appear on the wire: raw, base64, PLAIN token."""
    if not relay.password:
        return ()
    pw = relay.password.encode("utf-8")
    user = relay.username.encode("utf-8")
    return (
        relay.password,
        base64.b64encode(pw).decode(),
        base64.b64encode(b"\0" + user + b"\0" + pw).decode(),
        base64.b64encode(user + b"\0" + pw).decode(),
    )


def check_relay(
    relay: Relay, *, timeout: float, cafile: str | None = None, helo: str = "localhost", addresses=None
) -> RelayTestResult:
    """Run the conversation; never raises for network trouble. `addresses`
    (checked by checks.targets) replaces the name lookup; TLS still verifies
    the certificate against relay.host."""
    started = time.monotonic()
    conv = _Conversation(relay, started + timeout, _secret_forms(relay), addresses)
    offered: tuple[str, ...] = ()
    suggested = ""
    try:
        outcome, message, offered, suggested = conv.run(helo, cafile)
    except _Stop as stop:
        outcome, message = stop.outcome, stop.message
    except (socket.timeout, TimeoutError):
        conv.step(conv.pending, "", _("no answer within %(seconds)s s") % {"seconds": f"{timeout:g}"}, False)
        outcome = TIMEOUT
        message = _("The relay did not answer within %(seconds)s seconds.") % {"seconds": f"{timeout:g}"}
    except ssl.SSLError as exc:
        conv.step("TLS", "", str(exc), False)
        outcome, message = TLS_FAILED, _("TLS failed: %(reason)s") % {"reason": exc.reason or exc}
    except OSError as exc:
        conv.step("network", "", exc.strerror or str(exc), False)
        outcome = UNREACHABLE
        message = _("The relay could not be reached: %(reason)s") % {"reason": exc.strerror or exc}
    finally:
        conv.close()
    return RelayTestResult(
        outcome=outcome,
        message=conv.redact(message),
        steps=conv.steps,
        offered_mechanisms=offered,
        suggested_auth=suggested,
        elapsed=round(time.monotonic() - started, 3),
    )
