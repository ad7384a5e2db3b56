"""The cache: Backblaze B2 through b2sdk (its stable ``v2`` interface).

Filled after commit by the cache sync; read first by downloads. Reads in the request path
run under a deadline (``b2_read_deadline_seconds``) and, after a failure, B2 is left alone
for ``b2_retry_seconds`` (downloads go straight to S3 meanwhile), so a B2 outage costs a
download at most one deadline, and most none.

b2sdk's errors end here: a missing file is ``None`` from the methods below, and every
other failure :class:`B2Unavailable`, which the storage turns into a fallback to S3
(reads) or :class:`cheeseshop.StorageUnavailable` (writes, deletions).

How the API object is made is a seam: :class:`B2Cache` takes a factory. In production
:func:`connect_b2` authorizes a real :class:`b2sdk.v2.B2Api`; the tests hand in one built
on b2sdk's ``RawSimulator`` (see :mod:`cheeseshop_storage_b2s3.testing`).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import requests
from b2sdk.v2 import B2Api, B2HttpApiConfig, Bucket, InMemoryAccountInfo
from b2sdk.v2.exception import B2Error, FileNotPresent

from cheeseshop_storage_b2s3.paths import Digests, HashingWriter
from cheeseshop_storage_b2s3.settings import B2S3Settings

__all__ = ["B2Cache", "B2Copy", "B2Download", "B2Unavailable", "connect_b2", "within_deadline"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: What B2 serves files with; the CDN in front of it keeps them as long as it likes
#: (a path names its bytes for good).
CACHE_CONTROL = "max-age=31536000, public, immutable"


class B2Unavailable(Exception):
    """B2 failed, timed out, or refused us; the message says which call and why."""


@dataclasses.dataclass(frozen=True)
class B2Copy:
    """One stored version of a file in B2: enough to tell whether it is the right bytes."""

    file_id: str
    size: int
    sha1: str | None
    info: Mapping[str, str]
    upload_timestamp: int

    @property
    def sha256(self) -> str | None:
        """The sha256 the copy was uploaded with (its file info), if any."""
        return self.info.get("sha256")

    def matches(self, *, size: int, sha1: str, sha256: str) -> bool:
        """Whether this copy is the file with these size and digests."""
        return self.size == size and self.sha1 == sha1 and self.sha256 == sha256


def _content_type(path: str) -> str:
    if path.endswith(".metadata"):
        return "text/plain; charset=utf-8"
    return "application/octet-stream"


def _copy_of(version: Any) -> B2Copy:
    """A :class:`B2Copy` of b2sdk's FileVersion or DownloadVersion."""
    return B2Copy(
        file_id=str(version.id_),
        size=int(version.size),
        sha1=version.get_content_sha1(),
        info=dict(version.file_info or {}),
        upload_timestamp=int(version.upload_timestamp or 0),
    )


class B2Download:
    """A download B2 has begun to answer: the file's description, then its bytes."""

    def __init__(self, path: str, downloaded: Any, copy: B2Copy) -> None:
        self.path = path
        self.copy = copy
        self._downloaded = downloaded

    def save_into(self, writer: HashingWriter) -> None:
        """Write the bytes into ``writer`` (b2sdk checks length and SHA-1); then close."""
        try:
            self._downloaded.save(writer, allow_seeking=False)
        except Exception as error:  # b2sdk's TruncatedOutput, ChecksumMismatch, a reset
            raise B2Unavailable(f"B2 download of {self.path}: {error!r}") from None
        finally:
            self.close()

    def close(self) -> None:
        """Release the HTTP response, if there is one."""
        response = getattr(self._downloaded, "response", None)
        if response is not None:
            response.close()


class _TimeoutSession(requests.Session):
    """A requests session whose every request is bounded by the plugin's timeout.

    b2sdk's own time-outs are minutes long (it is built for backups); a cache that makes
    downloads wait that long is worse than none.
    """

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._timeout = timeout

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        """Send with connect and read time-outs no longer than the plugin's."""
        given = kwargs.get("timeout")
        if isinstance(given, tuple):
            kwargs["timeout"] = tuple(min(t, self._timeout) if t else self._timeout for t in given)
        else:
            kwargs["timeout"] = min(given, self._timeout) if given else self._timeout
        return super().request(*args, **kwargs)


def connect_b2(section: B2S3Settings) -> B2Api:
    """A :class:`B2Api` authorized with the section's application key (blocking: one call)."""
    api = B2Api(
        InMemoryAccountInfo(),
        api_config=B2HttpApiConfig(
            http_session_factory=lambda: _TimeoutSession(section.timeout_seconds),
            user_agent_append="cheeseshop-storage-b2s3",
        ),
    )
    api.authorize_account(
        section.b2_realm, section.b2_key_id, section.b2_application_key.get_secret_value()
    )
    return api


