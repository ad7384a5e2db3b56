"""Tests for cheeseshop.packaging.archives.

Well-formed archives are built here with zipfile/tarfile; malformed zips byte by byte with the
test kit's `raw_zip` (cheeseshop.testing.archives), whose well-formed output is itself tested
to be accepted, and tars with its member builders.
"""

from __future__ import annotations

import base64
import hashlib
import random
import struct
import tarfile
import tracemalloc
import warnings
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import pytest

from cheeseshop.packaging import archives
from cheeseshop.packaging.archives import (
    METADATA_FILE_SUFFIX,
    RECORD_HASH_ALGORITHMS,
    InvalidArchive,
    read_sdist_pkg_info,
    read_wheel_metadata,
)
from cheeseshop.testing.archives import (
    RawZip,
    TarMember,
    ZipEntry,
    deflate,
    raw_zip,
    sdist_bomb,
    tar_bytes,
    with_record,
    zip_entries,
)
from cheeseshop.testing.archives import tar_directory as directory
from cheeseshop.testing.archives import tar_hardlink as hardlink
from cheeseshop.testing.archives import tar_member as member
from cheeseshop.testing.archives import tar_symlink as symlink
from cheeseshop.testing.dists import build_sdist, build_wheel

WHEEL = "foo-1.0-py3-none-any.whl"
SDIST = "foo-1.0.tar.gz"
METADATA = b"Metadata-Version: 2.4\r\nName: foo\nVersion: 1.0\n\nDescription \xff\xfe bytes\n"
MiB = 1024 * 1024


def refused(read: Callable[..., bytes], path: Path, filename: str, *words: str) -> str:
    with pytest.raises(InvalidArchive) as info:
        read(path, filename=filename)
    exc = info.value
    assert isinstance(exc, ValueError)
    assert exc.filename == filename
    message = str(exc)
    assert ascii(filename) in message, "every message names the file"
    message.encode("latin-1")  # shown as an HTTP reason phrase
    for word in words:
        assert word in message
    return message


def test_metadata_file_suffix() -> None:
    assert METADATA_FILE_SUFFIX == ".metadata"


# --- wheels built with zipfile ------------------------------------------------------------------


def wheel_members(
    dist_info: str = "foo-1.0.dist-info", metadata: bytes = METADATA
) -> dict[str, bytes]:
    """A minimal wheel's members, RECORD true to the others."""
    return with_record(
        {
            "foo/__init__.py": b"x = 1\n",
            f"{dist_info}/METADATA": metadata,
            f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
            f"{dist_info}/RECORD": b"",
        }
    )


def write_wheel(
    path: Path,
    members: dict[str, bytes],
    *,
    compression: int = zipfile.ZIP_DEFLATED,
    force_zip64: bool = False,
) -> Path:
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = compression
            with zf.open(info, "w", force_zip64=force_zip64) as member:
                member.write(data)
    return path


@pytest.fixture
def wheel(tmp_path: Path) -> Path:
    return write_wheel(tmp_path / WHEEL, wheel_members())


def test_wheel_metadata_is_returned_exactly(wheel: Path) -> None:
    assert read_wheel_metadata(wheel, filename=WHEEL) == METADATA


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_wheel_stored_or_deflated(tmp_path: Path, compression: int) -> None:
    path = write_wheel(tmp_path / WHEEL, wheel_members(), compression=compression)
    assert read_wheel_metadata(path, filename=WHEEL) == METADATA


def test_wheel_with_zip64_local_headers(tmp_path: Path) -> None:
    path = write_wheel(tmp_path / WHEEL, wheel_members(), force_zip64=True)
    assert read_wheel_metadata(path, filename=WHEEL) == METADATA


@pytest.mark.parametrize(
    ("filename", "dist_info"),
    [
        ("Foo-1.0-py3-none-any.whl", "foo-1.0.dist-info"),
        ("foo-1.0-py3-none-any.whl", "Foo-1.0.dist-info"),
        ("Foo.Bar-1.0-py3-none-any.whl", "foo_bar-1.0.dist-info"),
        ("foo-1.0-py3-none-any.whl", "foo-1.0.0.dist-info"),
        ("foo-1.0rc1-py3-none-any.whl", "foo-1.0RC1.dist-info"),
    ],
)
def test_wheel_dist_info_matched_after_normalizing(
    tmp_path: Path, filename: str, dist_info: str
) -> None:
    path = write_wheel(tmp_path / filename, wheel_members(dist_info))
    assert read_wheel_metadata(path, filename=filename) == METADATA


@pytest.mark.parametrize("dist_info", ["bar-1.0.dist-info", "foo-2.0.dist-info", "foo.dist-info"])
def test_wheel_dist_info_must_match_filename(tmp_path: Path, dist_info: str) -> None:
    path = write_wheel(tmp_path / WHEEL, wheel_members(dist_info))
    refused(read_wheel_metadata, path, WHEEL, dist_info, "foo-1.0.dist-info")


def test_wheel_without_dist_info(tmp_path: Path) -> None:
    path = write_wheel(tmp_path / WHEEL, {"foo/__init__.py": b"", "foo/METADATA": METADATA})
    refused(read_wheel_metadata, path, WHEEL, "no .dist-info directory")


def test_wheel_with_two_dist_info_directories(tmp_path: Path) -> None:
    members = wheel_members() | {"bar-1.0.dist-info/METADATA": METADATA}
    path = write_wheel(tmp_path / WHEEL, members)
    refused(read_wheel_metadata, path, WHEEL, "more than one .dist-info")


def test_wheel_nested_dist_info_does_not_count(tmp_path: Path) -> None:
    members = {f"sub/{name}": data for name, data in wheel_members().items()}
    path = write_wheel(tmp_path / WHEEL, members)
    refused(read_wheel_metadata, path, WHEEL, "no .dist-info directory")


@pytest.mark.parametrize("required", ["METADATA", "WHEEL", "RECORD"])
def test_wheel_requires_dist_info_files(tmp_path: Path, required: str) -> None:
    members = wheel_members()
    del members[f"foo-1.0.dist-info/{required}"]
    path = write_wheel(tmp_path / WHEEL, members)
    refused(read_wheel_metadata, path, WHEEL, f"foo-1.0.dist-info/{required}")


