"""The Simple repository API (``/simple/``) through the Quart test client."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit

import pytest
from packaging.version import Version
from sqlalchemy import func, select

from cheeseshop.db.models import JournalEntry, Project
from cheeseshop.simple import render
from cheeseshop.testing.dists import Dist, build_sdist, build_wheel
from cheeseshop.testing.upload import uploaded
from cheeseshop.web.reason import REASON_HEADER

JSON = "application/vnd.pypi.simple.v1+json"
V1_HTML = "application/vnd.pypi.simple.v1+html"
PIP = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.1, text/html;q=0.01"
UV = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"
UPLOAD_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
FILE_KEYS = {
    "filename",
    "url",
    "hashes",
    "requires-python",
    "size",
    "upload-time",
    "yanked",
    "core-metadata",
    "dist-info-metadata",
}


# -- helpers ------------------------------------------------------------------------------


class Page(HTMLParser):
    """The parts of a Simple API HTML page that clients read."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.anchors: list[tuple[dict[str, str | None], str]] = []
        self.metas: list[dict[str, str | None]] = []
        self.doctype: str | None = None
        self._open: dict[str, str | None] | None = None
        self._text: list[str] = []
        self.feed(text)
        self.close()
        assert self._open is None, "an <a> was never closed"

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            assert self._open is None, "nested <a>"
            self._open = dict(attrs)
            self._text = []
        elif tag == "meta":
            self.metas.append(dict(attrs))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            assert self._open is not None
            self.anchors.append((self._open, "".join(self._text)))
            self._open = None

    def meta(self, name: str) -> str | None:
        found = [m.get("content") for m in self.metas if m.get("name") == name]
        assert len(found) <= 1, f"{name} given {len(found)} times"
        return found[0] if found else None

    def anchor(self, text: str) -> dict[str, str | None]:
        found = [attrs for attrs, anchor_text in self.anchors if anchor_text == text]
        assert len(found) == 1, f"{len(found)} anchors for {text!r}"
        return found[0]


async def get(client: Any, path: str, accept: str | None = None, **headers: str) -> Any:
    if accept is not None:
        headers["Accept"] = accept
    response = await client.get(path, headers=headers)
    assert response.status_code != 500, await response.get_data(as_text=True)
    return response


async def ok(client: Any, path: str, accept: str | None = None, **headers: str) -> Any:
    response = await get(client, path, accept, **headers)
    assert response.status_code == 200, await response.get_data(as_text=True)
    # "Accept", and "Accept-Encoding" too for a page large enough to be kept gzipped.
    assert [v.strip() for v in response.headers["Vary"].split(",")] in (
        ["Accept"],
        ["Accept", "Accept-Encoding"],
    )
    return response


async def json_page(client: Any, path: str) -> dict[str, Any]:
    response = await ok(client, path, JSON)
    assert response.headers["Content-Type"] == JSON
    return await response.get_json()


async def html_page(client: Any, path: str, accept: str | None = None) -> tuple[Page, str]:
    response = await ok(client, path, accept)
    text = await response.get_data(as_text=True)
    return Page(text), text


async def serials(services: Any) -> tuple[int, dict[str, int]]:
    async with services.db.read() as session:
        top = await session.scalar(select(func.max(JournalEntry.id)))
        rows = (await session.execute(select(Project.normalized_name, Project.last_serial))).all()
    return top, {name: serial for name, serial in rows}


@pytest.fixture
async def project(upload: Any) -> dict[str, Dist]:
    """hello-world: a wheel needing >=3.8 and an sdist (1.0), and a wheel (2.0)."""
    needs_38 = build_wheel("hello-world", "1.0", requires_python=">=3.8")
    wheel = await uploaded(upload, needs_38, requires_python=">=3.8")
    sdist = await uploaded(upload, build_sdist("hello-world", "1.0"))
    newer = await uploaded(upload, build_wheel("hello-world", "2.0"))
    return {"wheel": wheel, "sdist": sdist, "newer": newer}


# -- formats --------------------------------------------------------------------------------


