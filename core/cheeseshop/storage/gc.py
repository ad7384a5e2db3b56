"""Orphan collection: delete stored files that no database row references (R2).

The upload pipeline stores the bytes before the transaction that records them commits, so
a crash, a kill or a failed commit in between leaves a stored file without a row: never
visible (nothing links to it), but taking space. :func:`collect_orphans` deletes such
files once they are older than ``orphan_grace_seconds``, and with them the temporary files
an interrupted upload left in ``data_dir/tmp``.

The grace period is what keeps the collector off an upload in flight, which has stored
its file and not yet committed: it must exceed the longest upload (body time-out plus
checks plus commit), which the one-day default does by far.

Deleting a path whose upload is being *repeated* (a client retrying the very bytes of an
old orphan) is guarded on the collector's side: each deletion re-checks the database in a
write transaction that excludes new ``files`` rows (``LOCK TABLE files IN SHARE MODE`` on
PostgreSQL, the write lock on SQLite), so a row committed before the check keeps the file.
The one window left (the retry stores before the deletion and commits after it) closes
only if the upload checks its bytes are still stored inside its own transaction, after
inserting its row (R1's "re-read digest matches").

In the embedded mode :class:`OrphanCollector` runs the collection in the web process; with
a broker, the periodic task ``cheeseshop.collect_orphans`` runs it in a worker (see
:mod:`cheeseshop.worker.plugin`); ``cheeseshop gc`` runs it once by hand.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from cheeseshop.background import stop_gracefully
from cheeseshop.db.models import File
from cheeseshop.packaging.archives import METADATA_FILE_SUFFIX
from cheeseshop.storage import stored_paths

if TYPE_CHECKING:
    from cheeseshop.services import Services

__all__ = ["MAX_INTERVAL_SECONDS", "OrphanCollector", "collect_orphans"]

log = logging.getLogger(__name__)

#: The collector runs at least this often, and every grace period when that is shorter.
MAX_INTERVAL_SECONDS = 3600.0
#: Stored paths examined per database query.
_BATCH = 500
#: How long one deletion waits for uploads' open transactions before leaving that path to
#: the next run; a lock request queued any longer would hold up every new upload.
_LOCK_TIMEOUT = "2s"
#: Longest wait from start-up to the first collection.
_FIRST_DELAY = 60.0


async def collect_orphans(
    services: Services, *, now: float | None = None, dry_run: bool = False
) -> list[str]:
    """Delete stored files no row references and stale upload temporaries; return them.

    A stored path is referenced by a ``File`` row through ``File.path``, and through
    ``File.path + ".metadata"`` when the row has a ``metadata_sha256``. Only files last
    modified more than ``orphan_grace_seconds`` before ``now`` (default: the current
    time) are deleted. The result lists the deleted storage paths, then the absolute
    paths of the deleted files of ``data_dir/tmp``. With ``dry_run`` nothing is deleted
    and the result says what would have been.
    """
    settings = services.settings
    cutoff = (time.time() if now is None else now) - settings.orphan_grace_seconds
    deleted = await _collect_stored(services, cutoff, dry_run=dry_run)
    temporaries = await asyncio.to_thread(
        _collect_temporaries, settings.data_dir / "tmp", cutoff, dry_run=dry_run
    )
    verb = "would delete" if dry_run else "deleted"
    for path in deleted:
        log.info("orphan collection: %s stored file %s (no row references it)", verb, path)
    for path in temporaries:
        log.info("orphan collection: %s stale temporary file %s", verb, path)
    if deleted or temporaries:
        log.info(
            "orphan collection: %s %d stored file(s) and %d temporary file(s)",
            verb, len(deleted), len(temporaries),
        )  # fmt: skip
    return [*deleted, *temporaries]


# -- stored files --------------------------------------------------------------------------


async def _collect_stored(services: Services, cutoff: float, *, dry_run: bool) -> list[str]:
    listing = iter(services.storage.iter_paths())
    deleted: list[str] = []
    # The listing is blocking (a disk walk, a bucket listing): page through it in a thread,
    # and settle each page before reading the next, so a path is deleted soon after it was
    # seen old and memory stays bounded however large the storage.
    while batch := await asyncio.to_thread(_old_paths, listing, cutoff, _BATCH):
        async with services.db.read() as session:
            referenced = await _referenced(session, batch)
        for path in batch:
            if path in referenced:
                continue
            if dry_run or await _delete_unreferenced(services, path):
                deleted.append(path)
    return deleted


def _old_paths(listing: Iterator[tuple[str, float]], cutoff: float, size: int) -> list[str]:
    """Up to ``size`` further paths of ``listing`` modified before ``cutoff``."""
    batch: list[str] = []
    for path, modified in listing:
        if modified < cutoff:
            batch.append(path)
            if len(batch) == size:
                break
    return batch


def _row_filenames(paths: Iterable[str]) -> set[str]:
    """The ``File.filename`` values that could reference ``paths`` (an indexed column)."""
    names = set()
    for path in paths:
        name = path.rpartition("/")[2]
        names.add(name)
        if name.endswith(METADATA_FILE_SUFFIX):
            names.add(name.removesuffix(METADATA_FILE_SUFFIX))
    return names


async def _referenced(session: AsyncSession, paths: list[str]) -> set[str]:
    """Which of ``paths`` a File row references, as its file or its metadata file."""
    names = sorted(_row_filenames(paths))
    referenced: set[str] = set()
    for start in range(0, len(names), _BATCH):
        rows = await session.execute(
            select(File.path, File.metadata_sha256).where(
                File.filename.in_(names[start : start + _BATCH])
            )
        )
        for path, metadata_sha256 in rows:
            referenced.update(stored_paths(path, has_metadata=metadata_sha256 is not None))
    return referenced.intersection(paths)


async def _delete_unreferenced(services: Services, path: str) -> bool:
    """Delete ``path`` unless a row references it now; False when it was kept."""
    try:
        async with services.db.write() as session:
            if not services.db.is_sqlite:
                # No upload can insert a File row between our check and our delete. (On
                # SQLite the write transaction already holds the database's write lock.)
                await session.execute(text(f"SET LOCAL lock_timeout = '{_LOCK_TIMEOUT}'"))
                await session.execute(text("LOCK TABLE files IN SHARE MODE"))
            if await _referenced(session, [path]):
                return False
            await asyncio.to_thread(services.storage.delete, path)
    except DBAPIError as error:
        # Busy uploads (the lock timed out) or a database hiccup: the next run retries.
        log.warning("orphan collection: left %s for the next run: %s", path, error.orig)
        return False
    except OSError as error:
        # One file the storage will not delete must not keep the others forever.
        log.warning("orphan collection: could not delete %s: %s", path, error)
        return False
    return True


# -- the upload temporaries of data_dir/tmp -----------------------------------------------


def _collect_temporaries(directory: Path, cutoff: float, *, dry_run: bool) -> list[str]:
    """Remove the regular files of ``directory`` modified before ``cutoff``."""
    deleted: list[str] = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return deleted
    for entry in entries:
        try:
            status = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(status.st_mode) or status.st_mtime >= cutoff:
                continue
            if not dry_run:
                os.unlink(entry.path)
        except FileNotFoundError:
            continue  # its upload finished and removed it meanwhile
        deleted.append(entry.path)
    return deleted


# -- running it periodically --------------------------------------------------------------


class OrphanCollector:
    """Runs :func:`collect_orphans` from an asyncio task, every interval.

    The interval is the grace period, at most :data:`MAX_INTERVAL_SECONDS`. The first run
    comes ``first_delay`` seconds after start (default: a minute, or the interval when
    shorter): soon enough that a server restarted more often than hourly still collects,
    late enough to keep out of start-up and its first requests. Started and
    stopped with the application (``before_serving`` / ``after_serving``). It runs only
    in the embedded mode, where events are delivered in-process (the default
    dispatcher): with a broker, the workers' periodic tasks are the place for it, and N
    web processes need not list the storage N times over.
    """

    def __init__(self, services: Services, *, first_delay: float | None = None) -> None:
        self.services = services
        self.interval = min(services.settings.orphan_grace_seconds, MAX_INTERVAL_SECONDS)
        self.first_delay = min(self.interval, _FIRST_DELAY) if first_delay is None else first_delay
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    @property
    def enabled(self) -> bool:
        """Whether this process collects: only when it delivers events itself."""
        from cheeseshop.outbox.embedded import EmbeddedDispatcher

        return isinstance(self.services.outbox.dispatcher, EmbeddedDispatcher)

    async def start(self) -> None:
        """Start the periodic collection (nothing, unless :attr:`enabled`)."""
        if not self.enabled:
            return
        self._stopping = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="cheeseshop-orphans")

    async def stop(self, *, grace: float = 5.0) -> None:
        """Let a collection in progress finish (up to ``grace`` seconds), then stop.

        A collection cut short loses nothing: each deletion is its own transaction, and
        the next run finds whatever this one did not reach.
        """
        if self._task is None:
            return
        await stop_gracefully(self._task, self._stopping, grace=grace)
        self._task = None

    async def _sleep(self, seconds: float) -> bool:
        """Wait ``seconds``; False when stopped meanwhile."""
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        except TimeoutError:
            return True
        return False

    async def _run(self) -> None:
        wait = self.first_delay
        while await self._sleep(wait):
            try:
                await collect_orphans(self.services)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("orphan collection failed; retrying in %.0fs", self.interval)
            wait = self.interval
