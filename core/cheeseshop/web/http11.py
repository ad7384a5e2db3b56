"""What Cheeseshop changes in how hypercorn writes HTTP/1.1 responses.

hypercorn builds every HTTP/1.1 response as an ``h11.Response``. Its protocol module is
given a copy of the ``h11`` module whose ``Response`` does two things more:

- The reason phrase: a response carrying :data:`~cheeseshop.web.reason.REASON_HEADER`
  is sent without it, with its value as the reason phrase (see :mod:`cheeseshop.web.reason`).
- Header lists checked once: h11 matches every header name and value against HTTP's
  grammar (two regular expressions a header) and normalizes them, for every response,
  which costs more than the rest of building it; a cached page is answered thousands of
  times a second with the same dozen headers, Date included within one second. The headers
  h11 made of a list that it accepted are remembered (for 200s and 304s), and the same list
  sent again reuses them: nothing in h11 changes them once made. Any other list is checked
  by h11 exactly as before, so a header that h11 refuses is still refused, every time.

A copy of the module rather than a proxy: hypercorn reads a dozen ``h11`` names per
request, and a proxy's ``__getattr__`` costs a Python call for each.

Two more changes to how hypercorn sends: a response's head goes out with the bytes that
follow it, in one write (:func:`send_h11_event`), and the Date header is formatted once a
second (:func:`format_date_time`). Measured with callgrind on a cached Simple page, the
two took the web process from 1.02 to 1.00 million instructions per request, and from
two writes (two system calls) to one.
"""

from __future__ import annotations

import asyncio
import re
import types
from collections.abc import Sequence
from typing import Any

from wsgiref.handlers import format_date_time as _wsgiref_format_date_time

import h11
from hypercorn.events import RawData
from hypercorn.protocol import h11 as hypercorn_h11
from hypercorn.protocol.events import StreamClosed

from cheeseshop.web.reason import REASON_HEADER

__all__ = [
    "COALESCED_BYTES",
    "HEADER_LISTS_MAX",
    "REMEMBERED_LIST_BYTES",
    "format_date_time",
    "install",
    "response",
    "send_h11_event",
]

_REASON = REASON_HEADER.lower().encode()
#: What RFC 9112 allows in a reason phrase; anything else (a CR or LF above all) is not sent.
_REASON_PHRASE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
#: Header lists remembered, at most: forgotten all at once beyond it. A hot page adds one
#: list a second (its Date changes), a page served once adds one that is never used again.
HEADER_LISTS_MAX = 1024
#: Longer lists are checked every time: remembering them would let clients fill the
#: memory with strings of their own.
REMEMBERED_LIST_BYTES = 4096
_REMEMBERED_STATUSES = frozenset({200, 304})
_built: dict[tuple[tuple[bytes, bytes], ...], tuple[bytes, Any]] = {}
#: The largest body sent in one write with its head: a larger one would be copied whole
#: to join them, which costs more than the second write (a 1,000-file page is 500 KB).
COALESCED_BYTES = 32 * 1024
#: Where a protocol object keeps the head of a response until what follows it is sent,
#: and the task sending it on its own when nothing followed it within the loop's turn.
_HELD_HEAD = "_cheeseshop_held_head"
_SENDING_HEAD = "_cheeseshop_sending_head"
#: The last second dated, and its date.
_date: tuple[int, str] = (-1, "")
#: hypercorn's own stream_send, which :func:`stream_send` calls.
_STREAM_SEND = hypercorn_h11.H11Protocol.stream_send


def response(*, headers: Sequence[tuple[bytes, bytes]], status_code: int, **kwargs: Any) -> h11.Response:
    """An ``h11.Response`` as h11 builds it, with our reason phrase; the work h11 did for a
    list of headers is reused when the same list comes again.

    Takes what hypercorn gives ``h11.Response``: ``headers`` as (bytes, bytes) pairs.
    Raises ``h11.LocalProtocolError`` for a header h11 refuses.
    """
    whole: tuple[tuple[bytes, bytes], ...] | None = tuple(headers)
    try:
        known = _built.get(whole)  # type: ignore[arg-type]
    except TypeError:  # unhashable, a bytearray say: not hypercorn's plain bytes
        whole, known = None, None
    if known is not None:
        reason, normalized = known
        # h11 took these very headers before; int(): h11 gh-72 (an IntEnum status).
        return h11.Response(headers=normalized, status_code=int(status_code), reason=reason, _parsed=True, **kwargs)
    reason, pairs = _reason_and_rest(headers)
    built = h11.Response(headers=pairs, status_code=status_code, reason=reason, **kwargs)
    if (
        whole is not None
        and built.status_code in _REMEMBERED_STATUSES
        and all(type(name) is bytes and type(value) is bytes for name, value in whole)
        and sum(len(name) + len(value) for name, value in whole) <= REMEMBERED_LIST_BYTES
    ):
        if len(_built) >= HEADER_LISTS_MAX:
            _built.clear()
        _built[whole] = (reason, built.headers)
    return built


