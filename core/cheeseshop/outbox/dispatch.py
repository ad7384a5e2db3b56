"""The EventDispatcher protocol: how committed events reach whoever delivers them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from cheeseshop.outbox import Outbox

__all__ = ["EventDispatcher"]


@runtime_checkable
class EventDispatcher(Protocol):
    """Hands outbox event ids to a deliverer (an in-process loop, a Celery worker, ...).

    Dispatch is a hint, not a promise: the events are already committed, and a periodic
    sweep finds any that a lost hint left undelivered.
    """

    async def start(self, outbox: Outbox) -> None:
        """Begin delivering (called when the web process starts serving)."""

    async def dispatch(self, event_ids: Sequence[int]) -> None:
        """Ask for these committed events to be delivered soon. Must not block for long."""

    async def stop(self) -> None:
        """Finish the delivery in progress, then stop (called at shutdown)."""
