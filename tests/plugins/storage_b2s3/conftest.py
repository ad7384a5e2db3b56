"""Fixtures of the storage_b2s3 tests: S3 on moto_server, B2 on b2sdk's simulator.

One moto server per test process, emptied (and its bucket made again) before every test
that uses it; S3 is reached through a TCP proxy the test can cut. B2 is b2sdk's
``RawSimulator`` in this process, handed to every storage the plugin builds during the
test. The plugin's cache table lives in the test's database; on PostgreSQL (whose test
database outlives the test) it is dropped before and after.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from cheeseshop.db import make_engine

from cheeseshop_storage_b2s3 import B2S3Storage, use_b2_api_factory
from cheeseshop_storage_b2s3.index import TABLE_NAME
from cheeseshop_storage_b2s3.testing import B2Simulator

from b2s3_kit import B2_BUCKET, MotoS3, Proxy, plugin_settings, section


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    """``moto_server`` running for this test process."""
    server = MotoS3(tmp_path_factory.mktemp("moto") / "moto.log")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3(moto_server: MotoS3) -> MotoS3:
    """The moto server, emptied, with the archive bucket made afresh."""
    moto_server.reset()
    return moto_server


@pytest.fixture
def s3_proxy(s3: MotoS3) -> Iterator[Proxy]:
    """A proxy in front of S3 (``.cut()`` makes S3 unreachable, ``.mend()`` undoes it)."""
    proxy = Proxy(s3.port)
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def b2() -> Iterator[B2Simulator]:
    """B2: b2sdk's simulator with the cache bucket, given to every storage made meanwhile."""
    simulator = B2Simulator(B2_BUCKET)
    with use_b2_api_factory(simulator.factory):
        yield simulator


@pytest.fixture
def b2s3_section(request: pytest.FixtureRequest, s3_proxy: Proxy) -> dict[str, Any]:
    """The ``[storage_b2s3]`` section: S3 through the proxy, B2 prefix ``cache/``.

    Parametrize it indirectly with a dict of changes to change some of it.
    """
    return section(s3_proxy.url, **getattr(request, "param", {}))


def _drop_table(url: str) -> None:
    async def drop() -> None:
        engine = make_engine(url)
        try:
            async with engine.begin() as connection:
                await connection.execute(text(f'DROP TABLE IF EXISTS "{TABLE_NAME}"'))
        finally:
            await engine.dispose()

    asyncio.run(drop())


@pytest.fixture
def cache_table_dropped(cheeseshop_database_url: str) -> Iterator[None]:
    """The plugin's table gone before and after the test (a PostgreSQL database is shared)."""
    if cheeseshop_database_url.startswith("sqlite"):
        yield
        return
    _drop_table(cheeseshop_database_url)
    try:
        yield
    finally:
        _drop_table(cheeseshop_database_url)


@pytest.fixture
def cheeseshop_settings_overrides(
    b2s3_section: dict[str, Any], b2: B2Simulator, cache_table_dropped: None
) -> dict[str, Any]:
    """The plugin enabled by name, as a deployer would: loaded through its entry point."""
    return {"plugins": ["storage_b2s3"], "storage_b2s3": b2s3_section}


@pytest.fixture
def make_storage(
    tmp_path: Path, b2: B2Simulator, s3_proxy: Proxy
) -> Callable[..., B2S3Storage]:
    """``make_storage(**section_changes)``: a storage outside any app, on its own SQLite file."""

    def make(**changes: Any) -> B2S3Storage:
        settings = plugin_settings(
            section(s3_proxy.url, **changes), f"sqlite+aiosqlite:///{tmp_path / 'index.db'}"
        )
        return B2S3Storage.from_settings(settings, b2_api_factory=b2.factory)

    return make