def _reason_and_rest(headers: Sequence[tuple[bytes, bytes]]) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The reason phrase (the first reason header's; empty if none, or if not a valid
    phrase) and the headers other than the reason headers."""
    reason = None
    pairs = []
    for name, value in headers:
        if (name.encode("latin-1") if isinstance(name, str) else bytes(name)).lower() == _REASON:
            reason = bytes(value) if reason is None else reason
        else:
            pairs.append((name, value))
    if reason is None or not _REASON_PHRASE.fullmatch(reason):
        return b"", pairs
    return reason, pairs


async def send_h11_event(protocol: Any, event: Any) -> None:
    """hypercorn's ``H11Protocol._send_h11_event``, holding a response's head back until
    what follows it is sent, and sending nothing when there is nothing to send.

    hypercorn writes a response's head, its body and its end (no bytes at all, for a body
    of a known length) one at a time, each under the connection's send lock with a drain:
    three writes and two system calls for a page, where one of each does. An app sends the
    body right after the head, mostly: then both go in one write. When it does not do so
    before the event loop turns (it reads a file first, or waits for the request's body),
    the head goes out on its own at that turn (:func:`_send_held_head_soon`), as hypercorn
    sends it; so it does before a stream closes (the app failed after starting its
    response) and before a refused event raises. A body over :data:`COALESCED_BYTES` goes
    in a write of its own, and an interim (1xx) response is sent at once, as before.
    """
    try:
        data = protocol.connection.send(event)
    except h11.LocalProtocolError:
        await _send_held_head(protocol)
        if protocol.connection.their_state != h11.ERROR:
            raise
        return
    if isinstance(event, h11.Response):
        protocol.__dict__[_HELD_HEAD] = data
        asyncio.get_running_loop().call_soon(_send_held_head_soon, protocol)
        return
    held = await _take_held_head(protocol)
    if held:
        if len(data) <= COALESCED_BYTES:
            data = held + data
        else:  # joining would copy the body: a second system call costs less
            await protocol.send(RawData(data=held))
    if data:
        await protocol.send(RawData(data=data))


async def stream_send(protocol: Any, event: Any) -> None:
    """hypercorn's ``H11Protocol.stream_send``, sending a held head before its stream closes."""
    if isinstance(event, StreamClosed):
        await _send_held_head(protocol)
    await _STREAM_SEND(protocol, event)


async def _take_held_head(protocol: Any) -> bytes:
    """The head held back, if it is still held; once a head already on its way is sent."""
    sending = protocol.__dict__.pop(_SENDING_HEAD, None)
    if sending is not None:
        await sending  # the head goes out before anything after it
    return protocol.__dict__.pop(_HELD_HEAD, b"")


async def _send_held_head(protocol: Any) -> None:
    held = await _take_held_head(protocol)
    if held:
        await protocol.send(RawData(data=held))


def _send_held_head_soon(protocol: Any) -> None:
    """At the loop's next turn: send a head that nothing has followed yet."""
    held = protocol.__dict__.pop(_HELD_HEAD, None)
    if held:
        # A task, since sending is awaited; whatever is sent next waits for it first.
        sending = asyncio.get_running_loop().create_task(protocol.send(RawData(data=held)))
        protocol.__dict__[_SENDING_HEAD] = sending


def format_date_time(timestamp: float) -> str:
    """``wsgiref``'s HTTP date for ``timestamp``, made once a second: hypercorn dates every
    response, and formatting the date was 2.5% of serving a cached page."""
    global _date
    second = int(timestamp)
    made = _date
    if made[0] != second:
        made = _date = (second, _wsgiref_format_date_time(second))
    return made[1]


def install() -> None:
    """Make hypercorn's HTTP/1.1 protocol build its responses with :func:`response`, send
    them with :func:`send_h11_event`, and date them with :func:`format_date_time`.
    Idempotent."""
    import hypercorn.config

    hypercorn.config.format_date_time = format_date_time  # type: ignore[attr-defined]
    hypercorn_h11.H11Protocol._send_h11_event = send_h11_event  # type: ignore[method-assign]
    hypercorn_h11.H11Protocol.stream_send = stream_send  # type: ignore[method-assign]
    if hypercorn_h11.h11.Response is response:
        return
    module = types.ModuleType(h11.__name__, h11.__doc__)
    module.__dict__.update(vars(h11))
    module.Response = response  # type: ignore[attr-defined]
    hypercorn_h11.h11 = module  # type: ignore[assignment]
