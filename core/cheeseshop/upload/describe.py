"""Render an upload's description within a time budget, then through the plugin chain.

Markdown and plain text render in milliseconds, but docutils can spend minutes on a
large, hostile reStructuredText document, and a thread cannot be stopped. Descriptions
above :data:`ISOLATE_ABOVE` bytes are therefore rendered in a child process that is
killed at the deadline; small ones, nearly all of them, render in the calling thread.
"""

from __future__ import annotations

import json
import subprocess
import sys

from cheeseshop.packaging.description import InvalidDescription, render_description
from cheeseshop.config import Settings
from cheeseshop.plugins import Hooks
from cheeseshop.upload.candidate import DescribedRelease

__all__ = ["ISOLATE_ABOVE", "RENDER_SECONDS", "render_for_upload"]

ISOLATE_ABOVE = 64 * 1024
RENDER_SECONDS = 20.0


def _render_isolated(raw: str, content_type: str | None, timeout: float) -> str | None:
    payload = json.dumps({"raw": raw, "content_type": content_type}).encode()
    try:
        # subprocess.run kills the child when the deadline passes.
        finished = subprocess.run(
            [sys.executable, "-m", "cheeseshop.packaging.description"],
            input=payload,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise InvalidDescription(
            f"The description could not be rendered within {timeout:g} seconds; "
            "shorten or simplify it.",
            content_type=content_type,
        ) from None
    answer = json.loads(finished.stdout or b"{}")
    if "error" in answer:
        raise InvalidDescription(
            answer["error"], content_type=answer.get("content_type"), problems=tuple(answer.get("problems", ()))
        )
    if "html" not in answer:
        raise RuntimeError("the description renderer failed")
    return answer["html"]


def render_for_upload(
    raw: str | None,
    content_type: str | None,
    *,
    release: DescribedRelease,
    hooks: Hooks,
    settings: Settings,
    timeout: float | None = None,
) -> str | None:
    """Sanitized HTML for the description, transformed by plugins; None when there is none.

    Blocking: the upload pipeline calls it from its worker thread. (The content type is
    checked even without a description.) Raises InvalidDescription when it does not
    render (the upload is then refused).
    """
    if raw is not None and len(raw.encode("utf-8", "surrogatepass")) > ISOLATE_ABOVE:
        html = _render_isolated(raw, content_type, timeout or RENDER_SECONDS)
    else:
        html = render_description(raw, content_type)
    return None if html is None else hooks.render_description(html, release, settings)
