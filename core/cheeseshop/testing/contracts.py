"""Contract tests every implementation of a provider slot must pass.

The core runs them against its own defaults; a plugin re-runs the very same tests against
its implementation, so "it behaves like the default" is checked, not hoped for.

File storage
------------

Subclass :class:`FileStorageContract` in a test module (the class name must start with
``Test`` for pytest to collect it) and provide a ``storage`` fixture returning a fresh,
empty storage::

    import pytest

    from cheeseshop.testing.contracts import FileStorageContract
    from my_plugin import MyStorage


    class TestMyStorage(FileStorageContract):
        @pytest.fixture
        def storage(self, tmp_path):
            return MyStorage(...)

Every test of the contract then runs against ``MyStorage``. The tests are plain
synchronous methods, as the :class:`~cheeseshop.storage.FileStorage` protocol is
synchronous. They only use the public protocol, so a fixture may also clean up after
itself (``yield`` the storage, then empty a bucket). A single test can be overridden in
the subclass, with a comment saying why the implementation differs.
"""

from __future__ import annotations

import hashlib
import random
import time
from pathlib import Path

import pytest

from cheeseshop.storage import FileStorage, storage_path

__all__ = ["FileStorageContract"]

_MiB = 1024 * 1024
_DIGEST = "0123456789abcdef" * 4


def _blake2(content: bytes) -> str:
    return hashlib.blake2b(content, digest_size=32).hexdigest()


