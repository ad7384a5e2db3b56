"""Render an upload's description within a time budget, then through the plugin chain.

Markdown and plain text render in milliseconds, but docutils can spend minutes on a
large, hostile reStructuredText document, and a thread cannot be stopped. Descriptions
above :data:`ISOLATE_ABOVE` bytes are therefore rendered in a child process that is
killed at the deadline, and awaited on the event loop (:func:`render_large`), so that
no thread waits for them; small ones, nearly all of them, render in the calling thread
(:func:`render_small`), which for an upload is one of its worker threads.
"""

from __future__ import annotations

import asyncio
import json
import sys

from cheeseshop.config import Settings
from cheeseshop.packaging.description import InvalidDescription, render_description
from cheeseshop.plugins import Hooks
from cheeseshop.upload.candidate import DescribedRelease

__all__ = ["ISOLATE_ABOVE", "RENDER_SECONDS", "is_large", "render_large", "render_small"]

ISOLATE_ABOVE = 64 * 1024
RENDER_SECONDS = 20.0


def is_large(raw: str) -> bool:
    """Whether this description is rendered in a child process (:func:`render_large`)."""
    return len(raw.encode("utf-8", "surrogatepass")) > ISOLATE_ABOVE


def render_small(
    raw: str | None, content_type: str | None, *, release: DescribedRelease, hooks: Hooks, settings: Settings
) -> str | None:
    """Sanitized HTML for a description that is not :func:`is_large`, transformed by
    plugins; None when there is none. Blocking.

    The content type is checked even without a description. Raises InvalidDescription
    when it does not render (the upload is then refused).
    """
    html = render_description(raw, content_type)
    return None if html is None else hooks.render_description(html, release, settings)


async def render_large(
    raw: str,
    content_type: str | None,
    *,
    release: DescribedRelease,
    hooks: Hooks,
    settings: Settings,
    timeout: float | None = None,
) -> str | None:
    """:func:`render_small` for a large description: rendered in a child process killed
    after ``timeout`` seconds (:data:`RENDER_SECONDS`), the plugins then in a thread."""
    html = await _render_isolated(raw, content_type, timeout or RENDER_SECONDS)
    return None if html is None else await asyncio.to_thread(hooks.render_description, html, release, settings)


async def _render_isolated(raw: str, content_type: str | None, timeout: float) -> str | None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cheeseshop.packaging.description",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    payload = json.dumps({"raw": raw, "content_type": content_type}).encode()
    try:
        out, _ = await asyncio.wait_for(process.communicate(payload), timeout)
    except TimeoutError:
        raise InvalidDescription(
            f"The description could not be rendered within {timeout:g} seconds; "
            "shorten or simplify it.",
            content_type=content_type,
        ) from None
    finally:
        # Killed on any way out (the deadline, or the request cancelled): never left running.
        if process.returncode is None:
            process.kill()
            await process.wait()
    answer = json.loads(out or b"{}")
    if "error" in answer:
        raise InvalidDescription(
            answer["error"], content_type=answer.get("content_type"), problems=tuple(answer.get("problems", ()))
        )
    if "html" not in answer:
        raise RuntimeError("the description renderer failed")
    return answer["html"]
