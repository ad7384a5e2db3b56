"""The ASGI fast path: cache hits answered below Quart, exactly as the views answer them."""

from __future__ import annotations

from typing import Any

import pytest

import cheeseshop
from cheeseshop.cache.keys import ALL_PROJECTS, project_key
from cheeseshop.testing.asgi import asgi_request
from cheeseshop.testing.dists import build_wheel
from cheeseshop.testing.records import outbox_settled
from cheeseshop.web.fastpath import PageRoute, route

JSON = "application/vnd.pypi.simple.v1+json"
HTML = "text/html"
# The headers a test client response has that are not the application's (none today;
# a real server adds date and server).
_TRANSPORT = {"date", "server"}


@pytest.fixture
def cheeseshop_settings_overrides() -> dict[str, Any]:
    return {"page_cache_poll_seconds": 0}


@pytest.fixture
def uploaded(upload: Any, cheeseshop_services: Any) -> Any:
    """``await uploaded(name, version)``: upload a wheel, then wait until its outbox events
    are delivered. Their purge would otherwise evict, whenever it comes, a page that a test
    has just had built to count the hits on it."""

    async def upload_and_settle(name: str, version: str = "1.0") -> None:
        response = await upload(build_wheel(name, version))
        assert response.status_code == 200, await response.get_data(as_text=True)
        await outbox_settled(cheeseshop_services, timeout=10.0)

    return upload_and_settle


def headers_of(response: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in response.headers.items() if k.lower() not in _TRANSPORT}


async def get(client: Any, path: str, *, method: str = "GET", **headers: str) -> Any:
    return await client.open(path, method=method, headers=headers)


@pytest.mark.parametrize(
    ("path", "accept"),
    [
        ("/simple/fast-one/", JSON),
        ("/simple/fast-one/", HTML),
        ("/simple/", JSON),
        ("/simple/", HTML),
        ("/pypi/fast-one/json", "*/*"),
        ("/pypi/fast-one/1.0/json", "*/*"),
    ],
)
async def test_a_hit_is_answered_without_quart_exactly_as_the_view_answered_the_miss(
    uploaded, cheeseshop_client, cheeseshop_services, quart_requests, path, accept
):
    await uploaded("Fast.One")
    quart_requests.paths.clear()

    miss = await get(cheeseshop_client, path, Accept=accept)
    hit = await get(cheeseshop_client, path, Accept=accept)

    assert quart_requests.paths == [path], "the miss goes to Quart, the hit does not"
    assert miss.status_code == hit.status_code == 200
    assert await hit.get_data() == await miss.get_data()
    assert headers_of(hit) == headers_of(miss)
    assert int(hit.headers["Content-Length"]) == len(await hit.get_data())

    # 304 and HEAD from the fast path match the view's too.
    etag = hit.headers["ETag"]
    fast_304 = await get(cheeseshop_client, path, Accept=accept, **{"If-None-Match": f"W/{etag}, \"x\""})
    assert fast_304.status_code == 304 and await fast_304.get_data() == b""
    head = await asgi_request(cheeseshop_client.app, path, method="HEAD", Accept=accept)
    assert head.status == 200 and head.body == b""
    assert head.headers == headers_of(miss)
    assert quart_requests.paths == [path]

    # The view's own 304, for comparison: after a purge, the request reaches Quart.
    cheeseshop_services.cache.purge([project_key("fast-one"), ALL_PROJECTS])
    view_304 = await get(cheeseshop_client, path, Accept=accept, **{"If-None-Match": etag})
    assert quart_requests.paths == [path, path]
    assert view_304.status_code == 304
    assert headers_of(view_304) == headers_of(fast_304)


