"""A B2 for tests: b2sdk's own ``RawSimulator``, with faults to switch on.

b2sdk simulates B2's raw API in memory (``b2sdk.v2.RawSimulator``); a :class:`B2Api`
built on it (``B2HttpApiConfig(_raw_api_class=...)``) behaves like one talking to B2,
errors included, without any network. :class:`B2Simulator` makes such an API with an
account and the bucket already there, and hands it to the plugin through
:func:`cheeseshop_storage_b2s3.use_b2_api_factory` (or ``B2S3Storage.from_settings(...,
b2_api_factory=simulator.factory)``)::

    simulator = B2Simulator("cheeseshop-cache")
    with use_b2_api_factory(simulator.factory):
        ...  # an app with CHEESESHOP_PLUGINS=storage_b2s3 now caches in the simulator

    with simulator.failing():      # every B2 call raises B2ConnectionError
        ...
    with simulator.slow(2.0):      # every B2 call takes 2 s longer
        ...

The simulator lives in this process only: a ``cheeseshop serve`` subprocess cannot share
it. For tests only; never for an index.
"""

from __future__ import annotations

import contextlib
import inspect
import threading
import time
from collections.abc import Iterator
from typing import Any

from b2sdk.v2 import B2Api, B2HttpApiConfig, Bucket, InMemoryAccountInfo, RawSimulator
from b2sdk.v2.exception import B2ConnectionError, FileNotPresent

__all__ = ["B2Simulator", "FaultyRawSimulator"]

#: Simulator methods that set the simulation up rather than answer an API call.
_SET_UP = frozenset({"create_account", "expire_auth_token", "set_upload_errors"})


class FaultyRawSimulator(RawSimulator):  # type: ignore[misc]
    """``RawSimulator`` whose API calls can be made to fail or to lag, all at once.

    ``failing``: every call raises ``B2ConnectionError`` (what b2sdk raises when B2
    cannot be reached). ``delay``: seconds every call waits before answering. ``calls``
    counts the calls made.

    Its part size is B2's real minimum, 5 MB (the stock simulator's 200 bytes would
    upload a 5 MiB file in thousands of parts).
    """

    MIN_PART_SIZE = 5 * 1000 * 1000

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.failing = False
        self.delay = 0.0
        self.calls = 0
        self._calls_lock = threading.Lock()

    def __getattribute__(self, name: str) -> Any:
        attribute = object.__getattribute__(self, name)
        if name.startswith("_") or name in _SET_UP or not inspect.ismethod(attribute):
            return attribute
        if "_calls_lock" not in object.__getattribute__(self, "__dict__"):
            return attribute  # still being set up

        def call(*args: Any, **kwargs: Any) -> Any:
            with object.__getattribute__(self, "_calls_lock"):
                self.calls = object.__getattribute__(self, "calls") + 1
            delay = object.__getattribute__(self, "delay")
            if delay:
                time.sleep(delay)
            if object.__getattribute__(self, "failing"):
                raise B2ConnectionError(f"simulated outage ({name})")
            return attribute(*args, **kwargs)

        return call


class B2Simulator:
    """An authorized :class:`B2Api` over a :class:`FaultyRawSimulator`, with one bucket."""

    def __init__(self, bucket_name: str) -> None:
        self.api = B2Api(
            InMemoryAccountInfo(), api_config=B2HttpApiConfig(_raw_api_class=FaultyRawSimulator)
        )
        raw = self.api.session.raw_api
        assert isinstance(raw, FaultyRawSimulator)
        self.raw: FaultyRawSimulator = raw
        key_id, key = raw.create_account()
        self.api.authorize_account("production", key_id, key)
        self.bucket: Bucket = self.api.create_bucket(bucket_name, "allPrivate")

    def factory(self) -> B2Api:
        """What the plugin calls for its API: this simulator's."""
        return self.api

    @contextlib.contextmanager
    def failing(self) -> Iterator[None]:
        """Every B2 call fails inside the block."""
        self.raw.failing = True
        try:
            yield
        finally:
            self.raw.failing = False

    @contextlib.contextmanager
    def slow(self, seconds: float) -> Iterator[None]:
        """Every B2 call takes ``seconds`` longer inside the block."""
        self.raw.delay = seconds
        try:
            yield
        finally:
            self.raw.delay = 0.0

    # -- looking inside -------------------------------------------------------------------

    def read(self, name: str) -> bytes | None:
        """The latest version of the file ``name`` (prefix included), or None."""
        import io

        try:
            downloaded = self.bucket.download_file_by_name(name)
        except FileNotPresent:
            return None
        sink = io.BytesIO()
        downloaded.save(sink, allow_seeking=False)
        return sink.getvalue()

    def info(self, name: str) -> dict[str, str] | None:
        """The file info of the latest version of ``name``, or None."""
        try:
            return dict(self.bucket.get_file_info_by_name(name).file_info)
        except FileNotPresent:
            return None

    def file_id(self, name: str) -> str | None:
        """The id of the latest version of ``name`` (a new upload gets a new one), or None."""
        try:
            return str(self.bucket.get_file_info_by_name(name).id_)
        except FileNotPresent:
            return None

    def versions(self, name: str) -> int:
        """How many versions of ``name`` B2 keeps."""
        return len(list(self.bucket.list_file_versions(name)))

    def names(self) -> list[str]:
        """Every file name in the bucket (latest versions)."""
        return sorted(version.file_name for version, _ in self.bucket.ls(recursive=True))

    def put(self, name: str, data: bytes, file_info: dict[str, str] | None = None) -> None:
        """Upload ``data`` as the new latest version of ``name`` (a fault: a bad copy)."""
        self.bucket.upload_bytes(data, name, file_info=file_info or {})
