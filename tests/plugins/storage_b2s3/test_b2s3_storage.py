"""The storage on its own: writes to the archive, reads through the cache, and every fault.

S3 is moto_server behind a proxy the tests cut; B2 is b2sdk's simulator, failing, slow or
holding bad copies on demand. No app here (see test_b2s3_app and test_b2s3_reconcile).
"""

from __future__ import annotations

import base64
import hashlib
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import BotoCoreError, EndpointConnectionError

from cheeseshop import StorageUnavailable, StoredFileInfo, storage_path

from cheeseshop_storage_b2s3 import B2S3Storage
from cheeseshop_storage_b2s3.testing import B2Simulator

from b2s3_kit import MotoS3, Proxy, blake2, sha256

MiB = 1024 * 1024
CONTENT = b"wheel bytes " * 100
PATH = storage_path(blake2(CONTENT), "demo-1.0-py3-none-any.whl")
INFO = StoredFileInfo(
    project="demo", version="1.0", packagetype="bdist_wheel", sha256=sha256(CONTENT)
)


@pytest.fixture
def storage(make_storage: Callable[..., B2S3Storage]) -> B2S3Storage:
    return make_storage()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "upload.whl"
    path.write_bytes(CONTENT)
    return path


def _read(storage: B2S3Storage, path: str = PATH, **kwargs: Any) -> bytes:
    with storage.open(path, **kwargs) as handle:
        return handle.read()


def _calls(storage: B2S3Storage, operation: str) -> list[dict[str, Any]]:
    """Record the parameters of every ``operation`` call the storage's S3 client makes."""
    seen: list[dict[str, Any]] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        seen.append(dict(params))

    storage.s3.client.meta.events.register(f"before-parameter-build.s3.{operation}", record)
    return seen


# -- writing: S3 only, checked, described ---------------------------------------------------


def test_put_archives_in_s3_with_the_file_description(
    storage: B2S3Storage, source: Path, s3: MotoS3, b2: B2Simulator
) -> None:
    storage.put(PATH, source, info=INFO)

    assert s3.objects("files/") == {PATH: CONTENT}
    head = s3.client().head_object(Bucket="cheeseshop-archive", Key=f"files/{PATH}")
    assert head["Metadata"] == {
        "project": "demo",
        "version": "1.0",
        "packagetype": "bdist_wheel",
        "sha256": sha256(CONTENT),
        "sha1": hashlib.sha1(CONTENT).hexdigest(),
    }
    assert b2.names() == []  # the cache is filled after commit, not here


