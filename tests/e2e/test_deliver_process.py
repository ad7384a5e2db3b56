"""``cheeseshop serve`` delivers the outbox from a process of its own (outbox_delivery=process).

The recorder plugin writes each event it receives with the pid of the process that ran
it, which tells where a delivery happened. Each test runs its own server on a data dir
and database of its own, so it can kill processes.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cheeseshop.testing.dists import Dist, build_wheel
from cheeseshop.testing.services import create_postgres_database, drop_postgres_database
from cheeseshop.testing.upload import encode_multipart, upload_fields

pytestmark = pytest.mark.e2e

#: Bounds, in seconds.
DELIVERY_TIMEOUT = 20.0
UPLOAD_TIMEOUT = 60.0

_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def _deliverers(server_pid: int) -> list[int]:
    """The server's children running ``cheeseshop deliver``."""
    pids = []
    for child in _children(server_pid):
        try:
            command = (Path("/proc") / str(child) / "cmdline").read_bytes().split(b"\0")
        except FileNotFoundError:
            continue
        if b"deliver" in command:
            pids.append(child)
    return pids


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _wait_for(condition: Callable[[], Any], what: str, server: Any, timeout: float = DELIVERY_TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout:.0f} s" + server.output(), pytrace=False)
        time.sleep(0.05)


class Site:
    """A server of the test's own, with alice's token and the recorder's events."""

    def __init__(self, server: Any, token: str) -> None:
        self.server = server
        self.token = token

    def upload(self, dist: Dist) -> int:
        part = ("content", dist.filename, dist.content, "application/octet-stream")
        body, content_type = encode_multipart(upload_fields(dist), [part])
        credentials = base64.b64encode(f"__token__:{self.token}".encode()).decode()
        request = urllib.request.Request(
            self.server.upload_url,
            data=body,
            method="POST",
            headers={"Content-Type": content_type, "Authorization": f"Basic {credentials}"},
        )
        with _HTTP.open(request, timeout=UPLOAD_TIMEOUT) as response:
            return response.status

    def events(self, kind: str) -> list[dict[str, Any]]:
        try:
            lines = self.server.events.read_text().splitlines()
        except FileNotFoundError:
            return []
        return [event for event in map(json.loads, lines) if event["kind"] == kind]

    def delivered(self, filename: str) -> list[dict[str, Any]]:
        """The file_uploaded deliveries of ``filename`` so far."""
        return [event for event in self.events("file_uploaded") if event["filename"] == filename]


@pytest.fixture(params=["sqlite", "postgresql"])
def site(request: pytest.FixtureRequest, tmp_path: Path, server_control: Any) -> Iterator[Site]:
    database: str = request.param
    name = f"cheeseshop_deliver_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}_{os.getpid()}"
    database_url = create_postgres_database(name) if database == "postgresql" else None
    server = None
    try:
        server = server_control.start(database, tmp_path, server_control.env(tmp_path, database_url))
        yield Site(server, server.user_token("alice"))
    finally:
        if server is not None and server.process.poll() is None:
            server_control.stop(server, check=False)
        if database_url is not None:
            drop_postgres_database(name)


def test_events_are_delivered_by_the_deliverer_not_the_web_process(site: Site) -> None:
    server = site.server
    deliverer = _wait_for(lambda: _deliverers(server.process.pid), "no deliverer started", server)
    assert len(deliverer) == 1, deliverer
    dist = build_wheel("far-away", "1.0")
    assert site.upload(dist) == 200
    events = _wait_for(lambda: site.delivered(dist.filename), "the upload was not delivered", server)
    # validate_upload runs in the request; file_uploaded in the deliverer, and once.
    assert [event["pid"] for event in events] == deliverer
    time.sleep(0.6)  # two more polls: a second delivery would show by now
    assert len(site.delivered(dist.filename)) == 1


def test_a_killed_deliverer_is_restarted_and_its_event_delivered(site: Site, tmp_path: Path, server_control: Any) -> None:
    server = site.server
    # Hold the next delivery inside the hook, then kill the deliverer in the middle of it.
    server_control.stop(server)
    gate = tmp_path / "open"
    # A short lease, so the killed deliverer's event is taken over in seconds, not minutes.
    env = {**server.env, "CHEESESHOP_RECORDER__BLOCK_UNTIL": str(gate), "CHEESESHOP_OUTBOX_LEASE_SECONDS": "3"}
    server = site.server = server_control.start(server.database, tmp_path, env)
    [first] = _wait_for(lambda: _deliverers(server.process.pid), "no deliverer started", server)
    dist = build_wheel("killed-midway", "1.0")
    assert site.upload(dist) == 200
    _wait_for(lambda: site.events("blocked"), "the delivery did not reach the hook", server)
    os.kill(first, signal.SIGKILL)
    replacement = _wait_for(
        lambda: [pid for pid in _deliverers(server.process.pid) if pid != first and _alive(pid)],
        "the killed deliverer was not restarted",
        server,
    )
    gate.touch()
    # The lease of the killed delivery expires, then the new deliverer takes it over.
    events = _wait_for(
        lambda: site.delivered(dist.filename), "the event was not delivered after the restart", server,
        timeout=60.0,
    )
    assert [event["pid"] for event in events] == replacement
    # The server itself kept answering all along, and stops cleanly with its deliverer.
    assert server.get("/simple/")[0] == 200
    server_control.stop(server)
    assert not _alive(replacement[0])


def test_the_deliverer_stops_when_its_server_is_killed(site: Site) -> None:
    server = site.server
    [deliverer] = _wait_for(lambda: _deliverers(server.process.pid), "no deliverer started", server)
    server.process.kill()
    server.process.wait(timeout=10)
    _wait_for(lambda: not _alive(deliverer), "the deliverer outlived its killed server", server)
