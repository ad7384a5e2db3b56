"""The storage the plugin provides: S3 as the archive, B2 as the cache.

- ``put`` writes to S3 only, and returns once S3's checksum of the stored object matches
  the bytes (the upload then commits). B2 is filled after commit: :meth:`B2S3Storage.cache_upload`
  (the ``cheeseshop_file_uploaded`` delivery) and :meth:`B2S3Storage.reconcile` (periodic).
- ``open`` reads B2 first, under a deadline, into a temporary copy whose sha256 is checked
  before it is handed out; a missing, failing, slow or wrong B2 copy is passed over for
  S3's, which is checked the same way. No copy matching: :class:`cheeseshop.StorageUnavailable`.
- ``size``, ``exists``: S3's answer (the authority); B2's only while S3 is unreachable.
- ``delete``: every B2 version first, then S3, so a failure leaves the file listed by
  ``iter_paths`` (S3's listing) for the orphan collector's next run.
- ``url``: the public files URL (the CDN in front of B2), when configured.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from b2sdk.v2 import B2Api

from cheeseshop import Settings, StorageUnavailable, StoredFileInfo
from cheeseshop.db.models import utcnow
from cheeseshop.storage import metadata_path

from cheeseshop_storage_b2s3.b2 import B2Cache, B2Copy, B2Unavailable, connect_b2, within_deadline
from cheeseshop_storage_b2s3.index import CacheIndex
from cheeseshop_storage_b2s3.paths import HashingWriter, check_path, is_storage_path, spool
from cheeseshop_storage_b2s3.s3 import S3Archive, make_s3_client
from cheeseshop_storage_b2s3.settings import B2S3Settings

__all__ = ["NAME", "B2S3Storage", "ReconcileReport", "storage_for", "use_b2_api_factory"]

log = logging.getLogger(__name__)

#: The entry-point name, which is also the settings section's name.
NAME = "storage_b2s3"
#: Object metadata copied from S3 to B2 with each file.
_DESCRIPTION_KEYS = ("project", "version", "packagetype")
#: A reconcile pass stops after this many failures in a row: the service is down, and the
#: next run (or the outbox's retries) will do the work.
_FAILURES_IN_A_ROW = 5


@dataclasses.dataclass
class ReconcileReport:
    """What one reconcile run did."""

    #: Files recorded as not (or otherwise) cached that were copied to B2.
    copied: int = 0
    #: Such files B2 already held intact: only the record was written.
    recorded: int = 0
    #: Cached copies checked against B2 and found intact.
    verified: int = 0
    #: Cached copies found missing or wrong in B2, and copied again.
    repaired: int = 0
    #: Cache records of files that no longer exist, dropped.
    forgotten: int = 0
    #: Copies that failed (left for the next run).
    failed: int = 0


class B2S3Storage:
    """:class:`cheeseshop.FileStorage` over an S3 archive and a B2 cache (see the module)."""

    def __init__(
        self, s3: S3Archive, b2: B2Cache, index: CacheIndex, section: B2S3Settings
    ) -> None:
        self.s3 = s3
        self.b2 = b2
        self.index = index
        self.section = section

    @classmethod
    def from_settings(
        cls, settings: Settings, *, b2_api_factory: Callable[[], B2Api] | None = None
    ) -> B2S3Storage:
        """The storage the ``[storage_b2s3]`` section describes, on the index's database.

        Nothing is contacted yet: B2 is authorized on first use, so the index starts (and
        serves from S3) while B2 is down. ``b2_api_factory`` replaces that authorization
        (tests give a simulator); so does :func:`use_b2_api_factory`.
        """
        section: B2S3Settings = settings.section(NAME)
        factory = b2_api_factory or _factory_override or (lambda: connect_b2(section))
        return cls(
            S3Archive(make_s3_client(section), section),
            B2Cache(factory, section),
            CacheIndex(settings.resolved_database_url),
            section,
        )

    def __repr__(self) -> str:
        return (
            f"B2S3Storage(s3={self.s3.bucket!r}/{self.s3.prefix!r}, "
            f"b2={self.b2.bucket_name!r}/{self.b2.prefix!r})"
        )

    # -- the FileStorage protocol --------------------------------------------------------

    def put(self, path: str, source: Path, *, info: StoredFileInfo | None = None) -> None:
        """Archive ``source`` in S3 under ``path``; returns once S3 holds it intact."""
        if not is_storage_path(path):
            raise ValueError(f"not a storage path: {path!r}")
        self.s3.put(path, source, info)

    def open(self, path: str, *, sha256: str | None = None) -> BinaryIO:
        """A checked copy of the file: B2's if it is good and quick, else S3's.

        Without ``sha256`` each copy is checked against the sha256 it was stored with
        (its object metadata).
        """
        check_path(path)
        if not self.b2.resting:
            try:
                found = self._from_b2(path, sha256)
            except B2Unavailable as error:
                self.b2.failed(error)
            else:
                self.b2.recovered()
                if found is not None:
                    return found
        return self._from_s3(path, sha256)

    def _spool(self) -> BinaryIO:
        return spool(self.section.spool_memory_bytes, self.section.temp_dir)

    def _from_b2(self, path: str, sha256: str | None) -> BinaryIO | None:
        """B2's copy, checked; None when B2 has none or a bad one; B2Unavailable on failure.

        The deadline bounds the wait for B2's answer; the bytes then stream at B2's pace
        (each read bounded by ``timeout_seconds``), so a large file is not cut short.
        """
        download = within_deadline(
            self.b2.deadline, lambda: self.b2.open_download(path), name="download"
        )
        if download is None:
            log.info("B2 has no copy of %s yet; serving it from S3", path)
            return None
        target = self._spool()
        try:
            writer = HashingWriter(target)
            download.save_into(writer)
            expected = sha256 or download.copy.sha256
            got = writer.digests().sha256
            if expected is None or got != expected:
                log.warning(
                    "B2's copy of %s is bad (sha256 %s, recorded %s): serving S3's; the "
                    "reconcile replaces it",
                    path, got, expected,
                )  # fmt: skip
                target.close()
                return None
            target.seek(0)
            return target
        except BaseException:
            target.close()
            raise

    def _from_s3(self, path: str, sha256: str | None) -> BinaryIO:
        target = self._spool()
        try:
            writer = HashingWriter(target)
            metadata = self.s3.read_into(path, writer)
            expected = sha256 or metadata.get("sha256")
            got = writer.digests().sha256
            if expected is not None and got != expected:
                log.error(
                    "the S3 archive's copy of %s is bad (sha256 %s, recorded %s): not served",
                    path, got, expected,
                )  # fmt: skip
                raise StorageUnavailable(f"no stored copy of {path} matches its recorded sha256")
            target.seek(0)
            return target
        except BaseException:
            target.close()
            raise

    def size(self, path: str) -> int:
        """S3's size of the file; B2's only while S3 cannot be reached."""
        check_path(path)
        try:
            return self.s3.head(path).size
        except StorageUnavailable as down:
            copy = self._b2_lookup(path)
            if copy is None:
                raise down from None
            return copy.size

    def exists(self, path: str) -> bool:
        """Whether S3 holds the file (B2 is asked only while S3 cannot be reached)."""
        if not is_storage_path(path):
            return False
        try:
            self.s3.head(path)
        except FileNotFoundError:
            return False
        except StorageUnavailable as down:
            if self._b2_lookup(path) is None:
                raise down from None
        return True

    def _b2_lookup(self, path: str) -> B2Copy | None:
        """B2's copy of ``path`` within the read deadline; None if none, or B2 is failing."""
        if self.b2.resting:
            return None
        try:
            copy = within_deadline(self.b2.deadline, lambda: self.b2.describe(path), name="lookup")
        except B2Unavailable as error:
            self.b2.failed(error)
            return None
        self.b2.recovered()
        return copy

    def delete(self, path: str) -> None:
        """Delete every B2 version, then the S3 object; no error when neither exists."""
        if not is_storage_path(path):
            return  # nothing this storage stores can be there
        try:
            self.b2.delete(path)
        except B2Unavailable as error:
            raise StorageUnavailable(
                f"could not delete {path} from the B2 cache: {error}"
            ) from None
        self.s3.delete(path)

    def url(self, path: str) -> str | None:
        """``files_url/<path>`` when a files URL is configured, else None (the core streams)."""
        if self.section.files_url is None:
            return None
        return f"{self.section.files_url}/{path}"

    def iter_paths(self) -> Iterator[tuple[str, float]]:
        """Every storage path in the S3 archive, with its LastModified.

        The B2 cache holds nothing the archive lacks (``delete`` clears B2 first), so the
        archive's listing is the storage's. An interrupted multipart upload is no object
        and is not listed: S3 keeps its parts until the upload is aborted, which ``put``
        does itself, and the bucket's AbortIncompleteMultipartUpload rule does for a
        killed process (see the README).
        """
        return self.s3.iter_paths()

    # -- the cache ---------------------------------------------------------------------

    def cache_upload(self, path: str) -> None:
        """Copy an uploaded file and its ``.metadata`` to B2 and record them as cached.

        The ``cheeseshop_file_uploaded`` delivery. The digests come from the files table
        (the record, not the event). Idempotent: a copy B2 already holds intact is only
        recorded. A file no longer recorded (deleted since) is skipped, and one deleted
        while it was being copied has its copies removed again.
        """
        recorded = self.index.recorded(path)
        if recorded is None:
            log.info("%s is no longer recorded; nothing to cache", path)
            return
        sha256, metadata_sha256 = recorded
        copies = {path: sha256}
        if metadata_sha256 is not None:
            copies[metadata_path(path)] = metadata_sha256
        for copied, digest in copies.items():
            self.copy_to_cache(copied, digest)
        if self.index.recorded(path) is None:
            # Deleted while the copies were made, and perhaps collected already: the
            # collector lists the archive only, so they would stay on B2 for good.
            for copied in copies:
                self._drop_copy(copied)

    def copy_to_cache(self, path: str, sha256: str) -> bool:
        """Make B2 hold ``path`` as the bytes recorded with ``sha256``, and record that.

        True when bytes were copied, False when B2 already held them. Raises
        ``FileNotFoundError`` when the archive lacks the file and
        :class:`StorageUnavailable` when a store fails or S3's copy does not match
        ``sha256`` (which is then not copied).
        """
        check_path(path)
        archived = self.s3.head(path)
        sha1 = archived.metadata.get("sha1")
        try:
            current = self.b2.describe(path)
        except B2Unavailable as error:
            raise StorageUnavailable(str(error)) from None
        if (
            current is not None
            and sha1 is not None
            and archived.metadata.get("sha256") == sha256
            and current.matches(size=archived.size, sha1=sha1, sha256=sha256)
        ):
            self.index.record(path, sha256=sha256, sha1=sha1, size=archived.size)
            return False
        with tempfile.NamedTemporaryFile(
            dir=self.section.temp_dir, prefix="b2s3-copy-", suffix=".part"
        ) as local:
            writer = HashingWriter(local)  # type: ignore[arg-type]
            metadata = self.s3.read_into(path, writer)
            local.flush()
            digests = writer.digests()
            if digests.sha256 != sha256:
                log.error(
                    "the S3 archive's copy of %s is bad (sha256 %s, recorded %s): not cached",
                    path, digests.sha256, sha256,
                )  # fmt: skip
                raise StorageUnavailable(f"the archived copy of {path} does not match its sha256")
            description = {key: metadata[key] for key in _DESCRIPTION_KEYS if key in metadata}
            try:
                stored = self.b2.upload(path, Path(local.name), digests=digests, info=description)
            except B2Unavailable as error:
                raise StorageUnavailable(str(error)) from None
        if stored.size != digests.size or stored.sha256 != sha256 or (
            stored.sha1 is not None and stored.sha1 != digests.sha1
        ):
            raise StorageUnavailable(f"B2 did not store {path} intact")
        try:
            self.b2.delete(path, older_than=stored)
        except B2Unavailable as error:
            log.warning("could not delete older B2 versions of %s: %s", path, error)
        self.index.record(path, sha256=sha256, sha1=digests.sha1, size=digests.size)
        log.info("cached %s in B2 (%d bytes)", path, digests.size)
        return True

    def _drop_copy(self, path: str) -> None:
        """Delete B2's copy of a file that no longer exists, and forget its record."""
        try:
            self.b2.delete(path)
        except B2Unavailable as error:
            # Kept on record: the next reconcile's checks try again.
            log.warning("could not delete B2's copy of deleted %s: %s", path, error)
            return
        self.index.forget(path)
        log.info("deleted B2's copy of %s, whose file was deleted", path)

    def reconcile(self, *, now: datetime | None = None) -> ReconcileReport:
        """Copy what is not cached yet, then check cached copies against B2; in batches.

        First every file (and ``.metadata``) of the files table that the cache table does
        not record with the same sha256, by file id. Then up to
        ``reconcile_verify_per_run`` cache records, those checked longest ago first: each
        copy's size, SHA-1 and sha256 as B2 reports them (no download) against the record;
        a missing or different copy is copied again, and the record of a file that no
        longer exists is dropped, with its B2 copy. Either pass stops after a few failures
        in a row (B2 or S3 down): the next run carries on. Idempotent, and safe beside the
        deliveries.
        """
        report = ReconcileReport()
        section = self.section
        failures = 0
        after = 0
        while failures < _FAILURES_IN_A_ROW:
            batch = self.index.pending(after_id=after, limit=section.reconcile_batch_size)
            if not batch:
                break
            for item in batch:
                try:
                    if self.copy_to_cache(item.path, item.sha256):
                        report.copied += 1
                    else:
                        report.recorded += 1
                    failures = 0
                except OSError as error:
                    report.failed += 1
                    failures += 1
                    log.warning("reconcile: could not cache %s: %s", item.path, error)
                    if failures >= _FAILURES_IN_A_ROW:
                        break
            after = max(item.file_id for item in batch)

        started = now or utcnow()
        budget = section.reconcile_verify_per_run
        seen: set[str] = set()
        failures = 0
        while budget > 0 and failures < _FAILURES_IN_A_ROW:
            rows = [
                row
                for row in self.index.least_recently_checked(
                    min(section.reconcile_batch_size, budget) + len(seen), before=started
                )
                if row.path not in seen
            ][:budget]
            if not rows:
                break
            good: list[str] = []
            for row in rows:
                seen.add(row.path)
                budget -= 1
                try:
                    copy = self.b2.describe(row.path)
                except B2Unavailable as error:
                    report.failed += 1
                    failures = _FAILURES_IN_A_ROW
                    log.warning("reconcile: B2 is failing, checks stop for this run: %s", error)
                    break
                recorded = self.index.recorded(row.path)
                if recorded is None:
                    # Its file was deleted: a copy the collector never saw goes too.
                    if copy is None:
                        self.index.forget(row.path)
                    else:
                        self._drop_copy(row.path)
                    report.forgotten += 1
                    continue
                if copy is not None and copy.matches(size=row.size, sha1=row.sha1, sha256=row.sha256):
                    good.append(row.path)
                    continue
                log.warning(
                    "reconcile: B2's copy of %s is %s; copying it again",
                    row.path, "missing" if copy is None else "not the recorded bytes",
                )  # fmt: skip
                try:
                    self.copy_to_cache(row.path, recorded[0])
                    report.repaired += 1
                    failures = 0
                except OSError as error:
                    report.failed += 1
                    failures += 1
                    log.warning("reconcile: could not repair %s: %s", row.path, error)
                    if failures >= _FAILURES_IN_A_ROW:
                        break
            self.index.checked(good)
            report.verified += len(good)
        if any(dataclasses.astuple(report)):
            log.info("reconcile: %s", report)
        return report


