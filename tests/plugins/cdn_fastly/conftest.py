"""A stand-in for Fastly's purge API on 127.0.0.1, and the settings that point at it.

Fastly itself cannot run here, so :class:`FakeFastly` is a real HTTP server that checks
what Fastly checks and refuses what Fastly refuses: a missing or wrong ``Fastly-Key``
(401), another service (404), a batch without keys or with more than 256 (400). It records
every request it receives, accepted or not, and can be told to fail, stall or redirect.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

import pytest

from cheeseshop.testing.records import outbox_settled as wait_outbox_settled

#: Fastly's limit on keys in one batch purge.
FASTLY_BATCH_LIMIT = 256
SERVICE_ID = "SU1Z0isxPaozGVKXdv0eY"
#: Status, headers and body of an answer.
Answer = tuple[int, dict[str, str], bytes]
_PURGE_PATH = re.compile(r"^/service/(?P<service>[^/]+)/purge(?:/(?P<key>.+))?$")


@dataclasses.dataclass(frozen=True)
class Received:
    """One request as the fake received it, and the status it answered."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def keys(self) -> tuple[str, ...]:
        """The surrogate keys named, from the header, the JSON body or the path."""
        match = _PURGE_PATH.match(self.path)
        if match and match["key"]:
            return (unquote(match["key"]),)
        if "surrogate-key" in self.headers:
            return tuple(self.headers["surrogate-key"].split())
        if self.body:
            return tuple(json.loads(self.body).get("surrogate_keys", ()))
        return ()

    @property
    def soft(self) -> bool:
        """Whether the purge asked to be soft (Fastly looks only at the header's presence)."""
        return "fastly-soft-purge" in self.headers


class FakeFastly:
    """Fastly's purge endpoints, checked like Fastly checks them; see the module docstring.

    Knobs (set them before the purge they should affect): ``fail_next`` answers that many
    otherwise-valid purges with a 500; ``echo_on_error`` puts the request headers in
    error bodies (as a misbehaving proxy might), ``error_body`` replaces them with its
    text; ``delay`` stalls every answer;
    ``redirect_to`` answers 307 to that URL; ``on_purge(received)`` is called in the
    server thread before an accepted purge is answered.
    """

    def __init__(self, *, service_id: str = SERVICE_ID, api_key: str | None = None) -> None:
        self.service_id = service_id
        self.api_key = api_key or "fastly-" + secrets.token_urlsafe(24)
        self.fail_next = 0
        self.echo_on_error = False
        self.error_body: str | None = None
        self.delay = 0.0
        self.redirect_to: str | None = None
        self.on_purge: Callable[[Received], None] | None = None
        self._received: list[Received] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fake-fastly", daemon=True
        )

    @property
    def url(self) -> str:
        """Base URL, as the ``api_url`` setting takes it."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def received(self) -> list[Received]:
        """Every request so far, in arrival order."""
        with self._lock:
            return list(self._received)

    @property
    def purges(self) -> list[Received]:
        """The purges that were accepted (answered 200)."""
        return [r for r in self.received if r.status == 200]

    def start(self) -> None:
        """Serve from a background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # -- answering ----------------------------------------------------------------------

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        """Status, headers and body for one request, as Fastly would answer it."""
        if self.delay:
            time.sleep(self.delay)
        if self.redirect_to is not None:
            return 307, {"Location": self.redirect_to + path}, b""
        if headers.get("fastly-key") != self.api_key:
            return self._error(401, "Provided credentials are missing or invalid", headers)
        match = _PURGE_PATH.match(path)
        if method != "POST" or match is None:
            return self._error(404, "Not found", headers)
        if match["service"] != self.service_id:
            return self._error(404, "Record not found", headers)
        keys = Received(method, path, headers, body, 0).keys
        if not keys:
            return self._error(400, "No surrogate keys given", headers)
        if match["key"] is None and len(keys) > FASTLY_BATCH_LIMIT:
            return self._error(400, f"Too many keys (limit {FASTLY_BATCH_LIMIT})", headers)
        with self._lock:
            failing = self.fail_next > 0
            if failing:
                self.fail_next -= 1
        if failing:
            return self._error(500, "Internal Server Error", headers)
        if self.on_purge is not None:
            self.on_purge(Received(method, path, headers, body, 200))
        if match["key"] is not None:
            answer: dict[str, str] = {"status": "ok", "id": secrets.token_hex(8)}
        else:
            answer = {key: secrets.token_hex(8) for key in keys}
        return 200, {"Content-Type": "application/json"}, json.dumps(answer).encode()

    def _error(self, status: int, message: str, headers: dict[str, str]) -> Answer:
        if self.error_body is not None:
            return status, {"Content-Type": "text/plain"}, self.error_body.encode()
        payload: dict[str, Any] = {"msg": message}
        if self.echo_on_error:
            payload["request_headers"] = headers
        return status, {"Content-Type": "application/json"}, json.dumps(payload).encode()

    def _record(self, received: Received) -> None:
        with self._lock:
            self._received.append(received)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            # Keep-alive, as Fastly's API offers: a batched purge reuses one connection.
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {name.lower(): value for name, value in self.headers.items()}
                try:
                    status, extra, payload = fake.answer(self.command, self.path, headers, body)
                except Exception as error:  # a failed check in on_purge: make it visible
                    status, extra, payload = 599, {}, repr(error).encode()
                fake._record(Received(self.command, self.path, headers, body, status))
                try:
                    self.send_response(status)
                    for name, value in extra.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out first (the ``delay`` knob): nothing to answer

            do_POST = do_GET = do_PUT = do_DELETE = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the test reads `received`; stderr noise helps no one

        return Handler


@pytest.fixture
def make_fastly() -> Iterator[Callable[[], FakeFastly]]:
    """``make_fastly()``: start another :class:`FakeFastly`; all are stopped after the test."""
    servers: list[FakeFastly] = []

    def make() -> FakeFastly:
        server = FakeFastly()
        server.start()
        servers.append(server)
        return server

    try:
        yield make
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def fastly(make_fastly: Callable[[], FakeFastly]) -> FakeFastly:
    """A running :class:`FakeFastly` on 127.0.0.1 with its own service id and API key."""
    return make_fastly()


@pytest.fixture
def fastly_section(fastly: FakeFastly) -> dict[str, Any]:
    """The ``[cdn_fastly]`` settings section pointing at the fake."""
    return {
        "api_key": fastly.api_key,
        "service_id": fastly.service_id,
        "api_url": fastly.url,
        "timeout_seconds": 5,
    }


Eventually = Callable[..., Awaitable[None]]


@pytest.fixture
def eventually() -> Eventually:
    """``await eventually(predicate, timeout=10)``: poll an async predicate, bounded."""

    async def wait(
        predicate: Callable[[], Awaitable[bool]], *, timeout: float = 10.0, what: str = "condition"
    ) -> None:
        deadline = time.monotonic() + timeout
        while not await predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} not reached within {timeout:.0f}s")
            await asyncio.sleep(0.05)

    return wait


@pytest.fixture
def outbox_settled() -> Callable[..., Awaitable[None]]:
    """``await outbox_settled(services)``: wait until every outbox event is delivered."""
    return wait_outbox_settled
