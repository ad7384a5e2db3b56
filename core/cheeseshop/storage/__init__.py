"""Where distribution files live: the FileStorage protocol and content-addressed paths.

Implementations are synchronous (they wrap blocking clients: the disk, boto3, b2sdk);
the web process calls them through ``asyncio.to_thread``. They raise builtin errors
(``FileNotFoundError``, ``OSError``), never a vendor's exception: a file that is not there
is ``FileNotFoundError``; a service that cannot be reached, or cannot vouch for a file's
bytes right now, is :class:`StorageUnavailable`. The upload and download routes answer
both with 503 and a message saying to try again later.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from cheeseshop.packaging.archives import METADATA_FILE_SUFFIX

__all__ = [
    "BytesPuts",
    "Staged",
    "StagedPuts",
    "takes_bytes",
    "takes_staging",
    "FileStorage",
    "SmallFileReads",
    "StorageUnavailable",
    "StoredFileInfo",
    "metadata_path",
    "promote_all",
    "storage_path",
    "stored_paths",
]


class StorageUnavailable(OSError):
    """The storage cannot serve or store a file right now; retrying later may succeed.

    Raised for outages (a service down, timing out, refusing credentials) and for a stored
    copy that does not match the digest it was asked for when no good copy is left: the
    core never serves bytes that differ from the recorded sha256. An ``OSError``, so code
    that handles disk errors handles it too; uploads and downloads answer it with 503.
    """


@dataclasses.dataclass(frozen=True, kw_only=True)
class StoredFileInfo:
    """What the core knows about a file it stores, for storages that keep it beside the bytes.

    ``sha256`` is the digest the upload computed over these very bytes (hex, lower case); a
    storage may check what it stored against it. For a PEP 658 ``.metadata`` file,
    ``sha256`` is that file's own digest and the rest describes the distribution it belongs
    to. ``project`` is the normalized name; ``packagetype`` is ``bdist_wheel`` or ``sdist``.
    """

    project: str
    version: str
    packagetype: str
    sha256: str


def storage_path(blake2_256: str, filename: str) -> str:
    """The storage path of a file: ``h[:2]/h[2:4]/h[4:]/<filename>``, ``h`` its blake2b-256."""
    if len(blake2_256) != 64 or any(c not in "0123456789abcdef" for c in blake2_256):
        raise ValueError("blake2_256 must be 64 lower-case hex digits")
    if not filename or "/" in filename or "\\" in filename or filename in {".", ".."}:
        raise ValueError(f"not a plain filename: {filename!r}")
    h = blake2_256
    return f"{h[:2]}/{h[2:4]}/{h[4:]}/{filename}"


def metadata_path(path: str) -> str:
    """The storage path of a wheel's core metadata (PEP 658), beside the wheel at ``path``."""
    return f"{path}{METADATA_FILE_SUFFIX}"


def stored_paths(path: str, *, has_metadata: bool) -> tuple[str, ...]:
    """Every storage path one uploaded file occupies: itself, and its core metadata when
    it has one (a file row with a ``metadata_sha256``)."""
    return (path, metadata_path(path)) if has_metadata else (path,)


@runtime_checkable
class FileStorage(Protocol):
    """Stores and serves distribution files by path (see :func:`storage_path`)."""

    def put(self, path: str, source: Path, *, info: StoredFileInfo | None = None) -> None:
        """Store the file at ``source`` under ``path``, atomically.

        Readers never see a partial file. Storing the same path again with the same bytes
        is harmless (paths are content-addressed). ``info`` (the upload passes it; other
        callers may not) describes the file: a storage may keep it as object metadata and
        check the stored bytes against ``info.sha256`` before returning. On failure nothing
        is left visible under ``path`` that was not there before.
        """

    def open(self, path: str, *, sha256: str | None = None) -> BinaryIO:
        """Open the stored file for reading; ``FileNotFoundError`` when it is absent.

        ``sha256`` is the digest recorded for the file (the download route passes it). A
        storage holding several copies (a cache and an archive) uses it to pick a good one
        and must never return bytes whose digest differs from it: when no copy matches it
        raises :class:`StorageUnavailable`. A storage with a single, atomically written
        copy (the local disk) may ignore it.
        """

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


