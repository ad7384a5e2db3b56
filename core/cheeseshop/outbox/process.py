"""Delivery in a process of its own: ``cheeseshop deliver``, started by ``cheeseshop serve``.

Without a broker, somebody still has to call the plugins for each committed event: render
and send an e-mail, purge a CDN. Doing it inside a web process makes every request
compete with it for the interpreter (an upload measured twice as slow while the e-mail
of the previous one was being written), and a plugin that hangs holds a thread the
requests need. So by default (``outbox_delivery = "process"``) the web processes only
commit events, and one deliverer process polls the outbox every
``outbox_poll_seconds`` and delivers what is due, with the same leased, per-plugin,
retried delivery the Celery worker uses. ``cheeseshop serve`` starts it, restarts it
if it dies, and stops it last.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from types import TracebackType

from cheeseshop.config import Settings
from cheeseshop.outbox.embedded import EmbeddedDispatcher

__all__ = ["DeliveryProcess", "run_deliverer"]

log = logging.getLogger(__name__)

#: Seconds between two starts of a deliverer that keeps dying (it is always restarted).
RESTART_DELAY = 1.0
#: Seconds a stopping deliverer gets to finish the delivery in flight before it is killed.
STOP_GRACE = 10.0


async def run_deliverer(settings: Settings, *, exit_with_parent: bool = False) -> None:
    """Deliver the outbox until SIGTERM or SIGINT (or, with ``exit_with_parent``, until
    the process that started this one is gone)."""
    from cheeseshop.app import build_services

    services = build_services(settings.model_copy(update={"outbox_delivery": "inline"}))
    # Sweeping every poll interval is the whole job: nothing dispatches ids to this loop.
    loop_runner = EmbeddedDispatcher(services.settings.outbox_poll_seconds)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    watcher = asyncio.create_task(_watch_parent(os.getppid(), stop)) if exit_with_parent else None
    # The page cache is not started: this process serves no pages, so it need not follow
    # the journal; the purges it delivers reach Redis through the page_cache plugin.
    await loop_runner.start(services.outbox)
    log.info("delivering outbox events every %gs", services.settings.outbox_poll_seconds)
    try:
        await stop.wait()
    finally:
        if watcher is not None:
            watcher.cancel()
        await loop_runner.stop()
        await services.cache.close()
        await services.db.dispose()


async def _watch_parent(parent: int, stop: asyncio.Event) -> None:
    # A serve killed with SIGKILL cannot stop its deliverer; the deliverer notices it was
    # re-parented and stops itself rather than deliver for a server that is gone.
    while os.getppid() == parent:
        await asyncio.sleep(1.0)
    log.info("the server that started this deliverer is gone; stopping")
    stop.set()


class DeliveryProcess:
    """Runs ``cheeseshop deliver`` as a child process, restarting it whenever it exits.

    A context manager: the child starts on entry and is stopped (SIGTERM, then SIGKILL
    after :data:`STOP_GRACE` seconds) on exit. It runs in a session of its own, so a
    Ctrl-C at the terminal reaches only the server, which then stops it in order.
    """

    def __init__(self, argv: Sequence[str], *, env: dict[str, str] | None = None) -> None:
        self.argv = list(argv)
        self.env = env
        self._process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._supervisor: threading.Thread | None = None

    @classmethod
    def for_cli(cls, config_file: str | None) -> DeliveryProcess:
        """The deliverer of this installation, with the same settings file as the server."""
        argv = [sys.executable, "-m", "cheeseshop"]
        if config_file:
            argv += ["--config", config_file]
        return cls([*argv, "deliver", "--exit-with-parent"])

    @property
    def pid(self) -> int | None:
        """The running child's process id, if any."""
        with self._lock:
            return self._process.pid if self._process is not None else None

    def __enter__(self) -> DeliveryProcess:
        self._spawn()
        self._supervisor = threading.Thread(target=self._supervise, name="cheeseshop-deliver", daemon=True)
        self._supervisor.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    def _spawn(self) -> None:
        # Under the lock, and never once stopping: stop() then sees every child started.
        with self._lock:
            if self._stopping.is_set():
                return
            self._process = subprocess.Popen(self.argv, env=self.env, start_new_session=True)
            pid = self._process.pid
        log.info("started the outbox deliverer (pid %d)", pid)

    def _supervise(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                process = self._process
            assert process is not None
            code = process.wait()
            if self._stopping.is_set():
                return
            log.warning("the outbox deliverer exited (%s); restarting it in %gs", code, RESTART_DELAY)
            if self._stopping.wait(RESTART_DELAY):
                return
            self._spawn()

    def stop(self) -> None:
        """Stop the child (SIGTERM, then SIGKILL) and its supervision."""
        self._stopping.set()
        with self._lock:
            process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                log.warning("the outbox deliverer did not stop within %gs; killing it", STOP_GRACE)
                process.kill()
                process.wait()
        if self._supervisor is not None:
            self._supervisor.join(timeout=STOP_GRACE)
