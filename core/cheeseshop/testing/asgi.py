"""Looking at the application below the test client: raw ASGI answers, and what reaches Quart.

The Quart test client rebuilds a response from what it received: it recounts
Content-Length from the body (which hides what a HEAD or a 304 really declares) and adds
default headers. :func:`asgi_request` returns the messages as the application sent them.
:class:`QuartRequests` sits between the ASGI fast path (:mod:`cheeseshop.web.fastpath`)
and Quart, and records the requests the fast path let through. :func:`hypercorn_server`
serves an ASGI app on a real hypercorn, for what only shows on the wire.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

__all__ = ["HypercornServer", "QuartRequests", "Sent", "asgi_request", "hypercorn_server"]


class HypercornServer:
    """A hypercorn serving on 127.0.0.1 (see :func:`hypercorn_server`)."""

    def __init__(self, port: int, stop: asyncio.Event, task: asyncio.Future[None]) -> None:
        self.port = port
        #: Set it to begin hypercorn's graceful shutdown.
        self.stop = stop
        #: hypercorn's ``serve``, done once it has shut down.
        self.task = task


@asynccontextmanager
async def hypercorn_server(app: Any, **config: Any) -> AsyncIterator[HypercornServer]:
    """``app`` on hypercorn's asyncio worker, on a free port of 127.0.0.1, with no access
    log and the given ``Config`` attributes; yielded once it accepts connections, and
    shut down (at most 40 s) on exit. Must run on the loop of the test that uses it."""
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = Config()
    settings.bind = [f"127.0.0.1:{port}"]
    settings.accesslog = None
    for name, value in config.items():
        setattr(settings, name, value)
    stop = asyncio.Event()
    task = asyncio.ensure_future(serve(app, settings, shutdown_trigger=stop.wait))
    try:
        for _ in range(500):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.02)
                continue
            writer.close()
            break
        else:
            raise AssertionError(f"hypercorn did not listen on port {port}")
        yield HypercornServer(port, stop, task)
    finally:
        stop.set()
        await asyncio.wait_for(task, 40)


class QuartRequests:
    """Wraps the app behind the fast path and records the paths of the requests reaching it."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.paths: list[str] = []

    @classmethod
    def install(cls, test_app: Any) -> QuartRequests:
        """Put a recorder between the fast path of a started ``TestApp`` and Quart."""
        fast = test_app.app.asgi_app
        recorder = cls(fast.app)
        fast.app = recorder
        return recorder

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Record an HTTP request's path, then hand it on."""
        if scope["type"] == "http":
            self.paths.append(scope["path"])
        await self.app(scope, receive, send)


class Sent:
    """One answer as the application sent it over ASGI (header names as sent, in lower case)."""

    def __init__(self, messages: list[dict[str, Any]]) -> None:
        start, *bodies = messages
        self.status: int = start["status"]
        self.header_list = [(k.decode(), v.decode()) for k, v in start["headers"]]
        self.headers = dict(self.header_list)
        self.body = b"".join(m.get("body", b"") for m in bodies)
        self.body_messages = bodies

    @property
    def text(self) -> str:
        """The body as UTF-8 text."""
        return self.body.decode()


async def asgi_request(
    app: Any, path: str, *, method: str = "GET", query: bytes = b"", **headers: str
) -> Sent:
    """Send one request straight to ``app`` (an ASGI callable) and collect its answer.

    ``headers`` are given as keyword arguments, ``If_None_Match="..."`` for
    ``If-None-Match``; ``Host: localhost`` is always sent. Asserts that the answer is not
    a 500 and names no header twice.
    """
    sent: list[dict[str, Any]] = []
    requested = False
    done = asyncio.Event()

    async def receive() -> dict[str, Any]:
        # The request once, then a disconnect only when the answer is complete (as a real
        # server does): Quart keeps receiving while it answers.
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            done.set()

    scope = {
        "type": "http", "method": method, "path": path, "raw_path": path.encode(), "query_string": query,
        "headers": [(b"host", b"localhost")]
        + [(name.lower().replace("_", "-").encode(), value.encode()) for name, value in headers.items()],
        "scheme": "http", "http_version": "1.1", "root_path": "",
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
    }  # fmt: skip
    await app(scope, receive, send)
    response = Sent(sent)
    assert response.status != 500, response.body
    assert len(response.header_list) == len(response.headers), "a header sent twice"
    return response