@pytest.mark.parametrize("compression", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_wheel_refuses_other_compression(tmp_path: Path, compression: int) -> None:
    path = write_wheel(tmp_path / WHEEL, wheel_members(), compression=compression)
    refused(read_wheel_metadata, path, WHEEL, f"compression method {compression}")


@pytest.mark.parametrize(
    ("name", "words"),
    [
        pytest.param("/etc/passwd", "absolute", id="absolute"),
        pytest.param("C:/Windows/evil.dll", "absolute", id="drive"),
        pytest.param("foo/../../evil.py", "'..'", id="dotdot"),
        pytest.param("..", "'..'", id="dotdot-alone"),
        pytest.param("foo\\evil.py", "backslash", id="backslash"),
        pytest.param("foo/evil\n.py", "control character", id="newline"),
    ],
)
def test_wheel_refuses_bad_member_names(tmp_path: Path, name: str, words: str) -> None:
    path = write_wheel(tmp_path / WHEEL, wheel_members() | {name: b""})
    refused(read_wheel_metadata, path, WHEEL, words)


def test_wheel_refuses_duplicate_member_names(tmp_path: Path) -> None:
    path = tmp_path / WHEEL
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns "Duplicate name"
        with zipfile.ZipFile(path, "w") as zf:
            for name, data in wheel_members().items():
                zf.writestr(name, data)
            zf.writestr("foo-1.0.dist-info/METADATA", b"Name: evil\n")
    refused(read_wheel_metadata, path, WHEEL, "appears more than once")


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"not a zip at all" * 10, id="text"),
        pytest.param(METADATA, id="metadata"),
    ],
)
def test_wheel_refuses_non_zip(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / WHEEL
    path.write_bytes(content)
    refused(read_wheel_metadata, path, WHEEL, "not a zip archive")


def test_wheel_refuses_tar_renamed_whl(tmp_path: Path) -> None:
    path = write_sdist(tmp_path / WHEEL, sdist_members())
    refused(read_wheel_metadata, path, WHEEL, "not a zip archive")


def test_wheel_refuses_prepended_data(tmp_path: Path, wheel: Path) -> None:
    path = tmp_path / "prepended.whl"
    path.write_bytes(b"#!/bin/sh\n" + wheel.read_bytes())
    with zipfile.ZipFile(path) as zf:  # zipfile alone would take it
        assert zf.read("foo-1.0.dist-info/METADATA") == METADATA
    refused(read_wheel_metadata, path, WHEEL, "central directory is not where")


def test_wheel_refuses_appended_data(tmp_path: Path, wheel: Path) -> None:
    path = tmp_path / "appended.whl"
    path.write_bytes(wheel.read_bytes() + b"trailing")
    refused(read_wheel_metadata, path, WHEEL, "data after its end record")


def test_wheel_refuses_concatenated_zips(tmp_path: Path, wheel: Path) -> None:
    other = write_wheel(tmp_path / "other.whl", {"evil.py": b""})
    path = tmp_path / "concatenated.whl"
    path.write_bytes(other.read_bytes() + wheel.read_bytes())
    refused(read_wheel_metadata, path, WHEEL, "central directory is not where")


# --- wheels built byte by byte ------------------------------------------------------------------


Entry = ZipEntry


def metadata_entries(metadata: bytes = METADATA) -> list[ZipEntry]:
    """The minimal wheel's members as stored entries, RECORD included."""
    return zip_entries(wheel_members(metadata=metadata), method=zipfile.ZIP_STORED)


def write_raw(tmp_path: Path, spec: RawZip) -> Path:
    path = tmp_path / WHEEL
    path.write_bytes(raw_zip(spec))
    return path


@pytest.mark.parametrize("zip64_end", [False, True])
def test_raw_zip_is_accepted(tmp_path: Path, zip64_end: bool) -> None:
    spec = RawZip(metadata_entries(), zip64_end=zip64_end, comment=b"built by hand")
    assert read_wheel_metadata(write_raw(tmp_path, spec), filename=WHEEL) == METADATA


def test_wheel_refuses_nul_in_member_name(tmp_path: Path) -> None:
    # zipfile's .filename stops at the NUL ("foo/ok.py"); the stored name does not.
    entries = [*metadata_entries(), Entry(b"foo/ok.py\x00.exe")]
    refused(read_wheel_metadata, write_raw(tmp_path, RawZip(entries)), WHEEL, "control character")


def test_wheel_refuses_name_that_is_not_the_utf8_it_claims(tmp_path: Path) -> None:
    entries = [*metadata_entries(), Entry(b"foo/\xff\xfe.py", flags=0x0800)]
    refused(read_wheel_metadata, write_raw(tmp_path, RawZip(entries)), WHEEL, "not a valid zip")


def test_wheel_accepts_cp437_names(tmp_path: Path) -> None:
    # Without the UTF-8 flag the name is cp437: b"\x82" is "é", as RECORD (UTF-8) spells it.
    members = wheel_members() | {"foo/café.txt": b""}
    entries = zip_entries(with_record(members), method=zipfile.ZIP_STORED)
    entries[-1] = Entry(b"foo/caf\x82.txt", flags=0)
    assert entries[-1].name.decode("cp437") == "foo/café.txt"
    assert read_wheel_metadata(write_raw(tmp_path, RawZip(entries)), filename=WHEEL) == METADATA


def test_wheel_refuses_empty_member_name(tmp_path: Path) -> None:
    entries = [*metadata_entries(), Entry(b"")]
    refused(read_wheel_metadata, write_raw(tmp_path, RawZip(entries)), WHEEL, "empty name")


def test_wheel_refuses_local_name_differing_from_central(tmp_path: Path) -> None:
    entries = metadata_entries()
    entries[0].local_name = b"foo/__evil__.py"
    refused(read_wheel_metadata, write_raw(tmp_path, RawZip(entries)), WHEEL, "different file")


def test_wheel_refuses_local_sizes_differing_from_central(tmp_path: Path) -> None:
    spec = RawZip(metadata_entries())
    data = bytearray(raw_zip(spec))
    struct.pack_into("<L", data, 18, 999)  # compressed size in the first local header
    path = tmp_path / WHEEL
    path.write_bytes(bytes(data))
    refused(read_wheel_metadata, path, WHEEL, "disagrees with the central directory")


def test_wheel_refuses_overlapping_entries(tmp_path: Path) -> None:
    entries = [*metadata_entries(), Entry(b"foo/alias.py", b"x = 1\n", offset=0)]
    refused(read_wheel_metadata, write_raw(tmp_path, RawZip(entries)), WHEEL, "overlaps")


def test_wheel_refuses_hidden_local_entries(tmp_path: Path) -> None:
    # A local entry the central directory does not list: seen only by streaming readers.
    hidden = raw_zip(RawZip([Entry(b"foo/evil.py", b"import os\n")]))
    hidden_local = hidden[: hidden.index(b"PK\x01\x02")]
    visible = raw_zip(RawZip(metadata_entries()))
    cd_at = visible.index(b"PK\x01\x02")
    data = bytearray(visible[:cd_at] + hidden_local + visible[cd_at:])
    eocd_at = data.rindex(b"PK\x05\x06")
    struct.pack_into("<L", data, eocd_at + 16, cd_at + len(hidden_local))
    path = tmp_path / WHEEL
    path.write_bytes(bytes(data))
    refused(read_wheel_metadata, path, WHEEL, "unexplained bytes")


def test_wheel_refuses_data_descriptors(tmp_path: Path) -> None:
    entries = metadata_entries()
    entries[0].flags |= 0x0008
    refused(read_wheel_metadata, write_raw(tmp_path, RawZip(entries)), WHEEL, "data descriptor")


def test_wheel_refuses_encrypted_members(tmp_path: Path) -> None:
    entries = metadata_entries()
    entries[0].flags |= 0x0001
    refused(read_wheel_metadata, write_raw(tmp_path, RawZip(entries)), WHEEL, "encrypted")


def patched(tmp_path: Path, at: Callable[[bytes], int], fmt: str, value: int | bytes) -> Path:
    data = bytearray(raw_zip(RawZip(metadata_entries(), zip64_end=True)))
    struct.pack_into(fmt, data, at(bytes(data)), value)
    path = tmp_path / WHEEL
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    ("at", "fmt", "value", "words"),
    [
        pytest.param(lambda d: d.rindex(b"PK\x05\x06") + 4, "<H", 1, "multi-disk", id="eocd-disk"),
        pytest.param(
            lambda d: d.rindex(b"PK\x06\x06") + 16, "<L", 1, "multi-disk", id="eocd64-disk"
        ),
        pytest.param(lambda d: d.rindex(b"PK\x06\x07") + 8, "<Q", 0, "zip64", id="locator-pointer"),
        pytest.param(lambda d: d.rindex(b"PK\x06\x07") + 16, "<L", 2, "zip64", id="locator-disks"),
        pytest.param(lambda d: d.rindex(b"PK\x06\x06") + 4, "<Q", 60, "zip64", id="eocd64-size"),
    ],
)
def test_wheel_refuses_bad_end_records(
    tmp_path: Path, at: Callable[[bytes], int], fmt: str, value: int, words: str
) -> None:
    refused(read_wheel_metadata, patched(tmp_path, at, fmt, value), WHEEL, words)


