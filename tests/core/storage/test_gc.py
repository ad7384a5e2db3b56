"""Orphan collection: unreferenced stored files older than the grace go, nothing else does."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from cheeseshop.db.models import File
from cheeseshop.services import Services
from cheeseshop.storage import storage_path
from cheeseshop.storage.gc import MAX_INTERVAL_SECONDS, OrphanCollector, collect_orphans
from cheeseshop.testing.dists import build_sdist, build_wheel

GRACE = 600.0


def later() -> float:
    """A moment when every file stored so far is past the grace."""
    return time.time() + GRACE + 60


@pytest.fixture
def cheeseshop_settings_overrides() -> dict[str, Any]:
    return {"orphan_grace_seconds": GRACE}


def _store(services: Services, content: bytes, filename: str = "orphan-1.0.tar.gz") -> str:
    source = services.settings.data_dir / "source.bin"
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_bytes(content)
    path = storage_path(hashlib.blake2b(content, digest_size=32).hexdigest(), filename)
    services.storage.put(path, source)
    source.unlink()
    return path


def _stored(services: Services) -> set[str]:
    return {path for path, _ in services.storage.iter_paths()}


async def _file_row(services: Services, filename: str) -> File:
    async with services.db.read() as session:
        row = await session.scalar(select(File).where(File.filename == filename))
    assert row is not None, filename
    return row


async def test_orphan_older_than_the_grace_is_deleted(cheeseshop_services: Services) -> None:
    orphan = _store(cheeseshop_services, b"stored, never committed")

    deleted = await collect_orphans(cheeseshop_services, now=later())

    assert deleted == [orphan]
    assert not cheeseshop_services.storage.exists(orphan)
    assert _stored(cheeseshop_services) == set()


async def test_orphan_younger_than_the_grace_is_kept(cheeseshop_services: Services) -> None:
    # An upload in flight has stored its file and not yet committed: it looks like this.
    orphan = _store(cheeseshop_services, b"an upload in flight")

    assert await collect_orphans(cheeseshop_services) == []
    assert await collect_orphans(cheeseshop_services, now=time.time() + GRACE - 60) == []

    assert cheeseshop_services.storage.exists(orphan)


async def test_referenced_files_are_never_deleted(
    cheeseshop_services: Services, upload: Any
) -> None:
    wheel = build_wheel("Kept", "1.0")
    sdist = build_sdist("Kept", "1.0")
    for dist in (wheel, sdist):
        response = await upload(dist)
        assert response.status_code == 200, await response.get_data(as_text=True)
    before = _stored(cheeseshop_services)
    wheel_row = await _file_row(cheeseshop_services, wheel.filename)
    sdist_row = await _file_row(cheeseshop_services, sdist.filename)
    assert before == {wheel_row.path, wheel_row.path + ".metadata", sdist_row.path}

    assert await collect_orphans(cheeseshop_services, now=later() + 10 * 365 * 86400) == []

    assert _stored(cheeseshop_services) == before


async def test_only_the_orphans_among_referenced_files_go(
    cheeseshop_services: Services, upload: Any
) -> None:
    wheel = build_wheel("Mixed", "1.0")
    response = await upload(wheel)
    assert response.status_code == 200, await response.get_data(as_text=True)
    kept = _stored(cheeseshop_services)
    # Same filename as a recorded file, other bytes: its path differs, so it is no one's.
    impostor = _store(cheeseshop_services, b"other bytes", wheel.filename)
    orphan = _store(cheeseshop_services, b"an orphan", "orphan-2.0.tar.gz")

    deleted = await collect_orphans(cheeseshop_services, now=later())

    assert sorted(deleted) == sorted([impostor, orphan])
    assert _stored(cheeseshop_services) == kept


async def test_metadata_sibling_follows_its_row(cheeseshop_services: Services, upload: Any) -> None:
    wheel = build_wheel("Meta", "1.0")
    response = await upload(wheel)
    assert response.status_code == 200, await response.get_data(as_text=True)
    row = await _file_row(cheeseshop_services, wheel.filename)
    assert row.metadata_sha256
    # A metadata file is referenced only through a row that records metadata.
    async with cheeseshop_services.db.write() as session:
        recorded = await session.get(File, row.id)
        assert recorded is not None
        recorded.metadata_sha256 = None
    # An orphaned wheel keeps its own metadata file no more than itself.
    orphan = _store(cheeseshop_services, b"orphan wheel", "orphan-1.0-py3-none-any.whl")
    cheeseshop_services.storage.put(
        orphan + ".metadata", _source(cheeseshop_services, b"Name: orphan")
    )

    deleted = await collect_orphans(cheeseshop_services, now=later())

    assert sorted(deleted) == sorted([orphan, orphan + ".metadata", row.path + ".metadata"])
    assert _stored(cheeseshop_services) == {row.path}


async def test_metadata_sibling_of_a_row_with_metadata_is_kept(
    cheeseshop_services: Services, upload: Any
) -> None:
    wheel = build_wheel("Meta-Kept", "1.0")
    response = await upload(wheel)
    assert response.status_code == 200, await response.get_data(as_text=True)
    row = await _file_row(cheeseshop_services, wheel.filename)

    assert await collect_orphans(cheeseshop_services, now=later()) == []

    assert _stored(cheeseshop_services) == {row.path, row.path + ".metadata"}


async def test_dry_run_deletes_nothing(cheeseshop_services: Services) -> None:
    orphan = _store(cheeseshop_services, b"would be deleted")
    temporary = _temporary(cheeseshop_services, "upload-stale", age=GRACE + 60)

    listed = await collect_orphans(cheeseshop_services, now=later(), dry_run=True)

    assert listed == [orphan, str(temporary)]
    assert cheeseshop_services.storage.exists(orphan)
    assert temporary.exists()
    # And the real run then deletes exactly what the dry run listed.
    assert await collect_orphans(cheeseshop_services, now=later()) == listed


async def test_stale_temporaries_are_deleted(cheeseshop_services: Services) -> None:
    stale = _temporary(cheeseshop_services, "upload-abandoned", age=GRACE + 60)
    fresh = _temporary(cheeseshop_services, "upload-in-progress", age=5)
    directory = stale.parent / "not-a-file"
    directory.mkdir()
    os.utime(directory, (0, 0))

    deleted = await collect_orphans(cheeseshop_services)

    assert deleted == [str(stale)]
    assert not stale.exists()
    assert fresh.exists()
    assert directory.is_dir()


async def test_stale_incoming_file_of_an_interrupted_put_is_deleted(
    cheeseshop_services: Services,
) -> None:
    # A process killed inside put() leaves its temporary beside the target.
    leftover = cheeseshop_services.settings.data_dir / "files" / "ab" / "cd" / "ef" / ".incoming-x1"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"half a wheel")

    assert await collect_orphans(cheeseshop_services) == []
    deleted = await collect_orphans(cheeseshop_services, now=later())

    assert deleted == ["ab/cd/ef/.incoming-x1"]
    assert not leftover.exists()


async def test_no_storage_directory_yet_is_nothing_to_collect(
    cheeseshop_services: Services,
) -> None:
    assert not (cheeseshop_services.settings.data_dir / "files").exists()
    assert await collect_orphans(cheeseshop_services, now=later()) == []


async def test_an_upload_after_collection_stores_again(
    cheeseshop_services: Services, upload: Any
) -> None:
    # The bytes of a collected orphan come back (a client retrying): stored anew, served.
    wheel = build_wheel("Retried", "1.0")
    path = _store(cheeseshop_services, wheel.content, wheel.filename)
    assert await collect_orphans(cheeseshop_services, now=later()) == [path]

    response = await upload(wheel)

    assert response.status_code == 200, await response.get_data(as_text=True)
    row = await _file_row(cheeseshop_services, wheel.filename)
    assert row.path == path
    with cheeseshop_services.storage.open(path) as handle:
        assert handle.read() == wheel.content


async def test_a_file_that_will_not_go_does_not_stop_the_others(
    cheeseshop_services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    stuck = _store(cheeseshop_services, b"stuck", "stuck-1.0.tar.gz")
    other = _store(cheeseshop_services, b"goes", "goes-1.0.tar.gz")
    delete = cheeseshop_services.storage.delete

    def refuse_one(path: str) -> None:
        if path == stuck:
            raise PermissionError(13, "Permission denied", path)
        delete(path)

    monkeypatch.setattr(cheeseshop_services.storage, "delete", refuse_one)

    deleted = await collect_orphans(cheeseshop_services, now=later())

    assert deleted == [other]
    assert _stored(cheeseshop_services) == {stuck}


# -- running periodically ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("grace", "interval"), [(30.0, 30.0), (86400.0, MAX_INTERVAL_SECONDS)]
)
def test_interval_is_the_grace_at_most_an_hour(
    cheeseshop_services: Services, grace: float, interval: float
) -> None:
    assert OrphanCollector(_with_grace(cheeseshop_services, grace)).interval == interval


def test_first_run_comes_within_a_minute(cheeseshop_services: Services) -> None:
    assert OrphanCollector(cheeseshop_services).first_delay == 60.0


async def test_collector_runs_and_stops(cheeseshop_services: Services) -> None:
    orphan = _store(cheeseshop_services, b"collected in the background")
    old = time.time() - GRACE - 60
    os.utime(cheeseshop_services.settings.data_dir / "files" / orphan, (old, old))
    collector = OrphanCollector(cheeseshop_services, first_delay=0)
    assert collector.enabled

    await collector.start()
    try:
        for _ in range(100):
            if not cheeseshop_services.storage.exists(orphan):
                break
            await asyncio.sleep(0.05)
    finally:
        await asyncio.wait_for(collector.stop(), timeout=10)

    assert not cheeseshop_services.storage.exists(orphan)
    await asyncio.wait_for(collector.stop(), timeout=1)  # stopping twice is harmless


async def test_collector_runs_again_every_interval(cheeseshop_services: Services) -> None:
    collector = OrphanCollector(_with_grace(cheeseshop_services, 0.2), first_delay=0)
    await collector.start()
    try:
        await asyncio.sleep(0.1)
        # Stored after the first run: only a later one can delete it.
        orphan = _store(cheeseshop_services, b"found by a later run")
        for _ in range(100):
            if not cheeseshop_services.storage.exists(orphan):
                break
            await asyncio.sleep(0.05)
    finally:
        await asyncio.wait_for(collector.stop(), timeout=10)
    assert not cheeseshop_services.storage.exists(orphan)


# -- helpers ---------------------------------------------------------------------------


def _with_grace(services: Services, grace: float) -> Services:
    settings = services.settings.model_copy(update={"orphan_grace_seconds": grace})
    return dataclasses.replace(services, settings=settings)


def _source(services: Services, content: bytes) -> Path:
    source = services.settings.data_dir / "source-metadata.bin"
    source.write_bytes(content)
    return source


def _temporary(services: Services, name: str, *, age: float) -> Path:
    directory = services.settings.data_dir / "tmp"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_bytes(b"part of an upload body")
    stamp = time.time() - age
    os.utime(path, (stamp, stamp))
    return path
