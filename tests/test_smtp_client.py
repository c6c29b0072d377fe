"""The panel's one SMTP client (checks.smtp): the relay check, the panel's
mail and the port 25 check all talk through it. Against real aiosmtpd
servers on 127.0.0.1."""

import ssl

from mailadmin.checks import smtp
from tests.mailstack import mail_pki, smtp_sink

PASSWORD = "pä$$ wörd 密码 ^x"


def send(sink, message: bytes, **kwargs):
    options = dict(
        security="none", username="user", password=PASSWORD, sender="panel@example.net",
        recipients=["to@example.org"], message=message, context=ssl.create_default_context(), timeout=5,
    )
    options.update(kwargs)
    return smtp.send_message("127.0.0.1", sink.port, **options)


def test_a_line_that_starts_with_a_dot_arrives_intact():
    """DATA is dot-stuffed: a body line "." would otherwise end the message."""
    body = b"Subject: dots\r\n\r\nfirst\r\n.\r\n.hidden\r\n..two\r\nlast\r\n"
    with smtp_sink(credentials={(b"user", PASSWORD.encode())}) as sink:
        result = send(sink, body)
        [msg] = sink.wait_for_messages(1)
    assert result.ok, result.transcript
    assert b"\n.\n" in msg.data.replace(b"\r\n", b"\n") and b".hidden" in msg.data and b"..two" in msg.data
    assert msg.data.replace(b"\r\n", b"\n").rstrip().endswith(b"last")


def test_a_utf8_password_authenticates_with_login_and_with_plain():
    for mechanism in ("LOGIN", "PLAIN"):
        with smtp_sink(mechanisms=(mechanism,), credentials={(b"user", PASSWORD.encode())}) as sink:
            result = send(sink, b"Subject: x\r\n\r\nx\r\n")
            assert result.ok, (mechanism, result.transcript)
            assert sink.wait_for_messages(1)[0].auth.password == PASSWORD.encode()


def test_no_form_of_the_password_is_in_the_transcript_even_if_the_server_echoes_it():
    with smtp_sink(credentials={(b"user", b"another")}) as sink:
        result = send(sink, b"Subject: x\r\n\r\nx\r\n")
    assert not result.ok and result.summary.startswith("535")
    text = "\n".join(result.transcript) + result.summary
    assert all(form not in text for form in smtp.secret_forms("user", PASSWORD))


def test_every_recipient_or_none():
    """A refused recipient fails the message before DATA: nobody gets half of it."""
    with smtp_sink() as sink:
        result = send(sink, b"Subject: x\r\n\r\nx\r\n", username="", recipients=["a@example.org", "<bad>"])
    assert not result.ok and sink.messages == []


def test_tls_with_a_certificate_of_another_ca_is_refused_with_a_reason():
    context = ssl.create_default_context(cafile=mail_pki().ca_cert)
    with smtp_sink(implicit_tls=True, wrong_ca=True) as sink:
        result = send(sink, b"Subject: x\r\n\r\nx\r\n", security="ssl", username="", context=context)
    assert not result.ok and "certificate" in result.summary.lower() and sink.messages == []


def test_the_deadline_covers_a_server_that_never_greets():
    import socket
    import time

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        started = time.monotonic()
        result = smtp.check_port25(f"127.0.0.1:{listener.getsockname()[1]}", timeout=1)
    assert result.status == smtp.TIMEOUT and time.monotonic() - started < 3
