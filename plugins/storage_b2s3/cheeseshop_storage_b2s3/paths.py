"""Storage paths, object keys, digests and the temporary copies both stores are read into."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import re
import tempfile
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

__all__ = [
    "Digests",
    "HashingWriter",
    "check_path",
    "digest_file",
    "is_storage_path",
    "spool",
]

#: What :func:`cheeseshop.storage_path` makes (``h[:2]/h[2:4]/h[4:]/<filename>``), and its
#: ``.metadata`` sibling. Nothing else is ever stored, listed or deleted: keys of other
#: shapes under the prefix belong to someone else.
_PATH = re.compile(r"^[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{60}/([^/\\\x00-\x1f\x7f]{1,255})$")


def is_storage_path(path: str) -> bool:
    """Whether ``path`` has the shape of a storage path."""
    match = _PATH.match(path)
    return match is not None and match.group(1) not in (".", "..")


def check_path(path: str) -> str:
    """``path`` itself, or ``FileNotFoundError`` when it is no storage path.

    Object stores have no directories to escape, but an HTTP client may resolve ``..``
    segments in a URL, reaching another key: such paths never get that far.
    """
    if not is_storage_path(path):
        raise FileNotFoundError(f"not a storage path: {path!r}")
    return path


@dataclasses.dataclass(frozen=True)
class Digests:
    """Size and digests of a file's bytes, and the SHA-256 of each multipart part."""

    size: int
    sha256: str
    sha1: str
    parts: tuple[bytes, ...] = ()

    @property
    def sha256_base64(self) -> str:
        """The SHA-256 as S3's ``x-amz-checksum-sha256`` writes it."""
        return base64.b64encode(bytes.fromhex(self.sha256)).decode()

    def s3_checksums(self) -> set[str]:
        """What S3 may report as the object's ChecksumSHA256.

        One PUT: the SHA-256 of the bytes. A multipart upload: the SHA-256 of the parts'
        SHA-256s, then ``-<part count>`` (S3's composite checksum; some stores leave the
        count out); some S3-compatible stores report the whole object's SHA-256 instead,
        which is just as good.
        """
        found = {self.sha256_base64}
        if self.parts:
            composite = base64.b64encode(hashlib.sha256(b"".join(self.parts)).digest()).decode()
            found.update({composite, f"{composite}-{len(self.parts)}"})
        return found


def digest_file(source: Path, *, part_size: int | None = None) -> Digests:
    """One read of ``source``: size, SHA-256, SHA-1 and (with ``part_size``) each part's SHA-256."""
    sha256, sha1 = hashlib.sha256(), hashlib.sha1()
    parts: list[bytes] = []
    size = 0
    chunk_size = 1024 * 1024 if part_size is None else min(part_size, 1024 * 1024)
    part = hashlib.sha256()
    in_part = 0
    with source.open("rb") as handle:
        while chunk := handle.read(chunk_size):
            size += len(chunk)
            sha256.update(chunk)
            sha1.update(chunk)
            if part_size is None:
                continue
            # A chunk never straddles two parts: chunk_size divides nothing in general,
            # so split it where the part ends.
            while chunk:
                take = chunk[: part_size - in_part]
                part.update(take)
                in_part += len(take)
                chunk = chunk[len(take) :]
                if in_part == part_size:
                    parts.append(part.digest())
                    part, in_part = hashlib.sha256(), 0
    if part_size is not None and (in_part or not parts):
        parts.append(part.digest())
    return Digests(size, sha256.hexdigest(), sha1.hexdigest(), tuple(parts))


class HashingWriter:
    """A write-only file that hashes what passes through it into ``target`` (or nowhere)."""

    def __init__(self, target: IO[bytes] | None = None) -> None:
        self.target = target
        self.size = 0
        self._sha256 = hashlib.sha256()
        self._sha1 = hashlib.sha1()

    def write(self, data: bytes) -> int:
        """Hash ``data`` and write it on."""
        self._sha256.update(data)
        self._sha1.update(data)
        self.size += len(data)
        if self.target is not None:
            self.target.write(data)
        return len(data)

    def tell(self) -> int:
        """Bytes written so far."""
        return self.size

    def seekable(self) -> bool:
        """No: readers must write in order (b2sdk then picks its sequential download)."""
        return False

    def flush(self) -> None:
        """Flush the target."""
        if self.target is not None:
            self.target.flush()

    def digests(self) -> Digests:
        """Size and digests of everything written."""
        return Digests(self.size, self._sha256.hexdigest(), self._sha1.hexdigest())


def spool(memory_bytes: int, directory: Path | None) -> BinaryIO:
    """A temporary file held in memory up to ``memory_bytes``, then on disk in ``directory``."""
    where = None if directory is None else str(directory)
    if memory_bytes <= 0:
        # SpooledTemporaryFile reads a max_size of 0 as "no limit": straight to disk instead.
        return cast(BinaryIO, tempfile.TemporaryFile(dir=where))
    spooled: Any = tempfile.SpooledTemporaryFile(max_size=memory_bytes, dir=where)
    return cast(BinaryIO, spooled)
