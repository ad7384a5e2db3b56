"""How an upload's file and core metadata reach a storage with and without ``put_bytes``."""

from __future__ import annotations

from pathlib import Path

from cheeseshop.storage import BytesPuts, StoredFileInfo, takes_bytes
from cheeseshop.storage.local import LocalFileStorage
from cheeseshop.upload.multipart import ReceivedFile
from cheeseshop.upload.service import _put_bytes, _put_received

INFO = StoredFileInfo(project="p", version="1", packagetype="bdist_wheel", sha256="0" * 64)
DATA = b"small wheel bytes"


class PathOnlyStorage:
    """A storage that takes files only (as storage_b2s3 does): records what it was given."""

    def __init__(self, root: Path) -> None:
        self.disk = LocalFileStorage(root)
        self.sources: list[Path] = []

    def put(self, path: str, source: Path, *, info: StoredFileInfo | None = None) -> None:
        self.sources.append(source)
        self.disk.put(path, source, info=info)


def _received(directory: Path) -> ReceivedFile:
    return ReceivedFile("p-1-py3-none-any.whl", len(DATA), "m", "s", "b", directory, data=DATA)


def test_a_storage_without_put_bytes_gets_a_scratch_file_removed_after(tmp_path: Path) -> None:
    uploads = tmp_path / "tmp"
    uploads.mkdir()
    storage = PathOnlyStorage(tmp_path / "files")
    assert not isinstance(storage, BytesPuts) and not takes_bytes(storage)

    _put_bytes(storage, "ab/cd/x/p.metadata", DATA, uploads, INFO)  # type: ignore[arg-type]

    assert (tmp_path / "files/ab/cd/x/p.metadata").read_bytes() == DATA
    assert [source.parent for source in storage.sources] == [uploads]
    assert list(uploads.iterdir()) == []


def test_a_file_written_out_for_the_plugins_is_stored_from_that_file(tmp_path: Path) -> None:
    storage = PathOnlyStorage(tmp_path / "files")
    file = _received(tmp_path)
    spilled = file.spill()

    _put_received(storage, "ab/cd/x/p.whl", file, INFO)  # type: ignore[arg-type]

    assert storage.sources == [spilled]  # no second copy of the bytes
    assert (tmp_path / "files/ab/cd/x/p.whl").read_bytes() == DATA


def test_a_storage_with_put_bytes_stores_from_memory(tmp_path: Path) -> None:
    storage = LocalFileStorage(tmp_path / "files")
    file = _received(tmp_path)

    _put_received(storage, "ab/cd/x/p.whl", file, INFO)

    assert (tmp_path / "files/ab/cd/x/p.whl").read_bytes() == DATA
    assert file.path is None and list(tmp_path.iterdir()) == [tmp_path / "files"]