@runtime_checkable
class BytesPuts(Protocol):
    """Optional: a storage that stores bytes from memory as cheaply as from a file.

    An upload holds its core metadata, and a small file, in memory. Without this the core
    writes them to a temporary file first, for :meth:`FileStorage.put` to read.
    """

    def put_bytes(self, path: str, data: bytes, *, info: StoredFileInfo | None = None) -> None:
        """Store ``data`` under ``path``, as :meth:`FileStorage.put` stores a file's bytes."""


class Staged(Protocol):
    """A file stored under a name of its own beside ``path``, not yet in place (see
    :class:`StagedPuts`)."""

    def promote(self) -> None:
        """Move the file into place at its path, replacing what is there, durably: once
        this returns, a power cut does not undo it (a row naming the path is committed
        next). Once done, calling it again does nothing. Several at once:
        :func:`promote_all`."""

    def discard(self) -> None:
        """Remove the staged copy, unless it was promoted; never the file at the path."""


@runtime_checkable
class StagedPuts(Protocol):
    """Optional: a storage that stores a file under a name of its own first, with every
    byte durable, and moves it into place later at little cost (a rename on a disk).

    An upload stores its file and core metadata this way as soon as they are valid, beside
    its index read and its transaction's statements, and moves them into place inside the
    transaction, just before the commit. Whatever happens before that, it removes only
    its own staged copies, never a file another upload may have just put at the same path.
    """

    def stage_bytes(self, path: str, data: bytes, *, info: StoredFileInfo | None = None) -> Staged:
        """Store ``data`` for ``path``, as :meth:`BytesPuts.put_bytes` would, but not in place."""

    def stage(self, path: str, source: Path, *, info: StoredFileInfo | None = None) -> Staged:
        """Store the bytes of ``source`` for ``path``, as :meth:`FileStorage.put` would,
        but not in place."""


def promote_all(staged: Sequence[Staged]) -> None:
    """Move each of ``staged`` into place, in order, durably once this returns.

    Copies of one class whose class has a ``promote_all(staged)`` of its own are handed to
    it, since they may share work: a file and its core metadata on the local disk share
    one sync of their directory. Otherwise each copy's :meth:`Staged.promote`.
    """
    kinds = {type(copy) for copy in staged}
    together = getattr(kinds.pop(), "promote_all", None) if len(kinds) == 1 else None
    if together is not None:
        together(staged)
        return
    for copy in staged:
        copy.promote()


def takes_staging(storage: object) -> bool:
    """Whether ``storage`` is a :class:`StagedPuts`, asked once per storage class."""
    cls = type(storage)
    return _class_has(cls, "stage") and _class_has(cls, "stage_bytes")


def takes_bytes(storage: object) -> bool:
    """Whether ``storage`` is a :class:`BytesPuts`: the check, once per storage class.

    ``isinstance`` against a runtime-checkable protocol looks for every member each time,
    and every upload asked twice.
    """
    return _class_has(type(storage), "put_bytes")


@functools.cache
def _class_has(cls: type, method: str) -> bool:
    return callable(getattr(cls, method, None))


@runtime_checkable
class SmallFileReads(Protocol):
    """Optional: a storage whose small files are cheaper to read than a thread hop.

    The download fast path calls :meth:`read_small` on the event loop itself when the
    storage offers it, so a small file (PEP 658 ``.metadata`` files above all, which
    resolvers fetch for every candidate) costs no worker thread. Offer it only when a
    read is local and short (a remote store would stall every request), and when there
    is one, atomically written copy: no ``sha256`` is passed to check a copy against.
    """

    def read_small(self, path: str, *, limit: int) -> bytes | None:
        """All of the file when it is at most ``limit`` bytes, else None (nothing read).

        Raises ``FileNotFoundError`` when it is absent, as :meth:`FileStorage.open` does.
        """
