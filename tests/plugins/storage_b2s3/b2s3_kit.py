"""What the storage_b2s3 tests stand on: S3 on moto_server, a TCP proxy to break it, and
a ``cheeseshop serve`` process for the end-to-end test. Everything on 127.0.0.1.

- :class:`MotoS3`: ``moto_server`` as a real subprocess, reached over HTTP like S3.
- :class:`Proxy`: a TCP proxy in front of it that passes traffic, or drops every
  connection (new and open ones alike): S3 "down" without stopping moto.
- :class:`Serve`: a ``cheeseshop serve`` subprocess with an environment built from scratch.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cheeseshop.testing import clients as testing_clients
from cheeseshop.testing.moto import MotoServer

REGION = "us-east-1"
S3_BUCKET = "cheeseshop-archive"
B2_BUCKET = "cheeseshop-cache"
BIN = Path(sys.executable).parent
# No proxy, even one set in this process's environment: traffic stays on 127.0.0.1.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    """A TCP port nothing listens on right now, on 127.0.0.1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def sha256(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def blake2(data: bytes) -> str:
    """Hex blake2b-256 of ``data`` (what storage paths are made of)."""
    return hashlib.blake2b(data, digest_size=32).hexdigest()


# -- S3 on moto -------------------------------------------------------------------------------


class MotoS3(MotoServer):
    """``moto_server`` serving S3 (see :class:`cheeseshop.testing.moto.MotoServer`)."""

    def reset(self) -> None:
        """Forget every bucket and object, then create :data:`S3_BUCKET` afresh."""
        super().reset()
        self.client().create_bucket(Bucket=S3_BUCKET)

    def client_kwargs(self) -> dict[str, str]:
        """Keyword arguments for a boto3 client of this server."""
        return {
            "endpoint_url": self.url,
            "region_name": REGION,
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
        }

    def client(self) -> Any:
        """A boto3 S3 client of this server (the tests' own, not the plugin's)."""
        import boto3

        return boto3.session.Session().client("s3", **self.client_kwargs())

    def objects(self, prefix: str = "") -> dict[str, bytes]:
        """Every object under ``prefix`` (key without the prefix -> bytes)."""
        client = self.client()
        found: dict[str, bytes] = {}
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=S3_BUCKET, Prefix=prefix)
        for page in pages:
            for entry in page.get("Contents", ()):
                body = client.get_object(Bucket=S3_BUCKET, Key=entry["Key"])["Body"].read()
                found[entry["Key"][len(prefix) :]] = body
        return found

    def multipart_uploads(self) -> list[str]:
        """Keys of multipart uploads begun and neither completed nor aborted."""
        answer = self.client().list_multipart_uploads(Bucket=S3_BUCKET)
        return [upload["Key"] for upload in answer.get("Uploads", ())]


def section(s3_url: str, **changes: Any) -> dict[str, Any]:
    """A ``[storage_b2s3]`` section: the archive through ``s3_url``, the cache :data:`B2_BUCKET`."""
    return {
        "s3_bucket": S3_BUCKET,
        "s3_prefix": "files",
        "s3_region": REGION,
        "s3_endpoint_url": s3_url,
        "s3_access_key_id": "testing",
        "s3_secret_access_key": "testing",
        "s3_max_attempts": 2,
        "b2_bucket": B2_BUCKET,
        "b2_key_id": "simulated",
        "b2_application_key": "simulated",
        "b2_prefix": "cache",
        "b2_read_deadline_seconds": 2.0,
        "timeout_seconds": 5.0,
        **changes,
    }


#: Longest wait for the outbox to deliver the cache sync.
DELIVERY_TIMEOUT = 15.0


def paths_of(dist: Any) -> tuple[str, str]:
    """Storage paths of a wheel (a :class:`cheeseshop.testing.dists.Dist`) and of its .metadata."""
    from cheeseshop import storage_path

    path = storage_path(blake2(dist.content), dist.filename)
    return path, f"{path}.metadata"


async def wait_until(condition: Any, what: str, timeout: float = DELIVERY_TIMEOUT) -> None:
    """Poll ``await asyncio.to_thread(condition)`` until it is true (bounded)."""
    import asyncio

    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(condition):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.05)


