"""One error type for every refused request, rendered at the edge (see app.py)."""

from __future__ import annotations

__all__ = ["APIError"]


class APIError(Exception):
    """Refuse the request with ``status`` and a message that says what to fix.

    The message goes in the body and, Latin-1-safe, in the HTTP reason phrase (twine
    shows the reason phrase to its user).
    """

    def __init__(self, status: int, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
