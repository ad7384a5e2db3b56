"""The services one application instance runs with, built once by ``create_app``."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from quart import current_app

if TYPE_CHECKING:
    from collections.abc import Iterable

    from cheeseshop.cache import PageCache
    from cheeseshop.config import Settings
    from cheeseshop.db import Database
    from cheeseshop.events import Event
    from cheeseshop.outbox import Outbox
    from cheeseshop.plugins import Hooks
    from cheeseshop.ratelimit import RateLimiter
    from cheeseshop.storage import FileStorage

__all__ = ["EXTENSION_KEY", "Services", "current_services"]

EXTENSION_KEY = "cheeseshop"


@dataclasses.dataclass
class Services:
    """Settings, hooks and the service objects chosen by plugins."""

    settings: Settings
    hooks: Hooks
    db: Database
    storage: FileStorage
    outbox: Outbox
    cache: PageCache
    ratelimiter: RateLimiter

    def events_to_record(self, events: Iterable[Event]) -> list[Event]:
        """The events some plugin needs delivered through the outbox, in order.

        An event no enabled plugin receives is not written at all. The core's own page
        cache needs purge events only when it is shared (Redis); a per-process cache is
        purged right after the commit and follows the journal for the rest.
        """
        return [event for event in events if self._needs_outbox(event)]

    def _needs_outbox(self, event: Event) -> bool:
        receivers = self.hooks.receiver_names(event.hook)
        if event.hook == "cheeseshop_purge" and not self.cache.needs_purge_events:
            receivers = [name for name in receivers if name != "page_cache"]
        return bool(receivers)


def current_services() -> Services:
    """The services of the application handling the current request."""
    return current_app.extensions[EXTENSION_KEY]