async def wait_cached(storage: Any, *paths: str) -> None:
    """Until the plugin's cache table records every one of ``paths``."""
    await wait_until(
        lambda: all(storage.index.cached(path) is not None for path in paths), f"{paths} cached"
    )


def plugin_settings(values: dict[str, Any], database_url: str) -> Any:
    """Core settings with the ``[storage_b2s3]`` section validated, as an app has them."""
    from cheeseshop.config import load_settings, with_plugin_sections

    from cheeseshop_storage_b2s3 import B2S3Settings

    settings = load_settings(
        environ={}, overrides={"database_url": database_url, "storage_b2s3": values}
    )
    return with_plugin_sections(settings, {"storage_b2s3": B2S3Settings})


# -- a proxy that can drop everything ---------------------------------------------------------


class Proxy:
    """A TCP proxy on 127.0.0.1 to ``upstream``; :meth:`cut` drops every connection."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.cutting = False
        self.accepted = 0
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.2)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="s3-proxy", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """Its base URL."""
        return f"http://127.0.0.1:{self._server.getsockname()[1]}"

    def cut(self) -> None:
        """Drop every open connection, and every new one until :meth:`mend`."""
        self.cutting = True
        with self._lock:
            for sock in list(self._sockets):
                _close(sock)
            self._sockets.clear()

    def mend(self) -> None:
        """Pass traffic again."""
        self.cutting = False

    def stop(self) -> None:
        """Stop listening and drop everything."""
        self._stopping.set()
        self.cut()
        self._thread.join(5)
        self._server.close()

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            client.settimeout(None)
            if self.cutting:
                _close(client)
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                _close(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets.update({client, upstream})
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, target), daemon=True).start()

    def _pipe(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._sockets.discard(source)
                self._sockets.discard(target)
            _close(source)
            _close(target)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


# -- a cheeseshop serve process -----------------------------------------------------------------


class Serve:
    """``cheeseshop serve`` on a free port of 127.0.0.1, with ``env`` and nothing else."""

    READY_TIMEOUT = 30.0
    STOP_TIMEOUT = 30.0

    def __init__(self, root: Path, env: Mapping[str, str]) -> None:
        self.root = root
        self.port = free_port()
        self.env = {
            "PATH": os.environ.get("PATH", os.defpath),
            "HOME": str(root / "home"),
            "PYTHONUNBUFFERED": "1",
            "PYTHONFAULTHANDLER": "1",
            **env,
        }
        (root / "home").mkdir(parents=True, exist_ok=True)
        self.log = root / "server.log"
        with self.log.open("wb") as sink:
            self.process = subprocess.Popen(
                [str(BIN / "cheeseshop"), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                env=self.env,
                cwd=root,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        try:
            self._wait()
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        """Base URL, without a trailing slash."""
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        """The server's log so far, for an assertion message."""
        return f"\n--- server log ---\n{self.log.read_text(errors='replace')}"

    def _wait(self) -> None:
        deadline = time.monotonic() + self.READY_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"cheeseshop serve exited early{self.output()}")
            try:
                status, _ = self.get("/simple/")
            except OSError:
                status = None
            if status == 200:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"cheeseshop serve did not start{self.output()}")
            time.sleep(0.1)

    def get(self, path: str) -> tuple[int, bytes]:
        """``GET path``: status and body, error statuses too."""
        try:
            with _HTTP.open(self.url + path, timeout=30) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def cli(
        self, *args: str, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``cheeseshop ARGS`` with the server's environment (bounded)."""
        return run([str(BIN / "cheeseshop"), *args], env={**self.env, **(env or {})})

    def stop(self) -> int:
        """SIGTERM, then SIGKILL after :attr:`STOP_TIMEOUT`; returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(self.STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode


def run(
    command: Sequence[str], *, env: Mapping[str, str], timeout: float = 180.0
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` to completion (bounded), stdin closed, output captured as text."""
    return subprocess.run(
        list(command),
        env=dict(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def client_env(root: Path) -> dict[str, str]:
    """An environment for twine and pip that reads no user configuration and prompts never."""
    return testing_clients.client_env(root / "home")
