"""Crash safety of uploads (R2) against a real server process: kill, cut, fail the disk.

Each test runs its own ``cheeseshop serve`` on a data dir and database of its own, so it
can kill and restart it. An upload is held between "stored" and "committed" by a lock the
test takes in the database: on PostgreSQL ``LOCK TABLE projects IN EXCLUSIVE MODE``
(plain reads pass, so the upload gets through its checks and stores its file; the first
statement of its commit, ``SELECT ... FOR UPDATE`` on projects, waits), on SQLite the
write lock itself (``BEGIN IMMEDIATE``; the commit's own ``BEGIN IMMEDIATE`` waits).

After every fault: the Simple API and the database show nothing of the upload, the server
(or its successor) keeps serving, and the same upload then succeeds. The one trace a fault
may leave, the stored file without a row, is removed by ``cheeseshop gc``.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import http.client
import os
import sqlite3
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from cheeseshop.storage import storage_path
from cheeseshop.testing.dists import Dist, build_wheel
from cheeseshop.testing.services import (
    create_postgres_database,
    drop_postgres_database,
    postgres_server_url,
)
from cheeseshop.testing.upload import encode_multipart, upload_fields

pytestmark = pytest.mark.e2e

PROJECT = "Crash-Safe"
NORMALIZED = "crash-safe"
#: Bounds, in seconds.
UPLOAD_TIMEOUT = 60.0
BLOCKED_TIMEOUT = 20.0
KILL_TIMEOUT = 10.0

_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclasses.dataclass(frozen=True)
class Answer:
    """What the client got: a status (None when the connection broke), body, reason."""

    status: int | None
    body: str
    reason: str = ""


# -- a server of the test's own ------------------------------------------------------------


@dataclasses.dataclass
class Site:
    """A data dir and database that outlive the server processes started on them."""

    database: str
    root: Path
    env: dict[str, str]
    control: Any
    #: libpq URL of the PostgreSQL database, None on SQLite.
    libpq_url: str | None
    server: Any = None
    token: str = ""

    @property
    def files(self) -> Path:
        return self.root / "data" / "files"

    @property
    def temporaries(self) -> Path:
        return self.root / "data" / "tmp"

    def start(self) -> Any:
        self.server = self.control.start(self.database, self.root, self.env)
        return self.server

    def kill(self) -> None:
        """SIGKILL: no shutdown, no rollback, no cleanup of its own."""
        self.server.process.kill()
        self.server.process.wait(timeout=KILL_TIMEOUT)

    def stop(self) -> None:
        """A clean SIGTERM stop; asserts the server exits 0."""
        self.control.stop(self.server)

    def stored(self) -> list[str]:
        """Every file under ``data/files``, relative, sorted."""
        if not self.files.exists():
            return []
        files = (p for p in self.files.rglob("*") if p.is_file())
        return sorted(p.relative_to(self.files).as_posix() for p in files)

    def upload(self, dist: Dist) -> Answer:
        """POST ``dist`` to /legacy/ as twine does (bounded by UPLOAD_TIMEOUT)."""
        part = ("content", dist.filename, dist.content, "application/octet-stream")
        body, content_type = encode_multipart(upload_fields(dist), [part])
        credentials = base64.b64encode(f"__token__:{self.token}".encode()).decode()
        request = urllib.request.Request(
            self.server.upload_url,
            data=body,
            method="POST",
            headers={"Content-Type": content_type, "Authorization": f"Basic {credentials}"},
        )
        try:
            with _HTTP.open(request, timeout=UPLOAD_TIMEOUT) as response:
                body_text = response.read().decode(errors="replace")
                return Answer(response.status, body_text, response.reason)
        except urllib.error.HTTPError as error:
            return Answer(error.code, error.read().decode(errors="replace"), error.reason)
        except (OSError, http.client.HTTPException) as error:
            # The server died under the request (connection reset, empty reply).
            return Answer(None, repr(error))

    async def rows(self) -> dict[str, int]:
        """How many projects, releases and files the database holds."""
        tables = ("projects", "releases", "files", "filename_registry")
        if self.libpq_url is None:
            with sqlite3.connect(self.root / "data" / "cheeseshop.db") as connection:
                count = "SELECT count(*) FROM {}"
                return {t: connection.execute(count.format(t)).fetchone()[0] for t in tables}
        connection = await asyncpg.connect(self.libpq_url, timeout=5)
        try:
            return {t: await connection.fetchval(f"SELECT count(*) FROM {t}") for t in tables}
        finally:
            await connection.close()


def _libpq_url(name: str) -> str:
    base, _, _ = postgres_server_url().rpartition("/")
    return f"{base}/{name}"


@pytest.fixture
def make_site(tmp_path: Path, server_control: Any) -> Iterator[Callable[[str], Site]]:
    """``make_site("sqlite" | "postgresql")``: a started server with alice and her token."""
    made: list[tuple[Site, str | None]] = []

    def make(database: str) -> Site:
        root = tmp_path / f"site-{len(made)}"
        root.mkdir()
        name = None
        database_url = None
        if database == "postgresql":
            worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
            name = f"cheeseshop_crash_{worker}_{os.getpid()}_{len(made)}"
            database_url = create_postgres_database(name)
        site = Site(
            database=database,
            root=root,
            env=server_control.env(root, database_url),
            control=server_control,
            libpq_url=_libpq_url(name) if name else None,
        )
        made.append((site, name))
        site.token = site.start().user_token("alice")
        return site

    yield make
    for site, name in made:
        try:
            if site.server is not None and site.server.process.poll() is None:
                server_control.stop(site.server, check=False)
        finally:
            if name is not None:
                drop_postgres_database(name)


# -- holding an upload between "stored" and "committed" ------------------------------------


class CommitBlocker:
    """Holds the lock that makes an upload's commit wait; ``blocked()`` says it waits."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self._pg: asyncpg.Connection | None = None
        self._pg_transaction: Any = None
        self._sqlite: sqlite3.Connection | None = None

    async def hold(self) -> None:
        if self.site.libpq_url is not None:
            self._pg = await asyncpg.connect(self.site.libpq_url, timeout=5)
            self._pg_transaction = self._pg.transaction()
            await self._pg_transaction.start()
            # Reads pass; SELECT ... FOR UPDATE and INSERT wait.
            await self._pg.execute("LOCK TABLE projects IN EXCLUSIVE MODE")
        else:
            self._sqlite = sqlite3.connect(
                self.site.root / "data" / "cheeseshop.db", isolation_level=None, timeout=5
            )
            self._sqlite.execute("BEGIN IMMEDIATE")

    async def blocked(self, stored: list[str]) -> int | None:
        """Wait (bounded) until ``stored`` are on disk and the commit waits for our lock.

        On disk in place, or staged beside their place (the local disk stages an upload's
        files and moves them into place inside the commit: see :func:`_left_by`).
        Returns the PostgreSQL backend pid of the waiting commit (None on SQLite).
        """
        deadline = time.monotonic() + BLOCKED_TIMEOUT
        while True:
            on_disk = len(_left_by(self.site, stored)) >= len(stored)
            pid = await self._waiting_pid() if on_disk else None
            if on_disk and (pid is not None or self._pg is None):
                if self._pg is None:
                    # SQLite shows no waiters; the commit is the very next step after storing.
                    await asyncio.sleep(0.5)
                return pid
            if time.monotonic() > deadline:
                pytest.fail(
                    f"the upload did not reach its commit within {BLOCKED_TIMEOUT:.0f} s "
                    f"(stored so far: {self.site.stored()})" + self.site.server.output(),
                    pytrace=False,
                )
            await asyncio.sleep(0.05)

    async def _waiting_pid(self) -> int | None:
        if self._pg is None:
            return None
        # Statistics views are snapshotted once per transaction, and ours lasts the test.
        await self._pg.execute("SELECT pg_stat_clear_snapshot()")
        return await self._pg.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND wait_event_type = 'Lock' "
            # The commit's first write to projects: its lock, or a new project's insert.
            "AND (query ILIKE '%projects%FOR UPDATE%' OR query ILIKE '%INSERT INTO projects%')"
        )

    async def terminate(self, pid: int) -> None:
        """``pg_terminate_backend`` of the server's connection."""
        assert self._pg is not None
        assert await self._pg.fetchval("SELECT pg_terminate_backend($1)", pid) is True

    async def release(self) -> None:
        if self._pg is not None:
            await self._pg_transaction.rollback()
            await self._pg.close()
            self._pg = None
        if self._sqlite is not None:
            self._sqlite.execute("ROLLBACK")
            self._sqlite.close()
            self._sqlite = None


