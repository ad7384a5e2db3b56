"""The plugin in a running application: headers on pages, purges after commit, retries.

Every test here runs on SQLite and on PostgreSQL (see tests/conftest.py). The outbox is the
core's embedded one, delivering from the application's own event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest
from sqlalchemy import select

import cheeseshop
import cheeseshop.projects.service
from cheeseshop import CachePurge
from cheeseshop.db import Database
from cheeseshop.db.models import File, OutboxDelivery, OutboxEvent
from cheeseshop.testing.dists import build_wheel
from cheeseshop.testing.upload import uploaded

import cheeseshop_cdn_fastly

JSON = "application/vnd.pypi.simple.v1+json"
T = TypeVar("T")


class PurgeRecorder:
    """Another plugin receiving the same purge events: records each call."""

    def __init__(self) -> None:
        self.events: list[CachePurge] = []
        self._lock = threading.Lock()

    @cheeseshop.hookimpl
    def cheeseshop_purge(self, event: CachePurge) -> None:
        with self._lock:
            self.events.append(event)


@pytest.fixture
def recorder() -> PurgeRecorder:
    return PurgeRecorder()


@pytest.fixture
def cheeseshop_plugins(recorder: PurgeRecorder) -> list[tuple[str, object]]:
    return [("cdn_fastly", cheeseshop_cdn_fastly), ("purge_recorder", recorder)]


@pytest.fixture
def cheeseshop_settings_overrides(fastly_section: dict[str, Any]) -> dict[str, Any]:
    return {
        "cdn_fastly": fastly_section,
        # Fast, bounded retries: the fault test waits for three attempts.
        "outbox_retry_seconds": 0.05,
        "outbox_max_retry_seconds": 0.2,
    }


def in_fresh_database(url: str, work: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
    """Run ``work(session)`` on a connection of its own, from any thread (not the app's)."""

    async def go() -> T:
        db = Database(url)
        try:
            async with db.read() as session:
                return await work(session)
        finally:
            await db.dispose()

    return asyncio.run(go())


async def simple_json(client: Any, name: str) -> tuple[Any, dict[str, Any]]:
    response = await client.get(f"/simple/{name}/", headers={"Accept": JSON})
    assert response.status_code == 200
    return response, json.loads(await response.get_data())


async def deliveries_of_purges(services: Any) -> dict[str, list[OutboxDelivery]]:
    """Each plugin's deliveries of ``cheeseshop_purge`` events."""
    async with services.db.read() as session:
        rows = await session.scalars(
            select(OutboxDelivery)
            .join(OutboxEvent, OutboxEvent.id == OutboxDelivery.event_id)
            .where(OutboxEvent.hook == "cheeseshop_purge")
            .order_by(OutboxDelivery.id)
        )
        found: dict[str, list[OutboxDelivery]] = {}
        for row in rows:
            found.setdefault(row.plugin, []).append(row)
        return found


async def test_response_headers_tag_pages_and_purge_reaches_fastly_after_upload(
    upload, cheeseshop_client, cheeseshop_services, fastly, outbox_settled, eventually
):
    await uploaded(upload, build_wheel("Fastly.Demo", "1.0"))

    page, body = await simple_json(cheeseshop_client, "fastly-demo")
    assert page.headers["Surrogate-Key"] == "project/fastly-demo"
    assert page.headers["Surrogate-Control"] == cheeseshop_cdn_fastly.DEFAULT_SURROGATE_CONTROL
    assert "max-age" in page.headers["Cache-Control"], "the core's Cache-Control stays"
    cached, again = await simple_json(cheeseshop_client, "fastly-demo")
    assert again == body
    assert cached.headers["Surrogate-Key"] == "project/fastly-demo", "a cache hit is tagged too"
    assert cached.headers["Surrogate-Control"] == page.headers["Surrogate-Control"]
    not_modified = await cheeseshop_client.get(
        "/simple/fastly-demo/", headers={"Accept": JSON, "If-None-Match": page.headers["ETag"]}
    )
    assert not_modified.status_code == 304
    assert not_modified.headers["Surrogate-Key"] == "project/fastly-demo"
    root = await cheeseshop_client.get("/simple/", headers={"Accept": JSON})
    assert root.headers["Surrogate-Key"] == "all-projects"
    pypi = await cheeseshop_client.get("/pypi/fastly-demo/json")
    assert pypi.status_code == 200 and pypi.headers["Surrogate-Key"] == "project/fastly-demo"

    async def purged() -> bool:
        return bool(fastly.purges)

    await eventually(purged, what="a purge at the fake Fastly")
    await outbox_settled(cheeseshop_services)
    # One upload, one change: both of its keys in one soft batch purge, and nothing else.
    [purge] = fastly.received
    assert purge.status == 200
    assert purge.path == f"/service/{fastly.service_id}/purge"
    assert purge.headers["fastly-key"] == fastly.api_key
    assert purge.soft and purge.headers["fastly-soft-purge"] == "1"
    assert set(purge.keys) == {"project/fastly-demo", "all-projects"}
    deliveries = await deliveries_of_purges(cheeseshop_services)
    [delivery] = deliveries["cdn_fastly"]
    assert delivery.delivered is not None and delivery.attempts == 1


async def test_purge_failing_is_retried_for_this_plugin_alone(
    upload, cheeseshop_services, fastly, recorder, outbox_settled, eventually, caplog
):
    fastly.fail_next = 2
    stored_errors: list[str | None] = []

    async def last_error(session: Any) -> str | None:
        return await session.scalar(
            select(OutboxDelivery.last_error).where(OutboxDelivery.plugin == "cdn_fastly")
        )

    def while_succeeding(_received: Any) -> None:
        # The third attempt: what the outbox stored about the second is committed.
        url = cheeseshop_services.settings.resolved_database_url
        stored_errors.append(in_fresh_database(url, last_error))

    fastly.on_purge = while_succeeding
    caplog.set_level(logging.WARNING, logger="cheeseshop.outbox")
    await uploaded(upload, build_wheel("flaky-edge", "1.0"))

    async def purged() -> bool:
        return bool(fastly.purges)

    await eventually(purged, what="a purge accepted after two failures")
    await outbox_settled(cheeseshop_services)

    assert [r.status for r in fastly.received] == [500, 500, 200]
    assert all(set(r.keys) == {"project/flaky-edge", "all-projects"} for r in fastly.received)
    [event] = recorder.events
    assert set(event.keys) == {"project/flaky-edge", "all-projects"}

    deliveries = await deliveries_of_purges(cheeseshop_services)
    [ours] = deliveries["cdn_fastly"]
    assert ours.attempts == 3 and ours.delivered is not None and ours.last_error is None
    [theirs] = deliveries["purge_recorder"]
    assert theirs.attempts == 1 and theirs.delivered is not None
    [cache] = deliveries["page_cache"]
    assert cache.attempts == 1

    [stored] = stored_errors
    assert stored is not None and "FastlyPurgeError" in stored and "HTTP 500" in stored
    assert fastly.api_key not in stored
    messages = [record.getMessage() for record in caplog.records]
    warnings = [message for message in messages if "plugin cdn_fastly failed" in message]
    assert len(warnings) == 2
    assert not any(fastly.api_key in message for message in warnings)


async def test_purge_reaches_fastly_only_once_the_change_is_visible(
    upload, cheeseshop_client, cheeseshop_services, fastly, outbox_settled
):
    loop = asyncio.get_running_loop()
    url = cheeseshop_services.settings.resolved_database_url
    seen: list[tuple[tuple[str, ...], set[str], set[str]]] = []

    async def stored_files(session: Any) -> set[str]:
        return set(await session.scalars(select(File.filename)))

    async def origin_page() -> set[str]:
        _, body = await simple_json(cheeseshop_client, "in-order")
        return {f["filename"] for f in body["files"]}

    def what_the_edge_would_fetch(received: Any) -> None:
        # Called by the fake Fastly while it holds the purge, before answering: what does
        # another connection see in the database, and what would the edge re-fetch?
        in_database = in_fresh_database(url, stored_files)
        on_page = asyncio.run_coroutine_threadsafe(origin_page(), loop).result(timeout=30)
        seen.append((received.keys, in_database, on_page))

    fastly.on_purge = what_the_edge_would_fetch
    first = await uploaded(upload, build_wheel("in-order", "1.0"))
    await outbox_settled(cheeseshop_services)
    # The page is now in the origin's page cache; the next purge must not find it stale.
    _, body = await simple_json(cheeseshop_client, "in-order")
    assert {f["filename"] for f in body["files"]} == {first.filename}
    second = await uploaded(upload, build_wheel("in-order", "2.0"))
    await outbox_settled(cheeseshop_services)

    keys = ("project/in-order", "all-projects")
    assert [r.status for r in fastly.received] == [200, 200], fastly.received
    assert seen == [
        (keys, {first.filename}, {first.filename}),
        (keys, {first.filename, second.filename}, {first.filename, second.filename}),
    ]


async def test_downloads_are_tagged_and_a_deletion_purges_them_at_fastly(
    upload, cheeseshop_client, cheeseshop_services, fastly, outbox_settled, eventually
):
    await uploaded(upload, build_wheel("Fastly.Gone", "1.0"))
    _, body = await simple_json(cheeseshop_client, "fastly-gone")
    path = body["files"][0]["url"].split("/packages/", 1)[1]
    for _ in range(2):  # the view, then the fast path with the lookup cached
        download = await cheeseshop_client.get(f"/packages/{path}")
        assert download.status_code == 200
        assert download.headers["Surrogate-Key"] == f"file/{path}"
        assert "Surrogate-Control" not in download.headers
        assert "immutable" in download.headers["Cache-Control"]
    await outbox_settled(cheeseshop_services)
    uploads_purges = len(fastly.received)

    await cheeseshop.projects.service.delete_release(cheeseshop_services, "Fastly.Gone", "1.0")

    async def purged() -> bool:
        return len(fastly.received) > uploads_purges

    await eventually(purged, what="the deletion's purge at the fake Fastly")
    await outbox_settled(cheeseshop_services)
    [purge] = fastly.received[uploads_purges:]
    assert set(purge.keys) == {
        "project/fastly-gone", "all-projects", f"file/{path}", f"file/{path}.metadata"
    }
    assert (await cheeseshop_client.get(f"/packages/{path}")).status_code == 404
