"""The reconcile, and cache syncs that did not finish.

Here a failed delivery is retried only after ten minutes, so whatever fills the cache
during a test is the reconcile (or a sync the test runs itself), not the outbox.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from sqlalchemy import select

from cheeseshop.db.models import OutboxDelivery
from cheeseshop.projects.service import delete_release
from cheeseshop.testing.dists import Dist, build_wheel

from cheeseshop_storage_b2s3 import B2S3Storage, run_reconcile
from cheeseshop_storage_b2s3.index import cache_table
from cheeseshop_storage_b2s3.testing import B2Simulator

from b2s3_kit import DELIVERY_TIMEOUT, MotoS3, paths_of, sha256, wait_cached


@pytest.fixture
def cheeseshop_settings_overrides(cheeseshop_settings_overrides: dict[str, Any]) -> dict[str, Any]:
    return {
        **cheeseshop_settings_overrides,
        "outbox_retry_seconds": 600,
        "outbox_max_retry_seconds": 600,
    }


@pytest.fixture
def storage(cheeseshop_services: Any) -> B2S3Storage:
    storage = cheeseshop_services.storage
    assert isinstance(storage, B2S3Storage)
    return storage


class Killed(BaseException):
    """What a SIGKILL would do to a sync: stop it dead, with no clean-up of its own."""


async def _failed_syncs(services: Any) -> int:
    async with services.db.read() as session:
        return len(
            list(
                await session.scalars(
                    select(OutboxDelivery.id).where(
                        OutboxDelivery.plugin == "storage_b2s3",
                        OutboxDelivery.delivered.is_(None),
                        OutboxDelivery.attempts >= 1,
                    )
                )
            )
        )


async def _upload_uncached(upload: Any, services: Any, b2: B2Simulator, dist: Dist) -> None:
    """Upload ``dist`` while B2 is down: its sync fails and is not retried in the test."""
    before = await _failed_syncs(services)
    with b2.failing():
        response = await upload(dist)
        assert response.status_code == 200, await response.get_data()
        deadline = time.monotonic() + DELIVERY_TIMEOUT
        while await _failed_syncs(services) == before:
            assert time.monotonic() < deadline, "the cache sync was never tried"
            await asyncio.sleep(0.05)


def _assert_cached(storage: B2S3Storage, s3: MotoS3, b2: B2Simulator, *paths: str) -> None:
    archived = s3.objects("files/")
    for path in paths:
        cached = b2.read(f"cache/{path}")
        assert cached is not None, path
        assert sha256(cached) == sha256(archived[path])
        assert b2.versions(f"cache/{path}") == 1
        row = storage.index.cached(path)
        assert row is not None and row.sha256 == sha256(cached)


async def test_reconcile_copies_what_was_never_synced(
    upload: Any, cheeseshop_services: Any, storage: B2S3Storage, s3: MotoS3, b2: B2Simulator,
) -> None:
    wheel = build_wheel("Never-Synced", "1.0")
    await _upload_uncached(upload, cheeseshop_services, b2, wheel)
    assert b2.names() == []

    report = await asyncio.to_thread(run_reconcile, cheeseshop_services.settings)

    assert (report.copied, report.failed) == (2, 0)  # the wheel and its .metadata
    await asyncio.to_thread(_assert_cached, storage, s3, b2, *paths_of(wheel))
    again = await asyncio.to_thread(storage.reconcile)
    assert (again.copied, again.recorded, again.repaired) == (0, 0, 0)
    assert again.verified == 2


async def test_a_sync_killed_after_the_copy_is_completed_by_reconcile(
    upload: Any, cheeseshop_services: Any, storage: B2S3Storage, s3: MotoS3, b2: B2Simulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wheel = build_wheel("Killed-Late", "1.0")
    path, metadata_path = paths_of(wheel)
    await _upload_uncached(upload, cheeseshop_services, b2, wheel)
    # A worker runs the sync and dies right after B2 took the wheel, before recording it.
    record = storage.index.record

    def die(*args: Any, **kwargs: Any) -> None:
        raise Killed

    monkeypatch.setattr(storage.index, "record", die)
    with pytest.raises(Killed):
        await asyncio.to_thread(storage.cache_upload, path)
    monkeypatch.setattr(storage.index, "record", record)
    assert b2.read(f"cache/{path}") == wheel.content
    assert await asyncio.to_thread(storage.index.cached, path) is None
    assert b2.read(f"cache/{metadata_path}") is None

    report = await asyncio.to_thread(storage.reconcile)

    # The wheel was in B2 already: recorded, not copied again; the metadata copied.
    assert (report.recorded, report.copied, report.failed) == (1, 1, 0)
    await asyncio.to_thread(_assert_cached, storage, s3, b2, path, metadata_path)


async def test_a_sync_killed_mid_download_is_completed_by_reconcile(
    upload: Any, cheeseshop_services: Any, storage: B2S3Storage, s3: MotoS3, b2: B2Simulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wheel = build_wheel("Killed-Early", "1.0")
    path, metadata_path = paths_of(wheel)
    await _upload_uncached(upload, cheeseshop_services, b2, wheel)
    read_into = storage.s3.read_into

    def die_midway(stored: str, target: Any) -> Any:
        target.write(b"half of it")
        raise Killed

    monkeypatch.setattr(storage.s3, "read_into", die_midway)
    with pytest.raises(Killed):
        await asyncio.to_thread(storage.cache_upload, path)
    monkeypatch.setattr(storage.s3, "read_into", read_into)
    assert b2.names() == []

    report = await asyncio.to_thread(storage.reconcile)

    assert (report.copied, report.failed) == (2, 0)
    await asyncio.to_thread(_assert_cached, storage, s3, b2, path, metadata_path)


async def test_a_repeated_delivery_after_the_reconcile_changes_nothing(
    upload: Any, cheeseshop_services: Any, storage: B2S3Storage, s3: MotoS3, b2: B2Simulator,
) -> None:
    wheel = build_wheel("Twice", "1.0")
    path, metadata_path = paths_of(wheel)
    await _upload_uncached(upload, cheeseshop_services, b2, wheel)
    await asyncio.to_thread(storage.reconcile)
    before = [b2.file_id(f"cache/{p}") for p in (path, metadata_path)]
    await asyncio.to_thread(storage.cache_upload, path)  # the outbox's late retry
    await asyncio.to_thread(_assert_cached, storage, s3, b2, path, metadata_path)
    # Looked at, not uploaded again: the very same B2 versions.
    assert [b2.file_id(f"cache/{p}") for p in (path, metadata_path)] == before


async def test_reconcile_repairs_copies_that_vanished_or_changed(
    upload: Any, cheeseshop_services: Any, storage: B2S3Storage, s3: MotoS3, b2: B2Simulator,
) -> None:
    first, second = build_wheel("Vanished", "1.0"), build_wheel("Changed", "1.0")
    for dist in (first, second):
        assert (await upload(dist)).status_code == 200
    await wait_cached(storage, *paths_of(first), *paths_of(second))
    gone, _ = paths_of(first)
    changed, _ = paths_of(second)
    await asyncio.to_thread(storage.b2.delete, gone)
    b2.put(f"cache/{changed}", b"x" * len(second.content), {"sha256": second.sha256})

    report = await asyncio.to_thread(storage.reconcile)

    assert (report.repaired, report.verified, report.failed) == (2, 2, 0)
    await asyncio.to_thread(_assert_cached, storage, s3, b2, *paths_of(first), *paths_of(second))


async def test_reconcile_works_in_batches_and_checks_a_budget_per_run(
    upload: Any, cheeseshop_services: Any, b2: B2Simulator, monkeypatch: pytest.MonkeyPatch,
) -> None:
    dists = [build_wheel(f"Batch-{n}", "1.0") for n in range(3)]
    for dist in dists:
        await _upload_uncached(upload, cheeseshop_services, b2, dist)
    storage = cheeseshop_services.storage
    section = storage.section.model_copy(
        update={"reconcile_batch_size": 1, "reconcile_verify_per_run": 4}
    )
    monkeypatch.setattr(storage, "section", section)
    pending_calls: list[int] = []
    pending = storage.index.pending

    def counted(**kwargs: Any) -> Any:
        pending_calls.append(kwargs["limit"])
        return pending(**kwargs)

    monkeypatch.setattr(storage.index, "pending", counted)

    first = await asyncio.to_thread(storage.reconcile)
    assert (first.copied, first.failed) == (6, 0)
    assert pending_calls == [1, 1, 1, 1]  # three batches of one file, then an empty one

    second = await asyncio.to_thread(storage.reconcile)
    assert second.verified == 4  # the budget: 4 of the 6 copies
    third = await asyncio.to_thread(storage.reconcile)
    assert third.verified == 4  # the 2 left over first, then the 2 checked longest ago


async def test_reconcile_stops_early_while_b2_is_down(
    upload: Any, cheeseshop_services: Any, storage: B2S3Storage, b2: B2Simulator,
) -> None:
    for n in range(4):
        await _upload_uncached(upload, cheeseshop_services, b2, build_wheel(f"Down-{n}", "1.0"))
    with b2.failing():
        report = await asyncio.to_thread(storage.reconcile)
    assert report.copied == 0 and report.failed == 5  # gave up after five in a row, of eight


async def test_reconcile_forgets_records_of_files_that_are_gone(
    cheeseshop_services: Any, storage: B2S3Storage, b2: B2Simulator,
) -> None:
    orphan = "ab/cd/" + "e" * 60 + "/gone-1.0.tar.gz"
    await asyncio.to_thread(storage.index.record, orphan, sha256="0" * 64, sha1="0" * 40, size=3)
    report = await asyncio.to_thread(storage.reconcile)
    assert report.forgotten == 1
    assert await asyncio.to_thread(storage.index.cached, orphan) is None


def test_the_cache_table_is_the_plugins_own() -> None:
    assert cache_table.name == "cheeseshop_b2s3_cache"
    assert [column.name for column in cache_table.primary_key] == ["path"]


async def test_reconcile_deletes_the_b2_copy_of_a_deleted_file(
    upload: Any, cheeseshop_services: Any, storage: B2S3Storage, b2: B2Simulator,
) -> None:
    dist, kept = build_wheel("Deleted", "1.0"), build_wheel("Deleted", "2.0")
    for each in (dist, kept):
        assert (await upload(each)).status_code == 200
    await wait_cached(storage, *paths_of(dist), *paths_of(kept))
    await delete_release(cheeseshop_services, "Deleted", "1.0")

    report = await asyncio.to_thread(storage.reconcile)

    assert report.forgotten == 2  # the wheel and its .metadata
    for path in paths_of(dist):
        assert b2.file_id(f"cache/{path}") is None
        assert await asyncio.to_thread(storage.index.cached, path) is None
    for path in paths_of(kept):
        assert b2.file_id(f"cache/{path}") is not None


async def test_a_copy_finished_after_its_file_was_deleted_is_removed(
    upload: Any, cheeseshop_services: Any, storage: B2S3Storage, b2: B2Simulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dist = build_wheel("Raced", "1.0")
    await _upload_uncached(upload, cheeseshop_services, b2, dist)
    path, metadata_path = paths_of(dist)
    recorded = storage.index.recorded
    looks: list[str] = []

    def deleted_meanwhile(looked_up: str) -> Any:
        # The first look (before copying) finds the row; the file is deleted during the copy.
        looks.append(looked_up)
        return recorded(looked_up) if len(looks) == 1 else None

    monkeypatch.setattr(storage.index, "recorded", deleted_meanwhile)
    await asyncio.to_thread(storage.cache_upload, path)

    assert looks == [path, path]  # found before the copies, gone after them
    for each in (path, metadata_path):
        assert b2.file_id(f"cache/{each}") is None
        assert await asyncio.to_thread(storage.index.cached, each) is None
