"""CeleryDispatcher: a broker that hangs costs the request a bounded time, never the upload."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kombu.exceptions import OperationalError

from cheeseshop.services import Services
from cheeseshop.testing.dists import build_wheel
from cheeseshop.testing.services import migrated_sqlite


class SilentServer:
    """Accepts TCP connections on 127.0.0.1 and never says a word: a hung broker."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.accepted.append(connection)

    def close(self) -> None:
        self.listener.close()
        for connection in self.accepted:
            connection.close()


@pytest.fixture
def silent_broker() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


@pytest.fixture
def cheeseshop_database_url(tmp_path: Path, _cheeseshop_sqlite_template: Path) -> str:
    return migrated_sqlite(_cheeseshop_sqlite_template, tmp_path / "cheeseshop.db")


@pytest.fixture
def cheeseshop_settings_overrides(
    silent_broker: SilentServer, recorder_path: Path
) -> dict[str, Any]:
    return {
        "broker_url": f"redis://127.0.0.1:{silent_broker.port}/0",
        "broker_connect_timeout_seconds": 0.5,
        "plugins": ["recorder"],
        "recorder": {"path": str(recorder_path)},
    }


async def test_event_dispatcher_gives_up_on_a_hung_broker_within_its_budget(
    cheeseshop_services: Services, silent_broker: SilentServer
) -> None:
    dispatcher = cheeseshop_services.outbox.dispatcher
    assert dispatcher.budget == 2.0
    started = time.monotonic()
    # kombu's own socket time-out, or the dispatcher's budget: whichever comes first.
    with pytest.raises((OperationalError, TimeoutError)):
        await dispatcher.dispatch([1, 2, 3])
    assert time.monotonic() - started < dispatcher.budget + 0.5
    assert silent_broker.accepted, "it did try the broker"


async def test_upload_with_a_hung_broker_is_accepted_and_left_to_the_sweep(
    upload: Any, cheeseshop_services: Services
) -> None:
    started = time.monotonic()
    response = await upload(build_wheel("hung-broker", "1.0"))
    assert response.status_code == 200
    assert time.monotonic() - started < cheeseshop_services.outbox.dispatcher.budget + 2.0
    due, _ = await cheeseshop_services.outbox.due()
    assert len(due) >= 2, "the events wait in the outbox for the sweep"
