"""Build malformed archives on purpose: zips byte by byte, tars member by member.

:mod:`cheeseshop.testing.dists` builds valid distributions; this module takes them apart and
lays them out again with exactly one thing wrong, so a test can check that the index refuses
it. Zips are written field by field with :mod:`struct` (:func:`raw_zip`), which is the only
way to get a local header that disagrees with the central directory, an entry that is on one
side only, or a second central directory. Tars go through :mod:`tarfile`, which writes any
member type and name it is given (``../x``, devices, sparse headers, empty names).

Everything is deterministic: the same arguments give the same bytes.
"""

from __future__ import annotations

import gzip
import io
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from cheeseshop.testing.dists import Dist, _record

__all__ = [
    "FLAG_UTF8",
    "RawZip",
    "TarMember",
    "ZipEntry",
    "deflate",
    "raw_zip",
    "sdist_bomb",
    "sdist_from",
    "sdist_members",
    "tar_bytes",
    "tar_directory",
    "tar_hardlink",
    "tar_member",
    "tar_symlink",
    "wheel_from",
    "wheel_members",
    "with_record",
    "zip_entries",
]

FLAG_UTF8 = 0x0800
"""General-purpose flag bit 11: the entry's name is UTF-8 (else cp437)."""

_DOS_DATE = 0x0021  # 1980-01-01
_TAR_MTIME = 1_700_000_000


# --- zips -----------------------------------------------------------------------------------


@dataclass
class ZipEntry:
    """One zip entry as :func:`raw_zip` writes it; every field may be made to lie.

    By default the entry is consistent: ``content`` is stored (or deflated, for
    ``method=ZIP_DEFLATED``) and both headers give its true CRC and sizes. The ``local_*``
    fields override what the local header alone says; ``raw`` replaces the bytes written as
    the entry's data; ``offset`` is what the central directory says about where the local
    header is. ``local=False`` leaves the entry out of the file's body (the central directory
    still lists it, at ``offset`` or where it would have been); ``central=False`` leaves it
    out of the central directory (its local header and data are still written).
    """

    name: bytes
    content: bytes = b""
    method: int = zipfile.ZIP_STORED
    flags: int = FLAG_UTF8
    raw: bytes | None = None
    uncompressed: int | None = None
    crc: int | None = None
    local_name: bytes | None = None
    local_crc: int | None = None
    local_compressed: int | None = None
    local_uncompressed: int | None = None
    offset: int | None = None
    local: bool = True
    central: bool = True

    @property
    def data(self) -> bytes:
        """The bytes written after the local header."""
        if self.raw is not None:
            return self.raw
        return deflate(self.content) if self.method == zipfile.ZIP_DEFLATED else self.content


@dataclass
class RawZip:
    """A whole zip for :func:`raw_zip`: entries, end records and what follows them.

    ``extra_count`` is added to the entry counts the end record gives; ``zip64_end`` writes
    zip64 end records (with a classic one pointing at them); ``comment`` is the archive
    comment; ``trailer`` is written after the end record, where nothing belongs.
    :func:`raw_zip` fills ``written_offsets`` with where each entry's local header went.
    """

    entries: list[ZipEntry]
    zip64_end: bool = False
    comment: bytes = b""
    extra_count: int = 0
    trailer: bytes = b""
    written_offsets: list[int] = field(default_factory=list)


