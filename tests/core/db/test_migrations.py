"""Migrations are the only way the schema changes: they match the models on both databases."""

from __future__ import annotations

import asyncio

from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from cheeseshop.db import _alembic_config, make_engine, upgrade
from cheeseshop.db.models import Base


def _tables(url: str) -> set[str]:
    async def go() -> set[str]:
        engine = make_engine(url)
        try:
            async with engine.connect() as connection:
                return set(await connection.run_sync(lambda c: inspect(c).get_table_names()))
        finally:
            await engine.dispose()

    return asyncio.run(go())


def test_migrated_schema_matches_the_models(cheeseshop_database_url):
    # alembic check fails when autogenerate would emit any operation at all.
    command.check(_alembic_config(cheeseshop_database_url))
    assert set(Base.metadata.tables) <= _tables(cheeseshop_database_url)


def test_every_migration_downgrades_and_upgrades_again(cheeseshop_database_url):
    config = _alembic_config(cheeseshop_database_url)
    command.downgrade(config, "base")
    assert not set(Base.metadata.tables) & _tables(cheeseshop_database_url)
    upgrade(cheeseshop_database_url)
    command.check(config)


def test_migration_history_is_linear():
    script = ScriptDirectory.from_config(_alembic_config("sqlite://"))
    assert len(script.get_heads()) == 1


def test_upgrading_sqlite_keeps_every_row_that_a_rebuilt_table_is_referenced_by(tmp_path):
    """0002 rebuilds ``projects`` (a batch migration); its releases must survive it."""
    import sqlite3

    from alembic import command

    from cheeseshop.db import _alembic_config, upgrade

    url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    command.upgrade(_alembic_config(url), "0001")
    with sqlite3.connect(tmp_path / "old.db") as connection:
        connection.execute("PRAGMA foreign_keys=ON")
        connection.execute(
            "INSERT INTO projects (id, name, normalized_name, status, created, total_size, last_serial) "
            "VALUES (1, 'Kept', 'kept', 'active', '2026-01-01', 0, 1)"
        )
        connection.execute(
            "INSERT INTO releases (id, project_id, version, canonical_version, is_prerelease, created, "
            "classifiers, platforms, requires_dist, provides_extra, license_files, dynamic, project_urls, "
            "yanked) VALUES (1, 1, '1.0', '1', 0, '2026-01-01', '[]', '[]', '[]', '[]', '[]', '[]', '{}', 0)"
        )

    upgrade(url)

    with sqlite3.connect(tmp_path / "old.db") as connection:
        assert connection.execute("SELECT version FROM releases").fetchall() == [("1.0",)]
        assert connection.execute("PRAGMA foreign_key_check").fetchall() == []
