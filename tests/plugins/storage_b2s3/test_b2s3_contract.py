"""The core's FileStorage contract, re-run against the plugin in three states of its cache.

- empty cache: every read misses B2 and is served from S3;
- warm cache: every put is copied to B2 at once, so reads are served from B2;
- B2 down: every B2 call fails, reads come from S3; ``delete`` is refused (it must remove
  B2's copy too), and the contract's deleting tests are overridden to say so.

Multipart uploads start at 5 MiB here, so the contract's large file goes up in parts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from cheeseshop import FileStorage, StorageUnavailable, StoredFileInfo, storage_path
from cheeseshop.testing.contracts import FileStorageContract

from cheeseshop_storage_b2s3 import B2S3Storage
from cheeseshop_storage_b2s3.testing import B2Simulator

MiB = 1024 * 1024
SMALL_PARTS = {"s3_multipart_threshold_bytes": 5 * MiB, "s3_part_size_bytes": 5 * MiB}


class TestEmptyCache(FileStorageContract):
    @pytest.fixture
    def storage(self, make_storage: Callable[..., B2S3Storage]) -> B2S3Storage:
        return make_storage(**SMALL_PARTS)


class WarmCache:
    """The plugin's storage with every put copied to B2 straight away (as after a sync)."""

    def __init__(self, inner: B2S3Storage, simulator: B2Simulator) -> None:
        self.inner = inner
        self.simulator = simulator
        self.b2_reads = 0

    def put(self, path: str, source: Path, *, info: StoredFileInfo | None = None) -> None:
        self.inner.put(path, source, info=info)
        self.inner.copy_to_cache(path, hashlib.sha256(source.read_bytes()).hexdigest())

    def open(self, path: str, *, sha256: str | None = None) -> BinaryIO:
        before = self.simulator.raw.calls
        handle = self.inner.open(path, sha256=sha256)
        self.b2_reads += self.simulator.raw.calls > before
        return handle

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def size(self, path: str) -> int:
        return self.inner.size(path)

    def exists(self, path: str) -> bool:
        return self.inner.exists(path)

    def delete(self, path: str) -> None:
        self.inner.delete(path)

    def url(self, path: str) -> str | None:
        return self.inner.url(path)

    def iter_paths(self) -> Iterator[tuple[str, float]]:
        return self.inner.iter_paths()


class TestWarmCache(FileStorageContract):
    @pytest.fixture
    def storage(self, make_storage: Callable[..., B2S3Storage], b2: B2Simulator) -> WarmCache:
        return WarmCache(make_storage(**SMALL_PARTS), b2)

    def test_reads_are_served_by_b2(
        self, storage: WarmCache, b2: B2Simulator, tmp_path: Path
    ) -> None:
        content = b"cached bytes"
        path = self._store(storage, tmp_path, content)  # type: ignore[arg-type]
        assert b2.read(f"cache/{path}") == content
        with storage.open(path, sha256=hashlib.sha256(content).hexdigest()) as handle:
            assert handle.read() == content
        assert storage.b2_reads == 1

    def test_delete_removes_the_cached_copy_too(
        self, storage: WarmCache, b2: B2Simulator, tmp_path: Path
    ) -> None:
        path = self._store(storage, tmp_path, b"short-lived and cached")  # type: ignore[arg-type]
        assert b2.versions(f"cache/{path}") == 1
        storage.delete(path)
        assert b2.versions(f"cache/{path}") == 0


class TestB2Down(FileStorageContract):
    """Every B2 call fails: the contract holds, except that deleting is refused.

    Deleting must remove B2's copy too (B2 is public through the CDN), so with B2 down
    ``delete`` raises StorageUnavailable and keeps the file: the orphan collector, which
    lists S3, tries again on its next run. The contract's deleting tests are overridden
    with that behaviour.
    """

    @pytest.fixture
    def storage(
        self, make_storage: Callable[..., B2S3Storage], b2: B2Simulator
    ) -> Iterator[B2S3Storage]:
        # b2_retry_seconds=0: B2 is tried (and fails) on every read, not skipped.
        storage = make_storage(b2_retry_seconds=0, **SMALL_PARTS)
        with b2.failing():
            yield storage

    def _refused(self, storage: B2S3Storage, path: str) -> None:
        with pytest.raises(StorageUnavailable):
            storage.delete(path)

    def test_every_read_tried_b2(
        self, storage: B2S3Storage, b2: B2Simulator, tmp_path: Path
    ) -> None:
        path = self._store(storage, tmp_path, b"from the archive")
        before = b2.raw.calls
        with storage.open(path) as handle:
            assert handle.read() == b"from the archive"
        assert b2.raw.calls > before

    def test_files_are_independent(self, storage: B2S3Storage, tmp_path: Path) -> None:
        first = self._store(storage, tmp_path, b"first", "one-1.0.tar.gz")
        second = self._store(storage, tmp_path, b"second", "two-1.0.tar.gz")
        metadata = first + ".metadata"
        storage.put(metadata, self._source(tmp_path, b"Metadata-Version: 2.4\n"))
        assert self._read(storage, first) == b"first"
        assert self._read(storage, second) == b"second"
        assert self._read(storage, metadata) == b"Metadata-Version: 2.4\n"
        self._refused(storage, first)
        assert self._read(storage, first) == b"first"

    def test_delete_removes(self, storage: B2S3Storage, tmp_path: Path) -> None:
        path = self._store(storage, tmp_path, b"short-lived")
        self._refused(storage, path)
        assert storage.exists(path)
        assert [p for p, _ in storage.iter_paths()] == [path]

    def test_delete_missing_is_no_error(self, storage: B2S3Storage, tmp_path: Path) -> None:
        # B2 cannot say whether it holds a copy: refused, even for a file S3 lacks.
        self._refused(storage, storage_path("0" * 64, "never-stored-1.0.tar.gz"))

    def test_put_after_delete_stores_again(self, storage: B2S3Storage, tmp_path: Path) -> None:
        path = self._store(storage, tmp_path, b"back again")
        self._refused(storage, path)
        self._store(storage, tmp_path, b"back again")
        assert self._read(storage, path) == b"back again"

    def test_deleted_paths_are_not_listed(self, storage: B2S3Storage, tmp_path: Path) -> None:
        kept = self._store(storage, tmp_path, b"kept", "kept-1.0.tar.gz")
        gone = self._store(storage, tmp_path, b"gone", "gone-1.0.tar.gz")
        self._refused(storage, gone)
        assert sorted(p for p, _ in storage.iter_paths()) == sorted([kept, gone])


def test_the_storage_is_a_file_storage(make_storage: Callable[..., B2S3Storage]) -> None:
    assert isinstance(make_storage(), FileStorage)
