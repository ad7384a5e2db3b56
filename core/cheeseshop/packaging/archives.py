"""Reading the core metadata out of uploaded archives, and refusing unsafe archives.

Both readers work on a file already on disk, extract nothing to disk and keep memory bounded
whatever the archive declares: zip sizes are judged from the central directory and checked
against the local headers, and tar archives are read as a stream under a budget. Beyond the
archive's structure, both check what the distribution says about itself: a wheel's RECORD must
describe its members exactly, and every ``License-File`` its core metadata (2.4 and later)
names must be in the archive.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import hashlib
import io
import os
import posixpath
import re
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NoReturn, Self

from packaging.metadata import parse_email
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

__all__ = [
    "MAX_ARCHIVE_MEMBERS",
    "MAX_METADATA_SIZE",
    "METADATA_FILE_SUFFIX",
    "RECORD_HASH_ALGORITHMS",
    "TAR_STREAM_BUDGET",
    "ZIP_BOMB_MIN_SIZE",
    "ZIP_BOMB_RATIO",
    "InvalidArchive",
    "read_sdist_pkg_info",
    "read_wheel_metadata",
]

METADATA_FILE_SUFFIX = ".metadata"
"""Suffix of the metadata file served beside a wheel (PEP 658): ``<wheel filename>.metadata``."""

MAX_METADATA_SIZE = 10 * 1024 * 1024
"""Largest METADATA / PKG-INFO read out of an archive, in bytes."""

MAX_ARCHIVE_MEMBERS = 100_000
"""Most members (zip entries, tar headers) an archive may have."""

ZIP_BOMB_MIN_SIZE = 64 * 1024 * 1024
"""A zip whose members total more than this many bytes uncompressed..."""

ZIP_BOMB_RATIO = 50
"""...and compress by more than this ratio is refused as a compression bomb."""

TAR_STREAM_BUDGET = 2 * 1024 * 1024 * 1024
"""Most bytes of decompressed tar stream read while checking an sdist."""

RECORD_HASH_ALGORITHMS = ("sha256", "sha384", "sha512")
"""Hash algorithms accepted in a wheel's RECORD. md5 and sha1 are refused, as the wheel
specification forbids them (and PyPI and pip refuse them)."""

# The RECORD hashes a wheel must not carry: named, to say why they are refused.
_WEAK_RECORD_HASHES = frozenset({"md5", "sha1"})
_READ_CHUNK = 1024 * 1024
# License-File names a path inside the archive from this metadata version on (PEP 639).
_LICENSE_FILE_SINCE = Version("2.4")
_SHOW_AT_MOST = 3

# Payload of one pax or GNU long-name header. tarfile reads each whole into memory (and a chain
# of them recursively), so the cap keeps a header that declares gigabytes from being read.
_MAX_TAR_HEADER_SIZE = 64 * 1024

_EOCD = struct.Struct("<4s4H2LH")
_EOCD_SIGNATURE = b"PK\x05\x06"
_EOCD64_LOCATOR = struct.Struct("<4sLQL")
_EOCD64_LOCATOR_SIGNATURE = b"PK\x06\x07"
_EOCD64 = struct.Struct("<4sQ2H2L4Q")
_EOCD64_SIGNATURE = b"PK\x06\x06"
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")
_LOCAL_HEADER_SIGNATURE = b"PK\x03\x04"
_ZIP64_EXTRA_ID = 0x0001
_SIZE_IN_ZIP64_EXTRA = 0xFFFFFFFF
_FLAG_ENCRYPTED = 0x0001
_FLAG_DATA_DESCRIPTOR = 0x0008
_FLAG_UTF8 = 0x0800

_REBUILD = "rebuild it with a standard build tool (e.g. `python -m build`) and upload that"
_NAME_DISPLAY_LIMIT = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_WINDOWS_DRIVE = re.compile(r"[A-Za-z]:")

_Fail = Callable[[str], NoReturn]


class InvalidArchive(ValueError):
    """An uploaded archive that is malformed, unsafe, or lacks its metadata.

    ``str(exc)`` is a complete message for the uploader: it names the file, says what is wrong
    and what to do. :attr:`filename` is the distribution's filename.
    """

    def __init__(self, message: str, *, filename: str) -> None:
        super().__init__(message)
        self.filename = filename


def _failer(kind: str, filename: str) -> _Fail:
    def fail(problem: str) -> NoReturn:
        raise InvalidArchive(
            f"Invalid {kind} {filename!a}: {problem}; {_REBUILD}.", filename=filename
        )

    return fail


def _show(name: str) -> str:
    if len(name) > _NAME_DISPLAY_LIMIT:
        name = name[:_NAME_DISPLAY_LIMIT] + "..."
    return ascii(name)


@contextlib.contextmanager
def _opened(source: Path | BinaryIO) -> Iterator[BinaryIO]:
    """``source`` opened for reading if it is a path (and closed after); as it is if not."""
    if isinstance(source, Path):
        with source.open("rb") as fp:
            yield fp
    else:
        yield source


# --- wheels ---------------------------------------------------------------------------------


def read_wheel_metadata(
    source: Path | BinaryIO, *, filename: str, license_files: Sequence[str] = ()
) -> bytes:
    """Check the wheel *source* (a path, or a seekable binary file read from its start and
    left open) and return its ``.dist-info/METADATA`` exactly as stored.

    *filename* is the wheel's filename; its first two dash-separated parts name the one
    ``<name>-<version>.dist-info`` directory the wheel must have at its top level (compared
    after normalizing name and version), holding ``METADATA``, ``WHEEL`` and ``RECORD``.

    The archive is refused if it is not a zip; if it has data before, between or after its
    entries, or local headers that disagree with the central directory; if a member name is
    empty, absolute, contains ``..``, a backslash or a control character, or appears twice; if
    a member is encrypted or compressed other than stored/deflated; if it has more than
    :data:`MAX_ARCHIVE_MEMBERS` entries; or if it is a compression bomb (over
    :data:`ZIP_BOMB_MIN_SIZE` uncompressed at a ratio over :data:`ZIP_BOMB_RATIO`). METADATA is
    read with a cap of :data:`MAX_METADATA_SIZE` bytes whatever its declared size.

    Then the wheel must agree with its own RECORD (a CSV of ``path,algorithm=digest,size``):
    every member but RECORD, its signatures ``RECORD.jws`` / ``RECORD.p7s`` and directory
    entries is listed, every listed path is a member, and each member's content matches its
    listed hash (one of :data:`RECORD_HASH_ALGORITHMS`, in urlsafe base64 with or without
    padding, or in hex as some published wheels have it) and size (when given). Members are
    inflated and hashed in chunks, never held whole. Last,
    when METADATA is version 2.4 or later, each ``License-File`` it lists must be the member
    ``<name>-<version>.dist-info/licenses/<path>``; so must each of *license_files*, the
    License-File values of the upload form (pass them when the form's metadata version is
    2.4 or later, as PyPI checks them).

    :raises InvalidArchive: with a message naming the file, what is wrong and what to do.
    """
    fail = _failer("wheel", filename)
    with _opened(source) as fp:
        file_size = fp.seek(0, os.SEEK_END)
        fp.seek(0)
        directory = _locate_central_directory(fp, file_size, fail)
        try:
            with zipfile.ZipFile(fp) as archive:
                infos = archive.infolist()
                _check_zip_members(infos, fail)
                _check_zip_layout(fp, infos, directory, fail)
                dist_info = _wheel_dist_info(infos, filename, fail)
                info = archive.getinfo(f"{dist_info}/METADATA")
                if info.file_size > MAX_METADATA_SIZE:
                    fail(f"{_show(info.orig_filename)} is larger than {MAX_METADATA_SIZE} bytes")
                # zipfile stops at the declared size and checks the CRC; the cap is for the
                # case where that declared size is itself the lie.
                with archive.open(info) as member:
                    data = member.read(MAX_METADATA_SIZE + 1)
                if len(data) > MAX_METADATA_SIZE:  # pragma: no cover - zipfile stops at file_size
                    fail(f"{_show(info.orig_filename)} is larger than {MAX_METADATA_SIZE} bytes")
                _check_record(archive, infos, dist_info, fail)
                _check_license_files(
                    data,
                    license_files,
                    {i.orig_filename for i in infos if not i.is_dir()},
                    f"{dist_info}/licenses",
                    "wheel",
                    fail,
                )
        except InvalidArchive:
            raise
        # ValueError covers a member name that is not the UTF-8 its flag says it is.
        except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, ValueError) as exc:
            fail(f"it is not a valid zip archive ({exc})")
        return data


@dataclass(frozen=True)
class _CentralDirectory:
    offset: int
    entries: int


def _locate_central_directory(fp: BinaryIO, file_size: int, fail: _Fail) -> _CentralDirectory:
    """Find the end-of-central-directory record the way zipfile does, and insist it is the only
    reading: nothing after the archive comment, nothing between the central directory and
    its end records, and not so many entries that parsing them would cost unbounded memory."""
    tail_size = min(file_size, _EOCD.size + 0xFFFF)
    fp.seek(file_size - tail_size)
    tail = fp.read(tail_size)
    at = tail.rfind(_EOCD_SIGNATURE)
    if at < 0 or at + _EOCD.size > len(tail):
        fail("it is not a zip archive (a wheel must be a zip file)")
    _, disk, cd_disk, disk_entries, entries, cd_size, cd_offset, comment_size = _EOCD.unpack_from(
        tail, at
    )
    if at + _EOCD.size + comment_size != len(tail):
        fail("it is not a well-formed zip archive (there is data after its end record)")
    if disk != 0 or cd_disk != 0 or disk_entries != entries:
        fail("it is a multi-disk zip archive")
    cd_end = file_size - tail_size + at
    locator_at = cd_end - _EOCD64_LOCATOR.size
    if locator_at >= _EOCD64.size:
        fp.seek(locator_at)
        locator = fp.read(_EOCD64_LOCATOR.size)
        if locator.startswith(_EOCD64_LOCATOR_SIGNATURE):
            _, locator_disk, eocd64_at, disks = _EOCD64_LOCATOR.unpack(locator)
            # zipfile reads the zip64 record from just before the locator, ignoring the
            # locator's pointer; a pointer elsewhere would let two readers disagree.
            if eocd64_at != locator_at - _EOCD64.size or locator_disk != 0 or disks != 1:
                fail("its zip64 end records are inconsistent")
            fp.seek(eocd64_at)
            (sig, record_size, _, _, disk, cd_disk, disk_entries, entries, cd_size, cd_offset) = (
                _EOCD64.unpack(fp.read(_EOCD64.size))
            )
            if sig != _EOCD64_SIGNATURE or record_size != _EOCD64.size - 12:
                fail("its zip64 end record is malformed")
            if disk != 0 or cd_disk != 0 or disk_entries != entries:
                fail("it is a multi-disk zip archive")
            cd_end = eocd64_at
    if cd_offset + cd_size != cd_end:
        fail(
            "it is not a well-formed zip archive (its central directory is not where its end "
            "record says, e.g. data was prepended to it)"
        )
    if entries > MAX_ARCHIVE_MEMBERS:
        fail(f"it has {entries} entries, more than the {MAX_ARCHIVE_MEMBERS} allowed")
    return _CentralDirectory(offset=cd_offset, entries=entries)


def _check_zip_members(infos: list[zipfile.ZipInfo], fail: _Fail) -> None:
    seen: set[str] = set()
    total_compressed = total_uncompressed = 0
    for info in infos:
        # orig_filename keeps what zipfile's .filename cuts at a NUL byte.
        name = info.orig_filename
        shown = _show(name)
        if not name:
            fail("it has a member with an empty name")
        if _CONTROL.search(name):
            fail(f"member {shown} has a control character in its name")
        if "\\" in name:
            fail(f"member {shown} has a backslash in its name (zip paths use '/')")
        if name.startswith("/") or _WINDOWS_DRIVE.match(name):
            fail(f"member {shown} has an absolute path")
        if ".." in name.split("/"):
            fail(f"member {shown} has a '..' path segment")
        if name in seen:
            fail(f"member {shown} appears more than once")
        seen.add(name)
        if info.flag_bits & _FLAG_ENCRYPTED:
            fail(f"member {shown} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            fail(
                f"member {shown} uses compression method {info.compress_type}; only stored (0) "
                f"and deflated (8) are accepted"
            )
        total_compressed += info.compress_size
        total_uncompressed += info.file_size
    if (
        total_uncompressed > ZIP_BOMB_MIN_SIZE
        and total_uncompressed > ZIP_BOMB_RATIO * total_compressed
    ):
        fail(
            f"it expands to {total_uncompressed} bytes from {total_compressed} compressed, a "
            f"ratio over {ZIP_BOMB_RATIO}:1 that is refused as a compression bomb"
        )


def _check_zip_layout(
    fp: BinaryIO, infos: list[zipfile.ZipInfo], directory: _CentralDirectory, fail: _Fail
) -> None:
    """Insist that the local entries tile the file from byte 0 to the central directory and
    that each local header says what the central directory says.

    Installers that stream local headers (rather than read the central directory) must see
    exactly the files that were checked here. This also makes the compressed sizes used for
    the compression-bomb ratio trustworthy: together they cannot exceed the file's size.
    """
    if len(infos) != directory.entries:
        fail("its central directory does not hold the number of entries its end record says")
    expected = 0
    for info in sorted(infos, key=lambda i: i.header_offset):
        shown = _show(info.orig_filename)
        if info.header_offset != expected:
            where = "overlaps another" if info.header_offset < expected else "is not adjacent to"
            fail(f"the entry for member {shown} {where} (unexplained or shared bytes)")
        fp.seek(info.header_offset)
        header = fp.read(_LOCAL_HEADER.size)
        if len(header) != _LOCAL_HEADER.size:  # pragma: no cover - the central directory follows
            fail(f"the local header of member {shown} is truncated")
        (sig, _, flags, method, _, _, crc, compressed, uncompressed, name_size, extra_size) = (
            _LOCAL_HEADER.unpack(header)
        )
        if sig != _LOCAL_HEADER_SIGNATURE:
            fail(f"the local header of member {shown} is missing")
        raw_name = fp.read(name_size)
        extra = fp.read(extra_size)
        if raw_name != _raw_name(info):
            fail(f"the local header of member {shown} names a different file")
        if flags & _FLAG_DATA_DESCRIPTOR:
            fail(f"member {shown} uses a data descriptor (sizes written after the data)")
        if _SIZE_IN_ZIP64_EXTRA in (compressed, uncompressed):
            compressed, uncompressed = _zip64_local_sizes(extra, compressed, uncompressed)
        if (method, crc, compressed, uncompressed) != (
            info.compress_type,
            info.CRC,
            info.compress_size,
            info.file_size,
        ):
            fail(f"the local header of member {shown} disagrees with the central directory")
        expected = info.header_offset + _LOCAL_HEADER.size + name_size + extra_size
        expected += info.compress_size
    if expected != directory.offset:
        fail("there are unexplained bytes between its last entry and its central directory")


def _raw_name(info: zipfile.ZipInfo) -> bytes | None:
    # zipfile decodes names as UTF-8 when flag bit 11 is set and as cp437 otherwise; cp437
    # maps all 256 byte values, so encoding back gives the bytes from the central directory.
    try:
        return info.orig_filename.encode("utf-8" if info.flag_bits & _FLAG_UTF8 else "cp437")
    except UnicodeEncodeError:
        return None


def _zip64_local_sizes(extra: bytes, compressed: int, uncompressed: int) -> tuple[int, int]:
    """Replace the sizes a local header defers to its zip64 extra field with the field's values.

    Returns (compressed, uncompressed); a size left at 0xFFFFFFFF means the field was absent.
    """
    at = 0
    while at + 4 <= len(extra):
        field_id, size = struct.unpack_from("<2H", extra, at)
        data = extra[at + 4 : at + 4 + size]
        at += 4 + size
        if field_id != _ZIP64_EXTRA_ID:
            continue
        values = [v for (v,) in struct.iter_unpack("<Q", data[: len(data) // 8 * 8])]
        # The spec puts both sizes in a local header's field, uncompressed first; be lenient
        # with writers that store only the one that overflowed.
        if len(values) >= 2:
            return (
                values[1] if compressed == _SIZE_IN_ZIP64_EXTRA else compressed,
                values[0] if uncompressed == _SIZE_IN_ZIP64_EXTRA else uncompressed,
            )
        if len(values) == 1 and uncompressed == _SIZE_IN_ZIP64_EXTRA:
            return compressed, values[0]
        if len(values) == 1:
            return values[0], uncompressed
    return compressed, uncompressed


def _wheel_dist_info(infos: list[zipfile.ZipInfo], filename: str, fail: _Fail) -> str:
    """The wheel's one ``.dist-info`` directory, checked to hold METADATA, WHEEL and RECORD."""
    parts = filename.split("-")
    if len(parts) < 3:
        fail("its filename does not name its distribution and version")
    dist, version = parts[0], parts[1]
    by_name = {info.orig_filename: info for info in infos}
    # Same rule as pip: the top-level component of every member name, directory entry or not.
    tops = {name.split("/", 1)[0] for name in by_name}
    dist_infos = sorted(top for top in tops if top.endswith(".dist-info"))
    if not dist_infos:
        fail(f"it has no .dist-info directory (expected {dist}-{version}.dist-info/)")
    if len(dist_infos) > 1:
        fail(f"it has more than one .dist-info directory: {', '.join(map(_show, dist_infos))}")
    dist_info = dist_infos[0]
    stem_name, dash, stem_version = dist_info.removesuffix(".dist-info").rpartition("-")
    if not (
        dash
        and canonicalize_name(stem_name) == canonicalize_name(dist)
        and _same_version(stem_version, version)
    ):
        fail(
            f"its .dist-info directory is {_show(dist_info)} but its filename calls for "
            f"{dist}-{version}.dist-info"
        )
    missing = [
        f"{dist_info}/{required}"
        for required in ("METADATA", "WHEEL", "RECORD")
        if f"{dist_info}/{required}" not in by_name
    ]
    if missing:
        fail(f"it lacks {', '.join(map(_show, missing))}")
    return dist_info