@pytest.fixture
async def blocker_for() -> AsyncIterator[Callable[[Site], Awaitable[CommitBlocker]]]:
    held: list[CommitBlocker] = []

    async def hold(site: Site) -> CommitBlocker:
        blocker = CommitBlocker(site)
        await blocker.hold()
        held.append(blocker)
        return blocker

    yield hold
    for blocker in held:
        await blocker.release()


# -- shared checks ---------------------------------------------------------------------------


def _paths(dist: Dist) -> tuple[str, str]:
    path = storage_path(hashlib.blake2b(dist.content, digest_size=32).hexdigest(), dist.filename)
    return path, path + ".metadata"


def _left_by(site: Site, stored: list[str]) -> list[str]:
    """What the upload of the files ``stored`` has on disk: each in place, or its staged
    copy (``.incoming-*``) beside that place; relative, sorted."""
    directory = stored[0].rsplit("/", 1)[0]
    return [
        path
        for path in site.stored()
        if path.startswith(f"{directory}/")
        and (path in stored or path.rsplit("/", 1)[1].startswith(".incoming-"))
    ]


async def _assert_nothing_visible(site: Site) -> None:
    server = site.server
    status, _, body = server.get(f"/simple/{NORMALIZED}/")
    assert status == 404, (status, body) + (server.output(),)
    assert NORMALIZED not in [p["name"] for p in server.simple_json("/simple/")["projects"]]
    assert await site.rows() == {"projects": 0, "releases": 0, "files": 0, "filename_registry": 0}


