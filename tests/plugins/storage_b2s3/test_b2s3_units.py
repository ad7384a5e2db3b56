"""Small pure parts of the plugin: path shapes, digests, S3's checksums, the read deadline."""

from __future__ import annotations

import base64
import hashlib
import random
import threading
import time
from pathlib import Path

import pytest

from cheeseshop import storage_path

from cheeseshop_storage_b2s3.b2 import B2Unavailable, within_deadline
from cheeseshop_storage_b2s3.paths import check_path, digest_file, is_storage_path

DIGEST = "0123456789abcdef" * 4


@pytest.mark.parametrize(
    "path",
    [
        storage_path(DIGEST, "pkg-1.0-py3-none-any.whl"),
        storage_path(DIGEST, "pkg-1.0-py3-none-any.whl") + ".metadata",
        storage_path(DIGEST, "pkg-1.0.tar.gz"),
    ],
)
def test_storage_paths_are_recognised(path: str) -> None:
    assert is_storage_path(path)
    assert check_path(path) == path


@pytest.mark.parametrize(
    "path",
    [
        "",
        "README.txt",
        "01/23/" + DIGEST[4:],
        "01/23/" + DIGEST[4:] + "/",
        "01/23/" + DIGEST[4:] + "/..",
        "01/23/" + DIGEST[4:] + "/a/b.whl",
        "01/23/" + DIGEST[4:] + "/a\\b.whl",
        "01/23/" + DIGEST[4:] + "/a\x00.whl",
        "01/23/" + DIGEST[4:] + "/a\r\nb.whl",
        "AB/23/" + DIGEST[4:] + "/a.whl",
        "../../etc/passwd",
        "/01/23/" + DIGEST[4:] + "/a.whl",
    ],
)
def test_other_paths_are_not_storage_paths(path: str) -> None:
    assert not is_storage_path(path)
    with pytest.raises(FileNotFoundError):
        check_path(path)


def test_digest_file_without_parts(tmp_path: Path) -> None:
    content = random.Random(1).randbytes(3 * 1024 * 1024 + 3)
    source = tmp_path / "f"
    source.write_bytes(content)
    digests = digest_file(source)
    assert digests.size == len(content)
    assert digests.sha256 == hashlib.sha256(content).hexdigest()
    assert digests.sha1 == hashlib.sha1(content).hexdigest()
    assert digests.parts == ()
    assert digests.s3_checksums() == {base64.b64encode(hashlib.sha256(content).digest()).decode()}


@pytest.mark.parametrize("size", [10, 15, 16, 31])
def test_digest_file_parts_and_the_composite_checksum(tmp_path: Path, size: int) -> None:
    content = random.Random(size).randbytes(size)
    source = tmp_path / "f"
    source.write_bytes(content)
    digests = digest_file(source, part_size=8)
    parts = [content[i : i + 8] for i in range(0, len(content), 8)]
    assert digests.parts == tuple(hashlib.sha256(part).digest() for part in parts)
    composite = hashlib.sha256(b"".join(hashlib.sha256(p).digest() for p in parts)).digest()
    assert f"{base64.b64encode(composite).decode()}-{len(parts)}" in digests.s3_checksums()


def test_within_deadline_returns_or_raises_what_the_work_did() -> None:
    assert within_deadline(1, lambda: 42, name="answer") == 42
    with pytest.raises(KeyError):
        within_deadline(1, lambda: {}["missing"], name="failure")


def test_within_deadline_gives_up_and_closes_what_comes_late() -> None:
    closed = threading.Event()

    class Late:
        def close(self) -> None:
            closed.set()

    def slow() -> Late:
        time.sleep(0.3)
        return Late()

    started = time.monotonic()
    with pytest.raises(B2Unavailable, match="longer than 0.05"):
        within_deadline(0.05, slow, name="slow")
    assert time.monotonic() - started < 0.25
    assert closed.wait(2)
