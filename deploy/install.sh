#!/usr/bin/env bash
# deploy/install.sh — from a bare Debian 13 (trixie) server to a running mail
# host, run as root from a checkout:
#
#   deploy/install.sh --hostname mail.example.com --ipv4 203.0.113.5 \
#       --admin-email admin@example.com [--offline --wheels DIR] \
#       [--acme-directory URL --acme-ca-bundle FILE]
#   deploy/install.sh --node NAME --panel-db postgres://… --redis redis://… \
#       --hostname mx2.example.com --ipv4 203.0.113.6   # a mail node: Exim,
#       Dovecot, nginx (ACME challenges on port 80), the helper and its worker
#       (queue node-NAME) for a panel on RQ; same ACME options as the panel
#   deploy/install.sh --upgrade        # from a newer checkout, same settings
#   deploy/install.sh --check …        # validate the OS and options only
#
# Idempotent: every step compares before it changes anything, and a run that
# finds everything in place says "nothing changed". Secrets are generated once
# (/etc/mailpanel/env) and never printed, except the first admin's password,
# shown once when that admin is created.
#
# --offline: no network at all — packages only from apt's cache (no apt-get
# update, apt-get --no-download), Python packages only from --wheels DIR
# (pip --no-index), no ACME unless --acme-directory names a reachable CA.
#
# What goes where:
#   /opt/mailpanel            the code (root-owned) and its venv (.venv)
#   /var/lib/mailpanel        the panel's own state (static files)
#   /etc/mailpanel/env        settings and secrets (root:mailpanel 0640)
#   /etc/mailpanel/layout.json  where the daemons' files live (the helper's Layout)
#   /etc/mailpanel/tls/       the certificate Exim, Dovecot and nginx use
#   /usr/local/sbin/mailpanel-helper + /usr/local/lib/mailpanel-helper/mailconf
#   /usr/local/bin/mailpanel  `mailpanel mail …` = manage.py mail … as mailpanel
set -euo pipefail
umask 022

SRC=$(cd "$(dirname "$0")/.." && pwd)
APP=/opt/mailpanel
VENV=$APP/.venv
VAR=/var/lib/mailpanel
ETC=/etc/mailpanel
TLS=$ETC/tls
ACME_WEBROOT=/var/www/mailpanel-acme
HELPER=/usr/local/sbin/mailpanel-helper
HELPER_LIB=/usr/local/lib/mailpanel-helper
INSTALL_CONF=$ETC/install.conf
# The code copied to /opt/mailpanel: what the panel runs, nothing else.
CODE_ITEMS=(manage.py pyproject.toml panel mailadmin mailconf templates static locale)

OS_RELEASE=${MAILPANEL_OS_RELEASE:-/etc/os-release}  # tests point it elsewhere
STARTED=$SECONDS
CHECK_ONLY=0
HOSTNAME_ARG="" IPV4="" ADMIN_EMAIL="" OFFLINE=0 WHEELS="" ACME_DIRECTORY="" ACME_CA_BUNDLE="" UPGRADE=0
# A mail node (--node): the panel's PostgreSQL and Redis are elsewhere.
NODE="" PANEL_DB="" REDIS=""
CHANGED=()

say() { printf '%s\n' "$*"; }
die() { printf 'install.sh: %s\n' "$*" >&2; exit 2; }
changed() { CHANGED+=("$1"); say "  changed: $1"; }
step() { say "== $* (at $((SECONDS - STARTED)) s)"; }

usage() {
  sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
}

parse_args() {
  while [ $# -gt 0 ]; do
    case "$1" in
      --hostname) HOSTNAME_ARG=${2:-}; shift 2 ;;
      --ipv4) IPV4=${2:-}; shift 2 ;;
      --admin-email) ADMIN_EMAIL=${2:-}; shift 2 ;;
      --offline) OFFLINE=1; shift ;;
      --wheels) WHEELS=${2:-}; shift 2 ;;
      --acme-directory) ACME_DIRECTORY=${2:-}; shift 2 ;;
      --acme-ca-bundle) ACME_CA_BUNDLE=${2:-}; shift 2 ;;
      --node) NODE=${2:-}; shift 2 ;;
      --panel-db) PANEL_DB=${2:-}; shift 2 ;;
      --redis) REDIS=${2:-}; shift 2 ;;
      --upgrade) UPGRADE=1; shift ;;
      --check) CHECK_ONLY=1; shift ;;
      -h|--help) usage ;;
      *) die "unknown option: $1 (see --help)" ;;
    esac
  done
}

check_os() {
  [ "$(id -u)" -eq 0 ] || die "run as root"
  local id="" version=""
  if [ -r "$OS_RELEASE" ]; then
    id=$(. "$OS_RELEASE" && echo "${ID:-}")
    version=$(. "$OS_RELEASE" && echo "${VERSION_ID:-}")
  fi
  if [ "$id" != debian ] || [ "$version" != 13 ]; then
    die "mailpanel installs on Debian 13 (trixie) only; this is ${id:-an unknown OS} ${version}. Nothing was changed."
  fi
}

