"""Real Celery workers and beats, run as subprocesses, on a real Redis and on SQS (moto).

Isolation from tests running in parallel: every test has its own ``worker_key_prefix``
(every broker, schedule and lock key in Redis carries it), its own database and data
directory, its own moto server, and its own private redis-server where it stops one.
Every subprocess is started in its own session, so killing it kills its children too,
and every one is stopped when the test ends, pass or fail.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from cheeseshop.testing.services import service_missing

from worker_kit import PrivateRedis, Processes, free_port, wait_for

REDIS_URL_ENV = "CHEESESHOP_TEST_REDIS_URL"
#: A database of its own (the page cache tests use 13); keys are prefixed per test.
_DEFAULT_REDIS = "redis://127.0.0.1:6379/14"


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    """Subprocesses of this test (logs in ``tmp_path``), all stopped at its end."""
    started = Processes(tmp_path)
    try:
        yield started
    finally:
        started.stop_all()


@pytest.fixture
def redis_url() -> str:
    """URL of the shared Redis (``CHEESESHOP_TEST_REDIS_URL``); missing: skip, or fail under CI."""
    url = os.environ.get(REDIS_URL_ENV, _DEFAULT_REDIS)
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as error:
        service_missing("Redis", f"{url}: {error}")
    finally:
        client.close()
    return url


@pytest.fixture
def worker_key_prefix(redis_url: str) -> Iterator[str]:
    """A ``worker_key_prefix`` of this test's own; its keys are deleted afterwards."""
    prefix = (
        f"cheeseshop-test-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}-{uuid.uuid4().hex[:12]}:"
    )
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def recorder_path(tmp_path: Path) -> Path:
    """Where the recorder plugin writes what it receives."""
    return tmp_path / "recorded.jsonl"


@pytest.fixture
def private_redis(processes: Processes) -> PrivateRedis:
    """A stopped private redis-server (``.start()`` it); stopped again at the end."""
    binary = shutil.which("redis-server")
    if binary is None:
        service_missing("redis-server", "no redis-server binary on PATH")
    return PrivateRedis(processes, binary or "redis-server")


@pytest.fixture
def moto_endpoint(processes: Processes) -> str:
    """URL of a moto server (SQS) of this test's own, on 127.0.0.1."""
    binary = Path(sys.executable).with_name("moto_server")
    if not binary.exists():
        service_missing(
            "moto_server", f"{binary} is not installed (pip install 'moto[server,sqs]')"
        )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = processes.start("moto", [str(binary), "-H", "127.0.0.1", "-p", str(port)])

    def answers() -> bool:
        if server.popen.poll() is not None:
            raise AssertionError(f"moto_server exited:\n{server.output()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return False

    wait_for(answers, timeout=30, what="moto_server")
    return url
