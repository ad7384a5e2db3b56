"""hypercorn's HTTP/1.1 responses as ``cheeseshop serve`` sends them (cheeseshop.web.http11).

A real hypercorn server on 127.0.0.1 with :func:`cheeseshop.web.http11.install` applied,
spoken to over a socket: a response's head goes out with what follows it, in one write,
and every kind of response still arrives whole (HEAD, no body, a streamed body, pipelined
requests), an interim ``100 Continue`` at once. The Date header is made once a second,
exactly as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any
from wsgiref.handlers import format_date_time as wsgiref_format_date_time

import h11
import hypercorn.config
import pytest
from hypercorn.asyncio.tcp_server import TCPServer
from hypercorn.events import RawData
from hypercorn.protocol import h11 as hypercorn_h11

from cheeseshop.testing.asgi import hypercorn_server
from cheeseshop.web import http11

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """A page, an empty answer, a body streamed in pieces, and an upload's size."""
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/page":
        length = [(b"content-length", b"5")]
        await send({"type": "http.response.start", "status": 200, "headers": length})
        await send({"type": "http.response.body", "body": b"hello"})
    elif path == "/large":  # too large to join to its head
        body = b"x" * (http11.COALESCED_BYTES + 1)
        length = [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": length})
        await send({"type": "http.response.body", "body": body})
    elif path == "/error-after-start":  # the app fails once its response has begun
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-begun", b"1")]})
        raise RuntimeError("failed after the start of its response")
    elif path == "/too-much":  # more body than its Content-Length: h11 refuses it
        length = [(b"content-length", b"2")]
        await send({"type": "http.response.start", "status": 200, "headers": length})
        await send({"type": "http.response.body", "body": b"abc"})
    elif path == "/head-first":  # the head, then the request body read, then the answer
        await send({"type": "http.response.start", "status": 200, "headers": []})
        message = await receive()
        await send({"type": "http.response.body", "body": message.get("body", b"")})
    elif path == "/empty":
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/stream":  # no length: chunked, and an empty piece first
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for piece in (b"", b"ab", b"c"):
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    else:  # /upload
        size, more = 0, True
        while more:
            message = await receive()
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
        body = str(size).encode()
        length = [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": length})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture(autouse=True)
def installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """http11 installed for each test, and hypercorn left as it was found afterwards."""
    monkeypatch.setattr(hypercorn_h11, "h11", hypercorn_h11.h11)
    protocol = hypercorn_h11.H11Protocol
    monkeypatch.setattr(protocol, "_send_h11_event", protocol._send_h11_event)
    monkeypatch.setattr(protocol, "stream_send", protocol.stream_send)
    monkeypatch.setattr(hypercorn.config, "format_date_time", hypercorn.config.format_date_time)
    http11.install()


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bytes]]:
    """The bytes of every write hypercorn makes."""
    seen: list[bytes] = []
    real = TCPServer.protocol_send

    async def spy(self: TCPServer, event: object) -> None:
        if isinstance(event, RawData):
            seen.append(event.data)
        await real(self, event)

    monkeypatch.setattr(TCPServer, "protocol_send", spy)
    yield seen


def _exchange(*conversation: tuple[bytes, bytes, int]) -> list[bytes]:
    """Serve :func:`app` and, on one connection, send each request and read until its
    marker has arrived the given number of times; the bytes read after each."""

    async def run() -> list[bytes]:
        async with hypercorn_server(app) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            answers = []
            for request, marker, count in conversation:
                writer.write(request)
                received = b""
                while received.count(marker) < count:
                    chunk = await asyncio.wait_for(reader.read(65536), 10)
                    assert chunk, f"connection closed before {marker!r}; got {received!r}"
                    received += chunk
                answers.append(received)
            writer.close()
            return answers

    return asyncio.run(run())


def _responses(data: bytes, method: bytes = b"GET") -> list[tuple[h11.Response, bytes]]:
    """Every response in ``data``, parsed by h11 as a client reads them."""
    client = h11.Connection(h11.CLIENT)
    results: list[tuple[h11.Response, bytes]] = []
    client.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
    client.send(h11.EndOfMessage())
    client.receive_data(data)
    response, body = None, b""
    while True:
        event = client.next_event()
        if isinstance(event, h11.Response):
            response = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            assert response is not None
            results.append((response, body))
            if client.their_state is not h11.DONE or not client.trailing_data[0]:
                return results
            client.start_next_cycle()
            client.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
            client.send(h11.EndOfMessage())
            response, body = None, b""
        else:
            return results


