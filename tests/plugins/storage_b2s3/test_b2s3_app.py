"""The plugin enabled by name in a running index (SQLite and PostgreSQL): uploads, the cache
sync after commit, downloads through /packages/, and the faults of either store."""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError
from sqlalchemy import func, select

from cheeseshop import PeriodicTask
from cheeseshop.config import redacted
from cheeseshop.db.models import File, OutboxDelivery, OutboxEvent, Project
from cheeseshop.testing.dists import Dist, build_wheel

import cheeseshop_storage_b2s3
from cheeseshop_storage_b2s3 import RECONCILE, B2S3Storage, EmbeddedReconciler, storage_for
from cheeseshop_storage_b2s3.testing import B2Simulator

from b2s3_kit import DELIVERY_TIMEOUT, MotoS3, Proxy, paths_of, sha256, wait_cached, wait_until

async def get(client: Any, path: str, **headers: str) -> Any:
    response = await client.get(path, headers=headers)
    response.body = await response.get_data()
    return response


async def count(services: Any, model: Any) -> int:
    async with services.db.read() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


@pytest.fixture
def storage(cheeseshop_services: Any) -> B2S3Storage:
    storage = cheeseshop_services.storage
    assert isinstance(storage, B2S3Storage)
    return storage


@pytest.fixture
def wheel() -> Dist:
    return build_wheel("Cached-Demo", "1.0")


# -- the slot and the hooks ---------------------------------------------------------------


def test_file_storage_is_the_plugins_and_the_hooks_share_it(
    cheeseshop_services: Any, storage: B2S3Storage
) -> None:
    names = [info.name for info in cheeseshop_services.hooks.describe()]
    assert "storage_b2s3" in names
    assert storage_for(cheeseshop_services.settings) is storage


def test_periodic_tasks_declares_the_reconcile(cheeseshop_services: Any) -> None:
    entries = cheeseshop_services.hooks.periodic_tasks(cheeseshop_services.settings)
    entry = entries[RECONCILE]
    assert isinstance(entry, PeriodicTask)
    assert entry.interval_seconds == 600.0
    assert entry.run is cheeseshop_storage_b2s3.run_reconcile


def test_settings_secrets_are_masked(cheeseshop_services: Any) -> None:
    shown = redacted(cheeseshop_services.settings)["storage_b2s3"]
    assert shown["b2_application_key"] == "********"
    assert shown["s3_secret_access_key"] == "********"
    assert shown["b2_key_id"] == "simulated"


# -- upload, then the cache sync ------------------------------------------------------------


async def test_file_uploaded_archives_then_caches_with_equal_digests(
    upload: Any, cheeseshop_services: Any, storage: B2S3Storage, s3: MotoS3, b2: B2Simulator,
    wheel: Dist,
) -> None:
    response = await upload(wheel)
    assert response.status_code == 200, await response.get_data()
    path, metadata_path = paths_of(wheel)

    # Archived before the 200, described.
    archived = s3.objects("files/")
    assert archived[path] == wheel.content
    head = s3.client().head_object(Bucket="cheeseshop-archive", Key=f"files/{path}")
    assert head["Metadata"]["project"] == "cached-demo"
    assert head["Metadata"]["version"] == "1.0"
    assert head["Metadata"]["packagetype"] == "bdist_wheel"
    assert head["Metadata"]["sha256"] == wheel.sha256

    # Cached after commit, by the outbox: the same bytes in both buckets.
    await wait_cached(storage, path, metadata_path)
    async with cheeseshop_services.db.read() as session:
        row = (await session.execute(select(File.sha256_digest, File.metadata_sha256))).one()
    for stored, recorded in ((path, row.sha256_digest), (metadata_path, row.metadata_sha256)):
        cached = b2.read(f"cache/{stored}")
        assert cached is not None
        assert sha256(cached) == sha256(s3.objects("files/")[stored]) == recorded
        assert (b2.info(f"cache/{stored}") or {})["sha256"] == recorded


async def test_downloads_are_streamed_from_b2_checked(
    upload: Any, cheeseshop_client: Any, storage: B2S3Storage, b2: B2Simulator, wheel: Dist,
    s3_proxy: Proxy,
) -> None:
    assert (await upload(wheel)).status_code == 200
    path, metadata_path = paths_of(wheel)
    await wait_cached(storage, path, metadata_path)
    # S3 cut: whatever is served now comes from B2.
    s3_proxy.cut()
    before = b2.raw.calls
    response = await get(cheeseshop_client, f"/packages/{path}")
    assert response.status_code == 200
    assert response.body == wheel.content
    assert response.headers["ETag"] == f'"{wheel.sha256}"'
    assert b2.raw.calls > before
    ranged = await get(cheeseshop_client, f"/packages/{path}", Range="bytes=10-19")
    assert ranged.status_code == 206 and ranged.body == wheel.content[10:20]
    # A raw exchange: Quart's test client would fill in a HEAD's Content-Length itself.
    async with cheeseshop_client.request(f"/packages/{path}", method="HEAD") as connection:
        await connection.send_complete()
    assert connection.status_code == 200
    assert connection.headers["Content-Length"] == str(len(wheel.content))
    metadata = await get(cheeseshop_client, f"/packages/{metadata_path}")
    assert metadata.status_code == 200 and metadata.body.startswith(b"Metadata-Version")


