"""Following the journal: which projects changed since a serial, for a cache to purge.

Every committed change writes a journal entry, so reading the entries past the last one
seen tells a cache what changed, whoever made the change (another web process, the CLI)
and whatever happened to the purge sent at the time (Redis down, a crash).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from cheeseshop.cache.keys import change_keys
from cheeseshop.db.models import JournalEntry
from cheeseshop.packaging.names import normalize

__all__ = ["changes_since", "follow"]

log = logging.getLogger(__name__)

#: Most entries read per poll; a longer backlog is read over the next polls.
BATCH = 10_000

_CHANGES = (
    select(JournalEntry.id, JournalEntry.name)
    .where(JournalEntry.id > bindparam("after"))
    .order_by(JournalEntry.id)
    .limit(bindparam("limit"))
)


def changes_since(session: Session, after: int) -> tuple[int, set[str]]:
    """The serial read up to, and the cache keys changed by entries after ``after``."""
    rows = session.execute(_CHANGES, {"after": after, "limit": BATCH}).all()
    if not rows:
        return after, set()
    return rows[-1][0], {key for _, name in rows for key in change_keys(normalize(name))}


async def follow(
    stopping: asyncio.Event,
    interval: float,
    step: Callable[[], Awaitable[None]],
) -> None:
    """Call ``step`` every ``interval`` seconds until ``stopping``; a failing step is logged."""
    while True:
        try:
            await asyncio.wait_for(stopping.wait(), timeout=interval)
            return
        except TimeoutError:
            pass
        try:
            await step()
        except Exception:  # the database or Redis may be down for a while: keep following
            log.warning("page cache: could not follow the journal", exc_info=True)
