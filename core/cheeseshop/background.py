"""Background tasks of the web process: stopped gracefully, never fire-and-forget."""

from __future__ import annotations

import asyncio

__all__ = ["stop_gracefully"]


async def stop_gracefully(task: asyncio.Task[None], stopping: asyncio.Event, *, grace: float) -> None:
    """Ask ``task`` to stop (set ``stopping``), let it finish for up to ``grace`` seconds,
    then cancel it.

    Cancelling in the middle of a database call would leave the driver's thread talking to
    a closed loop; the tasks using this re-do, on their next run, whatever a cancellation
    cut short.
    """
    stopping.set()
    try:
        await asyncio.wait_for(asyncio.shield(task), timeout=grace)
    except TimeoutError:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
