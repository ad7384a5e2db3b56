"""Where distribution files live: the FileStorage protocol and content-addressed paths.

Implementations are synchronous (they wrap blocking clients: the disk, boto3, b2sdk);
the web process calls them through ``asyncio.to_thread``. They raise builtin errors
(``FileNotFoundError``, ``OSError``), never a vendor's exception.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

__all__ = ["FileStorage", "storage_path"]


def storage_path(blake2_256: str, filename: str) -> str:
    """The storage path of a file: ``h[:2]/h[2:4]/h[4:]/<filename>``, ``h`` its blake2b-256."""
    if len(blake2_256) != 64 or any(c not in "0123456789abcdef" for c in blake2_256):
        raise ValueError("blake2_256 must be 64 lower-case hex digits")
    if not filename or "/" in filename or "\\" in filename or filename in {".", ".."}:
        raise ValueError(f"not a plain filename: {filename!r}")
    h = blake2_256
    return f"{h[:2]}/{h[2:4]}/{h[4:]}/{filename}"


@runtime_checkable
class FileStorage(Protocol):
    """Stores and serves distribution files by path (see :func:`storage_path`)."""

    def put(self, path: str, source: Path) -> None:
        """Store the file at ``source`` under ``path``, atomically.

        Readers never see a partial file. Storing the same path again with the same bytes
        is harmless (paths are content-addressed).
        """

    def open(self, path: str) -> BinaryIO:
        """Open the stored file for reading; ``FileNotFoundError`` when it is absent."""

    def size(self, path: str) -> int:
        """Size in bytes of the stored file; ``FileNotFoundError`` when it is absent."""

    def exists(self, path: str) -> bool:
        """Whether a file is stored under ``path``."""

    def delete(self, path: str) -> None:
        """Remove the file; no error when it is already absent."""

    def url(self, path: str) -> str | None:
        """A public URL to redirect downloads to, or ``None`` to have the core stream it."""

    def iter_paths(self) -> Iterator[tuple[str, float]]:
        """Every stored path, with its modification time (seconds since the epoch).

        The paths are those ``put`` was given (``/``-separated, relative, as
        :func:`storage_path` makes them, ``.metadata`` siblings included), each once, in
        no particular order. Leftovers of an interrupted ``put`` that still occupy the
        storage (a partial temporary file, say) are listed too, under a path ``delete``
        accepts, so the orphan collector removes them once they are older than its grace
        period; a ``put`` in progress may therefore show up, with a recent time.
        The collector uses this listing (see :mod:`cheeseshop.storage.gc`) to find files
        that no database row references.
        """
