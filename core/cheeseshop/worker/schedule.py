"""Periodic task entries: what ``cheeseshop_periodic_tasks`` returns. Pure, no Celery here.

Beat sends one Celery task per entry every ``interval_seconds``; the message names the
entry, and the worker that receives it looks the entry up among its own plugins' and calls
it. So the callable itself never travels: it only has to exist in the worker.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cheeseshop.config import Settings

__all__ = ["PeriodicTask", "check_entries"]

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


@dataclasses.dataclass(frozen=True)
class PeriodicTask:
    """One periodic job: run ``run(settings)`` about every ``interval_seconds``.

    ``name`` is unique across plugins; prefix it with your plugin's name
    (``storage_b2s3.reconcile``). ``run`` is synchronous and is called in a worker, never
    twice at once across all workers (a lock in Redis sees to it); a run that falls due
    while the previous one still runs is skipped. It must be idempotent: a worker killed
    in the middle of it means a later run does the work again.
    """

    name: str
    interval_seconds: float
    run: Callable[[Settings], object]

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(
                f"periodic task name {self.name!r}: use letters, digits, '_', '.', '-'"
            )
        if not self.interval_seconds > 0:
            raise ValueError(f"periodic task {self.name!r}: interval_seconds must be positive")
        if not callable(self.run):
            raise ValueError(f"periodic task {self.name!r}: run must be callable")


def check_entries(entries: Iterable[tuple[str, PeriodicTask]]) -> dict[str, PeriodicTask]:
    """Entries by name from (plugin name, entry) pairs; a name given twice is an error.

    Raises ``ValueError`` naming both plugins, so a clash stops start-up instead of one
    job silently replacing another.
    """
    found: dict[str, PeriodicTask] = {}
    owners: dict[str, str] = {}
    for plugin, entry in entries:
        if not isinstance(entry, PeriodicTask):
            raise ValueError(
                f"plugin {plugin} returned {entry!r} from cheeseshop_periodic_tasks, "
                "not a PeriodicTask"
            )
        if entry.name in found:
            raise ValueError(
                f"plugins {owners[entry.name]} and {plugin} both define "
                f"the periodic task {entry.name!r}"
            )
        found[entry.name] = entry
        owners[entry.name] = plugin
    return found
