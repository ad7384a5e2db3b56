"""What ``cheeseshop serve`` sets up in its process before serving.

Log records skip the caller, thread and process lookups, which were a good part of the
access line that every cache hit writes, and which the web process's format never shows
(``cheeseshop.web.access.lean_log_records``); and the event loop is uvloop's.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvloop
from click.testing import CliRunner

from cheeseshop import cli
from cheeseshop.web import access

SWITCHES = ("_srcfile", "logThreads", "logProcesses", "logMultiprocessing")


@pytest.fixture(autouse=True)
def restored_switches(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Whatever a test switches off is switched back on afterwards, for the other tests."""
    for name in SWITCHES:
        monkeypatch.setattr(logging, name, getattr(logging, name))
    # serve also batches the access lines (access.buffer_lines): undone the same way.
    monkeypatch.setattr(access.log, "handlers", list(access.log.handlers))
    monkeypatch.setattr(access.log, "propagate", access.log.propagate)
    before, level = set(access.log.handlers), access.log.level
    yield
    for handler in set(access.log.handlers) - before:
        handler.close()
    access.log.setLevel(level)


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _record_of(message: str) -> logging.LogRecord:
    logger = logging.getLogger("cheeseshop.test.lean")
    collect = Collect()
    logger.addHandler(collect)
    logger.setLevel(logging.INFO)
    try:
        logger.info(message)
    finally:
        logger.removeHandler(collect)
    [record] = collect.records
    return record


def test_lean_log_records_skip_caller_thread_and_process() -> None:
    before = _record_of("before")
    assert before.funcName == "_record_of"
    assert before.threadName is not None and before.process == os.getpid()

    access.lean_log_records()
    after = _record_of("after")

    assert after.getMessage() == "after"
    assert (after.funcName, after.lineno) == ("(unknown function)", 0)
    assert (after.thread, after.threadName, after.process, after.processName) == (None, None, None, None)


def _serve_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Run ``cheeseshop serve`` up to the point it would serve; what it had set up then."""
    for name in list(os.environ):
        if name.startswith("CHEESESHOP_"):
            monkeypatch.delenv(name)
    seen: dict[str, Any] = {}

    async def serve_once(app: Any, config: Any) -> None:
        seen["logThreads"] = logging.logThreads
        seen["loop"] = asyncio.get_running_loop()

    monkeypatch.setattr(cli, "_serve_until_signalled", serve_once)
    result = CliRunner().invoke(
        cli.main,
        ["serve", "--port", "8999"],
        env={"CHEESESHOP_DATA_DIR": str(tmp_path / "data"), "CHEESESHOP_OUTBOX_DELIVERY": "inline"},
    )
    assert result.exit_code == 0, result.output
    return seen


def test_lean_log_records_are_what_serve_runs_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _serve_once(tmp_path, monkeypatch)["logThreads"] is False
    assert _record_of("served").threadName is None


def test_serve_runs_on_uvloop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(_serve_once(tmp_path, monkeypatch)["loop"], uvloop.Loop)