def test_wheel_refuses_missing_local_header(tmp_path: Path) -> None:
    path = patched(tmp_path, lambda d: 0, "<4s", b"XK\x03\x04")
    refused(read_wheel_metadata, path, WHEEL, "local header of member 'foo/__init__.py' is missing")


def test_wheel_filename_must_name_dist_and_version(wheel: Path) -> None:
    refused(read_wheel_metadata, wheel, "foo.whl", "does not name its distribution")


def test_wheel_refuses_entry_count_mismatch(tmp_path: Path) -> None:
    spec = RawZip(metadata_entries(), extra_count=1)
    refused(read_wheel_metadata, write_raw(tmp_path, spec), WHEEL)


def test_wheel_refuses_too_many_entries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archives, "MAX_ARCHIVE_MEMBERS", 3)
    spec = RawZip(metadata_entries())
    refused(read_wheel_metadata, write_raw(tmp_path, spec), WHEEL, "4 entries", "3 allowed")


def big_entry(uncompressed: int, compressed: int) -> Entry:
    # Never read: the bomb is judged from the central directory alone.
    return Entry(
        b"foo/big.bin",
        raw=bytes(compressed),
        method=zipfile.ZIP_DEFLATED,
        uncompressed=uncompressed,
    )


def test_zip_bomb_thresholds() -> None:
    assert (archives.ZIP_BOMB_MIN_SIZE, archives.ZIP_BOMB_RATIO) == (64 * MiB, 50)


def test_wheel_refuses_compression_bomb(tmp_path: Path) -> None:
    entries = [*metadata_entries(), big_entry(65 * MiB, 64 * 1024)]
    refused(read_wheel_metadata, write_raw(tmp_path, RawZip(entries)), WHEEL, "compression bomb")


def real_payload_wheel(tmp_path: Path, payload: bytes) -> Path:
    """A wheel whose foo/big.bin really inflates to ``payload``, RECORD included."""
    members = with_record(wheel_members() | {"foo/big.bin": payload})
    return write_raw(tmp_path, RawZip(zip_entries(members)))


@pytest.fixture
def small_bomb_threshold(monkeypatch: pytest.MonkeyPatch) -> int:
    # The ratio rule, at a size that keeps real payloads cheap to inflate and hash.
    monkeypatch.setattr(archives, "ZIP_BOMB_MIN_SIZE", MiB)
    return MiB