async def test_a_purge_sends_the_next_request_to_quart_which_shows_the_change(
    uploaded, cheeseshop_client, quart_requests
):
    await uploaded("fast-two")
    first = await get(cheeseshop_client, "/simple/fast-two/", Accept=JSON)
    await get(cheeseshop_client, "/simple/fast-two/", Accept=JSON)
    assert quart_requests.paths.count("/simple/fast-two/") == 1

    await uploaded("fast-two", "2.0")
    after = await get(cheeseshop_client, "/simple/fast-two/", Accept=JSON)
    assert quart_requests.paths.count("/simple/fast-two/") == 2
    assert (await after.get_json())["versions"] == ["1.0", "2.0"]
    assert after.headers["ETag"] != first.headers["ETag"]
    # The next hit, from the fast path again, carries the new page's headers, not the old.
    hit = await get(cheeseshop_client, "/simple/fast-two/", Accept=JSON)
    assert quart_requests.paths.count("/simple/fast-two/") == 2
    assert headers_of(hit) == headers_of(after)
    assert int(hit.headers["X-PyPI-Last-Serial"]) > int(first.headers["X-PyPI-Last-Serial"])


async def test_what_the_fast_path_does_not_serve_goes_to_quart(uploaded, cheeseshop_client, quart_requests):
    await uploaded("fast-three")
    await get(cheeseshop_client, "/simple/fast-three/", Accept=JSON)
    quart_requests.paths.clear()

    with_query = await cheeseshop_client.get("/simple/fast-three/?format=" + JSON.replace("+", "%2B"))
    assert with_query.status_code == 200
    refused = await get(cheeseshop_client, "/simple/fast-three/", Accept="image/png")
    assert refused.status_code == 406
    redirected = await get(cheeseshop_client, "/simple/Fast_Three/", Accept=JSON)
    assert redirected.status_code == 301
    unknown = await get(cheeseshop_client, "/simple/no-such-project/", Accept=JSON)
    assert unknown.status_code == 404
    posted = await cheeseshop_client.post("/simple/fast-three/")
    assert posted.status_code == 405
    assert quart_requests.paths == [
        "/simple/fast-three/",
        "/simple/fast-three/",
        "/simple/Fast_Three/",
        "/simple/no-such-project/",
        "/simple/fast-three/",
    ]


class Tagger:
    @cheeseshop.hookimpl
    def cheeseshop_response_headers(self, keys: tuple[str, ...]) -> dict[str, str]:
        return {"Surrogate-Key": " ".join(keys)}


class TestWithAPluginsHeaders:
    @pytest.fixture
    def cheeseshop_plugins(self) -> list[tuple[str, object]]:
        return [("tagger", Tagger())]

    async def test_response_headers_of_plugins_are_on_fast_path_hits(
        self, uploaded, cheeseshop_client, quart_requests
    ):
        await uploaded("fast-four")
        await get(cheeseshop_client, "/simple/fast-four/", Accept=JSON)
        hit = await get(cheeseshop_client, "/simple/fast-four/", Accept=JSON)
        assert quart_requests.paths.count("/simple/fast-four/") == 1
        assert hit.headers["Surrogate-Key"] == "project/fast-four"


# -- the pure router ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "accept", "expected"),
    [
        ("/simple/numpy/", JSON, PageRoute("project/numpy", "json https://h", "max-age=600, public", "Accept", ())),
        ("/simple/numpy/", None, PageRoute("project/numpy", "html https://h", "max-age=600, public", "Accept", ())),
        ("/simple/", JSON, PageRoute(ALL_PROJECTS, "json", "max-age=600, public", "Accept", ())),
        ("/simple/numpy/", "image/png", None),
        ("/simple/numpy", JSON, None),
        ("/simple/a/b/", JSON, None),
        ("/pypi/numpy/json/x", None, None),
        ("/pypi/a/b/c/json", None, None),
        ("/packages/aa/bb/x.whl", None, None),
    ],
)
def test_route_maps_paths_to_cache_keys_and_variants(path, accept, expected):
    assert route(path, accept, base_url=None, origin="https://h") == expected


def test_route_for_the_json_api_and_with_a_base_url():
    project = route("/pypi/numpy/json", None, base_url="https://pypi.example", origin="http://ignored")
    release = route("/pypi/numpy/2.0/json", None, base_url=None, origin="http://h")
    assert project is not None and release is not None
    assert (project.key, project.variant, project.vary) == ("project/numpy", "pypi-json", None)
    assert (release.key, release.variant) == ("project/numpy", "pypi-json 2.0 http://h")
    assert dict(release.headers)["Access-Control-Allow-Origin"] == "*"


