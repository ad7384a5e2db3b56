"""Custom HTTP/1.1 reason phrases.

ASGI has no field for a reason phrase, and hypercorn always sends an empty one. twine
shows the reason phrase to its user ("400 File already exists"), as PyPI sends it. A
response that carries the private header :data:`REASON_HEADER` is sent with that header
removed and its value as the reason phrase: :mod:`cheeseshop.web.http11` does that inside
hypercorn, for ``cheeseshop serve`` only; under a test client the header is simply visible.
"""

from __future__ import annotations

__all__ = ["REASON_HEADER", "latin1_reason"]

REASON_HEADER = "X-Cheeseshop-Reason"


def latin1_reason(message: str, *, limit: int = 300) -> str:
    """A single-line, Latin-1-safe reason phrase made from ``message``. Pure."""
    line = " ".join(message.split())
    line = line.encode("latin-1", "replace").decode("latin-1")
    line = "".join(ch if ch.isprintable() else "?" for ch in line)
    return line[:limit]
