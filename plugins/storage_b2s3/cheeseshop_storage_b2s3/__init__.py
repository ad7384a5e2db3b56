"""Cheeseshop plugin ``storage_b2s3``: S3 as the archive, Backblaze B2 as the cache.

- ``cheeseshop_file_storage``: :class:`B2S3Storage`. Uploads are archived in S3 (checked
  against S3's checksum) before they commit; downloads the index streams come from B2,
  or from S3 when B2 lacks the file, fails, is slow or holds other bytes.
- ``cheeseshop_file_uploaded``: after commit, the file and its ``.metadata`` are copied
  to B2 and recorded as cached (idempotent; retried by the outbox on failure).
- ``cheeseshop_periodic_tasks``: ``storage_b2s3.reconcile`` copies what is not cached yet
  and re-checks cached copies against B2, in batches. In the embedded mode (no broker),
  where no plugin's periodic task runs, the web process runs the same reconcile itself.

Enable with ``CHEESESHOP_PLUGINS=storage_b2s3`` and a ``[storage_b2s3]`` section (see
:class:`B2S3Settings` and the README).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from quart import Quart

import cheeseshop
from cheeseshop import FileUploaded, PeriodicTask, PluginSettings, Settings

from cheeseshop_storage_b2s3.settings import B2S3Settings
from cheeseshop_storage_b2s3.storage import (
    NAME,
    B2S3Storage,
    ReconcileReport,
    storage_for,
    use_b2_api_factory,
)

__all__ = [
    "NAME",
    "RECONCILE",
    "B2S3Settings",
    "B2S3Storage",
    "EmbeddedReconciler",
    "ReconcileReport",
    "cheeseshop_configure",
    "cheeseshop_file_storage",
    "cheeseshop_file_uploaded",
    "cheeseshop_periodic_tasks",
    "cheeseshop_settings",
    "run_reconcile",
    "storage_for",
    "use_b2_api_factory",
]

log = logging.getLogger(__name__)

#: The periodic task's name.
RECONCILE = "storage_b2s3.reconcile"
#: Longest wait from start-up to the embedded mode's first reconcile.
_FIRST_DELAY = 60.0


@cheeseshop.hookimpl
def cheeseshop_settings() -> type[PluginSettings]:
    """Declare the ``[storage_b2s3]`` section: :class:`B2S3Settings`."""
    return B2S3Settings


@cheeseshop.hookimpl
def cheeseshop_file_storage(settings: Settings) -> B2S3Storage:
    """Store files in S3 and serve them from B2, as the ``[storage_b2s3]`` section says."""
    return storage_for(settings)


@cheeseshop.hookimpl
def cheeseshop_file_uploaded(event: FileUploaded, settings: Settings) -> None:
    """Copy the uploaded file and its metadata to B2, and record them as cached."""
    storage_for(settings).cache_upload(event.path)


@cheeseshop.hookimpl
def cheeseshop_periodic_tasks(settings: Settings) -> Sequence[PeriodicTask]:
    """``storage_b2s3.reconcile``, every ``reconcile_interval_seconds``."""
    section: B2S3Settings = settings.section(NAME)
    return [PeriodicTask(RECONCILE, section.reconcile_interval_seconds, run_reconcile)]


def run_reconcile(settings: Settings) -> ReconcileReport:
    """One reconcile run with the storage of ``settings`` (the periodic task's body)."""
    return storage_for(settings).reconcile()


@cheeseshop.hookimpl
def cheeseshop_configure(app: Quart, settings: Settings) -> None:
    """In the embedded mode, run the reconcile from the web process."""
    section: B2S3Settings = settings.section(NAME)
    if section.files_url is None:
        log.info("storage_b2s3: no files_url: the index streams each download itself")
    if settings.broker_url is not None:
        return  # the workers run storage_b2s3.reconcile
    reconciler = EmbeddedReconciler(settings)
    app.before_serving(reconciler.start)
    app.after_serving(reconciler.stop)


class EmbeddedReconciler:
    """Runs :func:`run_reconcile` every ``reconcile_interval_seconds`` in the web process.

    Only in the embedded mode, where the core runs no plugin's periodic task. The first
    run comes a minute after start (or one interval, when shorter). Stopped with the
    application: a run in progress is let finish for ``grace`` seconds, and is otherwise
    abandoned to its thread (a reconcile cut short loses nothing).
    """

    def __init__(self, settings: Settings, *, first_delay: float | None = None) -> None:
        section: B2S3Settings = settings.section(NAME)
        self.settings = settings
        self.interval = section.reconcile_interval_seconds
        self.first_delay = min(self.interval, _FIRST_DELAY) if first_delay is None else first_delay
        self.runs = 0
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        """Start the loop."""
        self._stopping = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="storage_b2s3-reconcile")

    async def stop(self, *, grace: float = 5.0) -> None:
        """Stop the loop, letting a run in progress finish for up to ``grace`` seconds."""
        if self._task is None:
            return
        self._stopping.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout=grace)
        except TimeoutError:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._task = None

    async def _run(self) -> None:
        wait = self.first_delay
        while True:
            try:
                await asyncio.wait_for(self._stopping.wait(), timeout=wait)
                return
            except TimeoutError:
                pass
            try:
                await asyncio.to_thread(run_reconcile, self.settings)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("storage_b2s3: reconcile failed; retrying in %.0f s", self.interval)
            self.runs += 1
            wait = self.interval