@dataclass(frozen=True)
class _Listed:
    """One RECORD row: the hash and size it gives (either may be empty)."""

    hash: str
    size: str


def _check_record(
    archive: zipfile.ZipFile, infos: list[zipfile.ZipInfo], dist_info: str, fail: _Fail
) -> None:
    record = f"{dist_info}/RECORD"
    # The wheel specification exempts RECORD and its signatures: none can hash itself.
    unhashed = {record, f"{record}.jws", f"{record}.p7s"}
    by_name = {info.orig_filename: info for info in infos}
    listed = _read_record(archive, by_name[record], by_name, unhashed, fail)
    unlisted = [
        name
        for name, info in by_name.items()
        if name not in listed and name not in unhashed and not info.is_dir()
    ]
    if unlisted:
        fail(f"{_show(record)} does not list {_some(unlisted)}, which the wheel contains")
    for name, info in by_name.items():
        entry = listed.get(name)
        if entry is None or name in unhashed:
            continue
        algorithm, _, expected = entry.hash.partition("=")
        if entry.size and int(entry.size) != info.file_size:
            fail(
                f"{_show(record)} gives size {entry.size} for {_show(name)} but the file has "
                f"{info.file_size} bytes"
            )
        digest = hashlib.new(algorithm)
        with archive.open(info) as member:
            while chunk := member.read(_READ_CHUNK):
                digest.update(chunk)
        actual = base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode("ascii")
        # Some published wheels (gmsh's, for one) write hex digests. That is another spelling
        # of the same digest (never mistaken for base64, being longer), so it is taken.
        if expected.rstrip("=") != actual and expected.lower() != digest.hexdigest():
            fail(
                f"{_show(record)} lists hash {_show(entry.hash)} for {_show(name)} but the "
                f"file hashes to {algorithm}={actual}"
            )


