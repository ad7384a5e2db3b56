"""hypercorn's keep-alive idle timeout as a timer, not a task per idle period.

hypercorn closes a connection that stays idle for ``keep_alive_timeout`` seconds, or at
once when its worker is shutting down. It does so with a task: each time a connection
becomes idle (after every response on a keep-alive connection) it cancels the previous
task, awaits its end, and starts a new one that waits, through ``asyncio.wait_for``, for
the worker's ``terminated`` event with the timeout; each request cancels it again. That
is four tasks made or cancelled per request, and measured with callgrind it was 10% of
the web process's work on a cached Simple page.

:class:`IdleTimer` takes the place of the task holder hypercorn gives each connection
(``TCPServer.idle_task``): a connection that becomes idle gets a ``call_later`` timer,
and one task per worker waits for its ``terminated`` event and then closes whatever is
idle. The close itself is hypercorn's own (``TCPServer._initiate_server_close``). Any other
use of the holder (none in hypercorn 0.18) is left to hypercorn's own implementation.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable
from typing import Any

from hypercorn.asyncio import tcp_server
from hypercorn.asyncio.tcp_server import TCPServer
from hypercorn.asyncio.worker_context import AsyncioSingleTask

__all__ = ["IdleTimer", "install"]

log = logging.getLogger(__name__)

#: The idle connections of each worker (its WorkerContext), closed when it terminates.
_idle: weakref.WeakKeyDictionary[Any, set[IdleTimer]] = weakref.WeakKeyDictionary()
#: The tasks waiting for a worker to terminate (kept here: the loop holds tasks weakly).
_watchers: set[asyncio.Task[None]] = set()


class IdleTimer(AsyncioSingleTask):
    """A connection's idle timeout (see the module's docstring). Used by hypercorn as its
    ``AsyncioSingleTask``: ``restart`` when the connection becomes idle, ``stop`` when a
    request arrives and when the connection ends."""

    def __init__(self) -> None:
        super().__init__()
        self._server: TCPServer | None = None
        #: The idle connections of this one's worker, once known (its first restart).
        self._idle: set[IdleTimer] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closing: asyncio.Task[None] | None = None

    async def restart(self, task_group: Any, action: Callable[..., Any]) -> None:
        """Idle from now: close the connection after ``keep_alive_timeout`` seconds, or as
        soon as the worker terminates (at once if it has)."""
        server = self._server
        if server is None:
            server = getattr(action, "__self__", None)
            method = getattr(action, "__func__", None)
            if not isinstance(server, TCPServer) or method is not _IDLE_TIMEOUT:
                await super().restart(task_group, action)
                return
            self._server = server
            self._idle = _idle_of(server.context)
        self._cancel()
        if server.context.terminated.is_set():
            self.close()
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(server.config.keep_alive_timeout, self.close)
        self._idle.add(self)  # type: ignore[union-attr]

    async def stop(self) -> None:
        """Busy again, or closed: no timeout."""
        self._cancel()
        if self._handle is not None:  # started by hypercorn's own restart, above
            await super().stop()

    def close(self) -> None:
        """Close the idle connection, as hypercorn does when its idle time is up."""
        self._cancel()
        if self._server is not None and self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(_close(self._server))

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._idle.discard(self)  # type: ignore[union-attr]


def _idle_of(context: Any) -> set[IdleTimer]:
    """The idle connections of a worker, watched for its termination from the first on."""
    idle = _idle.get(context)
    if idle is None:
        idle = _idle[context] = set()
        watcher = asyncio.get_running_loop().create_task(_close_idle_on_termination(context, idle))
        _watchers.add(watcher)
        watcher.add_done_callback(_watchers.discard)
    return idle


async def _close(server: TCPServer) -> None:
    try:
        await server._initiate_server_close()
    except Exception:
        # hypercorn's task would have failed its connection's task group, which closes
        # the connection: so does this.
        log.debug("closing an idle connection failed; closing its socket", exc_info=True)
        server.writer.close()


async def _close_idle_on_termination(context: Any, idle: set[IdleTimer]) -> None:
    await context.terminated.wait()
    for timer in list(idle):
        timer.close()


_IDLE_TIMEOUT = TCPServer._idle_timeout


def install() -> None:
    """Give every connection hypercorn's asyncio worker accepts from now on an
    :class:`IdleTimer`. Idempotent."""
    tcp_server.AsyncioSingleTask = IdleTimer  # type: ignore[misc]
