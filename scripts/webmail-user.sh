#!/usr/bin/env bash
# The webmail's PHP-FPM user (mailconf.managed.WEBMAIL_USER), as deploy/install.sh
# makes it in production: the tests run the webmail's pools and the helper's
# chown as it.
set -euo pipefail
if getent passwd mailpanel-webmail >/dev/null; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "No user mailpanel-webmail (the webmail's PHP user): run as root to create it." >&2
  exit 0
fi
useradd --system --user-group --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin mailpanel-webmail