async def test_installers_get_json(cheeseshop_client, project, subtests):
    for client, accept in (("pip", PIP), ("uv", UV)):
        for path in ("/simple/", "/simple/hello-world/"):
            with subtests.test(client=client, path=path):
                response = await ok(cheeseshop_client, path, accept)
                assert response.headers["Content-Type"] == JSON
                assert (await response.get_json())["meta"]["api-version"] == render.API_VERSION


async def test_default_is_text_html(cheeseshop_client, project, subtests):
    for accept in (None, "*/*", "text/html"):
        for path in ("/simple/", "/simple/hello-world/"):
            with subtests.test(accept=accept, path=path):
                response = await ok(cheeseshop_client, path, accept)
                assert response.headers["Content-Type"] == "text/html; charset=utf-8"
                page = Page(await response.get_data(as_text=True))
                assert page.doctype is not None and page.doctype.lower() == "doctype html"


async def test_v1_html(cheeseshop_client, project):
    response = await ok(cheeseshop_client, "/simple/hello-world/", V1_HTML)
    assert response.headers["Content-Type"] == f"{V1_HTML}; charset=utf-8"
    assert len(Page(await response.get_data(as_text=True)).anchors) == 3


async def test_latest_json_answered_as_v1_json(cheeseshop_client, project):
    for path in ("/simple/", "/simple/hello-world/"):
        response = await ok(cheeseshop_client, path, "application/vnd.pypi.simple.latest+json")
        assert response.headers["Content-Type"] == JSON
        await response.get_json()


async def test_format_query_override(cheeseshop_client, project):
    encoded = JSON.replace("+", "%2B")
    # Typed into a browser, the "+" arrives as a space; both spellings work.
    for query in (f"?format={encoded}", f"?format={JSON}"):
        response = await ok(cheeseshop_client, f"/simple/hello-world/{query}", "text/html")
        assert response.headers["Content-Type"] == JSON, query
        assert (await response.get_json())["name"] == "hello-world"
    response = await ok(cheeseshop_client, f"/simple/hello-world/?format={V1_HTML}", PIP)
    assert response.headers["Content-Type"] == f"{V1_HTML}; charset=utf-8"
    response = await ok(cheeseshop_client, "/simple/?format=text/html", PIP)
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"


async def test_unknown_format_override_406(cheeseshop_client, project):
    response = await get(cheeseshop_client, "/simple/hello-world/?format=application/json", PIP)
    assert response.status_code == 406


async def test_not_acceptable_406(cheeseshop_client, project):
    for path in ("/simple/", "/simple/hello-world/"):
        response = await get(cheeseshop_client, path, "application/json, text/plain;q=0.5")
        assert response.status_code == 406
        assert response.headers["Vary"] == "Accept"
        body = await response.get_data(as_text=True)
        assert JSON in body and "text/html" in body
        assert response.headers[REASON_HEADER]


async def test_html_and_json_etags_differ(cheeseshop_client, project):
    json_response = await ok(cheeseshop_client, "/simple/hello-world/", JSON)
    html_response = await ok(cheeseshop_client, "/simple/hello-world/", "text/html")
    assert json_response.headers["ETag"] != html_response.headers["ETag"]


# -- routes ---------------------------------------------------------------------------------


async def test_non_normalized_name_redirects(cheeseshop_client, project, subtests):
    for path in ("/simple/Hello_World/", "/simple/HELLO-WORLD/", "/simple/hello.world/",
                 "/simple/hello--world/"):
        with subtests.test(path=path):
            response = await get(cheeseshop_client, path, JSON)
            assert response.status_code == 301
            assert urlsplit(response.headers["Location"]).path == "/simple/hello-world/"
            assert response.headers["Vary"] == "Accept"


async def test_no_slash_redirects(cheeseshop_client, project, subtests):
    for path in ("/simple/hello-world", "/simple/Hello_World"):
        with subtests.test(path=path):
            response = await get(cheeseshop_client, path, JSON)
            assert response.status_code == 301
            assert urlsplit(response.headers["Location"]).path == "/simple/hello-world/"
            assert response.headers["Vary"] == "Accept"