def _read_record(
    archive: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    by_name: dict[str, zipfile.ZipInfo],
    unhashed: set[str],
    fail: _Fail,
) -> dict[str, _Listed]:
    """Parse RECORD as a stream; every row is checked as it is read.

    Each accepted row names a distinct member, so what is kept is bounded by the member count
    whatever RECORD's size; csv's field size limit bounds each line.
    """
    shown = _show(info.orig_filename)
    listed: dict[str, _Listed] = {}
    try:
        with (
            archive.open(info) as raw,
            io.TextIOWrapper(raw, encoding="utf-8", newline="") as text,
        ):
            reader = csv.reader(text)
            for row in reader:
                line = reader.line_num
                if not row:
                    continue
                if len(row) != 3:
                    fail(
                        f"line {line} of {shown} has {len(row)} fields; each line must be "
                        "'path,algorithm=digest,size'"
                    )
                path, hash_field, size = row
                if path not in by_name:
                    fail(f"{shown} lists {_show(path)} (line {line}), which is not in the wheel")
                if path in listed:
                    fail(f"{shown} lists {_show(path)} more than once (line {line})")
                if size and not (size.isascii() and size.isdigit()):
                    fail(f"{shown} gives size {_show(size)} for {_show(path)}, not a number")
                if path not in unhashed:
                    _check_record_hash(shown, path, hash_field, fail)
                listed[path] = _Listed(hash_field, size)
    except UnicodeDecodeError:
        fail(f"{shown} is not UTF-8 text")
    except csv.Error as exc:
        fail(f"{shown} is not valid CSV ({exc})")
    return listed


