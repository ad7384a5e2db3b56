"""A started web process keeps its start-up objects out of the collector's full passes."""

from __future__ import annotations

import gc
from typing import Any


async def test_start_up_objects_are_frozen(cheeseshop_app: Any) -> None:
    # Everything alive once the app has started (modules, engine, plugins) is in the
    # permanent generation, which a full collection does not walk (it took 150 ms a pass
    # on a 2-core VM, the slowest answers of a load test).
    assert gc.get_freeze_count() > 10_000
