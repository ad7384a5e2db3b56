"""Shared fixtures: the test kit, and every database-backed test on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cheeseshop.testing.services import (
    create_postgres_database,
    drop_postgres_database,
    migrated_sqlite,
    truncate_all,
)

pytest_plugins = ["cheeseshop.testing.pytest_plugin"]


@pytest.fixture(scope="session")
def postgres_template_url() -> Iterator[str]:
    """One migrated PostgreSQL database per test process (per xdist worker)."""
    name = f"cheeseshop_test_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}_{os.getpid()}"
    yield create_postgres_database(name)
    drop_postgres_database(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def cheeseshop_database_url(
    request: pytest.FixtureRequest, tmp_path: Path, _cheeseshop_sqlite_template: Path
) -> str:
    """Every test that uses the database runs on both SQLite and PostgreSQL."""
    if request.param == "sqlite":
        return migrated_sqlite(_cheeseshop_sqlite_template, tmp_path / "cheeseshop.db")
    url = request.getfixturevalue("postgres_template_url")
    asyncio.run(truncate_all(url))
    return url