def test_put_sends_the_sha256_and_checks_what_s3_stored(
    storage: B2S3Storage, source: Path
) -> None:
    puts, heads = _calls(storage, "PutObject"), _calls(storage, "HeadObject")
    storage.put(PATH, source, info=INFO)
    assert puts[0]["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(CONTENT).digest()).decode()
    assert heads and heads[-1].get("ChecksumMode") == "ENABLED"


def test_a_stored_checksum_that_differs_fails_the_put_and_keeps_nothing(
    storage: B2S3Storage, source: Path, s3: MotoS3
) -> None:
    def tamper(parsed: dict[str, Any], **_: Any) -> None:
        parsed["ChecksumSHA256"] = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="

    storage.s3.client.meta.events.register("after-call.s3.HeadObject", tamper)
    with pytest.raises(StorageUnavailable, match="intact"):
        storage.put(PATH, source, info=INFO)
    assert s3.objects() == {}


def test_a_store_without_checksums_is_checked_by_reading_back(
    storage: B2S3Storage, source: Path, s3: MotoS3
) -> None:
    def forget(parsed: dict[str, Any], **_: Any) -> None:
        parsed.pop("ChecksumSHA256", None)

    storage.s3.client.meta.events.register("after-call.s3.HeadObject", forget)
    gets = _calls(storage, "GetObject")
    storage.put(PATH, source, info=INFO)
    assert len(gets) == 1
    assert s3.objects("files/") == {PATH: CONTENT}


def test_large_files_go_up_in_parts_and_are_checked(
    make_storage: Callable[..., B2S3Storage], tmp_path: Path, s3: MotoS3
) -> None:
    storage = make_storage(s3_multipart_threshold_bytes=5 * MiB, s3_part_size_bytes=5 * MiB)
    content = random.Random(3).randbytes(11 * MiB + 5)
    path = storage_path(blake2(content), "big-1.0-py3-none-any.whl")
    source = tmp_path / "big.whl"
    source.write_bytes(content)
    parts = _calls(storage, "UploadPart")

    storage.put(path, source, info=StoredFileInfo(
        project="big", version="1.0", packagetype="bdist_wheel", sha256=sha256(content)
    ))

    assert len(parts) == 3 and all(part["ChecksumSHA256"] for part in parts)
    assert s3.objects("files/")[path] == content
    assert s3.multipart_uploads() == []
    assert _read(storage, path, sha256=sha256(content)) == content


def test_a_failed_multipart_upload_is_aborted(
    make_storage: Callable[..., B2S3Storage], tmp_path: Path, s3: MotoS3
) -> None:
    storage = make_storage(s3_multipart_threshold_bytes=5 * MiB, s3_part_size_bytes=5 * MiB)
    content = random.Random(4).randbytes(11 * MiB)
    path = storage_path(blake2(content), "big-1.0-py3-none-any.whl")
    source = tmp_path / "big.whl"
    source.write_bytes(content)
    count = {"parts": 0}

    def fail_second(**_: Any) -> None:
        count["parts"] += 1
        if count["parts"] == 2:
            raise EndpointConnectionError(endpoint_url=s3.url)

    storage.s3.client.meta.events.register("before-call.s3.UploadPart", fail_second)
    with pytest.raises(StorageUnavailable):
        storage.put(path, source)
    assert s3.multipart_uploads() == []
    assert s3.objects() == {}


def test_a_source_that_does_not_match_its_sha256_is_not_stored(
    storage: B2S3Storage, source: Path, s3: MotoS3
) -> None:
    wrong = StoredFileInfo(
        project="demo", version="1.0", packagetype="bdist_wheel", sha256="0" * 64
    )
    with pytest.raises(OSError):
        storage.put(PATH, source, info=wrong)
    assert s3.objects() == {}


def test_put_refuses_what_is_no_storage_path(
    storage: B2S3Storage, source: Path, s3: MotoS3
) -> None:
    for path in ("../../etc/passwd", "ab/cd/" + "e" * 60, "README.txt", PATH + "/x"):
        with pytest.raises(ValueError):
            storage.put(path, source)
    assert s3.objects() == {}


# -- S3 down ---------------------------------------------------------------------------------


def test_s3_down_put_raises_storage_unavailable(
    storage: B2S3Storage, source: Path, s3_proxy: Proxy
) -> None:
    s3_proxy.cut()
    with pytest.raises(StorageUnavailable) as raised:
        storage.put(PATH, source, info=INFO)
    assert not isinstance(raised.value, BotoCoreError)
    assert "S3" in str(raised.value)


@pytest.mark.parametrize("operation", ["open", "size", "exists", "delete", "iter_paths"])
def test_s3_down_and_no_b2_copy_is_storage_unavailable_never_a_vendor_error(
    storage: B2S3Storage, source: Path, s3_proxy: Proxy, operation: str
) -> None:
    storage.put(PATH, source, info=INFO)
    s3_proxy.cut()
    call: Callable[[], Any] = {
        "open": lambda: _read(storage),
        "size": lambda: storage.size(PATH),
        "exists": lambda: storage.exists(PATH),
        "delete": lambda: storage.delete(PATH),
        "iter_paths": lambda: list(storage.iter_paths()),
    }[operation]
    with pytest.raises(StorageUnavailable):
        call()


def test_s3_down_reads_are_served_by_b2(
    storage: B2S3Storage, source: Path, s3_proxy: Proxy, b2: B2Simulator
) -> None:
    storage.put(PATH, source, info=INFO)
    storage.copy_to_cache(PATH, sha256(CONTENT))
    s3_proxy.cut()
    assert _read(storage, sha256=sha256(CONTENT)) == CONTENT
    assert storage.size(PATH) == len(CONTENT)
    assert storage.exists(PATH) is True


# -- B2 failing, slow, missing or wrong: S3 serves, checked ---------------------------------------


def test_b2_lacking_the_file_is_read_from_s3(
    storage: B2S3Storage, source: Path, b2: B2Simulator
) -> None:
    storage.put(PATH, source, info=INFO)
    before = b2.raw.calls
    assert _read(storage, sha256=sha256(CONTENT)) == CONTENT
    assert b2.raw.calls > before  # B2 was asked first


def test_b2_failing_is_read_from_s3_and_then_left_alone_for_a_while(
    make_storage: Callable[..., B2S3Storage], source: Path, b2: B2Simulator
) -> None:
    storage = make_storage(b2_retry_seconds=60)
    storage.put(PATH, source, info=INFO)
    storage.copy_to_cache(PATH, sha256(CONTENT))
    with b2.failing():
        assert _read(storage, sha256=sha256(CONTENT)) == CONTENT
        calls = b2.raw.calls
        assert _read(storage, sha256=sha256(CONTENT)) == CONTENT
        assert b2.raw.calls == calls  # resting: straight to S3
    assert storage.b2.resting


def test_b2_slower_than_the_deadline_is_read_from_s3_in_time(
    make_storage: Callable[..., B2S3Storage], source: Path, b2: B2Simulator
) -> None:
    storage = make_storage(b2_read_deadline_seconds=0.5)
    storage.put(PATH, source, info=INFO)
    storage.copy_to_cache(PATH, sha256(CONTENT))
    with b2.slow(3.0):
        started = time.monotonic()
        assert _read(storage, sha256=sha256(CONTENT)) == CONTENT
        assert time.monotonic() - started < 2.5


@pytest.mark.parametrize("asked", [True, False], ids=["digest-given", "digest-from-b2-info"])
def test_a_truncated_b2_copy_is_never_served(
    storage: B2S3Storage, source: Path, b2: B2Simulator, asked: bool
) -> None:
    storage.put(PATH, source, info=INFO)
    # B2 holds a short copy that claims the right digest.
    b2.put(f"cache/{PATH}", CONTENT[:-7], {"sha256": sha256(CONTENT)})
    served = _read(storage, **({"sha256": sha256(CONTENT)} if asked else {}))
    assert served == CONTENT
    assert not storage.b2.resting  # a bad copy is not an outage


def test_a_bad_archive_copy_is_never_served(
    storage: B2S3Storage, source: Path, s3: MotoS3, b2: B2Simulator
) -> None:
    storage.put(PATH, source, info=INFO)
    # The archive's object overwritten behind the index's back, its metadata kept.
    s3.client().put_object(
        Bucket="cheeseshop-archive", Key=f"files/{PATH}", Body=b"other bytes",
        Metadata={"sha256": sha256(CONTENT)},
    )  # fmt: skip
    with pytest.raises(StorageUnavailable):
        _read(storage, sha256=sha256(CONTENT))
    with pytest.raises(StorageUnavailable):
        _read(storage)  # checked against the object's own recorded sha256 too
    # With a good copy in B2, that one is served.
    b2.put(f"cache/{PATH}", CONTENT, {"sha256": sha256(CONTENT)})
    assert _read(storage, sha256=sha256(CONTENT)) == CONTENT


def test_open_with_a_digest_no_copy_has_is_refused(
    storage: B2S3Storage, source: Path
) -> None:
    storage.put(PATH, source, info=INFO)
    storage.copy_to_cache(PATH, sha256(CONTENT))
    with pytest.raises(StorageUnavailable):
        _read(storage, sha256="f" * 64)


# -- deleting, listing, URLs ---------------------------------------------------------------------


def test_delete_removes_every_b2_version_then_the_archive(
    storage: B2S3Storage, source: Path, s3: MotoS3, b2: B2Simulator
) -> None:
    storage.put(PATH, source, info=INFO)
    b2.put(f"cache/{PATH}", CONTENT[:3])
    storage.copy_to_cache(PATH, sha256(CONTENT))
    storage.delete(PATH)
    assert b2.versions(f"cache/{PATH}") == 0
    assert s3.objects() == {}


def test_delete_with_b2_down_keeps_the_file_for_the_next_try(
    storage: B2S3Storage, source: Path, s3: MotoS3, b2: B2Simulator
) -> None:
    storage.put(PATH, source, info=INFO)
    storage.copy_to_cache(PATH, sha256(CONTENT))
    with b2.failing(), pytest.raises(StorageUnavailable):
        storage.delete(PATH)
    assert [path for path, _ in storage.iter_paths()] == [PATH]
    storage.delete(PATH)
    assert b2.names() == [] and s3.objects() == {}


def test_iter_paths_lists_storage_paths_only(
    storage: B2S3Storage, source: Path, s3: MotoS3
) -> None:
    storage.put(PATH, source, info=INFO)
    client = s3.client()
    # Someone else's objects under the prefix, and beside it: never listed, never collected.
    client.put_object(Bucket="cheeseshop-archive", Key="files/README.txt", Body=b"hello")
    client.put_object(Bucket="cheeseshop-archive", Key="other/" + PATH, Body=b"x")
    assert [path for path, _ in storage.iter_paths()] == [PATH]


def test_url_is_the_files_url_when_configured(
    make_storage: Callable[..., B2S3Storage],
) -> None:
    assert make_storage().url(PATH) is None
    storage = make_storage(files_url="https://files.example.com/")
    assert storage.url(PATH) == f"https://files.example.com/{PATH}"


# -- copying to the cache ------------------------------------------------------------------------


def test_copy_to_cache_carries_the_description_and_is_idempotent(
    storage: B2S3Storage, source: Path, b2: B2Simulator
) -> None:
    storage.put(PATH, source, info=INFO)
    assert storage.copy_to_cache(PATH, sha256(CONTENT)) is True
    assert storage.copy_to_cache(PATH, sha256(CONTENT)) is False  # already there: recorded only
    name = f"cache/{PATH}"
    assert b2.read(name) == CONTENT
    assert b2.versions(name) == 1
    info = b2.info(name)
    assert info is not None
    assert {k: info[k] for k in ("project", "version", "packagetype", "sha256")} == {
        "project": "demo",
        "version": "1.0",
        "packagetype": "bdist_wheel",
        "sha256": sha256(CONTENT),
    }
    row = storage.index.cached(PATH)
    assert row is not None and (row.sha256, row.size) == (sha256(CONTENT), len(CONTENT))


def test_copy_to_cache_replaces_a_bad_copy_and_keeps_one_version(
    storage: B2S3Storage, source: Path, b2: B2Simulator
) -> None:
    storage.put(PATH, source, info=INFO)
    b2.put(f"cache/{PATH}", CONTENT[:-1], {"sha256": sha256(CONTENT)})
    assert storage.copy_to_cache(PATH, sha256(CONTENT)) is True
    assert b2.read(f"cache/{PATH}") == CONTENT
    assert b2.versions(f"cache/{PATH}") == 1


def test_copy_to_cache_never_caches_a_bad_archive_copy(
    storage: B2S3Storage, source: Path, s3: MotoS3, b2: B2Simulator
) -> None:
    storage.put(PATH, source, info=INFO)
    s3.client().put_object(Bucket="cheeseshop-archive", Key=f"files/{PATH}", Body=b"rot")
    with pytest.raises(StorageUnavailable):
        storage.copy_to_cache(PATH, sha256(CONTENT))
    assert b2.names() == []
    assert storage.index.cached(PATH) is None


def test_copy_to_cache_with_b2_down_is_storage_unavailable(
    storage: B2S3Storage, source: Path, b2: B2Simulator
) -> None:
    storage.put(PATH, source, info=INFO)
    with b2.failing(), pytest.raises(StorageUnavailable):
        storage.copy_to_cache(PATH, sha256(CONTENT))
    assert storage.index.cached(PATH) is None