class FileStorageContract:
    """The behaviour every :class:`~cheeseshop.storage.FileStorage` must have.

    Subclasses provide the ``storage`` fixture; the tests use pytest's ``tmp_path`` for
    the source files they store.
    """

    @pytest.fixture
    def storage(self) -> FileStorage:
        """A fresh, empty storage. Subclasses must override this fixture."""
        raise NotImplementedError(
            f"{type(self).__name__} must provide a `storage` fixture returning the "
            "FileStorage under test"
        )

    # -- helpers ------------------------------------------------------------------------

    @staticmethod
    def _source(tmp_path: Path, content: bytes, name: str = "source.bin") -> Path:
        directory = tmp_path / "contract-sources"
        directory.mkdir(exist_ok=True)
        source = directory / name
        source.write_bytes(content)
        return source

    def _store(
        self, storage: FileStorage, tmp_path: Path, content: bytes, filename: str = "pkg-1.0.tar.gz"
    ) -> str:
        path = storage_path(_blake2(content), filename)
        storage.put(path, self._source(tmp_path, content))
        return path

    @staticmethod
    def _read(storage: FileStorage, path: str) -> bytes:
        with storage.open(path) as handle:
            return handle.read()

    # -- the protocol -------------------------------------------------------------------

    def test_is_a_file_storage(self, storage: FileStorage) -> None:
        assert isinstance(storage, FileStorage)

    def test_put_then_open_returns_the_exact_bytes(
        self, storage: FileStorage, tmp_path: Path
    ) -> None:
        # Every byte value, and line endings that a text-mode mistake would rewrite.
        content = bytes(range(256)) + b"\r\n\n\r\x00\x1a"
        path = self._store(storage, tmp_path, content)
        assert self._read(storage, path) == content

    def test_open_returns_a_binary_stream(self, storage: FileStorage, tmp_path: Path) -> None:
        path = self._store(storage, tmp_path, b"0123456789")
        with storage.open(path) as handle:
            assert handle.read(4) == b"0123"
            assert handle.read() == b"456789"

    def test_empty_file_round_trips(self, storage: FileStorage, tmp_path: Path) -> None:
        path = self._store(storage, tmp_path, b"")
        assert self._read(storage, path) == b""
        assert storage.size(path) == 0
        assert storage.exists(path)

    def test_size(self, storage: FileStorage, tmp_path: Path) -> None:
        content = b"x" * 12345
        path = self._store(storage, tmp_path, content)
        assert storage.size(path) == 12345

    def test_exists(self, storage: FileStorage, tmp_path: Path) -> None:
        path = self._store(storage, tmp_path, b"present")
        assert storage.exists(path) is True
        assert storage.exists(storage_path(_blake2(b"absent"), "pkg-1.0.tar.gz")) is False

    def test_exists_is_per_file_not_per_directory(
        self, storage: FileStorage, tmp_path: Path
    ) -> None:
        path = self._store(storage, tmp_path, b"content")
        parent = path.rpartition("/")[0]
        assert storage.exists(parent) is False
        assert storage.exists(path.replace("pkg-1.0.tar.gz", "pkg-1.0.zip")) is False

    def test_put_the_same_bytes_again_is_harmless(
        self, storage: FileStorage, tmp_path: Path
    ) -> None:
        content = b"the same bytes, stored twice"
        path = self._store(storage, tmp_path, content)
        self._store(storage, tmp_path, content)
        assert self._read(storage, path) == content
        assert storage.size(path) == len(content)

    def test_reput_never_exposes_a_partial_file(self, storage: FileStorage, tmp_path: Path) -> None:
        # A reader that opened the file before a second put of the same path still reads
        # every byte: the target is replaced whole, never truncated and rewritten in place.
        content = random.Random(1).randbytes(256 * 1024)
        path = self._store(storage, tmp_path, content)
        with storage.open(path) as before:
            self._store(storage, tmp_path, content)
            assert before.read() == content
        assert self._read(storage, path) == content

    def test_files_are_independent(self, storage: FileStorage, tmp_path: Path) -> None:
        first = self._store(storage, tmp_path, b"first", "one-1.0.tar.gz")
        second = self._store(storage, tmp_path, b"second", "two-1.0.tar.gz")
        # PEP 658 metadata lives beside its wheel, under the same directory.
        metadata = first + ".metadata"
        storage.put(metadata, self._source(tmp_path, b"Metadata-Version: 2.4\n"))
        assert self._read(storage, first) == b"first"
        assert self._read(storage, second) == b"second"
        assert self._read(storage, metadata) == b"Metadata-Version: 2.4\n"
        storage.delete(first)
        assert storage.exists(metadata)
        assert self._read(storage, second) == b"second"

    def test_open_missing_raises_file_not_found(self, storage: FileStorage) -> None:
        with pytest.raises(FileNotFoundError):
            storage.open(storage_path(_DIGEST, "missing-1.0.tar.gz"))

    def test_size_missing_raises_file_not_found(self, storage: FileStorage) -> None:
        with pytest.raises(FileNotFoundError):
            storage.size(storage_path(_DIGEST, "missing-1.0.tar.gz"))

    def test_delete_removes(self, storage: FileStorage, tmp_path: Path) -> None:
        path = self._store(storage, tmp_path, b"short-lived")
        storage.delete(path)
        assert storage.exists(path) is False
        with pytest.raises(FileNotFoundError):
            storage.open(path)
        with pytest.raises(FileNotFoundError):
            storage.size(path)

    def test_delete_missing_is_no_error(self, storage: FileStorage, tmp_path: Path) -> None:
        storage.delete(storage_path(_DIGEST, "never-stored-1.0.tar.gz"))
        path = self._store(storage, tmp_path, b"deleted twice")
        storage.delete(path)
        storage.delete(path)
        assert storage.exists(path) is False

    def test_put_after_delete_stores_again(self, storage: FileStorage, tmp_path: Path) -> None:
        path = self._store(storage, tmp_path, b"back again")
        storage.delete(path)
        self._store(storage, tmp_path, b"back again")
        assert self._read(storage, path) == b"back again"

    def test_url_is_none_or_a_string(self, storage: FileStorage, tmp_path: Path) -> None:
        path = self._store(storage, tmp_path, b"downloadable")
        url = storage.url(path)
        assert url is None or (isinstance(url, str) and url)

    @pytest.mark.parametrize(
        "path",
        [
            "../../etc/passwd",
            # Deep enough to reach / from any root, so a missing guard really finds the file.
            "../" * 64 + "etc/passwd",
            "ab/cd/" + "../" * 64 + "etc/passwd",
            "/etc/passwd",
        ],
    )
    def test_escaping_path_never_reads_outside(self, storage: FileStorage, path: str) -> None:
        with pytest.raises((FileNotFoundError, ValueError)):
            with storage.open(path) as handle:
                handle.read()
        with pytest.raises((FileNotFoundError, ValueError)):
            storage.size(path)
        try:
            found = storage.exists(path)
        except ValueError:
            found = False
        assert found is False

    def test_large_file_round_trips(self, storage: FileStorage, tmp_path: Path) -> None:
        content = random.Random(5).randbytes(5 * _MiB + 17)
        path = self._store(storage, tmp_path, content, "big-1.0-py3-none-any.whl")
        assert storage.size(path) == len(content)
        digest = hashlib.sha256()
        with storage.open(path) as handle:
            while chunk := handle.read(64 * 1024):
                digest.update(chunk)
        assert digest.hexdigest() == hashlib.sha256(content).hexdigest()

    # -- listing, for the orphan collector ----------------------------------------------

    #: How far a listed modification time may stray from this machine's clock: a remote
    #: store stamps objects with its own clock.
    CLOCK_TOLERANCE = 300.0

    def test_iter_paths_of_an_empty_storage_is_empty(self, storage: FileStorage) -> None:
        assert list(storage.iter_paths()) == []

    def test_iter_paths_lists_every_stored_path_once(
        self, storage: FileStorage, tmp_path: Path
    ) -> None:
        first = self._store(storage, tmp_path, b"first", "one-1.0-py3-none-any.whl")
        second = self._store(storage, tmp_path, b"second", "two-1.0.tar.gz")
        metadata = first + ".metadata"
        storage.put(metadata, self._source(tmp_path, b"Metadata-Version: 2.4\n"))
        self._store(storage, tmp_path, b"second", "two-1.0.tar.gz")  # stored twice, listed once

        listed = [path for path, _ in storage.iter_paths()]

        assert sorted(listed) == sorted([first, second, metadata])

    def test_iter_paths_gives_paths_the_storage_accepts(
        self, storage: FileStorage, tmp_path: Path
    ) -> None:
        path = self._store(storage, tmp_path, b"addressable")
        (listed, _), = storage.iter_paths()
        assert listed == path
        assert not listed.startswith("/") and ".." not in listed.split("/")
        assert storage.exists(listed)
        assert self._read(storage, listed) == b"addressable"

    def test_iter_paths_gives_recent_modification_times(
        self, storage: FileStorage, tmp_path: Path
    ) -> None:
        before = time.time()
        self._store(storage, tmp_path, b"timed")
        (_, modified), = storage.iter_paths()
        assert isinstance(modified, float)
        assert before - self.CLOCK_TOLERANCE <= modified <= time.time() + self.CLOCK_TOLERANCE

    def test_storing_again_makes_a_path_young_again(
        self, storage: FileStorage, tmp_path: Path
    ) -> None:
        # An upload may store the bytes of an old orphan again (a client retrying after a
        # crash): the collector must then see a new file, not the old one it may delete.
        path = self._store(storage, tmp_path, b"stored twice")
        (_, first), = storage.iter_paths()
        time.sleep(1.1)  # object stores keep whole seconds
        self._store(storage, tmp_path, b"stored twice")
        (listed, second), = storage.iter_paths()
        assert listed == path
        assert second > first

    def test_deleted_paths_are_not_listed(self, storage: FileStorage, tmp_path: Path) -> None:
        kept = self._store(storage, tmp_path, b"kept", "kept-1.0.tar.gz")
        gone = self._store(storage, tmp_path, b"gone", "gone-1.0.tar.gz")
        storage.delete(gone)
        assert [path for path, _ in storage.iter_paths()] == [kept]

    # -- the path layout the core addresses storage with ----------------------------------

    def test_storage_path_layout(self) -> None:
        content = b"layout"
        h = _blake2(content)
        path = storage_path(h, "pkg-1.0-py3-none-any.whl")
        assert path == f"{h[:2]}/{h[2:4]}/{h[4:]}/pkg-1.0-py3-none-any.whl"
        assert path.split("/")[:3] == [h[:2], h[2:4], h[4:]]
        assert "".join(path.split("/")[:3]) == h

    @pytest.mark.parametrize(
        "digest",
        [
            "",
            "0" * 63,
            "0" * 65,
            "A" * 64,  # upper case: one file would get two paths
            "g" * 64,
            "0" * 62 + "/x",
            "0" * 62 + "..",
            " " + "0" * 63,
        ],
    )
    def test_storage_path_rejects_bad_digests(self, digest: str) -> None:
        with pytest.raises(ValueError):
            storage_path(digest, "pkg-1.0.tar.gz")

    @pytest.mark.parametrize(
        "filename", ["", ".", "..", "a/b.whl", "../pkg.whl", "a\\b.whl", "/pkg.whl"]
    )
    def test_storage_path_rejects_bad_filenames(self, filename: str) -> None:
        with pytest.raises(ValueError):
            storage_path(_DIGEST, filename)
