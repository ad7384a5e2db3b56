"""Where an upload's blocking steps run: in the upload threads, not the loop's default executor.

On PostgreSQL a step waits in its thread for database work on the event loop, and that
work can itself need the default executor (asyncpg opening a connection to a host name
has the name resolved there). Were the steps in the default executor, a few uploads
waiting at once would hold every one of its threads and wait for ever.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import cheeseshop.upload.service as service
from cheeseshop.testing.dists import build_wheel

UPLOADS = 3


async def test_upload_steps_leave_the_default_executor_free(
    upload: Any, make_token: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=1))
    token = await make_token("alice")
    real = service._validate

    def validate_needing_the_default_executor(form: Any) -> Any:
        # As a new connection's name lookup would: work on the default executor, started
        # from the loop while this thread waits for it.
        async def lookup() -> int:
            return await loop.run_in_executor(None, sum, (1, 2))

        assert asyncio.run_coroutine_threadsafe(lookup(), loop).result(timeout=5) == 3
        return real(form)

    monkeypatch.setattr(service, "_validate", validate_needing_the_default_executor)
    responses = await asyncio.wait_for(
        asyncio.gather(*(upload(build_wheel(f"threads-{n}", "1.0"), token=token) for n in range(UPLOADS))),
        timeout=30,
    )
    assert [response.status_code for response in responses] == [200] * UPLOADS