async def test_redirects_keep_the_format_override(cheeseshop_client, project, subtests):
    encoded = JSON.replace("+", "%2B")
    for path in ("/simple/hello-world", "/simple/Hello_World/", "/simple/Hello_World"):
        with subtests.test(path=path):
            response = await get(cheeseshop_client, f"{path}?format={encoded}", "text/html")
            assert response.status_code == 301
            location = urlsplit(response.headers["Location"])
            assert (location.path, location.query) == ("/simple/hello-world/", f"format={encoded}")
            followed = await ok(cheeseshop_client, f"{location.path}?{location.query}", "text/html")
            assert followed.headers["Content-Type"] == JSON


async def test_unknown_project_404(cheeseshop_client, project):
    for accept in (JSON, "text/html", None):
        response = await get(cheeseshop_client, "/simple/no-such-project/", accept)
        assert response.status_code == 404
        assert "no-such-project" in await response.get_data(as_text=True)
        assert response.headers[REASON_HEADER]
        assert response.headers["Content-Type"].startswith("text/plain")
        assert response.headers["Vary"] == "Accept"


async def test_impossible_name_404(cheeseshop_client, project, subtests):
    # Never a 500: PostgreSQL raises on a NUL in text rather than finding nothing.
    for path in ("/simple/a%00b/", "/simple/%00/", "/simple/-bad-/", "/simple/a%20b/"):
        with subtests.test(path=path):
            response = await get(cheeseshop_client, path, JSON)
            if response.status_code == 301:
                location = urlsplit(response.headers["Location"]).path
                response = await get(cheeseshop_client, location, JSON)
            assert response.status_code == 404


async def test_empty_index(cheeseshop_client):
    data = await json_page(cheeseshop_client, "/simple/")
    assert data == {"meta": {"api-version": render.API_VERSION, "_last-serial": 0}, "projects": []}
    page, _ = await html_page(cheeseshop_client, "/simple/")
    assert page.anchors == []
    assert page.meta("pypi:repository-version") == render.API_VERSION


# -- JSON -----------------------------------------------------------------------------------


