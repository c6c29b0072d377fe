"""Fetch Cloudflare's published proxy ranges (ips-v4, ips-v6) into the file the
Cloudflare-proxy check reads (settings.MAILPANEL_CLOUDFLARE_IPS_FILE).

Every line must parse as a network and both lists must be non-empty, else the
old file stays: a half-fetched list would make the check silently miss proxies."""

import ipaddress
import os
import tempfile
import urllib.request
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

DEFAULT_URLS = ["https://www.cloudflare.com/ips-v4", "https://www.cloudflare.com/ips-v6"]


class Command(BaseCommand):
    help = "Download Cloudflare's IP ranges used to detect a proxied mail.<domain>."

    def handle(self, *args, **options):
        urls = getattr(settings, "MAILPANEL_CLOUDFLARE_IPS_URLS", None) or DEFAULT_URLS
        from mailadmin.services.dns_checks import refreshed_cloudflare_ips_file

        target = refreshed_cloudflare_ips_file()
        timeout = float(getattr(settings, "MAILPANEL_CHECK_TIMEOUT", 5.0)) * 2
        networks = []
        for url in urls:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    text = response.read(1 << 20).decode("ascii")
            except (OSError, UnicodeDecodeError) as exc:
                raise CommandError(f"could not fetch {url}: {exc}")
            found = []
            for line in text.splitlines():
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                try:
                    found.append(ipaddress.ip_network(line, strict=True))
                except ValueError:
                    raise CommandError(f"{url}: not a network: {line[:60]!r}")
            if not found:
                raise CommandError(f"{url}: no networks in the answer")
            networks += found
        body = "# Cloudflare's published proxy ranges, from:\n"
        body += "".join(f"#   {url}\n" for url in urls)
        body += "".join(f"{net}\n" for net in networks)
        target_path = Path(target)
        target_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target_path.parent, prefix=".cloudflare-ips.")
        with os.fdopen(fd, "w") as f:
            f.write(body)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target_path)
        self.stdout.write(f"{len(networks)} Cloudflare ranges written to {target_path}")
