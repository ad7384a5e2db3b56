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