def _check_record_hash(shown: str, path: str, hash_field: str, fail: _Fail) -> None:
    if not hash_field:
        fail(f"{shown} gives no hash for {_show(path)}")
    algorithm, sep, value = hash_field.partition("=")
    accepted = ", ".join(RECORD_HASH_ALGORITHMS)
    if not sep or not value:
        fail(f"{shown} gives {_show(hash_field)} for {_show(path)}, not 'algorithm=digest'")
    if algorithm in _WEAK_RECORD_HASHES:
        fail(
            f"{shown} hashes {_show(path)} with {algorithm}, which wheels may not use; "
            f"use one of {accepted}"
        )
    if algorithm not in RECORD_HASH_ALGORITHMS:
        fail(f"{shown} hashes {_show(path)} with {_show(algorithm)}; use one of {accepted}")


def _some(names: list[str]) -> str:
    shown = ", ".join(map(_show, names[:_SHOW_AT_MOST]))
    more = len(names) - _SHOW_AT_MOST
    return f"{shown} and {more} more" if more > 0 else shown


def _check_license_files(
    metadata: bytes,
    from_form: Sequence[str],
    members: set[str],
    directory: str,
    kind: str,
    fail: _Fail,
) -> None:
    """Each ``License-File`` of metadata 2.4+, and each one the form gave, must be the member
    ``<directory>/<path>``.

    Metadata that does not parse is left to the metadata checks, which report it better.
    """
    raw, _ = parse_email(metadata)
    listed: list[str] = []
    try:
        if Version(raw.get("metadata_version", "")) >= _LICENSE_FILE_SINCE:
            listed = raw.get("license_files", [])
    except InvalidVersion:
        pass
    for where, paths in (("its metadata", listed), ("the upload form", from_form)):
        missing = [path for path in dict.fromkeys(paths) if f"{directory}/{path}" not in members]
        if missing:
            shown = ", ".join(_show(f"{directory}/{path}") for path in missing[:_SHOW_AT_MOST])
            fail(f"{where} lists License-File {_some(missing)} but the {kind} has no {shown}")


