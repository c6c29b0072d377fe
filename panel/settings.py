"""Settings come from the environment; defaults are safe for development only.

Production sets DJANGO_SECRET_KEY, MAILPANEL_ENCRYPTION_KEY, DATABASE_URL,
MAILPANEL_BASE_URL, MAILPANEL_ROOT=/ and MAILPANEL_HELPER="sudo /usr/local/sbin/mailpanel-helper".
"""

import json
import os
import secrets
import sys
import tempfile
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("MAILPANEL_VAR_DIR", BASE_DIR / "var"))


def env_bool(name, default=False):
    value = os.environ.get(name, "")
    if value == "":
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {value!r}")


def env_float(name, default):
    value = os.environ.get(name, "")
    try:
        return float(value) if value else default
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, not {value!r}")


def env_int(name, default):
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {value!r}")


def env_networks(name):
    """Comma-separated IP addresses or CIDR networks, as normalised strings."""
    import ipaddress

    networks = []
    for item in os.environ.get(name, "").split(","):
        if item.strip():
            try:
                networks.append(str(ipaddress.ip_network(item.strip(), strict=False)))
            except ValueError:
                raise ImproperlyConfigured(f"{name}: {item.strip()!r} is not an IP address or network")
    return networks


def _dev_secret(filename, make):
    """A per-checkout secret kept in var/ so development needs no setup."""
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    path = VAR_DIR / filename
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(make())
    return path.read_text().strip()


def _fernet_key():
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


DEBUG = env_bool("DJANGO_DEBUG", False)
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY") or _dev_secret(
    "secret_key", lambda: secrets.token_urlsafe(50)
)
# Comma-separated Fernet keys, newest first (MultiFernet: old keys still decrypt).
MAILPANEL_ENCRYPTION_KEY = os.environ.get("MAILPANEL_ENCRYPTION_KEY") or _dev_secret(
    "encryption_key", _fernet_key
)

ALLOWED_HOSTS = [
    h.strip()
    for h in os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost").split(",")
    if h.strip()
]
CSRF_TRUSTED_ORIGINS = [
    o.strip() for o in os.environ.get("DJANGO_CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()
]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "django_tasks_db",
    "axes",
    "mailadmin",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Before anything reads the Host: it answers autoconfig/autodiscover for
    # hosted domains, whose names ALLOWED_HOSTS cannot list (views/autoconfig.py).
    "mailadmin.views.autoconfig.AutoconfigMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last, as axes asks: it turns a lockout flagged during login into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "panel.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "django.template.context_processors.i18n",
            ],
        },
    },
    {
        # Markup drawn many times a page (the domain list's 50 rows, the tab
        # bar): Jinja2 renders it in about a tenth of the Django engine's time,
        # with the same autoescaping. Its templates live apart, under
        # templates/jinja2/ (views.shell.fast_template).
        "NAME": "jinja2",
        "BACKEND": "django.template.backends.jinja2.Jinja2",
        "DIRS": [BASE_DIR / "templates" / "jinja2"],
        "APP_DIRS": False,
    },
]
WSGI_APPLICATION = "panel.wsgi.application"
# Form fields render through Jinja2 (Django ships the same widget templates for
# it): about five times faster than the Django engine; mailadmin.form_renderer
# draws the same HTML with fewer renders still (no includes, no render for an
# empty error list).
FORM_RENDERER = "mailadmin.form_renderer.FormRenderer"

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'mailpanel.sqlite3'}",
        conn_max_age=60,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The task worker and gunicorn write concurrently: wait instead of "database is locked".
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )
    # Tests use a file, not shared-cache memory: the task worker and the live
    # server run in other threads, and shared-cache SQLite locks whole tables.
    DATABASES["default"]["TEST"] = {
        "NAME": os.path.join(tempfile.gettempdir(), f"mailpanel-test-{os.getpid()}.sqlite3")
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

def env_choice(name, choices, default):
    value = os.environ.get(name, "")
    if value == "":
        return default
    if value not in choices:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(choices)}, not {value!r}")
    return value


