"""``cheeseshop serve --workers N``: several web processes on uvloop, each writing access lines."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

ACCESS_LINE = re.compile(r' INFO cheeseshop\.access: 127\.0\.0\.1 "GET /simple/workers-probe/ 1\.1" 404 ')


def test_two_workers_answer_log_every_request_and_stop_on_sigterm(
    start_server: Callable[..., Any],
) -> None:
    server = start_server("--workers", "2")
    statuses = [server.get("/simple/workers-probe/")[0] for _ in range(20)]
    server.stop()  # asserts a clean exit; the workers write what they buffered as they stop
    assert statuses == [404] * 20
    log = server.log.read_text(errors="replace")
    # Every request's line, each whole (the workers share stderr and batch their writes).
    assert len(ACCESS_LINE.findall(log)) == 20, log