def _same_version(left: str, right: str) -> bool:
    try:
        return Version(left) == Version(right)
    except InvalidVersion:
        return False


# --- sdists ---------------------------------------------------------------------------------


def read_sdist_pkg_info(
    source: Path | BinaryIO, *, filename: str, license_files: Sequence[str] = ()
) -> bytes:
    """Check the sdist *source* (a path, or a binary file read from its start and left
    open) and return its ``<top>/PKG-INFO`` exactly as stored.

    *filename* is the sdist's filename; ``<top>`` is that filename without ``.tar.gz``, and
    every member must be that one top-level directory or inside it. The archive must be a
    gzip-compressed tar and is read as a stream. It is refused if a member name is empty,
    absolute, has a ``..`` segment or a control character, or appears twice; if a member lies
    inside a symlink, or a symlink or hard link points outside ``<top>``; if a member is a
    device, a FIFO, sparse or of any type but file, directory or link; if ``PKG-INFO`` is
    missing, not a regular file or over :data:`MAX_METADATA_SIZE` bytes; or if checking it
    would read more than :data:`TAR_STREAM_BUDGET` bytes of tar stream or more than
    :data:`MAX_ARCHIVE_MEMBERS` members. When PKG-INFO is metadata 2.4 or later, each
    ``License-File`` it lists must be a member ``<top>/<path>`` that is not a directory; so
    must each of *license_files*, the License-File values of the upload form (pass them when
    the form's metadata version is 2.4 or later, as PyPI checks them).

    :raises InvalidArchive: with a message naming the file, what is wrong and what to do.
    """
    fail = _failer("sdist", filename)
    if not filename.endswith(".tar.gz"):
        fail("an sdist must be a .tar.gz file")
    top = filename.removesuffix(".tar.gz")
    pkg_info_name = f"{top}/PKG-INFO"
    pkg_info: bytes | None = None
    names: set[str] = set()
    directories: set[str] = set()
    symlinks: dict[str, str] = {}
    hardlinks: dict[str, str] = {}
    try:
        with (
            _opened(source) as raw,
            tarfile.open(
                fileobj=raw,
                mode="r|gz",
                tarinfo=_GuardedTarInfo,
                encoding="utf-8",
                errors="surrogateescape",
            ) as archive,
        ):
            while (member := archive.next()) is not None:
                # TarFile keeps every member it has read in .members (not in the typeshed
                # stubs); nothing here needs them once checked, so memory stays flat.
                archive.members.clear()  # type: ignore[attr-defined]
                if len(names) >= MAX_ARCHIVE_MEMBERS:
                    fail(f"it has more than {MAX_ARCHIVE_MEMBERS} members")
                # archive.offset is where the next header starts: the next call to next()
                # decompresses everything up to it, so judge it before making that call.
                if archive.offset > TAR_STREAM_BUDGET:
                    fail(f"it expands to more than {TAR_STREAM_BUDGET} bytes of tar stream")
                _check_tar_member(member, top, fail)
                if member.name in names:
                    fail(f"member {_show(member.name)} appears more than once")
                names.add(member.name)
                if member.isdir():
                    directories.add(member.name)
                if member.issym():
                    symlinks[member.name] = member.linkname
                elif member.islnk():
                    hardlinks[member.name] = member.linkname
                if member.name == pkg_info_name:
                    pkg_info = _read_pkg_info(archive, member, fail)
    except _TarRefusal as exc:
        fail(str(exc))
    except InvalidArchive:
        raise
    except (tarfile.TarError, zlib.error, EOFError, ValueError, RecursionError) as exc:
        fail(f"it is not a valid gzip-compressed tar archive ({exc})")
    _check_tar_links(names, symlinks, hardlinks, top, fail)
    if pkg_info is None:
        fail(f"it has no {_show(pkg_info_name)}")
    _check_license_files(pkg_info, license_files, names - directories, top, "sdist", fail)
    return pkg_info