async def test_json_detail(cheeseshop_client, cheeseshop_services, project):
    before = datetime.now(UTC)
    data = await json_page(cheeseshop_client, "/simple/hello-world/")
    _, by_project = await serials(cheeseshop_services)

    assert set(data) >= {"meta", "name", "versions", "files"}
    assert data["meta"]["api-version"] == render.API_VERSION
    assert data["meta"]["_last-serial"] == by_project["hello-world"]
    assert data["name"] == "hello-world"
    assert isinstance(data["versions"], list)
    assert sorted(data["versions"], key=Version) == ["1.0", "2.0"]
    assert len(data["versions"]) == len(set(data["versions"]))

    files = {f["filename"]: f for f in data["files"]}
    assert len(files) == len(data["files"]) == 3
    for kind, dist in project.items():
        entry = files[dist.filename]
        assert FILE_KEYS <= set(entry) <= FILE_KEYS | {"provenance"}, (kind, set(entry))
        assert urlsplit(entry["url"]).path.startswith("/packages/")
        assert entry["url"].endswith("/" + dist.filename)
        assert entry["hashes"] == {"sha256": dist.sha256}
        assert type(entry["size"]) is int and entry["size"] == len(dist.content)
        assert UPLOAD_TIME.match(entry["upload-time"]), entry["upload-time"]
        uploaded_at = datetime.strptime(entry["upload-time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        assert before - timedelta(minutes=5) < uploaded_at <= datetime.now(UTC)
        assert entry["yanked"] is False
        assert entry.get("provenance") is None

    assert files[project["wheel"].filename]["requires-python"] == ">=3.8"
    assert files[project["newer"].filename]["requires-python"] is None
    assert files[project["sdist"].filename]["requires-python"] is None

    for kind in ("wheel", "newer"):
        dist = project[kind]
        expected = {"sha256": hashlib.sha256(dist.metadata).hexdigest()}
        assert files[dist.filename]["core-metadata"] == expected
        assert files[dist.filename]["dist-info-metadata"] == expected
    assert files[project["sdist"].filename]["core-metadata"] is False
    assert files[project["sdist"].filename]["dist-info-metadata"] is False


async def test_json_api_version_matches_fields_emitted(cheeseshop_client, project):
    # Advertise only a version whose fields are all present (CONFORMANCE: target 1.4).
    data = await json_page(cheeseshop_client, "/simple/hello-world/")
    version = Version(data["meta"]["api-version"])
    assert version >= Version("1.1")  # versions, size and upload-time are emitted
    if version >= Version("1.3"):
        assert all("provenance" in f for f in data["files"])
    if version >= Version("1.4"):
        assert "project-status" in data


async def test_versions_sorted_without_duplicates(upload, cheeseshop_client):
    for version in ("1.10", "1.9", "1.0.0"):
        await uploaded(upload, build_wheel("multi", version))
    await uploaded(upload, build_sdist("multi", "1.9"))
    data = await json_page(cheeseshop_client, "/simple/multi/")
    assert data["versions"] == ["1.0.0", "1.9", "1.10"]
    assert len(data["files"]) == 4


async def test_file_url_downloads_exact_bytes(cheeseshop_client, project):
    data = await json_page(cheeseshop_client, "/simple/hello-world/")
    for entry in data["files"]:
        response = await cheeseshop_client.get(urlsplit(entry["url"]).path)
        assert response.status_code == 200
        content = await response.get_data()
        assert hashlib.sha256(content).hexdigest() == entry["hashes"]["sha256"]
        assert len(content) == entry["size"]


async def test_json_root(cheeseshop_client, cheeseshop_services, project, upload):
    await uploaded(upload, build_wheel("another", "1.0"))
    top, by_project = await serials(cheeseshop_services)
    response = await ok(cheeseshop_client, "/simple/", JSON)
    data = await response.get_json()
    assert set(data) == {"meta", "projects"}
    assert data["meta"] == {"api-version": render.API_VERSION, "_last-serial": top}
    assert data["projects"] == [
        {"name": "another", "_last-serial": by_project["another"]},
        {"name": "hello-world", "_last-serial": by_project["hello-world"]},
    ]
    assert response.headers["X-PyPI-Last-Serial"] == str(top)


# -- HTML -----------------------------------------------------------------------------------


async def test_html_detail(cheeseshop_client, project):
    page, text = await html_page(cheeseshop_client, "/simple/hello-world/", "text/html")
    assert page.meta("pypi:repository-version") == render.API_VERSION
    assert len(page.anchors) == 3
    texts = sorted(anchor_text for _, anchor_text in page.anchors)
    assert texts == sorted(d.filename for d in project.values())

    for kind, dist in project.items():
        attrs = page.anchor(dist.filename)
        href = attrs["href"]
        assert href is not None
        url, _, fragment = href.partition("#")
        assert fragment == f"sha256={dist.sha256}"
        assert urlsplit(url).path.startswith("/packages/")
        assert url.endswith("/" + dist.filename)
        assert "data-yanked" not in attrs
        if dist.filename.endswith(".whl"):
            expected = f"sha256={hashlib.sha256(dist.metadata).hexdigest()}"
            assert attrs["data-core-metadata"] == expected
            assert attrs["data-dist-info-metadata"] == expected
        else:
            # pip treats any value, even "false", as present: no attribute at all.
            assert "data-core-metadata" not in attrs
            assert "data-dist-info-metadata" not in attrs

    assert page.anchor(project["wheel"].filename)["data-requires-python"] == ">=3.8"
    assert 'data-requires-python="&gt;=3.8"' in text
    assert "data-requires-python" not in page.anchor(project["sdist"].filename)
    assert "data-requires-python" not in page.anchor(project["newer"].filename)


async def test_html_requires_python_escaping(upload, cheeseshop_client):
    spec = "<4,>=3.8,!=3.9.*"
    await uploaded(upload, build_wheel("escaped", "1.0", requires_python=spec), requires_python=spec)
    page, text = await html_page(cheeseshop_client, "/simple/escaped/")
    assert page.anchors[0][0]["data-requires-python"] == spec
    assert 'data-requires-python="&lt;4,&gt;=3.8,!=3.9.*"' in text
    assert "<4" not in text


async def test_html_root(cheeseshop_client, project, upload):
    await uploaded(upload, build_wheel("Another_Project", "1.0"), name="Another_Project")
    page, _ = await html_page(cheeseshop_client, "/simple/")
    assert page.meta("pypi:repository-version") == render.API_VERSION
    assert [(attrs["href"], text) for attrs, text in page.anchors] == [
        ("another-project/", "Another_Project"),
        ("hello-world/", "hello-world"),
    ]


async def test_html_root_links_resolve(cheeseshop_client, project):
    page, _ = await html_page(cheeseshop_client, "/simple/")
    for attrs, _ in page.anchors:
        await ok(cheeseshop_client, "/simple/" + attrs["href"])


# -- headers --------------------------------------------------------------------------------


async def test_last_serial_headers(cheeseshop_client, cheeseshop_services, project, upload):
    await uploaded(upload, build_wheel("another", "1.0"))
    top, by_project = await serials(cheeseshop_services)
    assert by_project["hello-world"] < top == by_project["another"]
    for accept in (JSON, "text/html"):
        response = await ok(cheeseshop_client, "/simple/", accept)
        assert response.headers["X-PyPI-Last-Serial"] == str(top)
        response = await ok(cheeseshop_client, "/simple/hello-world/", accept)
        assert response.headers["X-PyPI-Last-Serial"] == str(by_project["hello-world"])
    data = await json_page(cheeseshop_client, "/simple/hello-world/")
    assert data["meta"]["_last-serial"] == by_project["hello-world"]


async def test_serial_grows_with_each_upload(cheeseshop_client, upload):
    await uploaded(upload, build_wheel("grower", "1.0"))
    first = int((await ok(cheeseshop_client, "/simple/grower/", JSON)).headers["X-PyPI-Last-Serial"])
    await uploaded(upload, build_sdist("grower", "1.0"))
    second = int((await ok(cheeseshop_client, "/simple/grower/", JSON)).headers["X-PyPI-Last-Serial"])
    assert second == first + 1


async def test_etag_and_304(cheeseshop_client, project):
    for path in ("/simple/", "/simple/hello-world/"):
        for accept in (JSON, "text/html"):
            response = await ok(cheeseshop_client, path, accept)
            etag = response.headers["ETag"]
            assert etag
            again = await get(cheeseshop_client, path, accept, **{"If-None-Match": etag})
            assert again.status_code == 304, (path, accept)
            assert await again.get_data() == b""
            other = await get(cheeseshop_client, path, accept, **{"If-None-Match": '"something-else"'})
            assert other.status_code == 200


async def test_etag_changes_after_upload(cheeseshop_client, project, upload):
    etag = (await ok(cheeseshop_client, "/simple/hello-world/", JSON)).headers["ETag"]
    await uploaded(upload, build_wheel("hello-world", "3.0"))
    response = await get(cheeseshop_client, "/simple/hello-world/", JSON, **{"If-None-Match": etag})
    assert response.status_code == 200
    assert response.headers["ETag"] != etag


async def test_cors_and_cache_headers(cheeseshop_client, project):
    for path in ("/simple/", "/simple/hello-world/"):
        for accept in (JSON, "text/html"):
            response = await ok(cheeseshop_client, path, accept)
            assert response.headers["Access-Control-Allow-Origin"] == "*"
            exposed_header = response.headers["Access-Control-Expose-Headers"]
            exposed = [h.strip().lower() for h in exposed_header.split(",")]
            assert "x-pypi-last-serial" in exposed
            assert "max-age" in response.headers["Cache-Control"]


async def test_new_file_visible_immediately(cheeseshop_client, upload):
    # uv publish --check-url compares the hash the Simple API shows right after the 200.
    for version in ("1.0", "1.1"):
        dist = await uploaded(upload, build_wheel("fresh", version))
        data = await json_page(cheeseshop_client, "/simple/fresh/")
        assert {f["filename"]: f["hashes"]["sha256"] for f in data["files"]}[dist.filename] == dist.sha256
        page, _ = await html_page(cheeseshop_client, "/simple/fresh/")
        assert page.anchor(dist.filename)["href"].endswith(f"#sha256={dist.sha256}")
