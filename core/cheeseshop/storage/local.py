"""The default file storage: a directory on local disk (``data_dir/files``)."""

from __future__ import annotations

import os
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from cheeseshop.config import Settings
from cheeseshop.plugins import hookimpl
from cheeseshop.storage import StoredFileInfo

__all__ = ["LocalFileStorage", "LocalStaged", "cheeseshop_file_storage"]


class LocalStaged:
    """A synced temporary file beside its target, to be renamed into place (``Staged``)."""

    def __init__(self, temporary: Path, target: Path) -> None:
        self.temporary = temporary
        self.target = target
        self.promoted = False

    def promote(self) -> None:
        """Rename the file into place (atomic: a reader sees the old file or the new one),
        and sync its directory: once this returns, the file is at its path even after a
        power cut, as the row the caller commits next will say (R1, R2)."""
        LocalStaged.promote_all([self])

    @staticmethod
    def promote_all(staged: Sequence[LocalStaged]) -> None:
        """:meth:`promote` each, syncing each directory once, after every rename into it
        (``cheeseshop.storage.promote_all``): an upload's file and its core metadata,
        side by side, cost one sync, each a flush of the disk's cache."""
        directories: dict[Path, None] = {}
        for copy in staged:
            if copy.promoted:
                continue
            try:
                os.replace(copy.temporary, copy.target)
            except BaseException:
                copy.temporary.unlink(missing_ok=True)
                raise
            copy.promoted = True
            directories[copy.target.parent] = None
        for directory in directories:
            _sync_directory(directory)

    def discard(self) -> None:
        """Remove the temporary file, unless it was renamed into place."""
        if not self.promoted:
            self.temporary.unlink(missing_ok=True)


