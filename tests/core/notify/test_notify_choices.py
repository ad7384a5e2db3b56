"""Who is mailed: the per-user opt-out (and its CLI) and undeliverable addresses."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from notify_support import add_user
from sqlalchemy import select

from cheeseshop.cli import main
from cheeseshop.db import Database
from cheeseshop.db.models import Email, User
from cheeseshop.notify import clear_undeliverable, mark_address_undeliverable
from cheeseshop.testing.services import migrated_sqlite


async def email_row(services: Any, address: str) -> Email:
    async with services.db.read() as session:
        row = await session.scalar(select(Email).where(Email.email == address))
    assert row is not None
    return row


async def test_notify_mark_undeliverable_is_idempotent_and_case_blind(cheeseshop_services: Any) -> None:
    services = cheeseshop_services
    await add_user(services, "erin", email="Erin@Example.com")
    async with services.db.write() as session:
        (await session.scalars(select(Email))).one().verified = True

    assert await mark_address_undeliverable(services.db, "erin@example.COM", "Permanent bounce: General")
    first = await email_row(services, "Erin@Example.com")
    assert first.verified is False
    assert first.undeliverable_reason == "Permanent bounce: General"
    assert first.undeliverable_since is not None

    # Bounce reports come more than once: the first reason and time stay.
    assert await mark_address_undeliverable(services.db, "Erin@Example.com", "Complaint: abuse")
    again = await email_row(services, "Erin@Example.com")
    assert (again.undeliverable_since, again.undeliverable_reason) == (
        first.undeliverable_since, "Permanent bounce: General",
    )
    assert not await mark_address_undeliverable(services.db, "nobody@example.com", "Permanent bounce")

    assert await services.db.run_write(lambda session: clear_undeliverable(session, "erin@example.com"))
    cleared = await email_row(services, "Erin@Example.com")
    assert (cleared.undeliverable_since, cleared.undeliverable_reason, cleared.verified) == (None, None, False)


async def test_notify_mailer_marks_undeliverable_from_a_worker_thread(cheeseshop_services: Any) -> None:
    # How an e-mail plugin's hook (running in a worker thread) stops mailing an address.
    services = cheeseshop_services
    await add_user(services, "erin")
    mailer = services.outbox.mailer.bound(asyncio.get_running_loop())
    assert await asyncio.to_thread(mailer.mark_undeliverable, "erin@example.com", "Complaint")
    assert (await email_row(services, "erin@example.com")).undeliverable_reason == "Complaint"


# -- the command ----------------------------------------------------------------------------------


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _cheeseshop_sqlite_template: Path) -> Any:
    for name in list(os.environ):
        if name.startswith("CHEESESHOP_"):
            monkeypatch.delenv(name)
    data_dir = tmp_path / "data"
    url = migrated_sqlite(_cheeseshop_sqlite_template, data_dir / "cheeseshop.db")

    def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
        return CliRunner().invoke(main, list(args), env={"CHEESESHOP_DATA_DIR": str(data_dir), **(env or {})})

    invoke.url = url  # type: ignore[attr-defined]
    return invoke


def opted_in(url: str, username: str) -> bool:
    async def go() -> bool:
        db = Database(url)
        try:
            async with db.read() as session:
                return bool(await session.scalar(select(User.notify_release_published).where(User.username == username)))
        finally:
            await db.dispose()

    return asyncio.run(go())


def test_notify_cli_opt_out_and_back_in(cli: Any) -> None:
    created = cli(
        "user", "create", "alice", "--email", "alice@example.com", env={"CHEESESHOP_NEW_PASSWORD": "password123"}
    )
    assert created.exit_code == 0, created.output
    assert opted_in(cli.url, "alice")

    shown = cli("user", "notifications", "alice")
    assert shown.exit_code == 0, shown.output
    assert shown.output.splitlines() == [
        "alice: release-published e-mail on",
        "  alice@example.com (primary, unverified)",
    ]

    off = cli("user", "notifications", "alice", "--no-release-published")
    assert off.exit_code == 0 and off.output.startswith("alice: release-published e-mail off")
    assert not opted_in(cli.url, "alice")

    on = cli("user", "notifications", "alice", "--release-published")
    assert on.exit_code == 0 and on.output.startswith("alice: release-published e-mail on")
    assert opted_in(cli.url, "alice")


def test_notify_cli_shows_an_undeliverable_address(cli: Any) -> None:
    async def setup() -> None:
        db = Database(cli.url)
        try:
            async with db.write() as session:
                user = User(username="erin", password_hash="x")
                session.add(user)
                await session.flush()
                session.add(Email(user_id=user.id, email="erin@example.com", primary=True))
            await mark_address_undeliverable(db, "erin@example.com", "Permanent bounce: General")
        finally:
            await db.dispose()

    asyncio.run(setup())
    shown = cli("user", "notifications", "erin")
    assert shown.exit_code == 0, shown.output
    assert "erin@example.com (primary, unverified, undeliverable since " in shown.output
    assert shown.output.rstrip().endswith(" UTC: Permanent bounce: General)")


def test_notify_cli_unknown_user(cli: Any) -> None:
    result = cli("user", "notifications", "nobody", "--no-release-published")
    assert result.exit_code == 1
    assert "no user 'nobody'" in result.output