async def test_b2_failing_every_call_uploads_succeed_and_downloads_come_from_s3(
    upload: Any, cheeseshop_client: Any, cheeseshop_services: Any, storage: B2S3Storage,
    b2: B2Simulator, wheel: Dist,
) -> None:
    path, metadata_path = paths_of(wheel)
    with b2.failing():
        response = await upload(wheel)
        assert response.status_code == 200
        for stored, content in ((path, wheel.content), (metadata_path, None)):
            answer = await get(cheeseshop_client, f"/packages/{stored}")
            assert answer.status_code == 200
            if content is not None:
                assert answer.body == content
                assert hashlib.sha256(answer.body).hexdigest() == wheel.sha256

        async def sync_failed() -> bool:
            async with cheeseshop_services.db.read() as session:
                errors = await session.scalars(
                    select(OutboxDelivery.last_error).where(OutboxDelivery.plugin == "storage_b2s3")
                )
                return any(error for error in errors)

        deadline = time.monotonic() + DELIVERY_TIMEOUT
        while not await sync_failed():
            assert time.monotonic() < deadline, "the cache sync was never tried"
            await asyncio.sleep(0.05)
    assert b2.names() == []
    # B2 back: the outbox's retry fills the cache; nothing was lost.
    await wait_cached(storage, path, metadata_path)
    assert b2.read(f"cache/{path}") == wheel.content


async def test_a_truncated_b2_copy_is_served_from_s3_then_repaired_by_reconcile(
    upload: Any, cheeseshop_client: Any, storage: B2S3Storage, b2: B2Simulator, wheel: Dist,
) -> None:
    assert (await upload(wheel)).status_code == 200
    path, metadata_path = paths_of(wheel)
    await wait_cached(storage, path, metadata_path)
    b2.put(f"cache/{path}", wheel.content[:-100], {"sha256": wheel.sha256})

    response = await get(cheeseshop_client, f"/packages/{path}")
    assert response.status_code == 200
    assert response.body == wheel.content

    report = await asyncio.to_thread(storage.reconcile)
    assert report.repaired == 1 and report.failed == 0
    assert b2.read(f"cache/{path}") == wheel.content
    assert b2.versions(f"cache/{path}") == 1


async def test_s3_failing_refuses_the_upload_with_503_and_records_nothing(
    upload: Any, cheeseshop_services: Any, s3: MotoS3, s3_proxy: Proxy, b2: B2Simulator,
    wheel: Dist,
) -> None:
    s3_proxy.cut()
    response = await upload(wheel)
    body = (await response.get_data()).decode()
    assert response.status_code == 503, body
    assert "storage is unavailable" in body and "try again" in body.lower()
    assert response.headers["Retry-After"]
    for model in (File, Project, OutboxEvent):
        assert await count(cheeseshop_services, model) == 0, model
    s3_proxy.mend()
    assert s3.objects() == {}
    assert b2.names() == []
    # S3 back: the same upload goes through.
    assert (await upload(wheel)).status_code == 200


async def test_s3_failing_on_the_metadata_leaves_nothing_behind(
    upload: Any, cheeseshop_services: Any, storage: B2S3Storage, s3: MotoS3, wheel: Dist,
) -> None:
    def refuse_metadata(params: dict[str, Any], **_: Any) -> None:
        if params["Key"].endswith(".metadata"):
            raise EndpointConnectionError(endpoint_url=s3.url)

    storage.s3.client.meta.events.register("before-parameter-build.s3.PutObject", refuse_metadata)
    response = await upload(wheel)
    assert response.status_code == 503
    assert await count(cheeseshop_services, File) == 0
    # The wheel itself went up, and was taken away again.
    assert s3.objects() == {}


async def test_s3_down_downloads_still_come_from_b2(
    upload: Any, cheeseshop_client: Any, storage: B2S3Storage, s3_proxy: Proxy, wheel: Dist,
) -> None:
    assert (await upload(wheel)).status_code == 200
    path, metadata_path = paths_of(wheel)
    await wait_cached(storage, path, metadata_path)
    s3_proxy.cut()
    response = await get(cheeseshop_client, f"/packages/{path}")
    assert response.status_code == 200 and response.body == wheel.content


async def test_both_stores_down_downloads_answer_503(
    upload: Any, cheeseshop_client: Any, storage: B2S3Storage, s3_proxy: Proxy,
    b2: B2Simulator, wheel: Dist,
) -> None:
    assert (await upload(wheel)).status_code == 200
    path, metadata_path = paths_of(wheel)
    await wait_cached(storage, path, metadata_path)
    s3_proxy.cut()
    with b2.failing():
        response = await get(cheeseshop_client, f"/packages/{path}")
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert b"try again" in response.body.lower()
    assert wheel.content not in response.body


@pytest.mark.parametrize(
    "b2s3_section", [{"files_url": "https://files.example.com"}], indirect=True
)
async def test_files_url_redirects_downloads(
    upload: Any, cheeseshop_client: Any, wheel: Dist,
) -> None:
    assert (await upload(wheel)).status_code == 200
    path, _ = paths_of(wheel)
    response = await cheeseshop_client.get(f"/packages/{path}")
    assert response.status_code == 302
    assert response.headers["Location"] == f"https://files.example.com/{path}"


# -- the embedded mode's reconcile loop -----------------------------------------------------------


async def test_embedded_reconciler_runs_and_stops(
    upload: Any, cheeseshop_services: Any, storage: B2S3Storage, b2: B2Simulator, wheel: Dist,
) -> None:
    with b2.failing():
        assert (await upload(wheel)).status_code == 200
    path, metadata_path = paths_of(wheel)
    reconciler = EmbeddedReconciler(cheeseshop_services.settings, first_delay=0)
    reconciler.interval = 0.1
    await reconciler.start()
    try:
        await wait_until(lambda: reconciler.runs >= 2, "two reconcile runs")
        await wait_cached(storage, path, metadata_path)
    finally:
        await reconciler.stop()
    assert reconciler._task is None
    assert b2.read(f"cache/{path}") == wheel.content

