"""Custom HTTP/1.1 reason phrases through hypercorn.

ASGI has no field for a reason phrase, and hypercorn always sends an empty one. twine
shows the reason phrase to its user ("400 File already exists"), as PyPI sends it. A
response that carries the private header :data:`REASON_HEADER` gets that header removed
and its value used as the reason phrase. Installed by ``cheeseshop serve`` only; under a
test client the header is simply visible.
"""

from __future__ import annotations

from typing import Any

import h11

__all__ = ["REASON_HEADER", "install", "latin1_reason"]

REASON_HEADER = "X-Cheeseshop-Reason"
_REASON = REASON_HEADER.lower().encode()


def latin1_reason(message: str, *, limit: int = 300) -> str:
    """A single-line, Latin-1-safe reason phrase made from ``message``."""
    line = " ".join(message.split())
    line = line.encode("latin-1", "replace").decode("latin-1")
    line = "".join(ch if ch.isprintable() else "?" for ch in line)
    return line[:limit]


class _H11WithReason:
    """Stands in for the ``h11`` module inside hypercorn's HTTP/1.1 protocol."""

    def __getattr__(self, name: str) -> Any:
        return getattr(h11, name)

    @staticmethod
    def Response(*, headers: Any, status_code: int, **kwargs: Any) -> h11.Response:  # noqa: N802
        reason = b""
        kept = []
        for name, value in headers:
            if bytes(name).lower() == _REASON:
                reason = bytes(value)
            else:
                kept.append((name, value))
        return h11.Response(headers=kept, status_code=status_code, reason=reason, **kwargs)


def install() -> None:
    """Make hypercorn's HTTP/1.1 protocol honour :data:`REASON_HEADER`. Idempotent."""
    from hypercorn.protocol import h11 as hypercorn_h11

    if not isinstance(hypercorn_h11.h11, _H11WithReason):
        hypercorn_h11.h11 = _H11WithReason()  # type: ignore[assignment]