def within_deadline(seconds: float, work: Callable[[], T], *, name: str) -> T:
    """``work()`` in a thread of its own; :class:`B2Unavailable` when it takes over ``seconds``.

    The thread is a daemon and is left to finish alone (b2sdk calls cannot be cancelled);
    what it returns after the deadline is closed if it can be. The caller's circuit
    breaker keeps such leftovers rare.
    """
    done = threading.Event()
    outcome: dict[str, Any] = {}
    lock = threading.Lock()

    def run() -> None:
        try:
            value = work()
        except BaseException as error:  # handed to the caller, in its thread
            with lock:
                outcome["error"] = error
        else:
            with lock:
                if outcome.get("abandoned"):
                    close = getattr(value, "close", None)
                    if callable(close):
                        close()
                    return
                outcome["value"] = value
        finally:
            done.set()

    threading.Thread(target=run, name=f"b2s3-{name}", daemon=True).start()
    if not done.wait(seconds):
        with lock:
            if "value" not in outcome and "error" not in outcome:
                outcome["abandoned"] = True
                raise B2Unavailable(f"B2 {name} took longer than {seconds:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]


class B2Cache:
    """Files under ``prefix`` in one B2 bucket, keyed by storage path.

    Thread-safe: the bucket is looked up once (lazily, so the index starts while B2 is
    down) and shared; b2sdk's API objects serve many threads.
    """

    def __init__(self, api_factory: Callable[[], B2Api], section: B2S3Settings) -> None:
        self._api_factory = api_factory
        self.bucket_name = section.b2_bucket
        self.prefix = section.b2_prefix
        self.deadline = section.b2_read_deadline_seconds
        self.retry_seconds = section.b2_retry_seconds
        self._bucket: Bucket | None = None
        self._lock = threading.Lock()
        self._down_until = 0.0

    def name(self, path: str) -> str:
        """The B2 file name of a storage path."""
        return self.prefix + path

    # -- health ----------------------------------------------------------------------------

    @property
    def resting(self) -> bool:
        """Whether B2 failed lately and reads should skip it for now."""
        return time.monotonic() < self._down_until

    def failed(self, error: BaseException) -> None:
        """Note a failure: reads skip B2 for ``b2_retry_seconds``."""
        if not self.resting:
            log.warning(
                "B2 is failing (%s); downloads come from S3 for the next %g s",
                error,
                self.retry_seconds,
            )
        self._down_until = time.monotonic() + self.retry_seconds

    def recovered(self) -> None:
        """Note a success."""
        self._down_until = 0.0

    # -- calls -----------------------------------------------------------------------------

    def bucket(self) -> Bucket:
        """The bucket, authorizing first if this is the first call."""
        with self._lock:
            if self._bucket is None:
                try:
                    self._bucket = self._api_factory().get_bucket_by_name(self.bucket_name)
                except B2Unavailable:
                    raise
                except Exception as error:  # b2sdk's, requests', a refused key
                    raise B2Unavailable(f"B2 bucket {self.bucket_name}: {error!r}") from None
            return self._bucket

    def _call(self, action: str, path: str, work: Callable[[Bucket], T]) -> T:
        try:
            return work(self.bucket())
        except (B2Unavailable, FileNotPresent):
            raise
        except Exception as error:
            raise B2Unavailable(f"B2 {action} of {path}: {error!r}") from None

    def describe(self, path: str) -> B2Copy | None:
        """The latest version of ``path`` in B2, or None when there is none."""

        def work(bucket: Bucket) -> B2Copy:
            return _copy_of(bucket.get_file_info_by_name(self.name(path)))

        try:
            return self._call("lookup", path, work)
        except FileNotPresent:
            return None

    def open_download(self, path: str) -> B2Download | None:
        """Start downloading the latest version of ``path``; None when B2 has no such file.

        Returns once B2 answered with the file's headers: the bytes follow in
        :meth:`B2Download.save_into`. This first part is what a read deadline bounds.
        """

        def work(bucket: Bucket) -> B2Download:
            downloaded = bucket.download_file_by_name(self.name(path))
            return B2Download(path, downloaded, _copy_of(downloaded.download_version))

        try:
            return self._call("download", path, work)
        except FileNotPresent:
            return None

    def upload(
        self, path: str, source: Path, *, digests: Digests, info: Mapping[str, str]
    ) -> B2Copy:
        """Upload ``source`` as the new latest version of ``path``; returns what B2 stored.

        B2 checks the SHA-1 it is given against the bytes it receives (for a large file,
        each part's); the caller compares the answer's size and SHA-1 too.
        """
        file_info = {**info, "sha256": digests.sha256, "b2-cache-control": CACHE_CONTROL}
        content_type = _content_type(path)

        def work(bucket: Bucket) -> B2Copy:
            return _copy_of(
                bucket.upload_local_file(
                    local_file=str(source),
                    file_name=self.name(path),
                    content_type=content_type,
                    file_info=file_info,
                    sha1_sum=digests.sha1,
                )
            )

        return self._call("upload", path, work)

    def delete(self, path: str, *, older_than: B2Copy | None = None) -> int:
        """Delete every version of ``path`` (or only those uploaded before ``older_than``).

        Returns how many were deleted. Deleting only older versions is what a copy that
        just succeeded does to tidy up: two copies racing each delete only what came
        before their own, so the newest version always survives.
        """

        def work(bucket: Bucket) -> int:
            deleted = 0
            name = self.name(path)
            for version in list(bucket.list_file_versions(name)):
                if older_than is not None and (
                    version.id_ == older_than.file_id
                    or int(version.upload_timestamp or 0) >= older_than.upload_timestamp
                ):
                    continue
                try:
                    bucket.api.delete_file_version(version.id_, name)
                except FileNotPresent:
                    continue  # deleted meanwhile
                deleted += 1
            return deleted

        try:
            return self._call("deletion", path, work)
        except FileNotPresent:
            return 0
