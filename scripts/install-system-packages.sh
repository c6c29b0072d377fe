#!/usr/bin/env bash
# Installs the Debian packages listed in the given files, only those missing.
# Daemons are not started (tests start their own on loopback ports).
set -euo pipefail
missing=()
for list in "$@"; do
  while read -r pkg; do
    [ -z "$pkg" ] && continue
    case "$pkg" in \#*) continue ;; esac
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done < "$list"
done
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "Missing Debian packages: ${missing[*]} — run as root or install them with apt-get." >&2
  exit 1
fi
echo "Installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Answers to the packages' questions (Roundcube's database), before they ask.
preseed="$(dirname "$0")/../deploy/debconf-preseed.txt"
grep -v '^#' "$preseed" | debconf-set-selections
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