def test_wheel_refuses_real_compression_bomb(tmp_path: Path, small_bomb_threshold: int) -> None:
    path = real_payload_wheel(tmp_path, bytes(small_bomb_threshold + 64 * 1024))
    refused(read_wheel_metadata, path, WHEEL, "compression bomb", "over 50:1")


def test_wheel_large_but_not_too_compressed_is_accepted(
    tmp_path: Path, small_bomb_threshold: int
) -> None:
    # 40 KiB that do not compress, then zeros: about 26:1 over all.
    noise = random.Random(0).randbytes(40 * 1024)
    path = real_payload_wheel(tmp_path, noise + bytes(small_bomb_threshold))
    assert read_wheel_metadata(path, filename=WHEEL) == METADATA


def test_wheel_very_compressed_but_small_is_accepted(
    tmp_path: Path, small_bomb_threshold: int
) -> None:
    path = real_payload_wheel(tmp_path, bytes(small_bomb_threshold - 64 * 1024))  # ~1000:1
    assert read_wheel_metadata(path, filename=WHEEL) == METADATA


def test_wheel_metadata_declared_too_large(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Refused on the declared size alone, before reading (reading would fail differently).
    monkeypatch.setattr(archives, "MAX_METADATA_SIZE", 16)
    entries = metadata_entries()
    entries[1] = Entry(b"foo-1.0.dist-info/METADATA", b"Name: foo\n", uncompressed=17)
    refused(read_wheel_metadata, write_raw(tmp_path, RawZip(entries)), WHEEL, "larger than 16")


def test_wheel_metadata_larger_than_declared_is_not_trusted(tmp_path: Path) -> None:
    # Declares 10 bytes but inflates to 4 MiB: reading stops at 10 and the CRC fails.
    payload = b"Name: foo\n" + bytes(4 * MiB)
    entries = metadata_entries()
    entries[1] = Entry(
        b"foo-1.0.dist-info/METADATA",
        raw=deflate(payload),
        method=zipfile.ZIP_DEFLATED,
        uncompressed=10,
        crc=zlib.crc32(payload),
    )
    refused(read_wheel_metadata, write_raw(tmp_path, RawZip(entries)), WHEEL, "not a valid zip")


def test_wheel_metadata_bad_crc(tmp_path: Path) -> None:
    entries = metadata_entries()
    entries[1].crc = 0x12345678
    refused(read_wheel_metadata, write_raw(tmp_path, RawZip(entries)), WHEEL, "CRC")


# --- RECORD -------------------------------------------------------------------------------------

RECORD = "foo-1.0.dist-info/RECORD"


def b64(data: bytes, algorithm: str = "sha256") -> str:
    """A RECORD digest: urlsafe base64 without padding."""
    digest = hashlib.new(algorithm, data).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


INIT = b"x = 1\n"  # foo/__init__.py
INIT_HASH = f"sha256={b64(INIT)}"
OTHER = b"x = 2\n"


def record_wheel(tmp_path: Path, members: dict[str, bytes], record: str | bytes) -> Path:
    """The minimal wheel plus ``members``, with RECORD exactly as given."""
    all_members = wheel_members() | members
    all_members[RECORD] = record.encode() if isinstance(record, str) else record
    return write_raw(tmp_path, RawZip(zip_entries(all_members)))


def true_rows() -> str:
    """RECORD rows for the minimal wheel's own members, all true; no row for RECORD."""
    rows = wheel_members()
    rows.pop(RECORD)
    return "".join(f"{name},sha256={b64(data)},{len(data)}\n" for name, data in rows.items())


def test_wheel_record_of_a_built_wheel_is_accepted(tmp_path: Path) -> None:
    dist = build_wheel("foo", "1.0", files={"foo/__init__.py": b"", "foo/data.bin": bytes(3000)})
    path = dist.write(tmp_path)
    assert read_wheel_metadata(path, filename=dist.filename) == dist.metadata


def test_wheel_record_hashes_in_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archives, "_READ_CHUNK", 7)
    noise = random.Random(1).randbytes(1000)
    path = write_raw(tmp_path, RawZip(zip_entries(with_record(wheel_members() | {"foo/n": noise}))))
    assert read_wheel_metadata(path, filename=WHEEL) == METADATA
    members = with_record(wheel_members() | {"foo/n": noise}) | {"foo/n": noise[:-1] + b"!"}
    path = write_raw(tmp_path, RawZip(zip_entries(members)))
    refused(read_wheel_metadata, path, WHEEL, "for 'foo/n' but the file hashes to sha256=")


@pytest.mark.parametrize(
    "record",
    [
        pytest.param(true_rows() + f"{RECORD},,\n", id="record-row-without-hash"),
        pytest.param(true_rows(), id="record-not-listed"),
        pytest.param(true_rows() + f"{RECORD},sha256=whatever,12\n", id="record-hash-ignored"),
        pytest.param(true_rows().replace("\n", "\r\n"), id="crlf"),
        pytest.param("\n" + true_rows() + "\n\n", id="blank-lines"),
        pytest.param(
            "".join(f"{line.rsplit(',', 1)[0]},\n" for line in true_rows().splitlines()),
            id="sizes-empty",
        ),
        pytest.param(
            true_rows().replace("foo/__init__.py,", '"foo/__init__.py",'), id="quoted-path"
        ),
    ],
)
def test_wheel_record_variants_accepted(tmp_path: Path, record: str) -> None:
    assert read_wheel_metadata(record_wheel(tmp_path, {}, record), filename=WHEEL) == METADATA


@pytest.mark.parametrize("algorithm", RECORD_HASH_ALGORITHMS)
def test_wheel_record_strong_hashes_accepted(tmp_path: Path, algorithm: str) -> None:
    rows = wheel_members()
    rows.pop(RECORD)
    record = "".join(f"{n},{algorithm}={b64(d, algorithm)},{len(d)}\n" for n, d in rows.items())
    assert read_wheel_metadata(record_wheel(tmp_path, {}, record), filename=WHEEL) == METADATA