def test_a_page_goes_out_in_one_write(writes: list[bytes]) -> None:
    [answer] = _exchange((b"GET /page HTTP/1.1\r\nHost: x\r\n\r\n", b"hello", 1))
    [(response, body)] = _responses(answer)
    assert (response.status_code, body) == (200, b"hello")
    assert len(writes) == 1 and writes[0].endswith(b"\r\n\r\nhello")


def test_a_large_body_goes_out_after_its_head_uncopied(writes: list[bytes]) -> None:
    size = http11.COALESCED_BYTES + 1
    [answer] = _exchange((b"GET /large HTTP/1.1\r\nHost: x\r\n\r\n", b"x" * size, 1))
    [(response, body)] = _responses(answer)
    assert (response.status_code, body) == (200, b"x" * size)
    assert len(writes) == 2 and writes[0].endswith(b"\r\n\r\n") and writes[1] == body


def test_a_head_or_an_empty_answer_still_sends_its_head(writes: list[bytes]) -> None:
    head, empty = _exchange(
        (b"HEAD /page HTTP/1.1\r\nHost: x\r\n\r\n", b"\r\n\r\n", 1),
        (b"GET /empty HTTP/1.1\r\nHost: x\r\n\r\n", b"\r\n\r\n", 1),
    )
    [(response, body)] = _responses(head, method=b"HEAD")
    assert (response.status_code, body) == (200, b"")
    assert dict(response.headers)[b"content-length"] == b"5"
    [(response, body)] = _responses(empty)
    assert (response.status_code, body) == (204, b"")
    assert len(writes) == 2


def test_a_streamed_body_arrives_whole() -> None:
    [answer] = _exchange((b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n", b"0\r\n\r\n", 1))
    [(response, body)] = _responses(answer)
    assert response.status_code == 200 and body == b"abc"
    assert dict(response.headers)[b"transfer-encoding"] == b"chunked"


def test_an_interim_response_is_sent_at_once() -> None:
    # The client waits for 100 Continue (hypercorn sends no reason phrase) before it sends
    # the body: a held interim response would leave both sides waiting, and this test
    # failing on its timeout.
    head = b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"
    interim, final = _exchange((head, b"HTTP/1.1 100 ", 1), (b"abc", b"\r\n\r\n3", 1))
    assert interim.startswith(b"HTTP/1.1 100 ")
    [(response, body)] = _responses(final)
    assert (response.status_code, body) == (200, b"3")


def test_pipelined_requests_each_get_their_response() -> None:
    both = b"GET /page HTTP/1.1\r\nHost: x\r\n\r\nGET /empty HTTP/1.1\r\nHost: x\r\n\r\n"
    # Two heads, each ending with the Server header hypercorn adds last.
    [answer] = _exchange((both, b"hypercorn-h11\r\n\r\n", 2))
    responses = _responses(answer)
    answers = [(response.status_code, body) for response, body in responses]
    assert answers == [(200, b"hello"), (204, b"")]


@pytest.mark.parametrize(
    "timestamp", [0.0, 0.999, 1.0, 1_795_000_000.25, 1_795_000_000.75, 1_795_000_001.0]
)
def test_the_date_is_wsgirefs_for_every_second(timestamp: float) -> None:
    assert http11.format_date_time(timestamp) == wsgiref_format_date_time(timestamp)
    # Asked again within the second (and after another second), still the same.
    http11.format_date_time(timestamp + 5)
    assert http11.format_date_time(timestamp) == wsgiref_format_date_time(timestamp)


def test_a_head_not_followed_at_once_goes_out_on_its_own() -> None:
    # The client sends the request's body only once it has the response's head: a head
    # held until the body would leave both sides waiting (and this test on its timeout).
    head, answer = _exchange(
        (b"POST /head-first HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n", b"\r\n\r\n", 1),
        (b"abc", b"abc", 1),
    )
    assert head.startswith(b"HTTP/1.1 200 ")
    [(response, body)] = _responses(head + answer)
    assert (response.status_code, body) == (200, b"abc")


@pytest.mark.parametrize("path", [b"/error-after-start", b"/too-much"])
def test_a_response_cut_short_still_sends_its_head(path: bytes) -> None:
    # As hypercorn does: the head, then the connection closed (never a silent close).
    [answer] = _exchange((b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n", b"\r\n\r\n", 1))
    assert answer.startswith(b"HTTP/1.1 200 ")
