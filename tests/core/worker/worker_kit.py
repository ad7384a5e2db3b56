"""Helpers of the worker tests: subprocesses, waits, the recorder's output, settings as variables.

Imported by the tests of this folder (``from worker_kit import ...``); the fixtures that use
them are in ``conftest.py``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import redis
from pydantic import BaseModel, SecretStr

from cheeseshop.config import Settings

#: Longest wait for anything a test waits for: a worker's start, a delivery.
WAIT = 45.0


def wait_for(
    predicate: Callable[[], Any], *, timeout: float = WAIT, what: str = "condition"
) -> Any:
    """Poll ``predicate`` until it returns something true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout:.0f}s")
        time.sleep(0.1)


def free_port() -> int:
    """A TCP port nothing listens on at the moment, on 127.0.0.1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def records(path: Path, kind: str | None = None) -> list[dict[str, Any]]:
    """What the recorder plugin wrote, optionally only one kind."""
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [line for line in lines if kind is None or line["kind"] == kind]


def settings_environ(settings: Settings) -> dict[str, str]:
    """``CHEESESHOP_*`` variables that make another process load the same settings."""
    environ: dict[str, str] = {}
    for key, value in settings:
        if key == "sections" or value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, list):
            value = ",".join(value)
        elif isinstance(value, bool):
            value = "true" if value else "false"
        environ[f"CHEESESHOP_{key.upper()}"] = str(value)
    for section, table in settings.sections.get("__raw__", {}).items():
        for key, value in table.items():
            if isinstance(value, BaseModel):
                value = value.model_dump(mode="json")
            text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
            environ[f"CHEESESHOP_{section.upper()}__{key.upper()}"] = text
    return environ


class Process:
    """One subprocess with its output in a log file."""

    def __init__(self, name: str, args: list[str], env: Mapping[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        self._output = log.open("ab")
        self.popen = subprocess.Popen(
            args, env=dict(env), stdout=self._output, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip

    @property
    def pid(self) -> int:
        """The process id (also its process group's)."""
        return self.popen.pid

    def output(self) -> str:
        """Everything it printed so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_for_output(self, text: str, *, timeout: float = WAIT) -> None:
        """Wait until it printed ``text``; fail at once if it exited."""

        def printed() -> bool:
            if self.popen.poll() is not None and text not in self.output():
                raise AssertionError(
                    f"{self.name} exited ({self.popen.returncode}):\n{self.output()[-4000:]}"
                )
            return text in self.output()

        try:
            wait_for(printed, timeout=timeout, what=f"{self.name} printing {text!r}")
        except AssertionError as error:
            raise AssertionError(
                f"{error}\n--- {self.name} output ---\n{self.output()[-4000:]}"
            ) from None

    def kill(self) -> None:
        """SIGKILL the whole process group: no clean-up, no acknowledgement."""
        self._signal_group(signal.SIGKILL)
        self.popen.wait(timeout=10)

    def stop(self, *, timeout: float = 15.0) -> None:
        """SIGTERM (a warm shutdown), then SIGKILL what is left after ``timeout``."""
        if self.popen.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        # A prefork worker's children, or whatever outlived its parent.
        self._signal_group(signal.SIGKILL)
        if self.popen.poll() is None:
            self.popen.wait(timeout=10)
        self._output.close()

    def _signal_group(self, signum: int) -> None:
        try:
            os.killpg(self.popen.pid, signum)
        except ProcessLookupError:
            pass


class Processes:
    """Starts the test's subprocesses and stops every one of them at the end."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[Process] = []

    def start(self, name: str, args: list[str], env: Mapping[str, str] | None = None) -> Process:
        """Start ``args`` with ``env`` added to a clean copy of this environment."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("CHEESESHOP_")}
        process = Process(name, args, {**base, **(env or {})}, self.directory / f"{name}.log")
        self.started.append(process)
        return process

    def cheeseshop(self, name: str, settings: Settings, *args: str, **env: str) -> Process:
        """``cheeseshop ARGS`` with ``settings`` (and further variables) in its environment."""
        return self.start(
            name, [sys.executable, "-m", "cheeseshop", *args], {**settings_environ(settings), **env}
        )

    def worker(self, name: str, settings: Settings, *, ready: bool = True) -> Process:
        """A Celery worker (one process) for ``settings``, by default ready when returned."""
        process = self.cheeseshop(
            name,
            settings,
            "worker",
            "--concurrency=1",
            "--loglevel=INFO",
            f"--hostname={name}-{uuid.uuid4().hex[:8]}@%h",
        )
        if ready:
            process.wait_for_output(" ready.")
        return process

    def beat(self, name: str, settings: Settings) -> Process:
        """A Celery beat (RedBeat) for ``settings``."""
        return self.cheeseshop(name, settings, "beat", "--loglevel=INFO")

    def stop_all(self) -> None:
        """Stop everything started, the last first."""
        for process in reversed(self.started):
            process.stop()


class PrivateRedis:
    """A redis-server of this test's own, on a free port, to stop and start at will."""

    def __init__(self, processes: Processes, binary: str) -> None:
        self.processes = processes
        self.binary = binary
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: Process | None = None

    def start(self) -> None:
        """Start it and wait until it answers."""
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        self.process = self.processes.start(f"redis-{self.port}", args)
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        try:
            wait_for(lambda: _pings(client), timeout=15, what=f"redis-server on port {self.port}")
        finally:
            client.close()

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL)."""
        if self.process is not None:
            self.process.stop()
            self.process = None


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
