"""The page cache through the application: hits, read-your-writes, purges, variants, headers."""

from __future__ import annotations

import asyncio
import contextvars
import json
import re
import time
from collections.abc import Callable
from typing import Any

import pytest
from quart import has_request_context
from sqlalchemy import select

import cheeseshop
from cheeseshop.cache import NullPageCache, make_page
from cheeseshop.cache.keys import ALL_PROJECTS, project_key
from cheeseshop.cache.memory import MemoryPageCache
from cheeseshop.cache.redis import RedisPageCache
from cheeseshop.cache import redis as redis_cache
from cheeseshop.db.models import OutboxDelivery, OutboxEvent, Project
from cheeseshop.projects import service as projects
from cheeseshop.testing.dists import build_sdist, build_wheel
from cheeseshop.testing.records import outbox_settled
from cheeseshop.testing.upload import uploaded

JSON = "application/vnd.pypi.simple.v1+json"
V1_HTML = "application/vnd.pypi.simple.v1+html"
HTML = "text/html"


# -- helpers ------------------------------------------------------------------------------


async def eventually(predicate: Callable[[], Any], *, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {timeout:.0f}s")
        await asyncio.sleep(0.05)


class DbVisits:
    """Counts database visits made while serving a request (background work is not counted)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, db: Any) -> None:
        self.calls: list[str] = []
        run_read, read = db.run_read, db.read
        inside = contextvars.ContextVar("inside_run_read", default=False)

        async def counting_run_read(work: Any) -> Any:
            if has_request_context():
                self.calls.append(getattr(getattr(work, "func", work), "__name__", repr(work)))
            token = inside.set(True)
            try:
                return await run_read(work)
            finally:
                inside.reset(token)

        def counting_read() -> Any:
            # run_read itself uses read() on PostgreSQL: count that visit once.
            if has_request_context() and not inside.get():
                self.calls.append("read")
            return read()

        monkeypatch.setattr(db, "run_read", counting_run_read)
        monkeypatch.setattr(db, "read", counting_read)

    def take(self) -> list[str]:
        calls, self.calls = self.calls, []
        return calls


@pytest.fixture
def cheeseshop_settings_overrides() -> dict[str, Any]:
    # The journal poller would purge this process's pages a second time, up to
    # poll_seconds after each change (test_memory_cache tests it); counting hits needs
    # a cache that only the change itself and its purge event touch.
    return {"page_cache_poll_seconds": 0}


async def settled(services: Any) -> None:
    """Wait until every outbox event is delivered: the purge event's second purge is done."""
    await outbox_settled(services)


@pytest.fixture
def visits(monkeypatch: pytest.MonkeyPatch, cheeseshop_services: Any) -> DbVisits:
    return DbVisits(monkeypatch, cheeseshop_services.db)


async def get(client: Any, path: str, accept: str | None = JSON, **headers: str) -> Any:
    if accept is not None:
        headers["Accept"] = accept
    response = await client.get(path, headers=headers)
    assert response.status_code < 500, await response.get_data(as_text=True)
    return response


async def get_json(client: Any, path: str) -> tuple[Any, dict[str, Any]]:
    response = await get(client, path)
    assert response.status_code == 200
    return response, json.loads(await response.get_data())


def filenames(body: dict[str, Any]) -> set[str]:
    return {f["filename"] for f in body["files"]}


# -- served from the cache -------------------------------------------------------------------


async def test_project_page_and_root_are_served_from_the_cache(
    upload, cheeseshop_client, cheeseshop_services, visits
):
    await uploaded(upload, build_wheel("cached-page", "1.0"))
    await settled(cheeseshop_services)
    visits.take()

    first, body = await get_json(cheeseshop_client, "/simple/cached-page/")
    assert visits.take() == ["_load_project"], "a miss reads the database once"
    second, again = await get_json(cheeseshop_client, "/simple/cached-page/")
    assert visits.take() == [], "a hit must not touch the database"
    assert again == body and filenames(body) == {"cached_page-1.0-py3-none-any.whl"}
    assert second.headers["ETag"] == first.headers["ETag"]
    assert second.headers["X-PyPI-Last-Serial"] == first.headers["X-PyPI-Last-Serial"] == str(
        body["meta"]["_last-serial"]
    )

    await get(cheeseshop_client, "/simple/")
    assert visits.take() == ["_load_root"]
    await get(cheeseshop_client, "/simple/")
    assert visits.take() == []


async def test_format_override_shares_the_page_of_the_same_format(
    upload, cheeseshop_client, cheeseshop_services, visits
):
    await uploaded(upload, build_wheel("override-me", "1.0"))
    await settled(cheeseshop_services)
    await get(cheeseshop_client, "/simple/override-me/")
    visits.take()
    response = await get(cheeseshop_client, f"/simple/override-me/?format={JSON}", accept=HTML)
    assert response.content_type == JSON
    assert visits.take() == []


async def test_unknown_project_is_404_and_not_cached_as_a_page(cheeseshop_client, upload, visits):
    response = await get(cheeseshop_client, "/simple/later-made/")
    assert response.status_code == 404
    await uploaded(upload, build_wheel("later-made", "1.0"))
    _, body = await get_json(cheeseshop_client, "/simple/later-made/")
    assert filenames(body) == {"later_made-1.0-py3-none-any.whl"}


# -- read-your-writes ---------------------------------------------------------------------------


async def test_upload_is_on_the_next_get_of_a_cached_page(upload, cheeseshop_client):
    wheel = await uploaded(upload, build_wheel("fresh-files", "1.0"))
    first, body = await get_json(cheeseshop_client, "/simple/fresh-files/")
    assert filenames(body) == {wheel.filename}

    sdist = await uploaded(upload, build_sdist("fresh-files", "1.0"))
    second, body = await get_json(cheeseshop_client, "/simple/fresh-files/")
    assert filenames(body) == {wheel.filename, sdist.filename}
    assert int(second.headers["X-PyPI-Last-Serial"]) > int(first.headers["X-PyPI-Last-Serial"])

    new = await uploaded(upload, build_wheel("fresh-files", "2.0"))
    _, body = await get_json(cheeseshop_client, "/simple/fresh-files/")
    assert filenames(body) == {wheel.filename, sdist.filename, new.filename}
    assert body["versions"] == ["1.0", "2.0"]


async def test_yank_shows_on_cached_pages_with_its_reason_and_serial(upload, cheeseshop_client, cheeseshop_services):
    wheel = await uploaded(upload, build_wheel("yank-view", "1.0"))
    before, body = await get_json(cheeseshop_client, "/simple/yank-view/")
    assert body["files"][0]["yanked"] is False
    html_before = await get(cheeseshop_client, "/simple/yank-view/", accept=HTML)
    assert "data-yanked" not in await html_before.get_data(as_text=True)
    pypi_before = await get(cheeseshop_client, "/pypi/yank-view/json", accept=None)
    assert pypi_before.status_code == 200

    changed = await projects.yank(cheeseshop_services, "yank-view", "1.0", reason="broken <build>")

    after, body = await get_json(cheeseshop_client, "/simple/yank-view/")
    [entry] = body["files"]
    assert entry["filename"] == wheel.filename
    assert entry["yanked"] == "broken <build>"
    assert changed.serial > int(before.headers["X-PyPI-Last-Serial"])
    assert after.headers["X-PyPI-Last-Serial"] == str(changed.serial)
    assert body["meta"]["_last-serial"] == changed.serial
    assert after.headers["ETag"] != before.headers["ETag"]

    html = await get(cheeseshop_client, "/simple/yank-view/", accept=HTML)
    assert 'data-yanked="broken &lt;build&gt;"' in await html.get_data(as_text=True)
    assert html.headers["X-PyPI-Last-Serial"] == str(changed.serial)

    pypi = await get(cheeseshop_client, "/pypi/yank-view/json", accept=None)
    assert pypi.headers["X-PyPI-Last-Serial"] == str(changed.serial)
    assert (await pypi.get_json())["last_serial"] == changed.serial

    _, root = await get_json(cheeseshop_client, "/simple/")
    assert root["meta"]["_last-serial"] == changed.serial
    assert {"name": "yank-view", "_last-serial": changed.serial} in root["projects"]

    unyanked = await projects.unyank(cheeseshop_services, "yank-view", "1.0")
    again, body = await get_json(cheeseshop_client, "/simple/yank-view/")
    assert body["files"][0]["yanked"] is False
    assert again.headers["X-PyPI-Last-Serial"] == str(unyanked.serial)


# -- conditional requests -----------------------------------------------------------------------


async def test_if_none_match_with_the_etag_is_a_304_without_a_body(upload, cheeseshop_client):
    await uploaded(upload, build_wheel("etagged", "1.0"))
    first = await get(cheeseshop_client, "/simple/etagged/")
    etag = first.headers["ETag"]
    assert re.fullmatch(r'"[0-9a-f]{32}"', etag)
    assert first.headers["Cache-Control"] == "max-age=600, public"
    assert first.headers["Access-Control-Allow-Origin"] == "*"
    assert "X-PyPI-Last-Serial" in first.headers["Access-Control-Expose-Headers"]
    assert first.headers["Vary"] == "Accept"

    for validator in (etag, f"W/{etag}", f'"nope", {etag}'):
        cached = await get(cheeseshop_client, "/simple/etagged/", **{"If-None-Match": validator})
        assert cached.status_code == 304, validator
        assert await cached.get_data() == b""
        assert cached.headers["ETag"] == etag
        assert cached.headers["X-PyPI-Last-Serial"] == first.headers["X-PyPI-Last-Serial"]

    # Another format has another ETag: the JSON one does not validate the HTML page.
    html = await get(cheeseshop_client, "/simple/etagged/", accept=HTML, **{"If-None-Match": etag})
    assert html.status_code == 200 and html.headers["ETag"] != etag

    await uploaded(upload, build_sdist("etagged", "1.0"))
    changed = await get(cheeseshop_client, "/simple/etagged/", **{"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["ETag"] != etag
    assert len(json.loads(await changed.get_data())["files"]) == 2


async def test_root_answers_304_to_its_etag(cheeseshop_client):
    first = await get(cheeseshop_client, "/simple/", accept=HTML)
    again = await get(cheeseshop_client, "/simple/", accept=HTML, **{"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304 and await again.get_data() == b""


# -- variants -----------------------------------------------------------------------------------


async def test_each_format_is_cached_separately_with_its_content_type(
    upload, cheeseshop_client, cheeseshop_services, visits
):
    wheel = await uploaded(upload, build_wheel("three-ways", "1.0"))
    await settled(cheeseshop_services)
    visits.take()
    expected = {
        JSON: JSON,
        V1_HTML: f"{V1_HTML}; charset=utf-8",
        HTML: f"{HTML}; charset=utf-8",
    }
    first: dict[str, tuple[bytes, str]] = {}
    for accept in expected:
        response = await get(cheeseshop_client, "/simple/three-ways/", accept=accept)
        assert response.headers["Content-Type"] == expected[accept], accept
        first[accept] = (await response.get_data(), response.headers["ETag"])
    assert visits.take() == ["_load_project"] * 3, "one build per format"

    for accept in expected:
        response = await get(cheeseshop_client, "/simple/three-ways/", accept=accept)
        assert response.headers["Content-Type"] == expected[accept], accept
        assert (await response.get_data(), response.headers["ETag"]) == first[accept]
    assert visits.take() == [], "every format is a hit the second time"

    assert json.loads(first[JSON][0])["files"][0]["filename"] == wheel.filename
    for accept in (V1_HTML, HTML):
        assert f">{wheel.filename}</a>".encode() in first[accept][0]
        assert first[accept][0].startswith(b"<!DOCTYPE html>")


async def test_each_format_has_its_own_etag(upload, cheeseshop_client):
    """A strong ETag is unique across every representation of the URL (RFC 9110 8.8.1).

    The v1+html and text/html bodies are the same bytes; with an ETag of the body alone,
    a 304 for one revalidates a cached copy of the other, Content-Type and all.
    """
    await uploaded(upload, build_wheel("etag-per-format", "1.0"))
    etags = {}
    for accept in (JSON, V1_HTML, HTML):
        response = await get(cheeseshop_client, "/simple/etag-per-format/", accept=accept)
        etags[accept] = response.headers["ETag"]
    assert len(set(etags.values())) == 3, etags
    not_modified = await get(
        cheeseshop_client, "/simple/etag-per-format/", accept=V1_HTML, **{"If-None-Match": etags[HTML]}
    )
    assert not_modified.status_code == 200, "the text/html ETag must not validate the v1+html page"


async def test_root_formats_are_cached_separately(cheeseshop_client, visits):
    json_root = await get(cheeseshop_client, "/simple/")
    html_root = await get(cheeseshop_client, "/simple/", accept=HTML)
    assert json_root.headers["Content-Type"] == JSON
    assert html_root.headers["Content-Type"] == f"{HTML}; charset=utf-8"
    assert json.loads(await json_root.get_data())["projects"] == []
    assert b"<!DOCTYPE html>" in await html_root.get_data()
    assert visits.take() == ["_load_root", "_load_root"]


async def test_root_lists_a_new_project_after_its_first_upload(upload, cheeseshop_client):
    _, before = await get_json(cheeseshop_client, "/simple/")
    html_before = await (await get(cheeseshop_client, "/simple/", accept=HTML)).get_data(as_text=True)
    assert before["projects"] == [] and "newcomer" not in html_before

    await uploaded(upload, build_wheel("Newcomer", "0.1"))

    response, after = await get_json(cheeseshop_client, "/simple/")
    [listed] = after["projects"]
    assert listed["name"] == "Newcomer"
    assert listed["_last-serial"] == after["meta"]["_last-serial"] > before["meta"]["_last-serial"]
    assert response.headers["X-PyPI-Last-Serial"] == str(after["meta"]["_last-serial"])
    html = await (await get(cheeseshop_client, "/simple/", accept=HTML)).get_data(as_text=True)
    assert '<a href="newcomer/">Newcomer</a>' in html


# -- the purge hook -----------------------------------------------------------------------------


async def purge_events(services: Any) -> list[tuple[OutboxEvent, dict[str, OutboxDelivery]]]:
    """Every CachePurge event in the outbox with its deliveries by plugin."""
    async with services.db.read() as session:
        events = list(await session.scalars(select(OutboxEvent).where(OutboxEvent.kind == "CachePurge")))
        deliveries = list(await session.scalars(select(OutboxDelivery)))
    return [(e, {d.plugin: d for d in deliveries if d.event_id == e.id}) for e in events]


async def project_serial(services: Any, normalized: str) -> int:
    async with services.db.read() as session:
        return await session.scalar(select(Project.last_serial).where(Project.normalized_name == normalized))


async def test_purge_event_is_not_recorded_for_a_per_process_cache_alone(upload, cheeseshop_client, cheeseshop_services):
    """No plugin but the in-process cache wants purges: it is purged at once and follows the journal."""
    await uploaded(upload, build_wheel("no-purge-row", "1.0"))
    _, body = await get_json(cheeseshop_client, "/simple/no-purge-row/")
    assert len(body["files"]) == 1
    assert await purge_events(cheeseshop_services) == []


class CdnPurger:
    """A CDN-style plugin: receives every purge."""

    def __init__(self) -> None:
        self.purged: list[tuple[tuple[str, ...], int]] = []

    @cheeseshop.hookimpl
    def cheeseshop_purge(self, event: Any) -> None:
        self.purged.append((tuple(event.keys), event.serial))


class TestPurgeHook:
    @pytest.fixture
    def cdn(self) -> CdnPurger:
        return CdnPurger()

    @pytest.fixture
    def cheeseshop_plugins(self, cdn: CdnPurger) -> list[tuple[str, object]]:
        return [("cdn", cdn)]

    async def test_purge_hook_drops_pages_after_an_upload_commits(self, upload, cheeseshop_services, cdn):
        # Another cache of this process, which only the cheeseshop_purge delivery to
        # page_cache can reach (no database, so no journal poller; the upload's own
        # purge goes to the app's cache).
        bystander = MemoryPageCache(poll_seconds=0)

        async def old_page() -> Any:
            return make_page(b"before the upload", JSON, 0)

        for key in (project_key("purged-by-hook"), ALL_PROJECTS, project_key("unrelated")):
            await bystander.fetch(key, "json", old_page)

        await uploaded(upload, build_wheel("Purged_By_Hook", "1.0"))

        async def delivered() -> bool:
            found = await purge_events(cheeseshop_services)
            return bool(found) and all(e.completed is not None for e, _ in found)

        await eventually(delivered)
        [(event, deliveries)] = await purge_events(cheeseshop_services)
        serial = await project_serial(cheeseshop_services, "purged-by-hook")
        assert event.hook == "cheeseshop_purge"
        assert event.payload["keys"] == ["project/purged-by-hook", "all-projects"]
        assert event.payload["serial"] == serial
        assert set(deliveries) == {"cdn", "page_cache"}
        for plugin, delivery in deliveries.items():
            assert delivery.delivered is not None, plugin
            assert (delivery.attempts, delivery.last_error) == (1, None), plugin
        assert cdn.purged == [(("project/purged-by-hook", "all-projects"), serial)]

        assert (project_key("purged-by-hook"), "json") not in bystander._pages
        assert (ALL_PROJECTS, "json") not in bystander._pages
        assert (project_key("unrelated"), "json") in bystander._pages

    async def test_purge_hook_gets_one_event_per_yank_and_status(self, upload, cheeseshop_services, cdn):
        await uploaded(upload, build_wheel("purge-changes", "1.0"))
        yanked = await projects.yank(cheeseshop_services, "purge-changes", "1.0")
        status = await projects.set_status(cheeseshop_services, "purge-changes", "archived")
        keys = ("project/purge-changes", "all-projects")

        async def three() -> bool:
            return len(cdn.purged) >= 3

        await eventually(three)
        assert sorted(cdn.purged, key=lambda p: p[1])[1:] == [(keys, yanked.serial), (keys, status.serial)]


# -- plugins add headers ------------------------------------------------------------------------


class SurrogateKeys:
    """A CDN-style plugin: tags every cacheable response with its cache keys."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, ...]] = []

    @cheeseshop.hookimpl
    def cheeseshop_response_headers(self, keys: tuple[str, ...]) -> dict[str, str]:
        self.seen.append(keys)
        return {"Surrogate-Key": " ".join(keys), "Surrogate-Control": "max-age=86400", "Cache-Control": "max-age=60"}


class TestResponseHeadersHook:
    @pytest.fixture
    def surrogate(self) -> SurrogateKeys:
        return SurrogateKeys()

    @pytest.fixture
    def cheeseshop_plugins(self, surrogate: SurrogateKeys) -> list[tuple[str, object]]:
        return [("surrogate", surrogate)]

    async def test_response_headers_hook_sets_surrogate_key_on_pages_roots_and_304s(
        self, upload, cheeseshop_client, surrogate
    ):
        await uploaded(upload, build_wheel("Tagged.Project", "1.0"))

        page = await get(cheeseshop_client, "/simple/tagged-project/")
        assert page.status_code == 200
        assert page.headers["Surrogate-Key"] == "project/tagged-project"
        assert page.headers["Surrogate-Control"] == "max-age=86400"
        # A plugin's header replaces the core's of the same name; the others survive.
        assert page.headers["Cache-Control"] == "max-age=60"
        assert page.headers["X-PyPI-Last-Serial"]

        html = await get(cheeseshop_client, "/simple/tagged-project/", accept=HTML)
        assert html.headers["Surrogate-Key"] == "project/tagged-project"

        root = await get(cheeseshop_client, "/simple/", accept=HTML)
        assert root.headers["Surrogate-Key"] == "all-projects"

        not_modified = await get(
            cheeseshop_client, "/simple/tagged-project/", **{"If-None-Match": page.headers["ETag"]}
        )
        assert not_modified.status_code == 304
        assert not_modified.headers["Surrogate-Key"] == "project/tagged-project"
        root_304 = await get(cheeseshop_client, "/simple/", accept=HTML, **{"If-None-Match": root.headers["ETag"]})
        assert root_304.status_code == 304 and root_304.headers["Surrogate-Key"] == "all-projects"

        pypi = await get(cheeseshop_client, "/pypi/tagged-project/json", accept=None)
        assert pypi.status_code == 200 and pypi.headers["Surrogate-Key"] == "project/tagged-project"

        # Asked once per set of keys, then remembered.
        assert surrogate.seen == [("project/tagged-project",), ("all-projects",)]

    async def test_response_headers_hook_is_not_called_for_a_404(self, cheeseshop_client, surrogate):
        response = await get(cheeseshop_client, "/simple/no-such-thing/")
        assert response.status_code == 404
        assert "Surrogate-Key" not in response.headers
        assert surrogate.seen == []


# -- shared in Redis ----------------------------------------------------------------------------


class TestWithRedis:
    @pytest.fixture
    def cheeseshop_settings_overrides(self, redis_url: str) -> dict[str, Any]:
        return {"redis_url": redis_url}

    def stored(self, redis_client: Any, key: str) -> list[bytes]:
        return sorted(redis_client.scan_iter(match=f"{redis_cache.PREFIX}page:{key}:*"))

    async def test_pages_are_cached_in_redis_and_purged_on_upload_and_yank(
        self, upload, cheeseshop_client, cheeseshop_services, redis_client, visits
    ):
        assert isinstance(cheeseshop_services.cache, RedisPageCache)
        wheel = await uploaded(upload, build_wheel("in-redis", "1.0"))
        await settled(cheeseshop_services)
        visits.take()

        first, body = await get_json(cheeseshop_client, "/simple/in-redis/")
        await get(cheeseshop_client, "/simple/in-redis/", accept=HTML)
        assert visits.take() == ["_load_project", "_load_project"]
        assert len(self.stored(redis_client, "project/in-redis")) == 2
        again, same = await get_json(cheeseshop_client, "/simple/in-redis/")
        assert visits.take() == [], "served from Redis"
        assert same == body and again.headers["ETag"] == first.headers["ETag"]
        not_modified = await get(cheeseshop_client, "/simple/in-redis/", **{"If-None-Match": first.headers["ETag"]})
        assert not_modified.status_code == 304 and await not_modified.get_data() == b""

        sdist = await uploaded(upload, build_sdist("in-redis", "1.0"))
        _, body = await get_json(cheeseshop_client, "/simple/in-redis/")
        assert filenames(body) == {wheel.filename, sdist.filename}, "read-your-writes through Redis"

        changed = await projects.yank(cheeseshop_services, "in-redis", "1.0", reason="bad")
        response, body = await get_json(cheeseshop_client, "/simple/in-redis/")
        assert {f["yanked"] for f in body["files"]} == {"bad"}
        assert response.headers["X-PyPI-Last-Serial"] == str(changed.serial)

    async def test_purge_hook_reaches_redis(self, upload, cheeseshop_client, cheeseshop_services, redis_client):
        await uploaded(upload, build_wheel("redis-hook", "1.0"))
        generation = f"{redis_cache.PREFIX}gen:project/redis-hook"

        # One bump right after the commit (read-your-writes), one by the purge delivery.
        async def bumped_twice() -> bool:
            return int(redis_client.get(generation) or 0) >= 2

        await eventually(bumped_twice)
        assert int(redis_client.get(f"{redis_cache.PREFIX}gen:all-projects")) >= 2

        # A shared cache outlives processes: its purges go through the outbox.
        async def delivered() -> bool:
            found = await purge_events(cheeseshop_services)
            return bool(found) and all(e.completed is not None for e, _ in found)

        await eventually(delivered)
        [(event, deliveries)] = await purge_events(cheeseshop_services)
        assert event.payload["keys"] == ["project/redis-hook", "all-projects"]
        assert event.payload["serial"] == await project_serial(cheeseshop_services, "redis-hook")
        assert set(deliveries) == {"page_cache"} and deliveries["page_cache"].delivered is not None

    async def test_root_lists_a_new_project_through_redis(self, upload, cheeseshop_client):
        _, before = await get_json(cheeseshop_client, "/simple/")
        assert before["projects"] == []
        await uploaded(upload, build_wheel("redis-root", "1.0"))
        _, after = await get_json(cheeseshop_client, "/simple/")
        assert [p["name"] for p in after["projects"]] == ["redis-root"]


# -- without the page cache ---------------------------------------------------------------------


class TestWithoutPageCache:
    @pytest.fixture
    def cheeseshop_settings_overrides(self) -> dict[str, Any]:
        return {"blocked_plugins": ["page_cache"]}

    async def test_blocking_page_cache_caches_nothing(self, upload, cheeseshop_client, cheeseshop_services, visits):
        assert isinstance(cheeseshop_services.cache, NullPageCache)
        await uploaded(upload, build_wheel("uncached", "1.0"))
        await settled(cheeseshop_services)
        visits.take()
        first, body = await get_json(cheeseshop_client, "/simple/uncached/")
        second, _ = await get_json(cheeseshop_client, "/simple/uncached/")
        await get(cheeseshop_client, "/simple/")
        await get(cheeseshop_client, "/simple/")
        assert visits.take() == ["_load_project", "_load_project", "_load_root", "_load_root"]
        # Conditional requests still work: the ETag is the body's.
        assert first.headers["ETag"] == second.headers["ETag"]
        not_modified = await get(cheeseshop_client, "/simple/uncached/", **{"If-None-Match": first.headers["ETag"]})
        assert not_modified.status_code == 304

        sdist = await uploaded(upload, build_sdist("uncached", "1.0"))
        _, body = await get_json(cheeseshop_client, "/simple/uncached/")
        assert sdist.filename in filenames(body)

        async with cheeseshop_services.db.read() as session:
            kinds = set(await session.scalars(select(OutboxEvent.kind)))
        assert "CachePurge" not in kinds, "no receiver, no purge event"


# -- Redis down at commit time --------------------------------------------------------------------


class SwitchableProxy:
    """A TCP proxy on loopback to the test Redis that can be taken down and brought back."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.up = True
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.close()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self.writers |= {writer, upstream_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    def down(self) -> None:
        self.up = False
        for writer in list(self.writers):
            writer.close()
        self.writers.clear()

    async def close(self) -> None:
        self.down()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


class TestRedisDownAtCommit:
    @pytest.fixture
    async def proxy(self, redis_url: str) -> Any:
        from urllib.parse import urlsplit

        parts = urlsplit(redis_url)
        proxy = SwitchableProxy((parts.hostname or "127.0.0.1", parts.port or 6379))
        port = await proxy.start()
        proxy.url = f"redis://127.0.0.1:{port}{parts.path}"
        yield proxy
        await proxy.close()

    @pytest.fixture
    def cheeseshop_settings_overrides(self, proxy: Any) -> dict[str, Any]:
        return {"redis_url": proxy.url, "outbox_max_retry_seconds": 0.3}

    async def test_purge_missed_while_redis_was_down_is_delivered_when_it_is_back(
        self, proxy, upload, cheeseshop_client, cheeseshop_services
    ):
        wheel = await uploaded(upload, build_wheel("redis-outage", "1.0"))
        await settled(cheeseshop_services)
        _, body = await get_json(cheeseshop_client, "/simple/redis-outage/")  # in Redis now
        assert filenames(body) == {wheel.filename}

        proxy.down()
        sdist = await uploaded(upload, build_sdist("redis-outage", "1.0"))  # R4: the upload succeeds
        _, body = await get_json(cheeseshop_client, "/simple/redis-outage/")
        assert filenames(body) == {wheel.filename, sdist.filename}, "fails open: built from the database"

        async def failed_once() -> bool:
            found = await purge_events(cheeseshop_services)
            return any(
                "page_cache" in d and d["page_cache"].delivered is None and d["page_cache"].last_error
                for _, d in found
            )

        await eventually(failed_once)

        proxy.up = True

        async def fresh_again() -> bool:
            _, body = await get_json(cheeseshop_client, "/simple/redis-outage/")
            return filenames(body) == {wheel.filename, sdist.filename}

        async def all_delivered() -> bool:
            found = await purge_events(cheeseshop_services)
            return all(e.completed is not None for e, _ in found)

        await eventually(all_delivered)
        # Once the missed purge is delivered, the page from before the outage is never served.
        for _ in range(3):
            assert await fresh_again()

    async def test_page_from_before_an_outage_is_not_served_once_redis_is_back(
        self, proxy, upload, cheeseshop_client, cheeseshop_services
    ):
        """After a client saw the new file, no later answer may go back to the page without it.

        The purge missed while Redis was down waits in the outbox for its retry (doubling,
        up to outbox_max_retry_seconds: an hour by default); until then the page stored
        before the outage matches its generation again and would be served. Delivery is
        stopped here so the outcome does not depend on how soon that retry comes.
        """
        wheel = await uploaded(upload, build_wheel("redis-flap", "1.0"))
        await settled(cheeseshop_services)
        await get_json(cheeseshop_client, "/simple/redis-flap/")  # in Redis now

        proxy.down()
        sdist = await uploaded(upload, build_sdist("redis-flap", "1.0"))
        _, seen = await get_json(cheeseshop_client, "/simple/redis-flap/")
        assert filenames(seen) == {wheel.filename, sdist.filename}
        await cheeseshop_services.outbox.dispatcher.stop()

        proxy.up = True
        _, later = await get_json(cheeseshop_client, "/simple/redis-flap/")
        assert filenames(later) == {wheel.filename, sdist.filename}, (
            "the page from before the outage came back: the new file vanished again"
        )
