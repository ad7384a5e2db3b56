"""A real, installable Cheeseshop plugin for the test-suite.

Installed with ``pip install -e tests/testplugin`` and found through its entry point
``recorder`` in the group ``cheeseshop.plugins``. It appends every event it receives to
a JSON-lines file (its ``path`` setting), refuses uploads whose filename is listed in
``reject``, and adds a ``/-/recorder`` route, so each of its hooks is observable from
outside the process.

For the worker's tests: with ``block_until`` set, ``file_uploaded`` records ``blocked``
and waits until that file exists before recording the event (a delivery to kill in the
middle); with ``tick_seconds`` set, it declares the periodic task ``recorder.tick``,
which records ``tick`` (optionally taking ``tick_duration`` seconds).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

from quart import Quart

import cheeseshop
from cheeseshop import (
    FileUploaded,
    PeriodicTask,
    PluginSettings,
    ReleasePublished,
    Settings,
    UploadCandidate,
)


class RecorderSettings(PluginSettings):
    """``[recorder]`` section: where to write, and what to refuse."""

    path: Path | None = None
    reject: list[str] = []
    block_until: Path | None = None
    block_seconds: float = 120.0
    tick_seconds: float | None = None
    tick_duration: float = 0.0


def _write(settings: Settings, kind: str, data: dict) -> None:
    path = settings.section("recorder").path
    if path is None:
        return
    line = json.dumps({"kind": kind, "pid": os.getpid(), **data}, default=str) + "\n"
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.write(line)


@cheeseshop.hookimpl
def cheeseshop_settings() -> type[PluginSettings]:
    return RecorderSettings


@cheeseshop.hookimpl
def cheeseshop_configure(app: Quart, settings: Settings) -> None:
    section = settings.section("recorder")
    # Plugin state lives on the app, never on the module.
    app.extensions["recorder"] = section

    @app.get("/-/recorder")
    async def recorder_status() -> dict:
        return {"path": str(section.path) if section.path else None, "reject": section.reject}


@cheeseshop.hookimpl
def cheeseshop_validate_upload(candidate: UploadCandidate, settings: Settings) -> None:
    if candidate.filename in settings.section("recorder").reject:
        raise cheeseshop.UploadRejected(f"recorder refuses {candidate.filename}")


@cheeseshop.hookimpl
def cheeseshop_file_uploaded(event: FileUploaded, settings: Settings) -> None:
    section = settings.section("recorder")
    if section.block_until is not None and not section.block_until.exists():
        _write(settings, "blocked", {"filename": event.filename})
        deadline = time.monotonic() + section.block_seconds
        while not section.block_until.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{section.block_until} did not appear")
            time.sleep(0.05)
    _write(settings, "file_uploaded", event.to_json())


@cheeseshop.hookimpl
def cheeseshop_release_published(event: ReleasePublished, settings: Settings) -> None:
    _write(settings, "release_published", event.to_json())


@cheeseshop.hookimpl
def cheeseshop_periodic_tasks(settings: Settings) -> list[PeriodicTask] | None:
    every = settings.section("recorder").tick_seconds
    return None if every is None else [PeriodicTask("recorder.tick", every, _tick)]


def _tick(settings: Settings) -> None:
    started = time.time()
    time.sleep(settings.section("recorder").tick_duration)
    _write(settings, "tick", {"started": started, "finished": time.time()})