def test_wheel_record_padded_digest_accepted(tmp_path: Path) -> None:
    unpadded = b64(INIT)
    padded = base64.urlsafe_b64encode(hashlib.sha256(INIT).digest()).decode()
    assert padded == unpadded + "="
    record = true_rows().replace(unpadded, padded)
    assert read_wheel_metadata(record_wheel(tmp_path, {}, record), filename=WHEEL) == METADATA


def test_wheel_record_hex_digest_accepted(tmp_path: Path) -> None:
    # gmsh 4.15.2 on PyPI, for one, writes hex digests; they check the same bytes.
    record = true_rows().replace(INIT_HASH, f"sha256={hashlib.sha256(INIT).hexdigest().upper()}")
    assert read_wheel_metadata(record_wheel(tmp_path, {}, record), filename=WHEEL) == METADATA
    wrong = true_rows().replace(INIT_HASH, f"sha256={hashlib.sha256(b'other').hexdigest()}")
    refused(read_wheel_metadata, record_wheel(tmp_path, {}, wrong), WHEEL, "lists hash")


def test_wheel_record_signatures_and_directories_need_no_row(tmp_path: Path) -> None:
    # RECORD is made before the signatures are added, so it lists neither of them.
    signatures = {f"{RECORD}.jws": b"{}", f"{RECORD}.p7s": b"signature"}
    entries = [Entry(b"foo/"), *zip_entries(wheel_members() | signatures)]
    assert read_wheel_metadata(write_raw(tmp_path, RawZip(entries)), filename=WHEEL) == METADATA


@pytest.mark.parametrize(
    ("members", "record", "words"),
    [
        pytest.param(
            {"foo/extra.py": b"import os\n"},
            true_rows(),
            ("'foo-1.0.dist-info/RECORD' does not list 'foo/extra.py', which the wheel contains",),
            id="member-not-listed",
        ),
        pytest.param(
            {"foo/a.py": b"", "foo/b.py": b"", "foo/c.py": b"", "foo/d.py": b""},
            true_rows(),
            ("does not list 'foo/a.py', 'foo/b.py', 'foo/c.py' and 1 more",),
            id="many-not-listed",
        ),
        pytest.param(
            {},
            true_rows() + f"foo/gone.py,sha256={b64(b'')},0\n",
            ("lists 'foo/gone.py' (line 4), which is not in the wheel",),
            id="listed-not-member",
        ),
        pytest.param(
            {},
            true_rows().replace(b64(INIT), b64(OTHER)),
            (
                f"lists hash 'sha256={b64(OTHER)}' for 'foo/__init__.py'",
                f"but the file hashes to {INIT_HASH}",
            ),
            id="wrong-hash",
        ),
        pytest.param(
            {},
            true_rows().replace(f"{b64(INIT)},6", f"{b64(INIT)},7"),
            ("gives size 7 for 'foo/__init__.py' but the file has 6 bytes",),
            id="wrong-size",
        ),
        pytest.param(
            {}, true_rows().replace(",6\n", ",six\n"), ("gives size 'six'",), id="size-not-number"
        ),
        pytest.param(
            {},
            true_rows().replace(INIT_HASH, "md5=abc"),
            ("hashes 'foo/__init__.py' with md5, which wheels may not use", "sha256"),
            id="md5",
        ),
        pytest.param(
            {},
            true_rows().replace(INIT_HASH, "sha1=abc"),
            ("with sha1, which wheels may not use",),
            id="sha1",
        ),
        pytest.param(
            {},
            true_rows().replace(INIT_HASH, "crc32=abc"),
            ("with 'crc32'; use one of sha256, sha384, sha512",),
            id="unknown-algorithm",
        ),
        pytest.param(
            {},
            true_rows().replace(INIT_HASH, ""),
            ("gives no hash for 'foo/__init__.py'",),
            id="no-hash",
        ),
        pytest.param(
            {},
            true_rows().replace(INIT_HASH, "sha256"),
            ("gives 'sha256' for 'foo/__init__.py', not 'algorithm=digest'",),
            id="hash-without-digest",
        ),
        pytest.param(
            {},
            true_rows() + "foo/__init__.py\n",
            ("line 4 of 'foo-1.0.dist-info/RECORD' has 1 fields",),
            id="short-row",
        ),
        pytest.param(
            {},
            true_rows() + true_rows().splitlines()[0] + "\n",
            ("lists 'foo/__init__.py' more than once (line 4)",),
            id="listed-twice",
        ),
        pytest.param({}, b"\xff\xfe" + true_rows().encode(), ("is not UTF-8",), id="not-utf8"),
        pytest.param(
            {}, true_rows() + "x" * 200_000 + ",,\n", ("is not valid CSV",), id="field-too-large"
        ),
    ],
)
def test_wheel_record_refused(
    tmp_path: Path, members: dict[str, bytes], record: str | bytes, words: tuple[str, ...]
) -> None:
    message = refused(read_wheel_metadata, record_wheel(tmp_path, members, record), WHEEL, *words)
    assert message.endswith("upload that.")


def test_wheel_record_checked_after_structure(tmp_path: Path) -> None:
    # A RECORD that lists nothing, in a zip with a worse problem: the worse one is reported.
    members = wheel_members() | {"../evil.py": b""}
    members[RECORD] = b""
    path = write_raw(tmp_path, RawZip(zip_entries(members)))
    refused(read_wheel_metadata, path, WHEEL, "'..' path segment")


# --- License-File --------------------------------------------------------------------------------


def license_metadata(version: str, *paths: str) -> bytes:
    lines = [f"Metadata-Version: {version}", "Name: foo", "Version: 1.0"]
    lines += [f"License-File: {path}" for path in paths]
    return ("\n".join(lines) + "\n").encode()


def license_wheel(tmp_path: Path, metadata: bytes, files: dict[str, bytes]) -> Path:
    members = wheel_members(metadata=metadata) | files
    return write_raw(tmp_path, RawZip(zip_entries(with_record(members))))


