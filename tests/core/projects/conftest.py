"""Fixtures shared by the project-change tests."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from cheeseshop.cli import main


@pytest.fixture
def run_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cheeseshop_settings: Any
) -> Callable[..., Awaitable[Result]]:
    """``await run_cli("yank", ...)``: the command, in-process, against the test's database;
    ``input=`` is what the command reads from its standard input.

    In a thread: the command runs its own event loop, while the application's keeps running.
    """
    for name in list(os.environ):
        if name.startswith("CHEESESHOP_"):
            monkeypatch.delenv(name)
    env = {
        "CHEESESHOP_DATA_DIR": str(tmp_path / "cli"),
        "CHEESESHOP_DATABASE_URL": cheeseshop_settings.resolved_database_url,
    }

    async def invoke(*args: str, input: str | None = None) -> Result:
        return await asyncio.to_thread(CliRunner().invoke, main, list(args), env=env, input=input)

    return invoke
