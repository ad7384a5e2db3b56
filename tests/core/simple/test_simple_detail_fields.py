"""Simple API detail fields pinned to exact values (CONFORMANCE.md, "Simple API").

Yanked files in HTML (``data-yanked`` bare or with the reason) and JSON (``true``, the
reason, or ``false``), the JSON ``name`` as the normalized name, ``versions`` holding only
versions that have files, the literal ``api-version`` ``1.4`` on every page, and the
headers of a 406.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

import pytest
from sqlalchemy import select

from cheeseshop.db.models import Project, Release
from cheeseshop.projects import service
from cheeseshop.testing.dists import Dist, build_sdist, build_wheel
from cheeseshop.testing.upload import uploaded

JSON = "application/vnd.pypi.simple.v1+json"
V1_HTML = "application/vnd.pypi.simple.v1+html"
HTML = "text/html"
NAME = "hello-world"
PAGE = f"/simple/{NAME}/"
#: Needs escaping in an HTML attribute: the parsed value must still be exactly this.
REASON = 'broken "build" <1.0> & more'


# -- helpers ------------------------------------------------------------------------------


class Anchors(HTMLParser):
    """Every ``<a>`` of a page: its text and its attributes as html.parser reads them
    (a bare attribute has the value ``None``), and the ``<meta>`` tags."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.by_text: dict[str, dict[str, str | None]] = {}
        self.metas: list[dict[str, str | None]] = []
        self._open: dict[str, str | None] | None = None
        self._text: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._open, self._text = dict(attrs), []
        elif tag == "meta":
            self.metas.append(dict(attrs))

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._open is not None:
            text = "".join(self._text)
            assert text not in self.by_text, f"two anchors for {text!r}"
            self.by_text[text] = self._open
            self._open = None

    def meta_contents(self, name: str) -> list[str | None]:
        return [m.get("content") for m in self.metas if m.get("name") == name]


async def fetch(client: Any, path: str, accept: str) -> Any:
    response = await client.get(path, headers={"Accept": accept})
    assert response.status_code == 200, await response.get_data(as_text=True)
    return response


async def json_detail(client: Any, path: str = PAGE) -> dict[str, Any]:
    response = await fetch(client, path, JSON)
    assert response.headers["Content-Type"] == JSON
    return await response.get_json()


async def json_yanked(client: Any) -> dict[str, Any]:
    """``{filename: the "yanked" value}`` of the JSON detail page."""
    return {f["filename"]: f["yanked"] for f in (await json_detail(client))["files"]}


async def html_detail(client: Any, accept: str = HTML) -> tuple[Anchors, str]:
    text = await (await fetch(client, PAGE, accept)).get_data(as_text=True)
    return Anchors(text), text


def raw_anchor(text: str, filename: str) -> str:
    """The ``<a …>`` start tag of ``filename`` exactly as the page spells it."""
    [tag] = re.findall(rf"<a [^>]*>{re.escape(filename)}</a>", text)
    return tag


@pytest.fixture
async def dists(upload: Any) -> dict[str, Dist]:
    """hello-world 1.0 (a wheel and an sdist) and 2.0 (a wheel)."""
    return {
        "wheel": await uploaded(upload, build_wheel(NAME, "1.0")),
        "sdist": await uploaded(upload, build_sdist(NAME, "1.0")),
        "newer": await uploaded(upload, build_wheel(NAME, "2.0")),
    }


# -- yanked in HTML -----------------------------------------------------------------------


async def test_html_data_yanked_is_bare_without_a_reason(cheeseshop_client, cheeseshop_services, dists):
    await service.yank(cheeseshop_services, NAME, "1.0")
    for accept in (HTML, V1_HTML):
        page, text = await html_detail(cheeseshop_client, accept)
        for kind in ("wheel", "sdist"):
            filename = dists[kind].filename
            attrs = page.by_text[filename]
            assert "data-yanked" in attrs, (accept, kind)
            # Bare (the page writes no value): html.parser gives None.
            assert attrs["data-yanked"] is None, (accept, kind, attrs["data-yanked"])
            tag = raw_anchor(text, filename)
            assert re.search(r" data-yanked(?=[ >])", tag), tag
            assert "data-yanked=" not in tag
        assert "data-yanked" not in page.by_text[dists["newer"].filename]


async def test_html_data_yanked_carries_the_reason(cheeseshop_client, cheeseshop_services, dists):
    await service.yank(cheeseshop_services, NAME, "1.0", reason=REASON)
    for accept in (HTML, V1_HTML):
        page, text = await html_detail(cheeseshop_client, accept)
        for kind in ("wheel", "sdist"):
            filename = dists[kind].filename
            assert page.by_text[filename]["data-yanked"] == REASON, (accept, kind)
            assert 'data-yanked="broken &quot;build&quot; &lt;1.0&gt; &amp; more"' in raw_anchor(text, filename)
        assert "data-yanked" not in page.by_text[dists["newer"].filename]
    assert "<1.0>" not in text