# -- one storage per settings, for the hooks ----------------------------------------------

_factory_override: Callable[[], B2Api] | None = None
_instances: dict[int, tuple[Settings, B2S3Storage]] = {}
_instances_lock = threading.Lock()
#: Storages remembered at most (a process normally has one settings object per thread).
_REMEMBERED = 32


def storage_for(settings: Settings) -> B2S3Storage:
    """The storage of ``settings``: the one the storage hook returned for them, if any.

    Event hooks and periodic tasks are handed the settings only; this gives them the
    very object the core stores through (its B2 health, its clients).
    """
    with _instances_lock:
        known = _instances.get(id(settings))
        if known is not None and known[0] is settings:
            return known[1]
        storage = B2S3Storage.from_settings(settings)
        if len(_instances) >= _REMEMBERED:
            _instances.pop(next(iter(_instances)))
        _instances[id(settings)] = (settings, storage)
        return storage


class use_b2_api_factory:
    """``with use_b2_api_factory(factory):`` storages made meanwhile get B2 from ``factory``.

    The seam tests use to put b2sdk's simulator behind storages built from settings by
    the plugin's hooks. Not for production: the factory replaces the authorization with
    ``b2_key_id`` and ``b2_application_key``.
    """

    def __init__(self, factory: Callable[[], B2Api]) -> None:
        self.factory = factory
        self._previous: Callable[[], B2Api] | None = None

    def __enter__(self) -> Callable[[], B2Api]:
        global _factory_override
        self._previous, _factory_override = _factory_override, self.factory
        with _instances_lock:
            _instances.clear()
        return self.factory

    def __exit__(self, *_: object) -> None:
        global _factory_override
        _factory_override = self._previous
        with _instances_lock:
            _instances.clear()
