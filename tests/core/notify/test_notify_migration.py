"""Migration 0004 on a database that already has users: everyone stays notified."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import command
from sqlalchemy import inspect, text

from cheeseshop.db import _alembic_config, make_engine, upgrade


def run_sql(url: str, *statements: str) -> list[Any]:
    async def go() -> list[Any]:
        engine = make_engine(url)
        try:
            async with engine.begin() as connection:
                results = []
                for statement in statements:
                    result = await connection.execute(text(statement))
                    results.append(result.all() if result.returns_rows else None)
                return results
        finally:
            await engine.dispose()

    return asyncio.run(go())


def columns(url: str, table: str) -> set[str]:
    async def go() -> set[str]:
        engine = make_engine(url)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(lambda c: {col["name"] for col in inspect(c).get_columns(table)})
        finally:
            await engine.dispose()

    return asyncio.run(go())


def test_notify_migration_0004_keeps_existing_users_notified(cheeseshop_database_url: str) -> None:
    url = cheeseshop_database_url  # SQLite and PostgreSQL, migrated to head
    command.downgrade(_alembic_config(url), "0003")
    assert "notify_release_published" not in columns(url, "users")
    run_sql(
        url,
        "INSERT INTO users (id, username, name, password_hash, is_active, is_superuser, date_joined) "
        "VALUES (7, 'old', '', 'x', true, false, '2026-01-01 00:00:00')",
        "INSERT INTO emails (id, user_id, email, \"primary\", verified) VALUES (7, 7, 'old@example.com', true, true)",
    )

    upgrade(url)

    (users, emails, sent) = run_sql(
        url,
        "SELECT username, notify_release_published FROM users",
        "SELECT email, verified, undeliverable_since, undeliverable_reason FROM emails",
        "SELECT count(*) FROM notification_emails",
    )
    assert users == [("old", True)]
    assert emails == [("old@example.com", True, None, None)]
    assert sent == [(0,)]
    # The schema the models describe, exactly (alembic check fails on any difference).
    command.check(_alembic_config(url))