def _assert_uploaded(site: Site, dist: Dist) -> None:
    answer = site.upload(dist)
    assert answer.status == 200, f"{answer}{site.server.output()}"
    project = site.server.simple_json(f"/simple/{NORMALIZED}/")
    assert [(f["filename"], f["hashes"]["sha256"]) for f in project["files"]] == [
        (dist.filename, dist.sha256)
    ]
    status, _, content = site.server.get(f"/packages/{_paths(dist)[0]}")
    assert (status, content) == (200, dist.content)


def _assert_error_with_a_message(answer: Answer, site: Site) -> None:
    assert answer.status is not None, f"{answer}{site.server.output()}"
    assert 400 <= answer.status < 600, f"{answer}{site.server.output()}"
    assert answer.body.strip(), answer


def _expect_503(answer: Answer, site: Site, bug: str) -> None:
    """The right answer to a fault the client can retry through: 503, "try again"."""
    assert answer.status == 503, f"{bug}: {answer}"
    assert answer.status == 503, f"{answer}{site.server.output()}"
    assert "try again" in answer.body.lower(), answer


# -- (a) killed between storing and committing ---------------------------------------------


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
async def test_kill_after_store_before_commit_leaves_only_an_orphan(
    make_site: Callable[[str], Site],
    blocker_for: Callable[[Site], Awaitable[CommitBlocker]],
    database: str,
) -> None:
    site = await asyncio.to_thread(make_site, database)
    wheel = build_wheel(PROJECT, "1.0")
    stored = list(_paths(wheel))
    blocker = await blocker_for(site)

    upload = asyncio.create_task(asyncio.to_thread(site.upload, wheel))
    await blocker.blocked(stored)
    site.kill()
    answer = await asyncio.wait_for(upload, UPLOAD_TIMEOUT + 10)
    await blocker.release()

    assert answer.status is None, answer  # the connection died with the server
    await asyncio.to_thread(site.start)
    await _assert_nothing_visible(site)
    # What R2 allows: the stored bytes without a row, staged or in place (and the upload's
    # temporary file), and nothing else.
    left = _left_by(site, stored)
    assert site.stored() == left and len(left) == len(stored), site.stored()
    assert [p.name[:7] for p in site.temporaries.iterdir()] == ["upload-"]

    young = site.server.cli("gc", "--dry-run")
    assert young.returncode == 0, young
    assert young.stdout == "", young  # younger than the default grace: kept
    refused = site.server.cli("gc", env={"CHEESESHOP_ORPHAN_GRACE_SECONDS": "0"})
    assert refused.returncode != 0 and "orphan_grace_seconds" in refused.output, refused
    await asyncio.sleep(1.1)
    collected = site.server.cli("gc", env={"CHEESESHOP_ORPHAN_GRACE_SECONDS": "1"})
    assert collected.returncode == 0, collected
    lines = collected.stdout.splitlines()
    assert sorted(line for line in lines if not line.startswith("/")) == left, collected
    assert site.stored() == []
    assert list(site.temporaries.iterdir()) == []

    # The client retries: accepted, listed, served.
    await asyncio.to_thread(_assert_uploaded, site, wheel)
    await asyncio.to_thread(site.stop)


