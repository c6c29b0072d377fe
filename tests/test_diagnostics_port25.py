"""Outbound port 25 (SPEC §4.1): an aiosmtpd server on loopback, a closed port,
and a listener that accepts but never greets. Nothing past 127.0.0.1."""

import socket
import time

import pytest
from aiosmtpd.controller import Controller
from django.core.management import call_command

from mailadmin.checks.smtp import check_port25, parse_target


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sink:
    async def handle_DATA(self, server, session, envelope):
        return "250 OK"


@pytest.fixture
def smtp_server():
    controller = Controller(Sink(), hostname="127.0.0.1", port=free_port(), ident="mailpanel-test-mx")
    controller.start()
    yield f"127.0.0.1:{controller.port}"
    controller.stop()


@pytest.fixture
def silent_listener():
    """Accepts connections (the kernel completes the handshake) and never says a word."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    yield f"127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


def test_port25_open_reports_the_banner(smtp_server):
    result = check_port25(smtp_server, timeout=3)
    assert result.status == "ok"
    assert result.banner.startswith("220 ") and "mailpanel-test-mx" in result.banner


def test_port25_closed_port_is_refused():
    result = check_port25(f"127.0.0.1:{free_port()}", timeout=3)
    assert result.status == "refused"
    assert not result.banner


def test_port25_listener_without_banner_times_out_on_time(silent_listener):
    started = time.monotonic()
    result = check_port25(silent_listener, timeout=1.0)
    assert result.status == "timeout"
    assert time.monotonic() - started < 1.5


def test_port25_target_parsing():
    assert parse_target("ASPMX.L.GOOGLE.COM:25") == ("ASPMX.L.GOOGLE.COM", 25)
    assert parse_target("[::1]:2525") == ("::1", 2525)
    assert parse_target("mx.example.test") == ("mx.example.test", 25)


def test_cli_port25_blocked_names_the_two_fixes(settings, db, capsys, silent_listener):
    settings.MAILPANEL_PORT25_TARGET = silent_listener
    settings.MAILPANEL_CHECK_TIMEOUT = 0.5
    call_command("mail", "diagnose", "port25")
    out = capsys.readouterr().out
    assert "timeout" in out
    assert "Ask your hosting provider to open outbound port 25" in out
    assert "SMTP relay" in out


def test_cli_port25_json_reports_success(settings, db, capsys, smtp_server):
    import json

    settings.MAILPANEL_PORT25_TARGET = smtp_server
    call_command("mail", "diagnose", "port25", "--json")
    data = json.loads(capsys.readouterr().out)
    assert data["status"] == "ok" and data["banner"].startswith("220") and data["fixes"] == []
