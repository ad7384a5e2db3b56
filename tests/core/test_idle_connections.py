"""Idle keep-alive connections under ``cheeseshop serve`` (cheeseshop.web.idle).

A real hypercorn server on 127.0.0.1 with :func:`cheeseshop.web.idle.install` applied: a
connection idle for ``keep_alive_timeout`` is closed, a busy or active one is not, and a
shutdown closes idle connections at once, as hypercorn's own task per idle period did.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
from hypercorn.asyncio import tcp_server

from cheeseshop.testing.asgi import HypercornServer, hypercorn_server
from cheeseshop.web import idle

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
SLOW = b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """``ok`` at once, or after 0.6 s for ``/slow``."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/slow":
        await asyncio.sleep(0.6)
    length = [(b"content-length", b"2")]
    await send({"type": "http.response.start", "status": 200, "headers": length})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture(autouse=True)
def installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tcp_server, "AsyncioSingleTask", tcp_server.AsyncioSingleTask)
    idle.install()
    assert tcp_server.AsyncioSingleTask is idle.IdleTimer


def server(keep_alive: float) -> AbstractAsyncContextManager[HypercornServer]:
    """hypercorn serving :func:`app` with this keep-alive timeout; a shutdown that waited for
    an idle connection would take its 30 s grace period."""
    return hypercorn_server(app, keep_alive_timeout=keep_alive, graceful_timeout=30)


async def _answer(reader: asyncio.StreamReader) -> bytes:
    received = b""
    while not received.endswith(b"ok"):
        chunk = await asyncio.wait_for(reader.read(65536), 10)
        assert chunk, f"closed before the answer; got {received!r}"
        received += chunk
    return received


async def _seconds_until_closed(reader: asyncio.StreamReader) -> float:
    started = time.monotonic()
    assert await asyncio.wait_for(reader.read(65536), 10) == b""
    return time.monotonic() - started


def test_an_idle_connection_is_closed_after_the_keep_alive_timeout() -> None:
    async def run() -> tuple[float, float]:
        async with server(keep_alive=0.3) as running:
            port = running.port
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(REQUEST)
            assert (await _answer(reader)).startswith(b"HTTP/1.1 200")
            after_answer = await _seconds_until_closed(reader)
            # One that never sends a request is closed the same way.
            silent, _ = await asyncio.open_connection("127.0.0.1", port)
            never = await _seconds_until_closed(silent)
            return after_answer, never

    after_answer, never = asyncio.run(run())
    assert 0.2 < after_answer < 3 and 0.2 < never < 3


def test_a_busy_or_active_connection_is_kept() -> None:
    async def run() -> int:
        async with server(keep_alive=0.25) as running:
            port = running.port
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(SLOW)  # longer than the idle timeout: busy, not idle
            await _answer(reader)
            answered = 1
            for _ in range(6):  # 0.6 s of requests 0.1 s apart, each within the timeout
                await asyncio.sleep(0.1)
                writer.write(REQUEST)
                await _answer(reader)
                answered += 1
            writer.close()
            return answered

    assert asyncio.run(run()) == 7


def test_a_shutdown_closes_idle_connections_at_once() -> None:
    async def run() -> tuple[float, bytes]:
        async with server(keep_alive=60) as running:
            port, stop, task = running.port, running.stop, running.task
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(REQUEST)
            await _answer(reader)
            started = time.monotonic()
            stop.set()
            await asyncio.wait_for(task, 40)
            return time.monotonic() - started, await asyncio.wait_for(reader.read(65536), 5)

    took, rest = asyncio.run(run())
    assert took < 5 and rest == b""


def test_any_other_use_is_hypercorns_own_task() -> None:
    async def run() -> list[str]:
        done: list[str] = []

        async def action() -> None:
            done.append("ran")

        class Group:
            _task_group = asyncio.get_running_loop()  # create_task, as a TaskGroup's

        holder = idle.IdleTimer()
        await holder.restart(Group(), action)
        await asyncio.sleep(0)
        await holder.stop()
        return done

    assert asyncio.run(run()) == ["ran"]


def test_a_request_in_flight_at_shutdown_is_answered_then_closed() -> None:
    # The connection turns idle after shutdown began: its answer is whole, then it is
    # closed at once, not after its keep-alive timeout.
    async def run() -> tuple[bytes, float, bytes]:
        async with server(keep_alive=60) as running:
            port, stop, task = running.port, running.stop, running.task
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(SLOW)
            await asyncio.sleep(0.2)  # in the app now
            started = time.monotonic()
            stop.set()
            answer = await _answer(reader)
            rest = await asyncio.wait_for(reader.read(65536), 10)
            await asyncio.wait_for(task, 40)
            return answer, time.monotonic() - started, rest

    answer, took, rest = asyncio.run(run())
    assert answer.startswith(b"HTTP/1.1 200") and rest == b"" and took < 5


def test_a_connection_closed_by_its_client_is_no_longer_watched() -> None:
    async def run() -> int:
        async with server(keep_alive=60) as running:
            port = running.port
            connections = []
            for _ in range(3):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(REQUEST)
                await _answer(reader)
                connections.append(writer)
            for writer in connections[:2]:
                writer.close()
            await asyncio.sleep(0.3)
            watched = sum(len(timers) for timers in idle._idle.values())
            connections[2].close()
            return watched

    assert asyncio.run(run()) == 1