class LocalFileStorage:
    """Files under one root directory, written through a temporary file and a rename."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalFileStorage:
        """Storage rooted at ``data_dir/files``."""
        return cls(settings.data_dir / "files")

    def _full(self, path: str) -> Path:
        """``path`` below the root (FileNotFoundError for one that would leave it)."""
        return self._walk(path)[0]

    def _walk(self, path: str) -> tuple[Path, int]:
        """``path`` below the root, and how many of its parts exist (each a real directory,
        but maybe the last; 0 for a path through a link): a put creates the directories
        only when some are missing.
        """
        # Paths come from our own storage_path(), but a bad one must never escape the root,
        # and neither may a symbolic link someone put in it (this storage makes none).
        # Checked part by part below the root, and resolved in full only when a part is a
        # link: Path.resolve() also walks every directory from / down to the root, 100 µs
        # a call against 30, and every put, size check and download calls this.
        if not _is_plain_relative(path):
            raise FileNotFoundError(path)
        below = str(self.root)
        parts = path.split("/")
        for existing, part in enumerate(parts):
            below = f"{below}/{part}"
            try:
                mode = os.lstat(below).st_mode
            except (FileNotFoundError, NotADirectoryError):
                return self.root / path, existing  # nothing further down exists
            if stat.S_ISLNK(mode):
                return self._resolved(path), 0
        return self.root / path, len(parts)

    def _resolved(self, path: str) -> Path:
        """``path`` with its links followed, if that stays below the root (else not found)."""
        full = (self.root / path).resolve()
        if not full.is_relative_to(self.root) or full == self.root:
            raise FileNotFoundError(path)
        return full

    def put(self, path: str, source: Path, *, info: StoredFileInfo | None = None) -> None:
        """Copy ``source`` to ``path`` via a temporary file and an atomic rename.

        ``info`` is not kept: a file on disk has nowhere to put it, and its path already
        names its blake2b-256.
        """
        self.stage(path, source, info=info).promote()

    def put_bytes(self, path: str, data: bytes, *, info: StoredFileInfo | None = None) -> None:
        """Write ``data`` to ``path`` as :meth:`put` copies a file (``BytesPuts``).

        A subclass that changes how :meth:`put` stores must change this too, and the two
        ``stage`` methods: the upload stores small files and every core metadata file
        through them.
        """
        self.stage_bytes(path, data, info=info).promote()

    def stage(self, path: str, source: Path, *, info: StoredFileInfo | None = None) -> LocalStaged:
        """Copy ``source`` into a synced temporary file beside ``path`` (``StagedPuts``)."""
        with source.open("rb") as src:

            def copy(fd: int) -> None:
                with open(fd, "wb", closefd=False) as out:
                    shutil.copyfileobj(src, out, 1024 * 1024)

            return self._stage(path, copy)

    def stage_bytes(self, path: str, data: bytes, *, info: StoredFileInfo | None = None) -> LocalStaged:
        """Write ``data`` into a synced temporary file beside ``path`` (``StagedPuts``)."""
        return self._stage(path, lambda fd: _write_all(fd, data))

    def _stage(self, path: str, fill: Callable[[int], object]) -> LocalStaged:
        """Fill a temporary file beside ``path`` and fsync it; renaming it into place is
        :meth:`LocalStaged.promote`. One left behind is listed, and collected as an orphan.

        System calls made one by one on the file's descriptor, not through ``mkstemp`` and
        a file object, and directories made only when :meth:`_walk` found some missing:
        each call hands the interpreter to the upload's other threads and back, and this
        way a small file's put makes about 10 of them, where it made 15.
        """
        target, existing = self._walk(path)
        if existing < path.count("/"):  # a directory on the way is missing (or behind a link)
            os.makedirs(target.parent, exist_ok=True)
        temporary = target.parent / f".incoming-{secrets.token_hex(8)}"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            try:
                fill(fd)
                os.fchmod(fd, 0o644)  # whatever the umask: a web server in front reads these
                os.fsync(fd)
            finally:
                os.close(fd)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        return LocalStaged(temporary, target)

    def open(self, path: str, *, sha256: str | None = None) -> BinaryIO:
        """Open the stored file for reading.

        ``sha256`` is not checked: the one copy was hashed as it arrived and written
        atomically, and re-hashing it on every download would cost a full read.
        """
        return self._full(path).open("rb")

    def read_small(self, path: str, *, limit: int) -> bytes | None:
        """All of the file when it is at most ``limit`` bytes, else None: one open, one
        ``fstat`` and one read, cheaper than the thread hop they spare (see
        :class:`~cheeseshop.storage.SmallFileReads`)."""
        fd = os.open(self._full(path), os.O_RDONLY | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            if size > limit:
                return None
            # One byte more than the size: the whole file whatever fstat said (files are
            # replaced by rename, never written in place, so it cannot have grown).
            data = os.read(fd, size + 1)
        finally:
            os.close(fd)
        return data if len(data) <= limit else None

    def size(self, path: str) -> int:
        """Size of the stored file in bytes."""
        return self._full(path).stat().st_size

    def exists(self, path: str) -> bool:
        """Whether the file is stored."""
        try:
            return self._full(path).is_file()
        except FileNotFoundError:
            return False

    def delete(self, path: str) -> None:
        """Remove the file if present."""
        self._full(path).unlink(missing_ok=True)

    def url(self, path: str) -> str | None:
        """None: the core streams local files itself."""
        return None

    def iter_paths(self) -> Iterator[tuple[str, float]]:
        """Every regular file under the root, with its modification time.

        The ``.incoming-*`` temporary files of ``put`` are listed too: one left behind by
        a killed process is garbage like any unreferenced file, and the collector's grace
        period keeps it from touching a ``put`` still in progress. Symbolic links are
        neither followed nor listed (this storage never makes any).
        """
        def on_error(error: OSError) -> None:
            # A directory removed while we walk is simply gone; anything else must not
            # pass for "no files" (the collector would then keep orphans forever, silently).
            if not isinstance(error, FileNotFoundError):
                raise error

        for directory, _, names in os.walk(self.root, onerror=on_error):
            base = Path(directory)
            for name in names:
                full = base / name
                try:
                    status = full.lstat()
                except FileNotFoundError:
                    continue  # deleted or renamed into place since the directory was read
                if not stat.S_ISREG(status.st_mode):
                    continue
                yield full.relative_to(self.root).as_posix(), status.st_mtime


def _sync_directory(directory: Path) -> None:
    """fsync ``directory``: the names made or replaced in it reach the disk.

    POSIX makes a renamed file's new name durable only this way: without it, ext4 with no
    journal (this project's CI machines) can lose the name in a power cut after the row
    naming it has committed. The directories a put made above it are not synced one by
    one, each sync a flush of the disk's cache: on Linux's file systems this one sync
    carries them too (ext4 without a journal syncs a new entry's parents with it, and a
    journal, ext4's or XFS's, commits them in order before it)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` to ``fd`` (``os.write`` may write fewer)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _is_plain_relative(path: str) -> bool:
    """Whether ``path`` names something below the root: relative, with no empty, ``.`` or
    ``..`` part, no backslash and no NUL. Pure."""
    if not path or path.startswith("/") or "\\" in path or "\x00" in path:
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))


@hookimpl(trylast=True)
def cheeseshop_file_storage(settings: Settings) -> LocalFileStorage:
    """Default storage: local disk under ``data_dir/files``."""
    return LocalFileStorage.from_settings(settings)
