"""pytest fixtures for Cheeseshop and its plugin authors (opt-in).

Enable it in a ``conftest.py``::

    pytest_plugins = ["cheeseshop.testing.pytest_plugin"]

Then a test gets a running application (start-up and shutdown included), a client, an
account with a token, and an ``upload`` helper that posts a built distribution the way
twine does. Register your plugin by overriding ``cheeseshop_plugins``::

    @pytest.fixture
    def cheeseshop_plugins():
        return [("myplugin", myplugin_module)]

Requires ``pytest-asyncio`` (``asyncio_mode = "auto"``).
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from cheeseshop.config import Settings, load_settings
from cheeseshop.services import EXTENSION_KEY, Services
from cheeseshop.testing.dists import Dist
from cheeseshop.testing.asgi import QuartRequests
from cheeseshop.testing.services import migrated_sqlite
from cheeseshop.testing.upload import encode_multipart, upload_fields

__all__ = [
    "cheeseshop_app",
    "cheeseshop_client",
    "cheeseshop_database_url",
    "cheeseshop_plugins",
    "cheeseshop_services",
    "cheeseshop_settings",
    "cheeseshop_settings_overrides",
    "make_token",
    "upload",
]

TEST_PASSWORD = "correct horse battery staple"


@functools.cache
def _test_password_hash() -> str:
    # Hashed once per process: argon2 at production strength costs ~0.4 s a call.
    from cheeseshop.accounts.passwords import hash_password

    return hash_password(TEST_PASSWORD)


@pytest.fixture(scope="session")
def _cheeseshop_sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cheeseshop-template") / "template.db"


@pytest.fixture
def cheeseshop_database_url(tmp_path: Path, _cheeseshop_sqlite_template: Path) -> str:
    """A freshly migrated, empty database (SQLite by default). Override for others."""
    return migrated_sqlite(_cheeseshop_sqlite_template, tmp_path / "cheeseshop.db")


@pytest.fixture
def cheeseshop_plugins() -> Sequence[tuple[str, object]]:
    """(name, plugin) pairs to register besides the core's defaults. Override to add yours."""
    return []


@pytest.fixture
def cheeseshop_settings_overrides() -> dict[str, Any]:
    """Settings to change for a test (e.g. ``{"plugins": ["recorder"]}``). Override it."""
    return {}


@pytest.fixture
def cheeseshop_settings(
    tmp_path: Path, cheeseshop_database_url: str, cheeseshop_settings_overrides: dict[str, Any]
) -> Settings:
    """Settings for a test: its own data dir and database, fast outbox retries, events
    delivered by the app itself.

    The process environment is not read, so a developer's ``CHEESESHOP_*`` variables
    cannot change a test's outcome.
    """
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "database_url": cheeseshop_database_url,
        "secret_key": "test-secret-key",
        "outbox_retry_seconds": 0.05,
        "outbox_sweep_seconds": 0.2,
        # The app runs in the test's process, with no `cheeseshop deliver` beside it.
        "outbox_delivery": "inline",
    }
    values.update(cheeseshop_settings_overrides)
    return load_settings(environ={}, overrides=values)


@pytest.fixture
async def cheeseshop_app(
    cheeseshop_settings: Settings, cheeseshop_plugins: Sequence[tuple[str, object]]
) -> AsyncIterator[Any]:
    """The application, started (``before_serving`` ran) and stopped after the test."""
    from cheeseshop.app import create_app

    from quart.testing.app import TestApp

    app = create_app(cheeseshop_settings, extra_plugins=cheeseshop_plugins)
    # Quart's default of 6 s is shorter than the outbox's grace for a delivery in flight.
    async with TestApp(app, startup_timeout=30, shutdown_timeout=30) as test_app:
        yield test_app


@pytest.fixture
def quart_requests(cheeseshop_app: Any) -> QuartRequests:
    """The paths of the requests that got past the ASGI fast path to Quart (``.paths``)."""
    return QuartRequests.install(cheeseshop_app)


@pytest.fixture
def cheeseshop_services(cheeseshop_app: Any) -> Services:
    """The running application's services (settings, hooks, db, storage, outbox)."""
    return cheeseshop_app.app.extensions[EXTENSION_KEY]


@pytest.fixture
def cheeseshop_client(cheeseshop_app: Any) -> Any:
    """A Quart test client for the running application."""
    return cheeseshop_app.test_client()


@pytest.fixture
def make_token(cheeseshop_services: Services) -> Callable[..., Awaitable[str]]:
    """``await make_token("alice", projects=None)``: the user (created once) and a new token."""
    from cheeseshop.accounts.service import create_token, create_user, user_by_name

    async def make(username: str = "alice", *, projects: list[str] | None = None, **kwargs: Any) -> str:
        async with cheeseshop_services.db.write() as session:
            user = await user_by_name(session, username)
            if user is None:
                user = await create_user(
                    session,
                    username,
                    email=f"{username}@example.com",
                    password=TEST_PASSWORD,
                    password_hash=_test_password_hash(),
                )
            _, raw = await create_token(
                session, user, prefix=cheeseshop_services.settings.token_prefix, projects=projects, **kwargs
            )
            return raw

    return make


@pytest.fixture
def upload(cheeseshop_client: Any, make_token: Callable[..., Awaitable[str]]) -> Callable[..., Awaitable[Any]]:
    """``await upload(dist, token=None, fields=None, path="/legacy/")``: POST like twine.

    Without ``token`` a token of user ``alice`` is made. ``fields`` replaces the form
    fields entirely (see :func:`cheeseshop.testing.upload.upload_fields`).
    """
    import base64

    async def post(
        dist: Dist,
        *,
        token: str | None = None,
        fields: list[tuple[str, str]] | None = None,
        path: str = "/legacy/",
        file_content_type: str | None = "application/octet-stream",
        authorization: str | None = None,
    ) -> Any:
        if token is None and authorization is None:
            token = await make_token()
        body, content_type = encode_multipart(
            fields if fields is not None else upload_fields(dist),
            [("content", dist.filename, dist.content, file_content_type)],
        )
        headers = {"Content-Type": content_type, "Content-Length": str(len(body))}
        if authorization is None:
            credentials = base64.b64encode(f"__token__:{token}".encode()).decode()
            authorization = f"Basic {credentials}"
        if authorization:
            headers["Authorization"] = authorization
        return await cheeseshop_client.post(path, data=body, headers=headers)

    return post