class _TarRefusal(ValueError):
    """Raised from inside tarfile's header parsing; turned into InvalidArchive by the caller."""


class _GuardedTarInfo(tarfile.TarInfo):
    """TarInfo that refuses, before tarfile acts on them, the headers that would make it read
    unbounded data into memory: oversized pax/GNU long-name payloads and sparse maps.

    The ``_proc_gnusparse_*`` hooks are private to tarfile; a test checks they still exist.
    """

    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> Self:
        """Parse one 512-byte header, refusing sparse members and oversized header payloads."""
        info = super().frombuf(buf, encoding, errors)
        if info.type == tarfile.GNUTYPE_SPARSE:
            raise _TarRefusal(f"member {_show(info.name)} is a sparse file")
        if info.type in _HEADER_TYPES and info.size > _MAX_TAR_HEADER_SIZE:
            raise _TarRefusal(
                f"it has an extended header of {info.size} bytes, over {_MAX_TAR_HEADER_SIZE}"
            )
        return info

    def _proc_gnusparse_00(self, next: tarfile.TarInfo, *args: object) -> None:
        raise _TarRefusal(f"member {_show(next.name)} is a sparse file")

    _proc_gnusparse_01 = _proc_gnusparse_00
    _proc_gnusparse_10 = _proc_gnusparse_00