async def test_hits_alternating_identity_gzip_and_304_each_get_their_own_headers(
    uploaded, cheeseshop_client, quart_requests
):
    for version in ("1.0", "1.1", "1.2", "2.0", "2.1"):  # a page large enough to be gzipped
        await uploaded("fast-mixed", version)
    path = "/simple/fast-mixed/"
    await get(cheeseshop_client, path, Accept=JSON)  # the miss, built by the view
    seen: dict[str, Any] = {}
    app = cheeseshop_client.app
    for encoding in ("identity", "gzip", "identity", "gzip"):
        # Straight over ASGI: exactly the headers sent, none a test client adds.
        hit = await asgi_request(app, path, Accept=JSON, Accept_Encoding=encoding)
        assert hit.status == 200
        assert int(hit.headers["content-length"]) == len(hit.body)
        assert hit.headers.get("content-encoding") == (None if encoding == "identity" else "gzip")
        seen.setdefault(encoding, hit.headers["etag"])
        assert hit.headers["etag"] == seen[encoding]
        not_modified = await asgi_request(app, path, Accept=JSON, Accept_Encoding=encoding, If_None_Match=seen[encoding])
        assert not_modified.status == 304 and not_modified.body == b""
        assert "content-length" not in not_modified.headers and "content-type" not in not_modified.headers
        assert not_modified.headers["etag"] == seen[encoding]
    assert seen["gzip"] != seen["identity"]
    assert quart_requests.paths.count(path) == 1, "every hit came from the fast path"


async def test_a_page_rebuilt_with_another_gzip_length_is_sent_with_that_length(
    uploaded, cheeseshop_client, cheeseshop_services, quart_requests
):
    # Another web process (another zlib) may store the same page with a different gzipped
    # body under the same ETag and serial: the length sent must be that body's.
    import dataclasses
    import gzip

    for version in ("1.0", "1.1", "1.2", "2.0", "2.1"):
        await uploaded("fast-zlib", version)
    path = "/simple/fast-zlib/"
    first = await get(cheeseshop_client, path, Accept=JSON, **{"Accept-Encoding": "gzip"})
    first = await get(cheeseshop_client, path, Accept=JSON, **{"Accept-Encoding": "gzip"})
    assert first.headers["Content-Encoding"] == "gzip"
    [variant] = [v for (k, v) in cheeseshop_services.cache._pages if k == project_key("fast-zlib")]
    generation, page = cheeseshop_services.cache._pages[(project_key("fast-zlib"), variant)]
    other = dataclasses.replace(page, gzipped=gzip.compress(page.body, 1, mtime=0))
    assert len(other.gzipped) != len(page.gzipped)
    cheeseshop_services.cache._pages[(project_key("fast-zlib"), variant)] = (generation, other)

    hit = await asgi_request(cheeseshop_client.app, path, Accept=JSON, Accept_Encoding="gzip")
    assert quart_requests.paths.count(path) == 1
    assert hit.headers["etag"] == first.headers["ETag"]
    assert hit.body == other.gzipped
    assert int(hit.headers["content-length"]) == len(other.gzipped)


class TestWithTheRedisCache:
    @pytest.fixture
    def cheeseshop_settings_overrides(self, redis_url: str) -> dict[str, Any]:
        return {"redis_url": redis_url, "page_cache_poll_seconds": 0}

    async def test_a_page_in_redis_is_served_by_the_fast_path_until_purged(
        self, uploaded, cheeseshop_client, cheeseshop_services, quart_requests
    ):
        await uploaded("fast-redis")
        miss = await get(cheeseshop_client, "/simple/fast-redis/", Accept=JSON)
        hit = await get(cheeseshop_client, "/simple/fast-redis/", Accept=JSON)
        assert quart_requests.paths.count("/simple/fast-redis/") == 1
        assert await hit.get_data() == await miss.get_data()

        await cheeseshop_services.cache.purge_now([project_key("fast-redis")])
        await get(cheeseshop_client, "/simple/fast-redis/", Accept=JSON)
        assert quart_requests.paths.count("/simple/fast-redis/") == 2
