"""The default event dispatchers, used when no broker is configured (the embedded mode).

:class:`EmbeddedDispatcher` is a background loop: dispatched ids are delivered at once,
and every ``sweep_seconds`` (or sooner, when a retry falls due) it also delivers whatever
the outbox still holds, so nothing is lost across restarts. It runs in the web process
with ``outbox_delivery = "inline"``, and in ``cheeseshop deliver`` (see
:mod:`cheeseshop.outbox.process`) with ``"process"``, the default, where the web
processes get a :class:`DeliveredElsewhere` that leaves the events to that process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from cheeseshop.background import stop_gracefully
from cheeseshop.config import Settings
from cheeseshop.db.models import utcnow
from cheeseshop.plugins import hookimpl

if TYPE_CHECKING:
    from cheeseshop.outbox import Outbox

__all__ = ["DeliveredElsewhere", "EmbeddedDispatcher", "cheeseshop_event_dispatcher"]

log = logging.getLogger(__name__)


class EmbeddedDispatcher:
    """Delivers outbox events from an asyncio task in this process."""

    def __init__(self, sweep_seconds: float) -> None:
        self.sweep_seconds = sweep_seconds
        self._queue: asyncio.Queue[int] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def start(self, outbox: Outbox) -> None:
        """Start the loop; it begins with a sweep of what earlier runs left."""
        self._queue = asyncio.Queue()
        self._stopping = asyncio.Event()
        self._task = asyncio.create_task(self._run(outbox), name="cheeseshop-outbox")

    async def dispatch(self, event_ids: Sequence[int]) -> None:
        """Queue ids for the loop."""
        for event_id in event_ids:
            self._queue.put_nowait(event_id)

    async def stop(self, *, grace: float = 5.0) -> None:
        """Let the delivery in progress finish (up to ``grace`` seconds), then stop.

        Cancelling in the middle of a database call would leave the driver's thread
        talking to a closed loop; a delivery cut short by the grace period is simply
        retried later (its lease expires).
        """
        if self._task is None:
            return
        await stop_gracefully(self._task, self._stopping, grace=grace)
        self._task = None

    def _wait_seconds(self, upcoming: datetime | None) -> float:
        if upcoming is None:
            return self.sweep_seconds
        return max(0.05, min(self.sweep_seconds, (upcoming - utcnow()).total_seconds()))

    async def _next_ids(self, wait: float) -> list[int]:
        """Ids dispatched within ``wait`` seconds (empty on time-out or stop)."""
        getter = asyncio.ensure_future(self._queue.get())
        stopper = asyncio.ensure_future(self._stopping.wait())
        done, _ = await asyncio.wait({getter, stopper}, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if getter not in done:
            getter.cancel()
            return []
        ids = [getter.result()]
        while not self._queue.empty():
            ids.append(self._queue.get_nowait())
        return ids

    async def _run(self, outbox: Outbox) -> None:
        # Dispatched ids are delivered as they come, without looking at the rest of the
        # outbox: an upload costs its deliveries and nothing more. The outbox is swept at
        # start, every sweep_seconds (or sooner, when a retry falls due), and right after
        # a delivery that left something to retry.
        next_sweep = time.monotonic()
        while not self._stopping.is_set():
            ids = await self._next_ids(max(0.0, next_sweep - time.monotonic()))
            if self._stopping.is_set():
                return
            try:
                delivered = await outbox.deliver_many(ids, stop=self._stopping)
                if self._stopping.is_set():
                    return
                complete = delivered.issuperset(ids)
                if complete and time.monotonic() < next_sweep:
                    continue
                next_sweep = time.monotonic() + await self._sweep(outbox)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox delivery loop failed; retrying in %.0fs", self.sweep_seconds)
                next_sweep = time.monotonic() + self.sweep_seconds

    async def _sweep(self, outbox: Outbox) -> float:
        """Deliver whatever is due; returns the seconds until the next sweep."""
        due, upcoming = await outbox.due()
        if due:
            await outbox.deliver_many(due, stop=self._stopping)
            _, upcoming = await outbox.due(limit=0)
        return self._wait_seconds(upcoming)


class DeliveredElsewhere:
    """The web side of ``outbox_delivery = "process"``: committed events are left in the
    outbox, where the ``cheeseshop deliver`` process finds them within
    ``outbox_poll_seconds``."""

    async def start(self, outbox: Outbox) -> None:
        """Nothing to start: the deliverer runs in its own process."""

    async def dispatch(self, event_ids: Sequence[int]) -> None:
        """Nothing to hand over: the deliverer polls the outbox."""

    async def stop(self) -> None:
        """Nothing to stop."""


@hookimpl(trylast=True)
def cheeseshop_event_dispatcher(settings: Settings) -> EmbeddedDispatcher | DeliveredElsewhere:
    """Default dispatcher: the ``cheeseshop deliver`` process, or in-process (``inline``)."""
    if settings.outbox_delivery == "process":
        return DeliveredElsewhere()
    return EmbeddedDispatcher(settings.outbox_sweep_seconds)