_HEADER_TYPES = frozenset(
    {
        tarfile.XHDTYPE,
        tarfile.XGLTYPE,
        tarfile.SOLARIS_XHDTYPE,
        tarfile.GNUTYPE_LONGNAME,
        tarfile.GNUTYPE_LONGLINK,
    }
)


def _check_tar_member(member: tarfile.TarInfo, top: str, fail: _Fail) -> None:
    name = member.name
    shown = _show(name)
    if not name:
        fail("it has a member with an empty name")
    if _CONTROL.search(name) or _CONTROL.search(member.linkname):
        fail(f"member {shown} has a control character in its name or link target")
    if name.startswith("/"):
        fail(f"member {shown} has an absolute path")
    if ".." in name.split("/"):
        fail(f"member {shown} has a '..' path segment")
    if name.split("/", 1)[0] != top:
        fail(f"member {shown} is outside the single top-level directory {_show(top)}")
    if member.issparse():
        fail(f"member {shown} is a sparse file")
    if member.ischr() or member.isblk():
        fail(f"member {shown} is a device file")
    if member.isfifo():
        fail(f"member {shown} is a FIFO")
    if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
        fail(f"member {shown} has unsupported type {member.type!r}")
    if name == top and not member.isdir():
        fail(f"its top-level entry {shown} is not a directory")


