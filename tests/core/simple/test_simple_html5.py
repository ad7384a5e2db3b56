"""The Simple API's HTML pages are valid HTML5: html5lib's strict parser, which raises on
any parse error the HTML standard defines, reads every variant without complaint.

The pages carry what is most likely to break markup: a yank reason and a project-status
reason with quotes, angle brackets and ampersands, ``data-requires-python`` with ``<``,
``data-dist-info-metadata``/``data-core-metadata``, and a root of several projects.
"""

from __future__ import annotations

from typing import Any

import html5lib
import pytest
from html5lib.html5parser import ParseError

from cheeseshop.projects import service
from cheeseshop.testing.dists import build_sdist, build_wheel
from cheeseshop.testing.upload import uploaded

HTML = "text/html"
V1_HTML = "application/vnd.pypi.simple.v1+html"
NASTY = 'broken "build" <1.0> & more \u2014 \u00e9'


def strictly_parsed(text: str) -> Any:
    """The document, or ParseError at the first thing HTML5 calls a parse error."""
    return html5lib.HTMLParser(strict=True, namespaceHTMLElements=False).parse(text)


async def page(client: Any, path: str, accept: str) -> str:
    response = await client.get(path, headers={"Accept": accept})
    assert response.status_code == 200, path
    assert response.headers["Content-Type"].startswith(accept)
    return await response.get_data(as_text=True)


@pytest.fixture
async def published(upload: Any, cheeseshop_services: Any) -> None:
    await uploaded(upload, build_wheel("hello-world", "1.0", requires_python=">=3.8,<4"), requires_python=">=3.8,<4")
    await uploaded(upload, build_sdist("hello-world", "1.0"))
    await uploaded(upload, build_wheel("hello-world", "2.0"))
    await uploaded(upload, build_wheel("other.Project", "0.1"))
    await service.yank(cheeseshop_services, "hello-world", "1.0", reason=NASTY)
    await service.set_status(cheeseshop_services, "other-project", "deprecated", reason=NASTY)


@pytest.mark.parametrize("accept", [HTML, V1_HTML])
@pytest.mark.parametrize("path", ["/simple/", "/simple/hello-world/", "/simple/other-project/"])
async def test_pages_are_valid_html5(cheeseshop_client: Any, published: None, path: str, accept: str) -> None:
    text = await page(cheeseshop_client, path, accept)
    document = strictly_parsed(text)
    assert text.lower().startswith("<!doctype html>")
    anchors = document.findall(".//a")
    assert anchors, "a page with no links"
    if path == "/simple/hello-world/":
        yanked = [a for a in anchors if a.get("data-yanked") is not None]
        assert {a.get("data-yanked") for a in yanked} == {NASTY}
        assert any(a.get("data-requires-python") == ">=3.8,<4" for a in anchors)


def test_the_strict_parser_does_refuse_broken_markup() -> None:
    # What the test above relies on: a stray "<" in an attribute, or an unclosed quote, fails.
    with pytest.raises(ParseError):
        strictly_parsed('<!DOCTYPE html><html><body><a href="x" data-x="a"b">y</a></body></html>')
    with pytest.raises(ParseError):
        strictly_parsed("<html><body></body></html>")  # no doctype
