"""pytest plugin: fixtures around tests/mailstack.py (no Django).

Loaded by tests/conftest.py (``pytest_plugins``). The fixtures render into
the test's tmp_path and start real daemons on 127.0.0.1; each test gets its
own tree, spool and ports.
"""

from __future__ import annotations

import contextlib

import pytest

from tests import mailstack


@pytest.fixture(scope="session")
def mail_pki(tmp_path_factory) -> mailstack.PKI:
    """The test CA, a loopback server certificate from it, and one from an
    unrelated CA (the "wrong certificate" case)."""
    return mailstack.mail_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def mailstack_tree(tmp_path, mail_pki):
    """``mailstack_tree(snapshot, **layout_overrides) -> Layout``: render a
    fresh tree (linked from tmp_path; call again with ``layout=`` to
    re-render the same tree). Trees are removed at teardown."""
    mailstack.require_root()

    def render(snapshot, **overrides):
        return mailstack.render_tree(snapshot, tmp_path, **overrides)

    yield render
    mailstack.remove_trees()


@pytest.fixture
def smtp_sinks():
    """``smtp_sinks(**options) -> SmtpSink``: start as many sinks as a test
    needs (see mailstack.smtp_sink); all stopped at teardown."""
    with contextlib.ExitStack() as stack:
        yield lambda **options: stack.enter_context(mailstack.smtp_sink(**options))


@pytest.fixture
def fake_dns(tmp_path):
    """``fake_dns(records) -> FakeDNS`` (see mailstack.fake_dns); stopped at
    teardown. Pass it as ``dns=`` to exim_bt / exim_bh / exim_daemon."""
    mailstack.require_root()
    with contextlib.ExitStack() as stack:
        yield lambda records: stack.enter_context(mailstack.fake_dns(records, tmp_path))
