"""Descriptions at upload: rendered, sanitized, refused when broken, passed through plugins."""

from __future__ import annotations

import pytest
from sqlalchemy import select

import cheeseshop
from cheeseshop.db.models import File, Release
from cheeseshop.testing.dists import build_wheel
from cheeseshop.testing.upload import upload_fields
from cheeseshop.upload import describe


async def _release(services, version: str = "1.0") -> Release | None:
    async with services.db.read() as session:
        return await session.scalar(select(Release).where(Release.version == version))


async def _files(services) -> int:
    async with services.db.read() as session:
        return len(list(await session.scalars(select(File))))


def _with_description(dist, text: str, content_type: str | None):
    return upload_fields(
        dist, overrides={"description": text, "description_content_type": content_type}
    )


async def test_markdown_is_rendered_sanitized_and_stored(upload, cheeseshop_services):
    dist = build_wheel("described", "1.0")
    text = "# Title\n\nHello <script>alert(1)</script> [x](javascript:alert(1))\n"
    response = await upload(dist, fields=_with_description(dist, text, "text/markdown"))
    assert response.status_code == 200, await response.get_data(as_text=True)
    release = await _release(cheeseshop_services)
    assert release.description == text
    assert '<h1 id="user-content-title">Title' in release.description_html
    assert "<script" not in release.description_html
    assert "javascript:" not in release.description_html


async def test_broken_rst_is_refused_and_nothing_is_stored(upload, cheeseshop_services):
    dist = build_wheel("broken-rst", "1.0")
    text = "Title\n====\n\n.. frobnicate:: nothing\n"
    response = await upload(dist, fields=_with_description(dist, text, "text/x-rst"))
    assert response.status_code == 400
    assert "failed to render as 'text/x-rst'" in await response.get_data(as_text=True)
    assert await _files(cheeseshop_services) == 0
    assert not list((cheeseshop_services.settings.data_dir / "files").rglob("*.whl"))


async def test_unknown_content_type_is_refused(upload, cheeseshop_services):
    dist = build_wheel("odd-type", "1.0")
    response = await upload(dist, fields=_with_description(dist, "hi", "text/html"))
    assert response.status_code == 400
    body = await response.get_data(as_text=True)
    assert "Description-Content-Type" in body and "text/markdown" in body


async def test_large_descriptions_render_in_a_child_process(upload, cheeseshop_services, monkeypatch):
    monkeypatch.setattr(describe, "ISOLATE_ABOVE", 10)
    dist = build_wheel("big-description", "1.0")
    response = await upload(dist, fields=_with_description(dist, "plain *text* here\n" * 5, "text/plain"))
    assert response.status_code == 200, await response.get_data(as_text=True)
    assert (await _release(cheeseshop_services)).description_html.startswith("<pre>")


async def test_description_render_deadline_refuses(upload, cheeseshop_services, monkeypatch):
    monkeypatch.setattr(describe, "ISOLATE_ABOVE", 10)
    monkeypatch.setattr(describe, "RENDER_SECONDS", 0.001)
    dist = build_wheel("slow-description", "1.0")
    response = await upload(dist, fields=_with_description(dist, "x" * 100, "text/plain"))
    assert response.status_code == 400
    assert "could not be rendered within" in await response.get_data(as_text=True)
    assert await _files(cheeseshop_services) == 0


class Shouter:
    """A render_description plugin: proves the chain runs and its result is stored."""

    @cheeseshop.hookimpl
    def cheeseshop_render_description(self, html, release):
        return html.replace("hello", "HELLO") + f"<!-- {release.project} {release.version} -->"


class Passer:
    @cheeseshop.hookimpl(tryfirst=True)
    def cheeseshop_render_description(self, html):
        assert "hello" in html  # runs first, sees the core's HTML
        return None  # None leaves the HTML unchanged


@pytest.mark.parametrize("cheeseshop_plugins", [[("shouter", Shouter()), ("passer", Passer())]])
async def test_render_description_hook_chain_transforms_the_stored_html(upload, cheeseshop_services):
    dist = build_wheel("chained", "2.0")
    response = await upload(dist, fields=_with_description(dist, "hello world", "text/markdown"))
    assert response.status_code == 200, await response.get_data(as_text=True)
    html = (await _release(cheeseshop_services, "2.0")).description_html
    assert "HELLO world" in html and html.endswith("<!-- chained 2.0 -->")