# "database": the one-server install (django-tasks-db, SQLite or PostgreSQL).
# "rq": several mail nodes, each with its own worker on its queue node-<name>
# (django-tasks-rq on Redis; the database must be PostgreSQL, shared by all).
MAILPANEL_TASK_BACKEND = env_choice("MAILPANEL_TASK_BACKEND", ("database", "rq"), "database")
TASKS = {
    "default": {
        "BACKEND": "django_tasks_db.DatabaseBackend",
        # "default": applies and installs; "checks": network checks people start
        # (relay test, DNS check, diagnostics). Separate workers serve them, so
        # an apply never waits behind a queue of checks (deploy/systemd).
        "QUEUES": ["default", "checks"],
    }
}
if MAILPANEL_TASK_BACKEND == "rq":
    from panel.rq import NodeQueues, redis_url

    MAILPANEL_REDIS_URL = redis_url(
        "MAILPANEL_REDIS_URL", os.environ.get("MAILPANEL_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    INSTALLED_APPS.append("django_rq")
    RQ_QUEUES = NodeQueues(
        {name: {"URL": MAILPANEL_REDIS_URL, "DEFAULT_TIMEOUT": 900} for name in ("default", "checks")}
    )
    TASKS["default"]["BACKEND"] = "panel.rq_backend.NodeRQBackend"
# The node whose applies this process's worker runs (node_worker's default).
MAILPANEL_NODE = os.environ.get("MAILPANEL_NODE", "")
# A node's worker writes its heartbeat this often; the node list flags a node
# whose last heartbeat is older than MAILPANEL_NODE_STALE_SECONDS.
MAILPANEL_NODE_HEARTBEAT_SECONDS = env_float("MAILPANEL_NODE_HEARTBEAT_SECONDS", 15)
MAILPANEL_NODE_STALE_SECONDS = env_int("MAILPANEL_NODE_STALE_SECONDS", 120)
# The SMTP port an old node forwards a moving domain's mail to on the new node
# (every node's Exim listens on it: 25 in production).
MAILPANEL_NODE_SMTP_PORT = env_int("MAILPANEL_NODE_SMTP_PORT", 25)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
# Axes first: it refuses a locked-out (user, address) before any password is checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "mailadmin.auth_backend.UsernameBackend",
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "mailadmin:domain_list"
LOGOUT_REDIRECT_URL = "login"
# Django's database sessions, read with one prepared statement (mailadmin/session_store.py).
SESSION_ENGINE = "mailadmin.session_store"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env_bool("MAILPANEL_SECURE_COOKIES", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE

LANGUAGE_CODE = "en"
LANGUAGES = [("en", _("English")), ("zh-hans", _("Simplified Chinese"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
USE_I18N = True
TIME_ZONE = "UTC"
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
# Serve from the source folders too, so a checkout works before collectstatic.
WHITENOISE_USE_FINDERS = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
    },
    "root": {"handlers": ["console"], "level": os.environ.get("MAILPANEL_LOG_LEVEL", "INFO")},
    # Axes says INFO for every login and clean-up; failures and lockouts are WARNING.
    "loggers": {"axes": {"level": "WARNING"}},
}

# --- mailpanel ---------------------------------------------------------------
MAILPANEL_BASE_URL = os.environ.get("MAILPANEL_BASE_URL", "http://127.0.0.1:8000").rstrip("/")
MAILPANEL_ROOT = os.environ.get("MAILPANEL_ROOT", str(VAR_DIR / "root"))


def _layout_file(path: str) -> dict:
    """The helper's Layout (/etc/mailpanel/layout.json, written by install.sh):
    the panel renders with the same values, so its hashes match the live files."""
    if not path:
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            values = json.load(f)
    except (OSError, ValueError) as e:
        raise ImproperlyConfigured(f"MAILPANEL_LAYOUT_FILE {path}: {e}") from e
    if not isinstance(values, dict):
        raise ImproperlyConfigured(f"MAILPANEL_LAYOUT_FILE {path}: not a JSON object")
    return {key: tuple(value) if isinstance(value, list) else value for key, value in values.items()}


# Layout overrides (mailconf.snapshot.Layout fields); tests set the setting directly.
MAILPANEL_LAYOUT = _layout_file(os.environ.get("MAILPANEL_LAYOUT_FILE", ""))
MAILPANEL_HELPER = os.environ.get(
    "MAILPANEL_HELPER",
    f"{sys.executable} {BASE_DIR / 'deploy' / 'mailpanel_helper.py'} --root {MAILPANEL_ROOT} --no-chown --service-command true",
)
MAILPANEL_HELPER_TIMEOUT = env_float("MAILPANEL_HELPER_TIMEOUT", 60)
# DNS and network checks: production talks to the internet, tests point these at loopback.
MAILPANEL_RESOLVERS = [
    r.strip() for r in os.environ.get("MAILPANEL_RESOLVERS", "").split(",") if r.strip()
]  # "ip[:port]"; empty = the system resolver
MAILPANEL_PORT25_TARGET = os.environ.get("MAILPANEL_PORT25_TARGET", "ASPMX.L.GOOGLE.COM:25")
# Where the "name served" check connects (993, 465, 587 with mail.<domain> as
# SNI); empty = the host name of the domain's node. Tests: 127.0.0.1.
MAILPANEL_TLS_CHECK_HOST = os.environ.get("MAILPANEL_TLS_CHECK_HOST", "")
MAILPANEL_CHECK_TIMEOUT = env_float("MAILPANEL_CHECK_TIMEOUT", 5.0)
MAILPANEL_SNAPPYMAIL_URL = os.environ.get("MAILPANEL_SNAPPYMAIL_URL", "")
MAILPANEL_SNAPPYMAIL_SHA256 = os.environ.get("MAILPANEL_SNAPPYMAIL_SHA256", "")
# Where the SnappyMail admin panel is reached (https://webmail.example.net/); the
# admin key is added as its query. Empty: https://<server hostname>/.
MAILPANEL_SNAPPYMAIL_ADMIN_URL = os.environ.get("MAILPANEL_SNAPPYMAIL_ADMIN_URL", "")
# Panel mail with panel SMTP off goes to the local MTA over SMTP.
MAILPANEL_LOCAL_SMTP = os.environ.get("MAILPANEL_LOCAL_SMTP", "127.0.0.1:25")
MAILPANEL_SMTP_CA_FILE = os.environ.get("MAILPANEL_SMTP_CA_FILE", "")  # empty = system store
MAILPANEL_SMTP_TIMEOUT = env_float("MAILPANEL_SMTP_TIMEOUT", 30)
MAILPANEL_CLOUDFLARE_IPS_FILE = os.environ.get("MAILPANEL_CLOUDFLARE_IPS_FILE", "")  # empty = shipped list
# Login throttling (django-axes, mailadmin/login_throttle.py): this many failures
# for one user name from one client address lock that pair out for the cool-off,
# counted again from each further try.
MAILPANEL_LOGIN_ATTEMPTS = env_int("MAILPANEL_LOGIN_ATTEMPTS", 10)
MAILPANEL_LOGIN_COOLOFF_MINUTES = env_int("MAILPANEL_LOGIN_COOLOFF_MINUTES", 15)
# The client address comes from X-Forwarded-For only when the direct peer is one
# of these (comma-separated IPs or CIDRs); empty = REMOTE_ADDR, no proxy trusted.
MAILPANEL_TRUSTED_PROXIES = env_networks("MAILPANEL_TRUSTED_PROXIES")
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_FAILURE_LIMIT = "mailadmin.login_throttle.failure_limit"
AXES_COOLOFF_TIME = "mailadmin.login_throttle.cool_off"
AXES_USERNAME_CALLABLE = "mailadmin.login_throttle.throttle_username"
AXES_CLIENT_IP_CALLABLE = "mailadmin.client_address.client_address"
AXES_LOCKOUT_CALLABLE = "mailadmin.login_throttle.lockout_response"
AXES_RESET_ON_SUCCESS = True
# No row per successful login (nothing shows them; the audit log is ours).
AXES_DISABLE_ACCESS_LOG = True
# new_password: the mailbox self-service form counts a wrong current password as a failed login.
AXES_SENSITIVE_PARAMETERS = ["username", "ip_address", "password", "new_password", "csrfmiddlewaretoken"]
MAILPANEL_DOMAINS_PER_PAGE = 50
# Network checks a customer starts (relay test, DNS check, diagnostics): at most
# this many in a sliding window of this many seconds (admins are not limited).
MAILPANEL_USER_CHECKS_LIMIT = env_int("MAILPANEL_USER_CHECKS_LIMIT", 20)
MAILPANEL_USER_CHECKS_WINDOW = env_int("MAILPANEL_USER_CHECKS_WINDOW", 600)
# Tests may only use 127.0.0.0/8 and ::1: this lets a customer's relay test reach
# loopback (and nothing else that is refused), so tests can run the customer's
# own path. Deliberately not read from the environment.
MAILPANEL_CUSTOMER_TARGETS_ALLOW_LOOPBACK = False
# Housekeeping (the daily `manage.py housekeeping`): rows older than this many
# days are deleted. The latest DNS result of each domain and unfinished jobs stay.
MAILPANEL_KEEP_LOGIN_FAILURES_DAYS = env_int("MAILPANEL_KEEP_LOGIN_FAILURES_DAYS", 30)
MAILPANEL_KEEP_RESET_REQUESTS_DAYS = env_int("MAILPANEL_KEEP_RESET_REQUESTS_DAYS", 30)
MAILPANEL_KEEP_DNS_RESULTS_DAYS = env_int("MAILPANEL_KEEP_DNS_RESULTS_DAYS", 90)
MAILPANEL_KEEP_JOBS_DAYS = env_int("MAILPANEL_KEEP_JOBS_DAYS", 90)
# A deleted domain's Maildirs wait in <mail root>/.deleted/ this long (a restore window).
MAILPANEL_KEEP_DELETED_MAIL_DAYS = env_int("MAILPANEL_KEEP_DELETED_MAIL_DAYS", 30)
# DMARC aggregate reports: the panel reads each domain's reports mailbox over
# IMAP here (host:port; 993 = IMAPS), with the password it made for it.
MAILPANEL_DMARC_IMAP = os.environ.get("MAILPANEL_DMARC_IMAP", "127.0.0.1:143")
MAILPANEL_DMARC_IMAP_TIMEOUT = env_float("MAILPANEL_DMARC_IMAP_TIMEOUT", 30)
# Mailbox self-service puts the out-of-office Sieve script here (host:port),
# logged in as the mailbox with the password its owner types.
MAILPANEL_MANAGESIEVE = os.environ.get("MAILPANEL_MANAGESIEVE", "127.0.0.1:4190")
# Aggregate report rows are deleted by housekeeping after this many days.
MAILPANEL_KEEP_DMARC_DAYS = env_int("MAILPANEL_KEEP_DMARC_DAYS", 400)
# Certificates from an ACME CA (services.certificates): its directory URL,
# the CA file that verifies its HTTPS (empty = the system store), the
# contact address of the account, and the folder whose
# .well-known/acme-challenge/ the web server serves on port 80 (HTTP-01;
# the panel's user writes the tokens there).
MAILPANEL_ACME_DIRECTORY = os.environ.get(
    "MAILPANEL_ACME_DIRECTORY", "https://acme-v02.api.letsencrypt.org/directory"
)
MAILPANEL_ACME_CA_BUNDLE = os.environ.get("MAILPANEL_ACME_CA_BUNDLE", "")
MAILPANEL_ACME_EMAIL = os.environ.get("MAILPANEL_ACME_EMAIL", "")
MAILPANEL_ACME_WEBROOT = os.environ.get("MAILPANEL_ACME_WEBROOT", str(VAR_DIR / "acme-webroot"))
MAILPANEL_ACME_TIMEOUT = env_float("MAILPANEL_ACME_TIMEOUT", 120)

# Panel mail: the backend reads the admin's panel-SMTP settings at send time.
EMAIL_BACKEND = "mailadmin.services.panel_smtp.PanelEmailBackend"
DEFAULT_FROM_EMAIL = os.environ.get("MAILPANEL_FROM_EMAIL", "mailpanel@localhost")
