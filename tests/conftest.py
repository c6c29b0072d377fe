import importlib.util
import os

import pytest
from django.contrib.auth import get_user_model

# The RQ node tests start worker processes that must read the same database as
# the test: an in-memory SQLite test database is this process's alone, so they
# run in make test's PostgreSQL pass (DATABASE_URL), not in the SQLite one.
collect_ignore = [] if os.environ.get("DATABASE_URL", "").startswith("postgres") else ["test_nodes_rq.py", "test_certificates_nodes_rq.py"]

# Real-daemon fixtures (exim, dovecot, SMTP sinks) live in their own plugin module.
if importlib.util.find_spec("tests.conftest_mailstack"):
    pytest_plugins = ["tests.conftest_mailstack"]


@pytest.fixture
def alice(db):
    """A customer who owns domains in most tests."""
    return get_user_model().objects.create_user("alice", password="alice-pass-123")


@pytest.fixture
def bob(db):
    """Another customer: must never reach alice's objects."""
    return get_user_model().objects.create_user("bob", password="bob-pass-123")


@pytest.fixture
def admin_user(db):
    return get_user_model().objects.create_user(
        "root-admin", password="admin-pass-123", is_staff=True, is_superuser=True
    )


@pytest.fixture
def alice_client(client, alice):
    client.force_login(alice)
    return client


@pytest.fixture
def admin_client_(client, admin_user):
    client.force_login(admin_user)
    return client


@pytest.fixture(autouse=True)
def _test_settings(settings):
    settings.LANGUAGE_CODE = "en"
    # Full-strength password hashing costs ~0.5 s a user; tests make hundreds.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # Mail account hashes at bcrypt cost 4; the production cost is tested on its own.
    settings.MAILPANEL_BCRYPT_ROUNDS = 4


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Skips exist only for a missing optional tool on a developer's machine.
    CI installs every tool, so there a skip means a broken install: fail it."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped on CI, where every tool is installed: {report.longrepr}"
