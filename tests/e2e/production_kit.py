"""What ``test_production_plugins.py`` stands on, taken from the suites that own it.

Nothing here is a copy: the pieces come from where they are tested.

- ``worker_kit`` (tests/core/worker): :class:`Process` (a subprocess in its own session,
  its output in a log, stopped with its whole process group) and :func:`wait_for`.
- ``email_ses_kit`` (tests/plugins/email_ses): :class:`MotoServer` (``moto_server`` on
  127.0.0.1, what SES "sent" read back) and :data:`VERIFIED_SENDER`.
- The cdn_fastly suite's conftest: :class:`FakeFastly`, the checking stand-in for
  Fastly's purge API.
- The worker suite's conftest: the ``redis_url`` fixture (the shared Redis; missing, it
  skips, or fails under ``CI=true``) and ``worker_key_prefix`` (a prefix of the test's own,
  its keys deleted afterwards).

Those directories have no ``__init__.py``; their own tests import ``worker_kit`` and
``email_ses_kit`` by name because pytest puts their directory on ``sys.path`` (the default
"prepend" import mode). This module does the same, so those names stay one module in a
run that collects both suites. The two conftests cannot be imported by name (every
conftest is ``conftest``), so they are loaded from their files under names of their own;
they only define functions and classes.

Also here: the isolated environment twine runs in, and the outbox rows still pending, read
straight from the database (there is no CLI command for them).
"""

from __future__ import annotations

import asyncio
import importlib.util
import sqlite3
import sys
from pathlib import Path
from types import ModuleType

from cheeseshop.testing import clients as testing_clients

_TESTS = Path(__file__).resolve().parents[1]

for _directory in (_TESTS / "core" / "worker", _TESTS / "plugins" / "email_ses"):
    if str(_directory) not in sys.path:
        sys.path.append(str(_directory))

import email_ses_kit  # noqa: E402
import worker_kit  # noqa: E402


def _load(path: Path, name: str) -> ModuleType:
    """Import the file at ``path`` as module ``name`` (once)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_fastly_conftest = _load(
    _TESTS / "plugins" / "cdn_fastly" / "conftest.py", "_production_kit_cdn_fastly_conftest"
)
_worker_conftest = _load(
    _TESTS / "core" / "worker" / "conftest.py", "_production_kit_worker_conftest"
)

FakeFastly = _fastly_conftest.FakeFastly
Received = _fastly_conftest.Received
MotoServer = email_ses_kit.MotoServer
VERIFIED_SENDER: str = email_ses_kit.VERIFIED_SENDER
Process = worker_kit.Process
wait_for = worker_kit.wait_for
#: Fixtures, re-exported so that a test module can put them in its namespace.
redis_url = _worker_conftest.redis_url
worker_key_prefix = _worker_conftest.worker_key_prefix


def client_env(root: Path) -> dict[str, str]:
    """An environment for twine built from scratch, as the e2e ``clients`` fixture builds it:
    no user config, keyring, proxy or terminal, so nothing on this machine changes the outcome.
    """
    return testing_clients.client_env(root / "client-home")


_PENDING_EVENTS = "SELECT id, hook, kind FROM outbox_events WHERE completed IS NULL ORDER BY id"
_PENDING_DELIVERIES = (
    "SELECT event_id, plugin, attempts, last_error FROM outbox_deliveries"
    " WHERE delivered IS NULL ORDER BY event_id"
)
_ALL_EVENTS = "SELECT id, hook, kind FROM outbox_events ORDER BY id"
_SENT = "SELECT recipient, message_id, error FROM notification_emails ORDER BY id"


def read_database(sqlite_path: Path | None, libpq_url: str | None) -> dict[str, list[tuple]]:
    """The outbox's events (all, and those still pending), its deliveries not yet done, and
    the e-mails recorded as sent; from the SQLite file, or from PostgreSQL over libpq.
    """
    queries = {
        "events": _ALL_EVENTS,
        "pending_events": _PENDING_EVENTS,
        "pending_deliveries": _PENDING_DELIVERIES,
        "sent": _SENT,
    }
    if libpq_url is None:
        assert sqlite_path is not None
        connection = sqlite3.connect(f"file:{sqlite_path}?mode=ro", uri=True, timeout=10)
        try:
            return {key: connection.execute(sql).fetchall() for key, sql in queries.items()}
        finally:
            connection.close()
    return asyncio.run(_read_postgres(libpq_url, queries))


async def _read_postgres(url: str, queries: dict[str, str]) -> dict[str, list[tuple]]:
    import asyncpg

    connection = await asyncpg.connect(url, timeout=5)
    try:
        return {
            key: [tuple(row) for row in await connection.fetch(sql)]
            for key, sql in queries.items()
        }
    finally:
        await connection.close()