def _check_tar_links(
    names: set[str],
    symlinks: dict[str, str],
    hardlinks: dict[str, str],
    top: str,
    fail: _Fail,
) -> None:
    """Refuse links that lead outside ``top`` and members stored inside a symlink.

    Done once every member is known, because a link may be defined after its use.
    """
    for name in names:
        parts = name.split("/")
        for depth in range(1, len(parts)):
            if (parent := "/".join(parts[:depth])) in symlinks:
                fail(f"member {_show(name)} is inside the symlink {_show(parent)}")
    for name, target in symlinks.items():
        _check_link_target(name, posixpath.dirname(name), target, symlinks, top, fail)
    for name, target in hardlinks.items():
        _check_link_target(name, "", target, symlinks, top, fail)


def _check_link_target(
    name: str, base: str, target: str, symlinks: dict[str, str], top: str, fail: _Fail
) -> None:
    escape = f"member {_show(name)} links to {_show(target)}, outside {_show(top)}"
    if not target or target.startswith("/"):
        fail(escape)
    resolved: list[str] = []
    for part in [*base.split("/"), *target.split("/")]:
        if part in ("", "."):
            continue
        if part != "..":
            resolved.append(part)
            continue
        # The system resolves ".." after a symlink from the symlink's target, not lexically.
        if "/".join(resolved) in symlinks:
            fail(f"member {_show(name)} links through the symlink {_show('/'.join(resolved))}")
        if not resolved:
            fail(escape)
        resolved.pop()
    if not resolved or resolved[0] != top:
        fail(escape)


def _read_pkg_info(archive: tarfile.TarFile, member: tarfile.TarInfo, fail: _Fail) -> bytes:
    if not member.isreg():
        fail(f"{_show(member.name)} is not a regular file")
    if member.size > MAX_METADATA_SIZE:
        fail(f"{_show(member.name)} is larger than {MAX_METADATA_SIZE} bytes")
    stream = archive.extractfile(member)
    if stream is None:  # pragma: no cover - isreg() members always have a stream
        fail(f"{_show(member.name)} cannot be read")
    data = stream.read(MAX_METADATA_SIZE + 1)
    if len(data) > MAX_METADATA_SIZE:  # pragma: no cover - guarded by the size check above
        fail(f"{_show(member.name)} is larger than {MAX_METADATA_SIZE} bytes")
    return data