def deflate(data: bytes, level: int = 6) -> bytes:
    """Raw deflate (no zlib header), as a zip entry stores it."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush()


def raw_zip(spec: RawZip) -> bytes:
    """A zip written field by field, so each test can get exactly one thing wrong."""
    body = bytearray()
    central = bytearray()
    listed = 0
    spec.written_offsets.clear()
    for entry in spec.entries:
        offset = len(body)
        spec.written_offsets.append(offset)
        data = entry.data
        uncompressed = len(entry.content) if entry.uncompressed is None else entry.uncompressed
        crc = zlib.crc32(entry.content) if entry.crc is None else entry.crc
        if entry.local:
            local_name = entry.name if entry.local_name is None else entry.local_name
            body += struct.pack(
                "<4s5H3L2H",
                b"PK\x03\x04", 20, entry.flags, entry.method, 0, _DOS_DATE,
                crc if entry.local_crc is None else entry.local_crc,
                len(data) if entry.local_compressed is None else entry.local_compressed,
                uncompressed if entry.local_uncompressed is None else entry.local_uncompressed,
                len(local_name), 0,
            )  # fmt: skip
            body += local_name + data
        if entry.central:
            listed += 1
            central += struct.pack(
                "<4s6H3L5H2L",
                b"PK\x01\x02", 20, 20, entry.flags, entry.method, 0, _DOS_DATE,
                crc, len(data), uncompressed, len(entry.name), 0, 0, 0, 0, 0,
                offset if entry.offset is None else entry.offset,
            )  # fmt: skip
            central += entry.name
    count = listed + spec.extra_count
    out = body + central
    if spec.zip64_end:
        eocd64_at = len(out)
        out += struct.pack(
            "<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, len(central), len(body)
        )
        out += struct.pack("<4sLQL", b"PK\x06\x07", 0, eocd64_at, 1)
        out += struct.pack(
            "<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF,
            len(spec.comment),
        )  # fmt: skip
    else:
        out += struct.pack(
            "<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, len(central), len(body),
            len(spec.comment),
        )  # fmt: skip
    return bytes(out + spec.comment + spec.trailer)


def zip_entries(
    members: Mapping[str, bytes], *, method: int = zipfile.ZIP_DEFLATED
) -> list[ZipEntry]:
    """One consistent :class:`ZipEntry` per member (UTF-8 names), in the mapping's order."""
    return [ZipEntry(name.encode("utf-8"), data, method) for name, data in members.items()]


def wheel_members(dist: Dist) -> dict[str, bytes]:
    """The members of a built wheel, name to content, in the archive's order."""
    with zipfile.ZipFile(io.BytesIO(dist.content)) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def with_record(members: Mapping[str, bytes]) -> dict[str, bytes]:
    """``members`` with its ``*.dist-info/RECORD`` rewritten to describe the others truly.

    The RECORD member keeps its place if there is one, else is added last. Members of
    several ``.dist-info`` directories get the first one's RECORD.
    """
    records = [name for name in members if name.endswith(".dist-info/RECORD")]
    if records:
        record = records[0]
    else:
        tops = [name.split("/", 1)[0] for name in members if ".dist-info/" in name]
        if not tops:
            raise ValueError("with_record needs a member inside a .dist-info directory")
        record = f"{tops[0]}/RECORD"
    rows = [(name, data) for name, data in members.items() if name != record]
    result = dict(members)
    result[record] = _record(rows, record)
    return result


def wheel_from(
    dist: Dist,
    members: Mapping[str, bytes] | Sequence[ZipEntry] | RawZip,
    *,
    filename: str | None = None,
) -> Dist:
    """A :class:`Dist` named like ``dist`` (or ``filename``) whose bytes are ``members``
    laid out by :func:`raw_zip`; its ``metadata`` stays ``dist``'s, so the upload form built
    from it (:func:`cheeseshop.testing.upload.upload_fields`) describes the original wheel."""
    if isinstance(members, RawZip):
        spec = members
    elif isinstance(members, Mapping):
        spec = RawZip(zip_entries(members))
    else:
        spec = RawZip(list(members))
    return replace(dist, filename=filename or dist.filename, content=raw_zip(spec))


# --- tars -----------------------------------------------------------------------------------

TarMember = tuple[tarfile.TarInfo, bytes]
"""A tar header and the member's content (empty for anything but a regular file)."""