@pytest.mark.parametrize(
    ("metadata", "files"),
    [
        pytest.param(
            license_metadata("2.4", "LICENSE", "licenses/sub/COPYING"),
            {
                "foo-1.0.dist-info/licenses/LICENSE": b"MIT",
                "foo-1.0.dist-info/licenses/licenses/sub/COPYING": b"GPL",
            },
            id="present",
        ),
        pytest.param(license_metadata("2.4"), {}, id="none-listed"),
        pytest.param(license_metadata("2.3", "LICENSE"), {}, id="before-2.4"),
        pytest.param(license_metadata("2.1", "LICENSE"), {}, id="setuptools-2.1"),
        pytest.param(license_metadata("x.y", "LICENSE"), {}, id="version-not-parsed"),
    ],
)
def test_wheel_license_files_accepted(
    tmp_path: Path, metadata: bytes, files: dict[str, bytes]
) -> None:
    path = license_wheel(tmp_path, metadata, files)
    assert read_wheel_metadata(path, filename=WHEEL) == metadata


@pytest.mark.parametrize(
    ("metadata", "files", "words"),
    [
        pytest.param(
            license_metadata("2.4", "LICENSE"),
            {},
            ("License-File 'LICENSE' but the wheel has no 'foo-1.0.dist-info/licenses/LICENSE'",),
            id="missing",
        ),
        pytest.param(
            license_metadata("2.4", "LICENSE"),
            {"LICENSE": b"MIT", "foo-1.0.dist-info/LICENSE": b"MIT"},
            ("'foo-1.0.dist-info/licenses/LICENSE'",),
            id="outside-licenses",
        ),
        pytest.param(
            license_metadata("2.5", "LICENSE", "NOTICE"),
            {"foo-1.0.dist-info/licenses/LICENSE": b"MIT"},
            ("License-File 'NOTICE'",),
            id="one-of-two",
        ),
    ],
)
def test_wheel_license_files_refused(
    tmp_path: Path, metadata: bytes, files: dict[str, bytes], words: tuple[str, ...]
) -> None:
    refused(read_wheel_metadata, license_wheel(tmp_path, metadata, files), WHEEL, *words)


def test_wheel_license_files_from_the_form(tmp_path: Path) -> None:
    files = {"foo-1.0.dist-info/licenses/LICENSE": b"MIT"}
    path = license_wheel(tmp_path, license_metadata("2.1"), files)
    assert read_wheel_metadata(path, filename=WHEEL, license_files=["LICENSE"]) == license_metadata(
        "2.1"
    )
    with pytest.raises(InvalidArchive, match="the upload form lists License-File 'NOTICE'"):
        read_wheel_metadata(path, filename=WHEEL, license_files=["LICENSE", "NOTICE"])


# --- sdists -------------------------------------------------------------------------------------

PKG_INFO = b"Metadata-Version: 2.4\nName: foo\nVersion: 1.0\n\n\xe2\x98\x83\r\n"

Member = TarMember


def sdist_members(top: str = "foo-1.0") -> list[Member]:
    return [
        directory(top),
        member(f"{top}/PKG-INFO", PKG_INFO),
        member(f"{top}/pyproject.toml", b"[project]\nname = 'foo'\n"),
        directory(f"{top}/src"),
        member(f"{top}/src/foo.py", b"x = 1\n"),
    ]


def write_sdist(
    path: Path,
    members: list[Member],
    *,
    format: int = tarfile.PAX_FORMAT,
    pax_headers: dict[str, str] | None = None,
    mode: Literal["w:gz", "w:"] = "w:gz",
) -> Path:
    path.write_bytes(
        tar_bytes(members, format=format, pax_headers=pax_headers, compress=mode == "w:gz")
    )
    return path


@pytest.fixture
def sdist(tmp_path: Path) -> Path:
    return write_sdist(tmp_path / SDIST, sdist_members())


def test_sdist_pkg_info_is_returned_exactly(sdist: Path) -> None:
    assert read_sdist_pkg_info(sdist, filename=SDIST) == PKG_INFO