async def test_html_data_yanked_gone_after_unyank(cheeseshop_client, cheeseshop_services, dists):
    await service.yank(cheeseshop_services, NAME, "1.0", reason=REASON)
    await service.unyank(cheeseshop_services, NAME, "1.0")
    page, text = await html_detail(cheeseshop_client)
    assert len(page.by_text) == 3
    for attrs in page.by_text.values():
        assert "data-yanked" not in attrs
    assert "data-yanked" not in text


# -- yanked in JSON -----------------------------------------------------------------------


async def test_json_yanked_is_false_when_not_yanked(cheeseshop_client, dists):
    yanked = await json_yanked(cheeseshop_client)
    assert set(yanked) == {d.filename for d in dists.values()}
    for filename, value in yanked.items():
        assert value is False, (filename, value)


async def test_json_yanked_is_boolean_true_without_a_reason(cheeseshop_client, cheeseshop_services, dists):
    await service.yank(cheeseshop_services, NAME, "1.0")
    yanked = await json_yanked(cheeseshop_client)
    assert yanked[dists["wheel"].filename] is True
    assert yanked[dists["sdist"].filename] is True
    assert yanked[dists["newer"].filename] is False
    # The bytes too: a JSON true, never the string "true" nor an empty reason.
    body = await (await fetch(cheeseshop_client, PAGE, JSON)).get_data(as_text=True)
    assert body.count('"yanked":true') == 2
    assert '"yanked":"' not in body


async def test_json_yanked_is_the_reason_when_given(cheeseshop_client, cheeseshop_services, dists):
    await service.yank(cheeseshop_services, NAME, "1.0", reason=REASON)
    yanked = await json_yanked(cheeseshop_client)
    assert yanked == {
        dists["wheel"].filename: REASON,
        dists["sdist"].filename: REASON,
        dists["newer"].filename: False,
    }


async def test_json_yanked_back_to_false_after_unyank(cheeseshop_client, cheeseshop_services, dists):
    await service.yank(cheeseshop_services, NAME, "1.0", reason=REASON)
    assert (await json_yanked(cheeseshop_client))[dists["wheel"].filename] == REASON
    await service.unyank(cheeseshop_services, NAME, "1.0")
    yanked = await json_yanked(cheeseshop_client)
    assert all(value is False for value in yanked.values()), yanked


# -- name and versions --------------------------------------------------------------------


async def test_json_name_is_the_normalized_name(upload, cheeseshop_client):
    await uploaded(upload, build_wheel("Hello_World", "1.0"), name="Hello_World")
    data = await json_detail(cheeseshop_client, "/simple/hello-world/")
    assert data["name"] == "hello-world"
    # The display name is still what the project is called: the HTML title shows it.
    html = await (await fetch(cheeseshop_client, "/simple/hello-world/", HTML)).get_data(as_text=True)
    assert "<title>Links for Hello_World</title>" in html


async def test_versions_every_version_with_files_once(upload, cheeseshop_client):
    # Uploaded out of order, and 1.0 with two files: listed once each, by version.
    await uploaded(upload, build_wheel(NAME, "2.0"))
    await uploaded(upload, build_wheel(NAME, "1.0"))
    await uploaded(upload, build_sdist(NAME, "1.0"))
    data = await json_detail(cheeseshop_client)
    assert data["versions"] == ["1.0", "2.0"]
    assert len(data["files"]) == 3


async def test_versions_leave_out_a_release_without_files(upload, cheeseshop_client, cheeseshop_services):
    await uploaded(upload, build_wheel(NAME, "1.0"))
    await uploaded(upload, build_sdist(NAME, "2.0"))
    only_file = (await uploaded(upload, build_wheel(NAME, "3.0"))).filename
    # Deleting a release's last file leaves the release, without files.
    await service.delete_file(cheeseshop_services, NAME, only_file)
    async with cheeseshop_services.db.read() as session:
        stored = set(
            (
                await session.scalars(
                    select(Release.version).join(Project).where(Project.normalized_name == NAME)
                )
            ).all()
        )
    assert stored == {"1.0", "2.0", "3.0"}

    data = await json_detail(cheeseshop_client)
    assert data["versions"] == ["1.0", "2.0"]
    assert len(data["files"]) == 2


# -- api-version --------------------------------------------------------------------------


async def test_api_version_is_1_4_on_every_page(cheeseshop_client, dists):
    for path in ("/simple/", PAGE):
        data = await json_detail(cheeseshop_client, path)
        assert data["meta"]["api-version"] == "1.4", path
        for accept in (HTML, V1_HTML):
            text = await (await fetch(cheeseshop_client, path, accept)).get_data(as_text=True)
            assert Anchors(text).meta_contents("pypi:repository-version") == ["1.4"], (path, accept)
            assert '<meta name="pypi:repository-version" content="1.4">' in text, (path, accept)


# -- 406 ------------------------------------------------------------------------------------


async def test_not_acceptable_sends_content_type_and_vary(cheeseshop_client, dists):
    for path in (PAGE, "/simple/"):
        response = await cheeseshop_client.get(path, headers={"Accept": "application/xml"})
        assert response.status_code == 406, path
        assert response.headers["Content-Type"] == "text/plain; charset=utf-8", path
        vary = [v.strip().lower() for v in response.headers.get("Vary", "").split(",")]
        assert "accept" in vary, (path, response.headers.get("Vary"))
