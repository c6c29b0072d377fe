"""`manage.py refresh_cloudflare_ips`: fetches the published ranges (here from a
local http.server on 127.0.0.1) into the file the Cloudflare check reads."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.management import CommandError, call_command

from mailadmin.checks import dns as dnscheck
from mailadmin.services import dns_checks

LISTS = {"/ips-v4": "203.0.113.0/24\n198.51.100.0/24\n", "/ips-v6": "2001:db8:cf::/48\n"}


@pytest.fixture
def ranges_server():
    lists = dict(LISTS)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = lists.get(self.path)
            if body is None:
                self.send_error(404)
                return
            data = body.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", lists
    server.shutdown()
    server.server_close()


@pytest.fixture
def refresh_settings(settings, tmp_path, ranges_server):
    base, lists = ranges_server
    settings.MAILPANEL_CLOUDFLARE_IPS_URLS = [f"{base}/ips-v4", f"{base}/ips-v6"]
    settings.MAILPANEL_CLOUDFLARE_IPS_FILE = str(tmp_path / "cloudflare-ips.txt")
    return tmp_path / "cloudflare-ips.txt", lists


def test_shipped_list_is_used_until_a_refresh(refresh_settings):
    target, _lists = refresh_settings
    assert dns_checks.cloudflare_ips_file() == dnscheck.CLOUDFLARE_DATA
    assert dnscheck.in_networks("104.16.1.1", dns_checks.cloudflare_networks())


def test_refresh_writes_both_lists_and_the_check_reads_them(refresh_settings):
    target, _lists = refresh_settings
    call_command("refresh_cloudflare_ips")
    assert dns_checks.cloudflare_ips_file() == target
    networks = dns_checks.cloudflare_networks()
    assert dnscheck.in_networks("203.0.113.9", networks)
    assert dnscheck.in_networks("2001:db8:cf::1", networks)
    assert not dnscheck.in_networks("104.16.1.1", networks)


def test_refresh_keeps_the_old_file_when_an_answer_is_garbage(refresh_settings):
    target, lists = refresh_settings
    call_command("refresh_cloudflare_ips")
    before = target.read_text()
    lists["/ips-v6"] = "<html>maintenance</html>\n"
    with pytest.raises(CommandError, match="not a network"):
        call_command("refresh_cloudflare_ips")
    assert target.read_text() == before


def test_refresh_fails_cleanly_when_a_list_is_unreachable(refresh_settings, settings):
    target, _lists = refresh_settings
    settings.MAILPANEL_CLOUDFLARE_IPS_URLS = settings.MAILPANEL_CLOUDFLARE_IPS_URLS[:1] + [
        settings.MAILPANEL_CLOUDFLARE_IPS_URLS[0].replace("ips-v4", "missing")
    ]
    with pytest.raises(CommandError, match="could not fetch"):
        call_command("refresh_cloudflare_ips")
    assert not target.exists()