@pytest.mark.parametrize("format", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_sdist_tar_formats(tmp_path: Path, format: int) -> None:
    path = write_sdist(tmp_path / SDIST, sdist_members(), format=format)
    assert read_sdist_pkg_info(path, filename=SDIST) == PKG_INFO


def test_sdist_git_archive_global_header_is_accepted(tmp_path: Path) -> None:
    path = write_sdist(tmp_path / SDIST, sdist_members(), pax_headers={"comment": "a" * 40})
    assert read_sdist_pkg_info(path, filename=SDIST) == PKG_INFO


def test_sdist_without_top_level_directory_entry(tmp_path: Path) -> None:
    path = write_sdist(tmp_path / SDIST, sdist_members()[1:])
    assert read_sdist_pkg_info(path, filename=SDIST) == PKG_INFO


def test_sdist_links_inside_top_are_accepted(tmp_path: Path) -> None:
    members = [
        *sdist_members(),
        directory("foo-1.0/docs"),
        symlink("foo-1.0/docs/PKG-INFO.txt", "../PKG-INFO"),
        symlink("foo-1.0/here", "."),
        hardlink("foo-1.0/src/copy.py", "foo-1.0/src/foo.py"),
    ]
    path = write_sdist(tmp_path / SDIST, members)
    assert read_sdist_pkg_info(path, filename=SDIST) == PKG_INFO


def test_sdist_filename_must_be_tar_gz(sdist: Path) -> None:
    refused(read_sdist_pkg_info, sdist, "foo-1.0.zip", ".tar.gz")


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"not gzip" * 100, id="text"),
        pytest.param(b"\x1f\x8b\x08\x00" + b"\x00" * 6 + b"garbage" * 50, id="bad-deflate"),
    ],
)
def test_sdist_refuses_non_gzip(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / SDIST
    path.write_bytes(content)
    refused(read_sdist_pkg_info, path, SDIST, "not a valid gzip-compressed tar")


def test_sdist_refuses_uncompressed_tar(tmp_path: Path) -> None:
    path = write_sdist(tmp_path / SDIST, sdist_members(), mode="w:")
    refused(read_sdist_pkg_info, path, SDIST, "not a valid gzip-compressed tar")


def test_sdist_refuses_zip_renamed(tmp_path: Path, wheel: Path) -> None:
    refused(read_sdist_pkg_info, wheel, SDIST, "not a valid gzip-compressed tar")


def test_sdist_refuses_gzip_of_non_tar(tmp_path: Path) -> None:
    path = tmp_path / SDIST
    path.write_bytes(zlib.compress(b"hello", wbits=31))
    refused(read_sdist_pkg_info, path, SDIST, "not a valid gzip-compressed tar")


@pytest.mark.parametrize(
    "members",
    [
        pytest.param([*sdist_members(), member("foo-1.1/evil.py")], id="second-top"),
        pytest.param([member("README"), *sdist_members()], id="top-level-file"),
        pytest.param(sdist_members("foo-1.1"), id="wrong-top"),
        pytest.param(sdist_members("./foo-1.0"), id="dot-slash"),
        pytest.param(sdist_members("Foo-1.0"), id="case"),
    ],
)
def test_sdist_needs_one_top_level_directory_named_after_the_file(
    tmp_path: Path, members: list[Member]
) -> None:
    path = write_sdist(tmp_path / SDIST, members)
    refused(read_sdist_pkg_info, path, SDIST, "outside the single top-level directory 'foo-1.0'")


def test_sdist_top_level_entry_must_be_a_directory(tmp_path: Path) -> None:
    path = write_sdist(tmp_path / SDIST, [member("foo-1.0"), *sdist_members()[1:]])
    refused(read_sdist_pkg_info, path, SDIST, "not a directory")


@pytest.mark.parametrize(
    "members",
    [
        pytest.param(sdist_members()[2:], id="missing"),
        pytest.param(
            [directory("foo-1.0"), directory("foo-1.0/sub"), member("foo-1.0/sub/PKG-INFO")],
            id="nested",
        ),
        pytest.param([directory("foo-1.0"), member("foo-1.0/pkg-info", PKG_INFO)], id="case"),
    ],
)
def test_sdist_requires_top_level_pkg_info(tmp_path: Path, members: list[Member]) -> None:
    path = write_sdist(tmp_path / SDIST, members)
    refused(read_sdist_pkg_info, path, SDIST, "has no 'foo-1.0/PKG-INFO'")


def test_sdist_pkg_info_must_be_a_regular_file(tmp_path: Path) -> None:
    members = [
        directory("foo-1.0"),
        member("foo-1.0/real", PKG_INFO),
        symlink("foo-1.0/PKG-INFO", "real"),
    ]
    path = write_sdist(tmp_path / SDIST, members)
    refused(read_sdist_pkg_info, path, SDIST, "not a regular file")


def test_sdist_pkg_info_size_is_capped(sdist: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archives, "MAX_METADATA_SIZE", 16)
    refused(read_sdist_pkg_info, sdist, SDIST, "larger than 16 bytes")


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        pytest.param(member("/foo-1.0/x"), "absolute", id="absolute"),
        pytest.param(member("foo-1.0/../foo-1.0/x"), "'..'", id="dotdot"),
        pytest.param(member("foo-1.0/a\nb"), "control character", id="newline"),
        pytest.param(member(""), "empty name", id="empty"),
        pytest.param(member("foo-1.0/src/foo.py", b"evil"), "more than once", id="duplicate"),
        pytest.param(member("foo-1.0/tty", type=tarfile.CHRTYPE), "device", id="chr"),
        pytest.param(member("foo-1.0/sda", type=tarfile.BLKTYPE), "device", id="blk"),
        pytest.param(member("foo-1.0/pipe", type=tarfile.FIFOTYPE), "FIFO", id="fifo"),
        pytest.param(member("foo-1.0/vol", type=b"V"), "unsupported type", id="volume"),
    ],
)
def test_sdist_refuses_bad_members(tmp_path: Path, extra: Member, words: str) -> None:
    path = write_sdist(tmp_path / SDIST, [*sdist_members(), extra], format=tarfile.GNU_FORMAT)
    refused(read_sdist_pkg_info, path, SDIST, words)


@pytest.mark.parametrize(
    "links",
    [
        pytest.param([symlink("foo-1.0/l", "../../etc/passwd")], id="symlink-up"),
        pytest.param([symlink("foo-1.0/l", "/etc/passwd")], id="symlink-absolute"),
        pytest.param([symlink("foo-1.0/l", "../bar-1.0/x")], id="symlink-sibling"),
        pytest.param([symlink("foo-1.0/l", "")], id="symlink-empty"),
        pytest.param([hardlink("foo-1.0/l", "etc/passwd")], id="hardlink-outside"),
        pytest.param([hardlink("foo-1.0/l", "/etc/passwd")], id="hardlink-absolute"),
        pytest.param([hardlink("foo-1.0/l", "foo-1.0/../../x")], id="hardlink-up"),
    ],
)
def test_sdist_refuses_links_leading_outside(tmp_path: Path, links: list[Member]) -> None:
    path = write_sdist(tmp_path / SDIST, [*sdist_members(), *links])
    refused(read_sdist_pkg_info, path, SDIST, "outside 'foo-1.0'")


def test_sdist_refuses_link_through_a_symlink(tmp_path: Path) -> None:
    # Lexically "foo-1.0/x/../y" is inside, but "x" resolves to foo-1.0 so ".." leaves it.
    members = [*sdist_members(), symlink("foo-1.0/x", "."), symlink("foo-1.0/y", "x/../../z")]
    path = write_sdist(tmp_path / SDIST, members)
    refused(read_sdist_pkg_info, path, SDIST, "through the symlink 'foo-1.0/x'")


def test_sdist_refuses_member_inside_a_symlink(tmp_path: Path) -> None:
    members = [*sdist_members(), symlink("foo-1.0/out", "src"), member("foo-1.0/out/evil.py")]
    path = write_sdist(tmp_path / SDIST, members)
    refused(read_sdist_pkg_info, path, SDIST, "inside the symlink 'foo-1.0/out'")