def tar_member(name: str, data: bytes = b"", **attributes: object) -> TarMember:
    """A regular file, unless ``attributes`` (TarInfo fields: ``type``, ``linkname``, ...)
    say otherwise."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = _TAR_MTIME
    info.mode = 0o644
    for key, value in attributes.items():
        setattr(info, key, value)
    return info, data


def tar_directory(name: str) -> TarMember:
    """A directory member."""
    return tar_member(name, type=tarfile.DIRTYPE, mode=0o755)


def tar_symlink(name: str, target: str) -> TarMember:
    """A symbolic link ``name`` -> ``target``."""
    return tar_member(name, type=tarfile.SYMTYPE, linkname=target)


def tar_hardlink(name: str, target: str) -> TarMember:
    """A hard link ``name`` to the member ``target`` (a path from the archive's root)."""
    return tar_member(name, type=tarfile.LNKTYPE, linkname=target)


def tar_bytes(
    members: Iterable[TarMember],
    *,
    format: int = tarfile.PAX_FORMAT,
    pax_headers: Mapping[str, str] | None = None,
    compress: bool = True,
) -> bytes:
    """A tar of ``members`` in order, gzip-compressed (mtime 0, no name) unless ``compress``
    is false."""
    buffer = io.BytesIO()
    with tarfile.open(
        fileobj=buffer, mode="w", format=format, pax_headers=dict(pax_headers or {})
    ) as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if info.isreg() else None)
    if not compress:
        return buffer.getvalue()
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0) as compressed:
        compressed.write(buffer.getvalue())
    return out.getvalue()


def sdist_members(dist: Dist) -> list[TarMember]:
    """The members of a built sdist, headers and contents, in the archive's order."""
    members: list[TarMember] = []
    with tarfile.open(fileobj=io.BytesIO(dist.content), mode="r:gz") as archive:
        for info in archive.getmembers():
            stream = archive.extractfile(info) if info.isreg() else None
            members.append((info, stream.read() if stream is not None else b""))
    return members


def sdist_from(
    dist: Dist,
    members: Iterable[TarMember],
    *,
    filename: str | None = None,
    format: int = tarfile.PAX_FORMAT,
) -> Dist:
    """A :class:`Dist` named like ``dist`` (or ``filename``) whose bytes are the gzipped tar
    of ``members``; its ``metadata`` stays ``dist``'s."""
    return replace(
        dist, filename=filename or dist.filename, content=tar_bytes(members, format=format)
    )


def sdist_bomb(dist: Dist, zeros: int) -> Dist:
    """``dist`` (an sdist) plus a member of ``zeros`` bytes of zeros (a multiple of 1 MiB)
    named ``<stem>/zeros.bin``: about ``zeros / 1000`` bytes of .tar.gz.

    Built without ever holding the zeros: deflate blocks ended by a full flush stand alone,
    so one compressed MiB of zeros is repeated (and the CRC computed a MiB at a time).
    """
    mib = 1024 * 1024
    if zeros % mib:
        raise ValueError("zeros must be a multiple of 1 MiB")
    block = bytes(mib)
    head = tar_bytes(sdist_members(dist), compress=False)[: -2 * tarfile.BLOCKSIZE]
    head = head.rstrip(b"\0")  # the end-of-archive blocks and tarfile's record padding
    head += b"\0" * (-len(head) % tarfile.BLOCKSIZE)
    header = tarfile.TarInfo(f"{dist.filename.removesuffix('.tar.gz')}/zeros.bin")
    header.size = zeros
    head += header.tobuf(tarfile.GNU_FORMAT)
    tail = b"\0" * (2 * tarfile.BLOCKSIZE)  # zeros is a multiple of the block size

    def deflated(data: bytes, mode: int) -> bytes:
        compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
        return compressor.compress(data) + compressor.flush(mode)

    count = zeros // mib
    crc = zlib.crc32(head)
    for _ in range(count):
        crc = zlib.crc32(block, crc)
    crc = zlib.crc32(tail, crc)
    size = len(head) + zeros + len(tail)
    content = b"".join(
        [
            b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff",
            deflated(head, zlib.Z_FULL_FLUSH),
            deflated(block, zlib.Z_FULL_FLUSH) * count,
            deflated(tail, zlib.Z_FINISH),
            struct.pack("<2L", crc, size & 0xFFFFFFFF),
        ]
    )
    return replace(dist, content=content)
