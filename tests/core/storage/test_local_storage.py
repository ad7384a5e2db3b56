"""The local disk storage passes the storage contract, and writes files the way it says."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from cheeseshop.config import load_settings
from cheeseshop.storage import (
    BytesPuts,
    StagedPuts,
    promote_all,
    storage_path,
    takes_bytes,
    takes_staging,
)
from cheeseshop.storage.local import LocalFileStorage, cheeseshop_file_storage
from cheeseshop.testing.contracts import FileStorageContract

CONTENT = b"wheel bytes"
PATH = storage_path(
    hashlib.blake2b(CONTENT, digest_size=32).hexdigest(), "pkg-1.0-py3-none-any.whl"
)


class TestLocalFileStorage(FileStorageContract):
    @pytest.fixture
    def storage(self, tmp_path: Path) -> LocalFileStorage:
        return LocalFileStorage(tmp_path / "files")


@pytest.fixture
def storage(tmp_path: Path) -> LocalFileStorage:
    return LocalFileStorage(tmp_path / "files")


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "upload.whl"
    path.write_bytes(CONTENT)
    return path


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(".incoming-")]


def test_stored_file_lives_at_its_path_under_the_root(
    storage: LocalFileStorage, source: Path, tmp_path: Path
) -> None:
    storage.put(PATH, source)
    assert (tmp_path / "files" / PATH).read_bytes() == CONTENT


def test_stored_files_are_world_readable(
    storage: LocalFileStorage, source: Path, tmp_path: Path
) -> None:
    # Whatever the umask: a web server running as another user must still read the file.
    previous = os.umask(0o077)
    try:
        storage.put(PATH, source)
    finally:
        os.umask(previous)
    assert (tmp_path / "files" / PATH).stat().st_mode & 0o777 == 0o644


def test_a_put_into_a_directory_another_put_made_meanwhile(
    storage: LocalFileStorage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An upload's file and its core metadata are put at once, into one new directory:
    # each may find it missing, and the other make it first.
    (tmp_path / "files" / PATH.split("/")[0]).mkdir(parents=True)
    walked = storage._walk(PATH)
    assert walked[1] == 1  # the first directory exists, the ones below it not yet
    storage.stage_bytes(PATH + ".metadata", b"metadata").promote()  # makes them
    monkeypatch.setattr(storage, "_walk", lambda path: walked)  # as found before that
    storage.stage_bytes(PATH, b"file").promote()
    assert (tmp_path / "files" / PATH).read_bytes() == b"file"
    assert (tmp_path / "files" / (PATH + ".metadata")).read_bytes() == b"metadata"


def _record_disk_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Path]]:
    """Record, in order, each rename and each fsync (by path)."""
    calls: list[tuple[str, Path]] = []
    replace, fsync = os.replace, os.fsync

    def recording_replace(source: Path, target: Path) -> None:
        replace(source, target)
        calls.append(("replace", Path(target)))

    def recording_fsync(fd: int) -> None:
        fsync(fd)
        calls.append(("fsync", Path(os.readlink(f"/proc/self/fd/{fd}"))))

    monkeypatch.setattr(os, "replace", recording_replace)
    monkeypatch.setattr(os, "fsync", recording_fsync)
    return calls


def test_a_promoted_file_is_durable_at_its_path(
    storage: LocalFileStorage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A row naming the file is committed right after the promotion: the file's new name
    # must reach the disk first, which POSIX promises only once its directory is synced.
    calls = _record_disk_calls(monkeypatch)
    staged = storage.stage_bytes(PATH, CONTENT)
    assert [call for call, _ in calls] == ["fsync"]  # the staged bytes
    del calls[:]
    staged.promote()
    target = (tmp_path / "files" / PATH).resolve()
    assert calls == [("replace", target), ("fsync", target.parent)]
    staged.promote()  # a retried commit: nothing more
    assert len(calls) == 2


def test_a_file_and_its_metadata_promoted_together_share_one_sync(
    storage: LocalFileStorage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An upload's commit moves both into place: both names are durable after one sync of
    # their directory, made after both renames (each sync flushes the disk's cache).
    file, metadata = storage.stage_bytes(PATH, CONTENT), storage.stage_bytes(PATH + ".metadata", b"m")
    calls = _record_disk_calls(monkeypatch)
    promote_all([file, metadata])
    target = (tmp_path / "files" / PATH).resolve()
    assert calls == [
        ("replace", target),
        ("replace", target.with_name(target.name + ".metadata")),
        ("fsync", target.parent),
    ]
    assert target.read_bytes() == CONTENT and _leftovers(tmp_path / "files") == []
    promote_all([file, metadata])  # a retried commit: nothing more
    assert len(calls) == 3


def test_promote_all_promotes_each_copy_of_a_kind_without_its_own(tmp_path: Path) -> None:
    promoted: list[str] = []

    class Copy:
        def __init__(self, name: str) -> None:
            self.name = name

        def promote(self) -> None:
            promoted.append(self.name)

        def discard(self) -> None:
            raise AssertionError("not discarded")

    promote_all([Copy("file"), Copy("metadata")])
    assert promoted == ["file", "metadata"]


def test_put_leaves_no_temporary_file(
    storage: LocalFileStorage, source: Path, tmp_path: Path
) -> None:
    storage.put(PATH, source)
    storage.put(PATH, source)
    assert _leftovers(tmp_path / "files") == []
    assert os.listdir((tmp_path / "files" / PATH).parent) == ["pkg-1.0-py3-none-any.whl"]


def test_put_bytes_stores_as_put_does(storage: LocalFileStorage, tmp_path: Path) -> None:
    assert isinstance(storage, BytesPuts) and takes_bytes(storage)
    storage.put_bytes(PATH, CONTENT)
    storage.put_bytes(PATH, CONTENT)
    stored = tmp_path / "files" / PATH
    assert stored.read_bytes() == CONTENT
    assert stored.stat().st_mode & 0o777 == 0o644
    assert os.listdir(stored.parent) == ["pkg-1.0-py3-none-any.whl"]


def test_failing_put_bytes_leaves_no_partial_target(
    storage: LocalFileStorage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_space(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError, match="No space"):
        storage.put_bytes(PATH, CONTENT)
    assert not storage.exists(PATH)
    assert _leftovers(tmp_path / "files") == []


def test_failing_copy_leaves_no_partial_target(storage: LocalFileStorage, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        storage.put(PATH, tmp_path / "does-not-exist.whl")
    assert not storage.exists(PATH)
    assert not (tmp_path / "files" / PATH).exists()
    assert _leftovers(tmp_path / "files") == []


def test_failing_reput_keeps_the_stored_file(
    storage: LocalFileStorage, source: Path, tmp_path: Path
) -> None:
    storage.put(PATH, source)
    with pytest.raises(FileNotFoundError):
        storage.put(PATH, tmp_path / "does-not-exist.whl")
    assert (tmp_path / "files" / PATH).read_bytes() == CONTENT
    assert _leftovers(tmp_path / "files") == []


def test_staged_bytes_are_in_place_only_once_promoted(storage: LocalFileStorage, tmp_path: Path) -> None:
    assert isinstance(storage, StagedPuts) and takes_staging(storage)
    staged = storage.stage_bytes(PATH, CONTENT)
    assert not storage.exists(PATH)
    assert [p.read_bytes() for p in _leftovers(tmp_path / "files")] == [CONTENT]
    staged.promote()
    staged.promote()  # a retried commit moves it again: nothing happens
    stored = tmp_path / "files" / PATH
    assert stored.read_bytes() == CONTENT and stored.stat().st_mode & 0o777 == 0o644
    staged.discard()  # after promotion, never the file in place
    assert stored.read_bytes() == CONTENT
    assert _leftovers(tmp_path / "files") == []


def test_a_discarded_stage_leaves_the_file_in_place_alone(
    storage: LocalFileStorage, source: Path, tmp_path: Path
) -> None:
    storage.put(PATH, source)
    inode = (tmp_path / "files" / PATH).stat().st_ino
    storage.stage(PATH, source).discard()
    assert (tmp_path / "files" / PATH).stat().st_ino == inode
    assert _leftovers(tmp_path / "files") == []


def test_escaping_paths_never_write_or_delete_outside(
    storage: LocalFileStorage, source: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"not the storage's")
    for path in ("../outside.txt", str(outside), "ab/../../outside.txt"):
        with pytest.raises((FileNotFoundError, ValueError)):
            storage.put(path, source)
        try:
            storage.delete(path)
        except (FileNotFoundError, ValueError):
            pass
        assert outside.read_bytes() == b"not the storage's"
    assert _leftovers(tmp_path) == []


def test_symlink_out_of_the_root_is_not_followed(storage: LocalFileStorage, tmp_path: Path) -> None:
    secret = tmp_path / "elsewhere" / "secret.txt"
    secret.parent.mkdir()
    secret.write_bytes(b"secret")
    (tmp_path / "files" / "ab").mkdir(parents=True)
    (tmp_path / "files" / "ab" / "link").symlink_to(secret.parent)
    with pytest.raises(FileNotFoundError):
        storage.open("ab/link/secret.txt")
    assert storage.exists("ab/link/secret.txt") is False


def test_symlink_within_the_root_is_followed(storage: LocalFileStorage, tmp_path: Path) -> None:
    # An operator's link from one shard directory to another place under the root.
    moved = tmp_path / "files" / "moved" / "cd"
    moved.mkdir(parents=True)
    (moved / "p.whl").write_bytes(b"wheel")
    (tmp_path / "files" / "ab").symlink_to(moved.parent)
    assert storage.exists("ab/cd/p.whl") is True
    assert storage.read_small("ab/cd/p.whl", limit=100) == b"wheel"


def test_a_file_where_a_directory_should_be_means_not_stored(storage: LocalFileStorage) -> None:
    storage.root.mkdir(parents=True, exist_ok=True)
    (storage.root / "ab").write_bytes(b"in the way")
    assert storage.exists("ab/cd/ef/p.whl") is False
    with pytest.raises(OSError):
        storage.put_bytes("ab/cd/ef/p.whl", b"wheel")


def test_the_root_itself_is_not_a_file(storage: LocalFileStorage, source: Path) -> None:
    for path in ("", ".", "ab/.."):
        assert storage.exists(path) is False
        with pytest.raises(FileNotFoundError):
            storage.put(path, source)


def test_default_plugin_stores_under_data_dir(tmp_path: Path, source: Path) -> None:
    settings = load_settings(environ={}, overrides={"data_dir": tmp_path / "data"})
    storage = cheeseshop_file_storage(settings)
    assert isinstance(storage, LocalFileStorage)
    storage.put(PATH, source)
    assert (tmp_path / "data" / "files" / PATH).read_bytes() == CONTENT
    assert storage.url(PATH) is None


# -- listing -------------------------------------------------------------------------------


def test_iter_paths_of_a_missing_root_is_empty(tmp_path: Path) -> None:
    assert list(LocalFileStorage(tmp_path / "never-created").iter_paths()) == []


def test_iter_paths_lists_leftovers_of_an_interrupted_put(
    storage: LocalFileStorage, source: Path, tmp_path: Path
) -> None:
    # A process killed inside put() leaves its temporary; the collector removes it once it
    # is older than the grace, as it does any unreferenced file.
    storage.put(PATH, source)
    leftover = (tmp_path / "files" / PATH).parent / ".incoming-abc123"
    leftover.write_bytes(b"half")
    os.utime(leftover, (1000.0, 1000.0))
    listed = dict(storage.iter_paths())
    leftover_path = PATH.rpartition("/")[0] + "/.incoming-abc123"
    assert set(listed) == {PATH, leftover_path}
    assert listed[leftover_path] == 1000.0
    storage.delete(leftover_path)
    assert not leftover.exists()


def test_iter_paths_neither_follows_nor_lists_symlinks(
    storage: LocalFileStorage, source: Path, tmp_path: Path
) -> None:
    storage.put(PATH, source)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "secret.txt").write_bytes(b"secret")
    (tmp_path / "files" / "linked-dir").symlink_to(elsewhere)
    (tmp_path / "files" / "linked-file").symlink_to(elsewhere / "secret.txt")
    assert [path for path, _ in storage.iter_paths()] == [PATH]


def test_iter_paths_reports_an_unreadable_root(
    storage: LocalFileStorage, source: Path, tmp_path: Path
) -> None:
    # "No files" must never stand in for "could not look": the collector would then keep
    # orphans forever without a word.
    (tmp_path / "files").parent.mkdir(exist_ok=True)
    (tmp_path / "files").write_bytes(b"a file where the root directory belongs")
    with pytest.raises(OSError):
        list(storage.iter_paths())


def test_read_small_reads_a_small_file_whole_and_leaves_a_larger_one(
    storage: LocalFileStorage, source: Path
) -> None:
    storage.put(PATH, source)
    assert storage.read_small(PATH, limit=len(CONTENT)) == CONTENT
    assert storage.read_small(PATH, limit=len(CONTENT) + 1000) == CONTENT
    assert storage.read_small(PATH, limit=len(CONTENT) - 1) is None
    with pytest.raises(FileNotFoundError):
        storage.read_small("ab/cd/missing.whl", limit=1000)
    for escaping in ("../outside.txt", "/etc/passwd", "ab/../../outside.txt"):
        with pytest.raises((FileNotFoundError, ValueError)):
            storage.read_small(escaping, limit=10**6)