# Values end up in a shell-sourced env file, nginx and Exim: validate them
# strictly here (the panel's own forms check them again).
validate_args() {
  if [ "$UPGRADE" -eq 1 ]; then
    [ -r "$INSTALL_CONF" ] || die "--upgrade: $INSTALL_CONF is missing; run a full install first"
    local wheels=$WHEELS offline=$OFFLINE acme=$ACME_DIRECTORY bundle=$ACME_CA_BUNDLE
    # shellcheck disable=SC1090
    . "$INSTALL_CONF"
    [ -n "$wheels" ] && WHEELS=$wheels
    [ "$offline" -eq 1 ] && OFFLINE=1
    [ -n "$acme" ] && ACME_DIRECTORY=$acme
    [ -n "$bundle" ] && ACME_CA_BUNDLE=$bundle
  fi
  if [ -n "$NODE$PANEL_DB$REDIS" ]; then
    validate_node_args
  else
    [ -n "$HOSTNAME_ARG" ] && [ -n "$IPV4" ] && [ -n "$ADMIN_EMAIL" ] \
      || die "--hostname, --ipv4 and --admin-email are required (see --help)"
  fi
  HOSTNAME_ARG=${HOSTNAME_ARG,,}
  [[ "$HOSTNAME_ARG" =~ ^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?$ ]] \
    && [ ${#HOSTNAME_ARG} -le 253 ] || die "--hostname: not a fully qualified host name: $HOSTNAME_ARG"
  local octet='(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])'
  [[ "$IPV4" =~ ^$octet\.$octet\.$octet\.$octet$ ]] || die "--ipv4: not an IPv4 address: $IPV4"
  [ -z "$ADMIN_EMAIL" ] && [ -n "$NODE" ] && [ -z "$ACME_DIRECTORY" ] \
    || [[ "$ADMIN_EMAIL" =~ ^[A-Za-z0-9._%+-]{1,64}@([A-Za-z0-9-]{1,63}\.)+[A-Za-z]{2,63}$ ]] \
    || die "--admin-email: not an e-mail address: $ADMIN_EMAIL"
  if [ "$OFFLINE" -eq 1 ]; then
    [ -n "$WHEELS" ] || die "--offline needs --wheels DIR (the Python packages)"
  fi
  if [ -n "$WHEELS" ]; then
    [ -d "$WHEELS" ] || die "--wheels: no such folder: $WHEELS"
    WHEELS=$(cd "$WHEELS" && pwd)
  fi
  if [ -n "$ACME_CA_BUNDLE" ]; then
    [ -r "$ACME_CA_BUNDLE" ] || die "--acme-ca-bundle: cannot read $ACME_CA_BUNDLE"
    ACME_CA_BUNDLE=$(realpath "$ACME_CA_BUNDLE")
  fi
  if [ -n "$ACME_DIRECTORY" ]; then
    [[ "$ACME_DIRECTORY" =~ ^https://[^[:space:]\'\"]+$ ]] || die "--acme-directory: not an https URL"
  fi
}

# A mail node: its name (a queue and a systemd instance), the panel's
# database and Redis. The URLs go into the shell-sourced env file: no quotes,
# blanks, $ or backquotes (percent-encode a password's other characters).
validate_node_args() {
  [ -n "$NODE" ] && [ -n "$PANEL_DB" ] && [ -n "$REDIS" ] && [ -n "$HOSTNAME_ARG" ] && [ -n "$IPV4" ] \
    || die "--node, --panel-db, --redis, --hostname and --ipv4 go together (see --help)"
  [[ "$NODE" =~ ^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$ ]] \
    || die "--node: 1 to 32 lower-case letters, digits and inner hyphens: $NODE"
  local url_chars='[][A-Za-z0-9._~%:@/?=&+,-]+'
  [[ "$PANEL_DB" =~ ^postgres(ql)?://$url_chars$ ]] || die "--panel-db: not a postgres:// URL (percent-encode special characters)"
  [[ "$REDIS" =~ ^rediss?://$url_chars$ ]] || die "--redis: not a redis:// or rediss:// URL"
}

# put DEST OWNER:GROUP MODE < content — replace DEST only when its content,
# owner or mode differ.
put() {
  local dest=$1 owner=$2 mode=$3 tmp
  tmp=$(mktemp "$(dirname "$dest")/.mailpanel-install.XXXXXX")
  cat >"$tmp"
  if [ -f "$dest" ] && [ ! -L "$dest" ] && cmp -s "$tmp" "$dest" \
     && [ "$(stat -c '%U:%G %a' "$dest")" = "$owner $(printf '%o' $((8#$mode)))" ]; then
    rm -f "$tmp"
    return 0
  fi
  chown "$owner" "$tmp"
  chmod "$mode" "$tmp"
  mv -f "$tmp" "$dest"
  changed "$dest"
}

ensure_dir() {
  local dir=$1 owner=$2 mode=$3
  if [ ! -d "$dir" ]; then
    mkdir -p "$dir"
    chown "$owner" "$dir"
    chmod "$mode" "$dir"
    changed "$dir/"
  elif [ "$(stat -c '%U:%G %a' "$dir")" != "$owner $(printf '%o' $((8#$mode)))" ]; then
    chown "$owner" "$dir"
    chmod "$mode" "$dir"
    changed "$dir/ (owner or mode)"
  fi
}

# sync_tree SRC DEST — DEST becomes a root-owned copy of SRC (no bytecode),
# nothing group- or world-writable; replaced only when something differs.
sync_tree() {
  local src=$1 dest=$2
  if [ -e "$dest" ] && diff -rq --no-dereference -x __pycache__ -x '*.pyc' "$src" "$dest" >/dev/null 2>&1 \
     && [ -z "$(find "$dest" \( ! -user root -o -perm /022 \) -print -quit)" ]; then
    return 0
  fi
  local new="$dest.mailpanel-new"
  rm -rf "$new"
  mkdir -p "$(dirname "$dest")"
  cp -R --no-preserve=ownership,mode "$src" "$new"
  find "$new" \( -name __pycache__ -o -name '*.pyc' \) -prune -exec rm -rf {} +
  chown -R root:root "$new"
  find "$new" -type d -exec chmod 0755 {} +
  find "$new" -type f -exec chmod 0644 {} +
  rm -rf "$dest"
  mv "$new" "$dest"
  changed "$dest"
}

packages() {
  local file
  for file in "$@"; do
    sed -e 's/#.*//' -e 's/[[:space:]]//g' "$SRC/deploy/$file" | grep -v '^$'
  done | sort -u
}

install_packages() {
  step "Debian packages"
  local missing=() pkg
  while read -r pkg; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done < <(packages apt-packages.txt apt-packages-server.txt)
  [ ${#missing[@]} -eq 0 ] && return 0
  export DEBIAN_FRONTEND=noninteractive
  # Answers to the packages' questions before they ask (Roundcube's database).
  grep -v '^#' "$SRC/deploy/debconf-preseed.txt" | debconf-set-selections
  if [ "$OFFLINE" -eq 1 ]; then
    apt-get install -y -q --no-download --no-install-recommends "${missing[@]}" >/dev/null
  else
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  fi
  changed "packages: ${missing[*]}"
}

create_user() {
  step "System user"
  if ! getent passwd mailpanel >/dev/null; then
    useradd --system --user-group --home-dir "$VAR" --no-create-home --shell /usr/sbin/nologin mailpanel
    changed "user mailpanel"
  fi
  ensure_dir "$VAR" mailpanel:mailpanel 0750
  ensure_dir "$ETC" root:root 0755
  ensure_dir "$ACME_WEBROOT" root:root 0755
  # HTTP-01 tokens: the panel's user writes them, nginx serves them (port 80).
  ensure_dir "$ACME_WEBROOT/.well-known" root:root 0755
  ensure_dir "$ACME_WEBROOT/.well-known/acme-challenge" mailpanel:mailpanel 0755
  ensure_dir /var/mail/vhosts mail:mail 2770  # setgid like /var/mail
  webmail_user
}

# The webmail's PHP-FPM user (mailconf.managed.WEBMAIL_USER): SnappyMail's
# data/ and Roundcube's database and temp files are its own, and nothing else.
webmail_user() {
  if ! getent passwd mailpanel-webmail >/dev/null; then
    useradd --system --user-group --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin mailpanel-webmail
    changed "user mailpanel-webmail"
  fi
  ensure_dir /var/lib/mailpanel-webmail root:mailpanel-webmail 0750
  ensure_dir /var/lib/mailpanel-webmail/roundcube mailpanel-webmail:mailpanel-webmail 0750
  ensure_dir /var/lib/mailpanel-webmail/roundcube/temp mailpanel-webmail:mailpanel-webmail 0750
  # SnappyMail unpacked before the webmail had its own user (www-data's data/,
  # code readable by www-data's group only): hand data/ over, code readable by all.
  local sm=/var/lib/snappymail
  if [ -d "$sm/data" ] && [ "$(stat -c %U "$sm/data")" != mailpanel-webmail ]; then
    chown -R --no-dereference mailpanel-webmail:mailpanel-webmail "$sm/data"
    find "$sm" -path "$sm/data" -prune -o ! -type l -exec chmod o+rX {} +
    changed "$sm: data/ to mailpanel-webmail"
  fi
  # Debian's Roundcube timers clean Debian's own database, which is not made
  # (deploy/debconf-preseed.txt); ours is cleaned by Roundcube's session GC.
  local timer
  for timer in roundcube-cleandb.timer roundcube-gc.timer; do
    if systemctl is-enabled --quiet "$timer" 2>/dev/null; then
      systemctl disable --now "$timer" >/dev/null 2>&1 || true
      changed "disabled $timer (Debian's Roundcube database, not used)"
    fi
  done
}

dovecot_version() {
  local version
  version=$(dovecot --version 2>/dev/null | awk '{print $1}')
  case "$version" in
    2.3.*) echo 2.3 ;;
    2.4.*) echo 2.4 ;;
    *) die "Dovecot ${version:-not found}: mailconf renders 2.3 and 2.4 only" ;;
  esac
}

# A self-signed certificate until a real one exists, at the paths Exim,
# Dovecot and nginx read (Exim reads the key as Debian-exim). The folder is
# 0755: every key in it protects itself (0640 root:Debian-exim, pending ones
# 0600), and the panel reads the helper's SNI index (sni_names) and the
# domains' public fullchain.pem from it to render what the helper renders.
certificate() {
  step "TLS certificate"
  ensure_dir "$TLS" root:root 0755
  if [ ! -s "$TLS/fullchain.pem" ] || [ ! -s "$TLS/privkey.pem" ]; then
    local tmp
    tmp=$(mktemp -d)
    openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj "/CN=$HOSTNAME_ARG" \
      -addext "subjectAltName=DNS:$HOSTNAME_ARG" \
      -keyout "$tmp/privkey.pem" -out "$tmp/fullchain.pem" 2>/dev/null
    install -o root -g Debian-exim -m 0640 "$tmp/privkey.pem" "$TLS/privkey.pem"
    install -o root -g root -m 0644 "$tmp/fullchain.pem" "$TLS/fullchain.pem"
    rm -rf "$tmp"
    changed "$TLS (self-signed for $HOSTNAME_ARG)"
  fi
}

helper() {
  step "Privileged helper"
  # sudo runs a small command that checks $HELPER_LIB and imports the helper
  # from there: a module's bytecode is kept (compiled here, root's like the
  # rest), a program's is not (~40 ms of every request).
  put "$HELPER" root:root 0755 <"$SRC/deploy/mailpanel-helper"
  ensure_dir "$HELPER_LIB" root:root 0755
  put "$HELPER_LIB/mailpanel_helper.py" root:root 0644 <"$SRC/deploy/mailpanel_helper.py"
  sync_tree "$SRC/mailconf" "$HELPER_LIB/mailconf"
  # checked-hash: a source replaced within the same second as its old
  # bytecode still gets new bytecode (compileall rewrites only stale files)
  python3 -I -m compileall -q --invalidation-mode checked-hash "$HELPER_LIB" >/dev/null
  # Dovecot's own log (the layout's dovecot_log_path): "where is my mail?"
  # reads it; Debian 13 has no rsyslog, so no /var/log/mail.log.
  put /etc/logrotate.d/mailpanel-dovecot root:root 0644 <<'EOF'
# Dovecot's log (log_path in the dovecot.conf mailpanel renders), written by
# mailpanel's deploy/install.sh; the panel's log search reads the rotations.
/var/log/dovecot.log {
    daily
    rotate 14
    missingok
    notifempty
    compress
    delaycompress
    postrotate
        doveadm log reopen >/dev/null 2>&1 || true
    endscript
}
EOF
  # The helper's Layout: root's, never the panel's (see mailpanel_helper.py).
  python3 - "$(dovecot_version)" "$TLS" <<'EOF' | put "$ETC/layout.json" root:root 0644
import json, sys
version, tls = sys.argv[1:]
print(json.dumps({
    "dovecot_version": version,
    "tls_certificate": tls + "/fullchain.pem",
    "tls_privatekey": tls + "/privkey.pem",
    # Dovecot logs here itself (journald only otherwise: Debian 13 has no
    # rsyslog); the panel's "where is my mail?" reads it and its rotations.
    "dovecot_log_path": "/var/log/dovecot.log",
    # SnappyMail's site and PHP-FPM master (mailconf/render/webmail.py):
    # this installer sets up their unit, binary link and nginx include.
    "webmail_sites": True,
}, indent=2, sort_keys=True))
EOF
  local check
  check=$(mktemp)
  cp "$SRC/deploy/sudoers.d/mailpanel" "$check"
  visudo -c -q -f "$check" >/dev/null || { rm -f "$check"; die "deploy/sudoers.d/mailpanel does not pass visudo -c"; }
  rm -f "$check"
  put /etc/sudoers.d/mailpanel root:root 0440 <"$SRC/deploy/sudoers.d/mailpanel"
  visudo -c -q >/dev/null || die "visudo -c fails after installing /etc/sudoers.d/mailpanel"
}

random_secret() { python3 -c 'import secrets; print(secrets.token_urlsafe(48))'; }
fernet_key() { python3 -c 'import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())'; }

env_file() {
  step "Settings ($ETC/env)"
  local secret_key="" encryption_key=""
  if [ -r "$ETC/env" ]; then
    secret_key=$(sed -n 's/^DJANGO_SECRET_KEY="\(.*\)"$/\1/p' "$ETC/env")
    encryption_key=$(sed -n 's/^MAILPANEL_ENCRYPTION_KEY="\(.*\)"$/\1/p' "$ETC/env")
  fi
  [ -n "$secret_key" ] || secret_key=$(random_secret)
  [ -n "$encryption_key" ] || encryption_key=$(fernet_key)
  # ACME (mail cert …, mailpanel-certificates.timer): the account's contact,
  # the webroot nginx serves on port 80, the CA (default: Let's Encrypt) and
  # the file that verifies its HTTPS, copied where the panel's user reads it.
  # An install without --acme-directory keeps the CA an earlier one set.
  local acme_directory=$ACME_DIRECTORY
  if [ -z "$acme_directory" ] && [ -r "$ETC/env" ]; then
    acme_directory=$(sed -n 's/^MAILPANEL_ACME_DIRECTORY="\(.*\)"$/\1/p' "$ETC/env")
  fi
  local acme_settings="MAILPANEL_ACME_EMAIL=\"$ADMIN_EMAIL\"
MAILPANEL_ACME_WEBROOT=\"$ACME_WEBROOT\""
  if [ -n "$acme_directory" ]; then
    acme_settings+=$'\n'"MAILPANEL_ACME_DIRECTORY=\"$acme_directory\""
  fi
  if [ -n "$ACME_CA_BUNDLE" ]; then
    put "$ETC/acme-ca.pem" root:root 0644 <"$ACME_CA_BUNDLE"
  fi
  if [ -f "$ETC/acme-ca.pem" ]; then
    acme_settings+=$'\n'"MAILPANEL_ACME_CA_BUNDLE=\"$ETC/acme-ca.pem\""
  fi
  put "$ETC/env" root:mailpanel 0640 <<EOF
# mailpanel production settings, written by deploy/install.sh (systemd
# EnvironmentFile and shell syntax). Secrets were generated on this machine;
# keep them: the encryption key decrypts the stored relay passwords.
DJANGO_SECRET_KEY="$secret_key"
MAILPANEL_ENCRYPTION_KEY="$encryption_key"
DATABASE_URL="${PANEL_DB:-postgres:///mailpanel}"
DJANGO_ALLOWED_HOSTS="$HOSTNAME_ARG,127.0.0.1,localhost"
DJANGO_CSRF_TRUSTED_ORIGINS="https://$HOSTNAME_ARG"
MAILPANEL_BASE_URL="https://$HOSTNAME_ARG"
MAILPANEL_SECURE_COOKIES="true"
MAILPANEL_TRUSTED_PROXIES="127.0.0.1,::1"
MAILPANEL_VAR_DIR="$VAR"
MAILPANEL_ROOT="/"
MAILPANEL_LAYOUT_FILE="$ETC/layout.json"
MAILPANEL_HELPER="sudo -n $HELPER"
MAILPANEL_FROM_EMAIL="mailpanel@$HOSTNAME_ARG"
$acme_settings$(node_env_lines)
EOF
}

# A mail node's worker takes its jobs from Redis (queue node-NAME).
node_env_lines() {
  [ -n "$NODE" ] || return 0
  # Each line after a line break: nothing at all (not an empty line) on the panel.
  printf '\n%s' "MAILPANEL_TASK_BACKEND=\"rq\"" "MAILPANEL_REDIS_URL=\"$REDIS\"" "MAILPANEL_NODE=\"$NODE\""
}

# A mail node uses the panel's database as the panel migrated it, and makes
# itself known there (mail node add) unless an admin already did.
node_register() {
  step "Mail node $NODE in the panel's database"
  mailpanel migrate --check >/dev/null 2>&1 \
    || die "the panel's database is not at this version's schema: upgrade the panel first"
  if ! mailpanel mail node show "$NODE" >/dev/null 2>&1; then
    mailpanel mail node add "$NODE" --hostname "$HOSTNAME_ARG" --ipv4 "$IPV4" >/dev/null
    changed "mail node $NODE"
  fi
}

code() {
  step "Code ($APP) and Python packages"
  ensure_dir "$APP" root:root 0755
  local stage item
  stage=$(mktemp -d)
  for item in "${CODE_ITEMS[@]}"; do
    cp -R "$SRC/$item" "$stage/$item"
  done
  find "$stage" \( -name __pycache__ -o -name '*.pyc' -o -name '*.mo' \) -prune -exec rm -rf {} +
  # compilemessages without Django: msgfmt is what it runs.
  find "$stage/locale" -name '*.po' -print0 | while IFS= read -r -d '' po; do
    msgfmt --check-format -o "${po%.po}.mo" "$po"
  done
  for item in "${CODE_ITEMS[@]}"; do
    if [ -d "$stage/$item" ]; then
      sync_tree "$stage/$item" "$APP/$item"
    else
      put "$APP/$item" root:root 0644 <"$stage/$item"
    fi
  done
  rm -rf "$stage"

  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
    changed "$VENV"
  fi
  local requirements stamp
  requirements=$(python3 -c 'import sys, tomllib; print("\n".join(sorted(tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"])))' "$SRC/pyproject.toml")
  stamp="$VENV/.mailpanel-requirements"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$requirements" ]; then
    local pip=("$VENV/bin/pip" install -q --disable-pip-version-check)
    if [ -n "$WHEELS" ]; then
      pip+=(--no-index --find-links "$WHEELS")
    fi
    printf '%s\n' "$requirements" >"$VENV/.requirements.txt"
    "${pip[@]}" -r "$VENV/.requirements.txt"
    printf '%s\n' "$requirements" >"$stamp"
    changed "Python packages"
  fi
}

command_on_path() {
  put /usr/local/bin/mailpanel root:root 0755 <<'EOF'
#!/bin/bash
# mailpanel ARGS… = manage.py ARGS… as the mailpanel user with the production
# settings (/etc/mailpanel/env), e.g. `mailpanel mail domain add example.org`.
set -euo pipefail
if [ "$(id -un)" != mailpanel ]; then
  [ "$(id -u)" -eq 0 ] || { echo "mailpanel: run as root (or as the mailpanel user)" >&2; exit 2; }
  exec runuser -u mailpanel -- "$0" "$@"
fi
cd /opt/mailpanel
set -a
. /etc/mailpanel/env
set +a
exec /opt/mailpanel/.venv/bin/python manage.py "$@"
EOF
}

database() {
  step "PostgreSQL"
  systemctl is-active --quiet postgresql || systemctl start postgresql
  local psql=(runuser -u postgres -- psql -v ON_ERROR_STOP=1 -qtA)
  if [ "$("${psql[@]}" -c "SELECT 1 FROM pg_roles WHERE rolname = 'mailpanel'")" != 1 ]; then
    runuser -u postgres -- createuser mailpanel
    changed "PostgreSQL role mailpanel"
  fi
  if [ "$("${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname = 'mailpanel'")" != 1 ]; then
    runuser -u postgres -- createdb --owner mailpanel mailpanel
    changed "PostgreSQL database mailpanel (peer auth, no password)"
  fi
}

django() {
  step "Database schema, static files, first admin"
  if ! mailpanel migrate --check >/dev/null 2>&1; then
    mailpanel migrate --no-input -v 0
    changed "database migrations"
  fi
  local out
  out=$(mailpanel collectstatic --no-input)
  grep -q '^0 static files copied' <<<"$out" || changed "static files ($VAR/staticfiles)"
  ADMIN_LOGIN=$(mailpanel ensure_admin --email "$ADMIN_EMAIL")
  [ -n "$ADMIN_LOGIN" ] && changed "first admin"
  local wanted="$HOSTNAME_ARG $IPV4"
  if [ ! -f "$VAR/.server-identity" ] || [ "$(cat "$VAR/.server-identity")" != "$wanted" ]; then
    mailpanel mail server set --hostname "$HOSTNAME_ARG" --ipv4 "$IPV4" >/dev/null
    printf '%s\n' "$wanted" >"$VAR/.server-identity"
    changed "server identity: $wanted"
  fi
}

UNITS_CHANGED=0

units() {
  step "systemd units"
  local unit before
  before=${#CHANGED[@]}
  for unit in "$SRC"/deploy/systemd/*.service "$SRC"/deploy/systemd/*.timer; do
    [ -e "$unit" ] || continue
    put "/etc/systemd/system/$(basename "$unit")" root:root 0644 <"$unit"
  done
  if [ ${#CHANGED[@]} -ne "$before" ]; then
    systemctl daemon-reload
    UNITS_CHANGED=1
  fi
}

# A unit enabled and running; with restart=1 (--upgrade) a running one restarts.
ensure_unit() {
  local name=$1 restart=$2
  if ! systemctl is-enabled --quiet "$name"; then
    systemctl enable --quiet "$name"
    changed "enabled $name"
  fi
  if ! systemctl is-active --quiet "$name"; then
    systemctl start "$name"
    changed "started $name"
  elif [ "$restart" -eq 1 ]; then
    systemctl restart "$name"
    say "  restarted $name"
  fi
}

# Every unit of ours with an [Install] section is enabled and running; the
# rest (the verify service) is started by its timer.
start_units() {
  step "Services"
  local unit name restart=$1
  for unit in "$SRC"/deploy/systemd/*.service "$SRC"/deploy/systemd/*.timer; do
    [ -e "$unit" ] || continue
    grep -q '^\[Install\]' "$unit" || continue
    name=$(basename "$unit")
    # A template (mailpanel-node-worker@.service) runs per instance: a node install enables its own.
    [[ "$name" == *@.service ]] && continue
    # A mail node runs its firewall and its worker; the panel's units run on the panel.
    [ -n "$NODE" ] && [ "$name" != mailpanel-firewall.service ] && continue
    # The firewall table and the timers are not restarted on --upgrade.
    if [ "$name" != mailpanel-firewall.service ] && [[ "$name" == *.service ]]; then
      ensure_unit "$name" "$restart"
    else
      ensure_unit "$name" 0
    fi
  done
  [ -z "$NODE" ] || ensure_unit "mailpanel-node-worker@$NODE.service" "$restart"
  # Debian's nftables.service is the admin's choice (its nftables.conf
  # flushes the whole ruleset): not ours to switch on.
  local daemons=(postgresql nginx exim4 dovecot "$(php_fpm)")
  [ -z "$NODE" ] || daemons=(nginx exim4 dovecot)
  for name in "${daemons[@]}"; do
    [ -n "$name" ] || continue
    if ! systemctl is-enabled --quiet "$name" 2>/dev/null; then
      systemctl enable --quiet "$name"
      changed "enabled $name"
    fi
    if ! systemctl is-active --quiet "$name"; then
      systemctl start "$name"
      changed "started $name"
    fi
  done
}

php_fpm() {
  local unit
  unit=$(systemctl list-unit-files --no-legend 'php*-fpm.service' 2>/dev/null | awk '{print $1; exit}')
  echo "${unit%.service}"
}

# The webmail's own PHP-FPM master (deploy/systemd/mailpanel-webmail-php.service)
# runs Debian's versioned binary through this link.
webmail_php_fpm() {
  local binary
  binary=$(ls /usr/sbin/php-fpm[0-9]* 2>/dev/null | sort -V | tail -n 1 || true)
  [ -n "$binary" ] || die "php-fpm is not installed (deploy/apt-packages-server.txt)"
  if [ "$(readlink /usr/local/sbin/mailpanel-php-fpm 2>/dev/null)" != "$binary" ]; then
    ln -sfn "$binary" /usr/local/sbin/mailpanel-php-fpm
    changed "/usr/local/sbin/mailpanel-php-fpm -> $binary"
  fi
}

# Port 80 on the panel and on a mail node: ACME HTTP-01 tokens from the
# webroot (the worker, as mailpanel, writes them), everything else $1.
nginx_port80() {
  cat <<EOF
server {
    listen 80 default_server;
    listen [::]:80 default_server;
    server_name $HOSTNAME_ARG;
    location /.well-known/acme-challenge/ {
        root $ACME_WEBROOT;
    }
    location / {
        $1
    }
}
EOF
}

# The site's text: the panel's, or a mail node's (port 80 only, no panel).
nginx_site_text() {
  if [ -n "$NODE" ]; then
    say "# Written by mailpanel's deploy/install.sh on mail node $NODE: port 80"
    say "# serves ACME HTTP-01 challenges only (the node's host name certificate)."
    nginx_port80 "return 404;"
    return 0
  fi
  say "# Written by mailpanel's deploy/install.sh: the panel on 443, port 80 only"
  say "# redirects (except ACME HTTP-01 challenges)."
  nginx_port80 "return 301 https://$HOSTNAME_ARG\$request_uri;"
  cat <<EOF
server {
    listen 443 ssl default_server;
    listen [::]:443 ssl default_server;
    http2 on;
    server_name $HOSTNAME_ARG;
    ssl_certificate $TLS/fullchain.pem;
    ssl_certificate_key $TLS/privkey.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    client_max_body_size 25m;
    # SnappyMail at /webmail/ once the panel has written it (mailconf/render/webmail.py).
    include /etc/nginx/snippets/mailpanel-webmail*.conf;
    location / {
        proxy_pass http://127.0.0.1:8000;
        proxy_set_header Host \$host;
        proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto https;
        proxy_read_timeout 120s;
    }
}
EOF
}

nginx_site() {
  step "nginx"
  put /etc/nginx/sites-available/mailpanel root:root 0644 < <(nginx_site_text)
  if [ "$(readlink /etc/nginx/sites-enabled/mailpanel 2>/dev/null)" != /etc/nginx/sites-available/mailpanel ]; then
    ln -sfn /etc/nginx/sites-available/mailpanel /etc/nginx/sites-enabled/mailpanel
    changed "/etc/nginx/sites-enabled/mailpanel"
  fi
  if [ -e /etc/nginx/sites-enabled/default ]; then
    rm -f /etc/nginx/sites-enabled/default
    changed "disabled nginx's default site"
  fi
  nginx -t -q || die "nginx -t fails"
}

# The host name's certificate from the ACME CA (HTTP-01 on port 80 through
# nginx's webroot) by the panel's own path, the one its timer renews with:
# `mail cert issue --server` (the helper makes the key and installs the
# chain; services/certificates.py). The self-signed one stays when the CA
# cannot be reached (run install.sh again once DNS points here; the timer
# retries with a growing pause).
acme() {
  # One ACME mechanism: an older install's certbot hook no longer copies.
  if [ -e /etc/letsencrypt/renewal-hooks/deploy/mailpanel ]; then
    rm -f /etc/letsencrypt/renewal-hooks/deploy/mailpanel
    changed "removed certbot's mailpanel deploy hook (the panel renews the certificate)"
  fi
  [ -n "$ACME_DIRECTORY" ] || return 0
  step "ACME certificate"
  local cert=$TLS/fullchain.pem out
  # A CA's certificate (not the self-signed one) for this name, not yet due.
  if [ "$(openssl x509 -noout -issuer -nameopt RFC2253 -in "$cert" 2>/dev/null | cut -d= -f2-)" \
       != "$(openssl x509 -noout -subject -nameopt RFC2253 -in "$cert" 2>/dev/null | cut -d= -f2-)" ] \
     && openssl x509 -noout -checkend $((30 * 86400)) -in "$cert" >/dev/null 2>&1 \
     && openssl x509 -noout -checkhost "$HOSTNAME_ARG" -in "$cert" 2>/dev/null | grep -q 'does match'; then
    return 0
  fi
  # A mail node: the order is queued on node-NAME and its worker (started
  # above) runs it with this machine's helper and webroot.
  if out=$(mailpanel mail cert issue --server ${NODE:+--node "$NODE"} --force 2>&1); then
    changed "ACME certificate for $HOSTNAME_ARG${NODE:+ (queued on node-$NODE: mailpanel mail cert list)}"
  else
    say "  warning: no certificate from $ACME_DIRECTORY yet; the self-signed one stays:"
    say "$(tail -n 5 <<<"$out" | sed 's/^/    /')"
  fi
}

first_apply() {
  step "Apply the mail configuration through the helper"
  local out
  out=$(mailpanel mail config apply ${NODE:+--node "$NODE"}) || { say "$out"; die "the first apply failed"; }
  if grep -q '^\(wrote\|removed\) ' <<<"$out"; then
    changed "mail configuration: $(grep -c '^\(wrote\|removed\) ' <<<"$out") files"
  fi
}

save_install_conf() {
  {
    echo "# The options of the last install (read by install.sh --upgrade)."
    printf '%s=%q\n' HOSTNAME_ARG "$HOSTNAME_ARG" IPV4 "$IPV4" ADMIN_EMAIL "$ADMIN_EMAIL" \
      ACME_DIRECTORY "$ACME_DIRECTORY" ACME_CA_BUNDLE "$ACME_CA_BUNDLE"
    [ -z "$NODE" ] || printf '%s=%q\n' NODE "$NODE" PANEL_DB "$PANEL_DB" REDIS "$REDIS"
  } | put "$INSTALL_CONF" root:root 0600
}

main() {
  parse_args "$@"
  check_os
  validate_args
  if [ "$CHECK_ONLY" -eq 1 ]; then
    say "install.sh --check: the options are valid for $HOSTNAME_ARG${NODE:+ (mail node $NODE)}; nothing was changed."
    exit 0
  fi
  local code_before
  install_packages
  create_user
  certificate
  helper
  env_file
  save_install_conf
  code_before=${#CHANGED[@]}
  code
  command_on_path
  local code_changed=0
  [ ${#CHANGED[@]} -ne "$code_before" ] && code_changed=1
  if [ -n "$NODE" ]; then
    node_register
    units
  else
    database
    django
    units
    webmail_php_fpm
  fi
  nginx_site
  systemctl reload-or-restart nginx 2>/dev/null || systemctl start nginx
  # The first apply writes the nftables file the firewall unit's condition
  # wants, so it comes before the units start.
  first_apply
  start_units $((code_changed | UNITS_CHANGED))
  acme
  say ""
  if [ ${#CHANGED[@]} -eq 0 ]; then
    say "install.sh: nothing changed; everything was in place ($((SECONDS - STARTED)) s)."
  else
    local where="The panel: https://$HOSTNAME_ARG/"
    [ -z "$NODE" ] || where="Mail node $NODE: its worker serves the queue node-$NODE."
    say "install.sh: ${#CHANGED[@]} changes in $((SECONDS - STARTED)) s. $where"
  fi
  if [ -n "${ADMIN_LOGIN:-}" ]; then
    say "$ADMIN_LOGIN"
  fi
}

# Sourced (tests/test_install_script.py reads the nginx site): functions only.
[ "${BASH_SOURCE[0]}" != "$0" ] || main "$@"