# -- (b) the database drops the connection mid-transaction ----------------------------------


async def test_terminated_database_connection_in_commit_answers_and_changes_nothing(
    make_site: Callable[[str], Site],
    blocker_for: Callable[[Site], Awaitable[CommitBlocker]],
) -> None:
    site = await asyncio.to_thread(make_site, "postgresql")
    wheel = build_wheel(PROJECT, "1.0")
    blocker = await blocker_for(site)

    upload = asyncio.create_task(asyncio.to_thread(site.upload, wheel))
    pid = await blocker.blocked(list(_paths(wheel)))
    assert pid is not None
    await blocker.terminate(pid)
    # Bounded: a hang would end here, not in the suite's time-out.
    answer = await asyncio.wait_for(upload, UPLOAD_TIMEOUT + 10)
    await blocker.release()

    _assert_error_with_a_message(answer, site)
    await _assert_nothing_visible(site)
    # The server keeps serving, with a fresh connection, and the retry goes through.
    await asyncio.to_thread(_assert_uploaded, site, wheel)
    await asyncio.to_thread(site.stop)
    _expect_503(
        answer,
        site,
        "a database connection lost in the upload's commit gives 500, not 503 "
        "(upload/service.py handle_upload -> _commit; app.py `unexpected`)",
    )


# -- (c) the disk refuses the file ------------------------------------------------------------


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
async def test_storage_failure_answers_and_changes_nothing(
    make_site: Callable[[str], Site], database: str
) -> None:
    site = await asyncio.to_thread(make_site, database)
    wheel = build_wheel(PROJECT, "1.0")
    path, _ = _paths(wheel)
    # Root ignores permissions, so make the disk refuse another way: a file where the
    # shard directory must go, and mkdir fails (NotADirectoryError, an OSError).
    blocker = site.files / path.split("/")[0]
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_bytes(b"in the way")

    answer = await asyncio.to_thread(site.upload, wheel)

    _assert_error_with_a_message(answer, site)
    await _assert_nothing_visible(site)
    assert site.stored() == [blocker.name]  # no partial file, no .incoming- leftover
    assert list(site.temporaries.iterdir()) == []
    # Other uploads still work meanwhile; once the disk is fixed, so does this one.
    other = _wheel_elsewhere(path.split("/")[0])
    accepted = await asyncio.to_thread(site.upload, other)
    assert accepted.status == 200, f"{accepted}{site.server.output()}"
    blocker.unlink()
    await asyncio.to_thread(_assert_uploaded, site, wheel)
    await asyncio.to_thread(site.stop)
    _expect_503(
        answer,
        site,
        "an OSError from FileStorage.put gives 500, not 503 "
        "(upload/service.py handle_upload -> _store; app.py `unexpected`)",
    )


def _wheel_elsewhere(blocked_shard: str) -> Dist:
    """A wheel of another project whose storage path avoids ``blocked_shard``."""
    for variant in range(100):
        dist = build_wheel("Other-Project", f"1.{variant}")
        if not _paths(dist)[0].startswith(blocked_shard + "/"):
            return dist
    raise AssertionError("unreachable: 100 digests sharing one first byte")