def test_sdist_refuses_gnu_sparse_member(tmp_path: Path) -> None:
    members = [*sdist_members(), member("foo-1.0/sparse", type=tarfile.GNUTYPE_SPARSE)]
    path = write_sdist(tmp_path / SDIST, members, format=tarfile.GNU_FORMAT)
    refused(read_sdist_pkg_info, path, SDIST, "sparse")


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"GNU.sparse.size": "4", "GNU.sparse.offset": "0"}, id="0.0"),
        pytest.param({"GNU.sparse.map": "0,4"}, id="0.1"),
        pytest.param({"GNU.sparse.major": "1", "GNU.sparse.minor": "0"}, id="1.0"),
    ],
)
def test_sdist_refuses_pax_sparse_member(tmp_path: Path, headers: dict[str, str]) -> None:
    # A 1.0 map claiming a million entries: tarfile would read the stream to its end for it.
    data = b"1000000\n0\n4\n"
    members = [*sdist_members(), member("foo-1.0/sparse", data, pax_headers=headers)]
    path = write_sdist(tmp_path / SDIST, members)
    refused(read_sdist_pkg_info, path, SDIST, "sparse")


def test_gnu_sparse_header_refused_before_tarfile_reads_its_map() -> None:
    header = member("foo-1.0/sparse", type=tarfile.GNUTYPE_SPARSE)[0].tobuf(tarfile.GNU_FORMAT)
    with pytest.raises(ValueError, match="sparse"):
        archives._GuardedTarInfo.frombuf(header, "utf-8", "surrogateescape")


def test_tarfile_still_has_the_sparse_hooks_we_override() -> None:
    for hook in ("_proc_gnusparse_00", "_proc_gnusparse_01", "_proc_gnusparse_10"):
        assert callable(getattr(tarfile.TarInfo, hook))
    assert "frombuf" in vars(tarfile.TarInfo)


def test_sdist_refuses_oversized_extended_header(tmp_path: Path) -> None:
    long_name = "foo-1.0/" + "x" * 70_000
    path = write_sdist(tmp_path / SDIST, [*sdist_members(), member(long_name)])
    refused(read_sdist_pkg_info, path, SDIST, "extended header")


def test_sdist_stream_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archives, "TAR_STREAM_BUDGET", 16 * 1024)
    members = [*sdist_members(), member("foo-1.0/big.bin", bytes(32 * 1024))]
    path = write_sdist(tmp_path / SDIST, members)
    refused(read_sdist_pkg_info, path, SDIST, "more than 16384 bytes of tar stream")


def test_sdist_member_budget(sdist: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archives, "MAX_ARCHIVE_MEMBERS", 3)
    refused(read_sdist_pkg_info, sdist, SDIST, "more than 3 members")


def test_sdist_budgets_do_not_refuse_a_normal_sdist(sdist: Path) -> None:
    assert archives.TAR_STREAM_BUDGET == 2 * 1024 * 1024 * 1024
    assert archives.MAX_ARCHIVE_MEMBERS == 100_000
    assert read_sdist_pkg_info(sdist, filename=SDIST) == PKG_INFO


# --- sdists: License-File -----------------------------------------------------------------------


def license_sdist(tmp_path: Path, metadata: bytes, *extra: Member) -> Path:
    members = sdist_members()
    members[1] = member("foo-1.0/PKG-INFO", metadata)
    return write_sdist(tmp_path / SDIST, [*members, *extra])


def test_sdist_license_files_present(tmp_path: Path) -> None:
    metadata = license_metadata("2.4", "LICENSE", "docs/COPYING")
    extra = [member("foo-1.0/LICENSE", b"MIT"), directory("foo-1.0/docs"),
             member("foo-1.0/docs/COPYING", b"GPL")]  # fmt: skip
    path = license_sdist(tmp_path, metadata, *extra)
    assert read_sdist_pkg_info(path, filename=SDIST) == metadata


def test_sdist_license_files_before_2_4_not_checked(tmp_path: Path) -> None:
    metadata = license_metadata("2.2", "LICENSE")
    assert read_sdist_pkg_info(license_sdist(tmp_path, metadata), filename=SDIST) == metadata


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param([], id="missing"),
        pytest.param([directory("foo-1.0/LICENSE")], id="a-directory"),
        pytest.param([member("LICENSE", b"MIT")], id="outside-top"),
    ],
)
def test_sdist_license_files_refused(tmp_path: Path, extra: list[Member]) -> None:
    path = license_sdist(tmp_path, license_metadata("2.4", "LICENSE"), *extra)
    words = ("License-File 'LICENSE' but the sdist has no 'foo-1.0/LICENSE'",)
    if extra and not extra[0][0].name.startswith("foo-1.0"):
        words = ("outside the single top-level directory",)
    refused(read_sdist_pkg_info, path, SDIST, *words)


def test_sdist_license_files_from_the_form(tmp_path: Path) -> None:
    metadata = license_metadata("2.2")
    path = license_sdist(tmp_path, metadata, member("foo-1.0/LICENSE", b"MIT"))
    assert read_sdist_pkg_info(path, filename=SDIST, license_files=["LICENSE"]) == metadata
    refused(
        lambda p, filename: read_sdist_pkg_info(p, filename=filename, license_files=["COPYING"]),
        path,
        SDIST,
        "the upload form lists License-File 'COPYING' but the sdist has no 'foo-1.0/COPYING'",
    )


def test_a_tar_bomb_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    # A 3 MiB .tar.gz that expands to 3 GiB is judged while it streams, never held whole.
    bomb = sdist_bomb(build_sdist("foo", "1.0"), 3 * 1024 * 1024 * 1024)
    path = tmp_path / bomb.filename
    path.write_bytes(bomb.content)
    tracemalloc.start()
    try:
        refused(read_sdist_pkg_info, path, bomb.filename, "more than 2147483648 bytes of tar stream")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # tarfile inflates 10 KiB of input at a time, at most ~10 MiB at deflate's 1032:1, and
    # holds a few such steps (about 30 MiB here): bounded, whatever the bomb's size.
    assert peak < 64 * 1024 * 1024, f"{peak / 2**20:.1f} MiB held at once"
