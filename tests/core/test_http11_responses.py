"""hypercorn's HTTP/1.1 responses as ``cheeseshop serve`` builds them (cheeseshop.web.http11).

Reason phrases from the private header, and h11's work on a list of headers done once:
whatever is remembered, a response is refused exactly when h11 refuses it and otherwise
carries exactly the headers h11 would give it.
"""

from __future__ import annotations

from collections.abc import Iterator
from http import HTTPStatus

import h11
import pytest
from hypercorn.protocol import h11 as hypercorn_h11

from cheeseshop.web import http11
from cheeseshop.web.reason import REASON_HEADER

PAGE_HEADERS = [
    (b"etag", b'"4667ef1148ad204f4bcdbf7ea8354a76"'),
    (b"cache-control", b"max-age=600, public"),
    (b"vary", b"Accept, Accept-Encoding"),
    (b"content-type", b"application/vnd.pypi.simple.v1+json"),
    (b"content-length", b"11818"),
    (b"date", b"Sun, 29 Nov 2026 05:06:01 GMT"),
]
REASON = REASON_HEADER.lower().encode()


@pytest.fixture(autouse=True)
def remembered(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[object, object]]:
    """Each test starts with nothing remembered and leaves hypercorn's h11 as it found it."""
    built: dict[object, object] = {}
    monkeypatch.setattr(http11, "_built", built)
    monkeypatch.setattr(hypercorn_h11, "h11", hypercorn_h11.h11)
    protocol = hypercorn_h11.H11Protocol
    for method in ("_send_h11_event", "stream_send"):
        monkeypatch.setattr(protocol, method, getattr(protocol, method))
    yield built


@pytest.fixture
def h11_checks(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The ``headers`` of every ``h11.Response`` built from now on."""
    seen: list[object] = []
    real = h11.Response

    def spy(**kwargs: object) -> h11.Response:
        seen.append(kwargs["headers"])
        return real(**kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(h11, "Response", spy)
    return seen


def _wire(response: h11.Response) -> bytes:
    """The bytes an h11 server connection writes for ``response`` to a GET."""
    connection = h11.Connection(h11.SERVER)
    connection.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert isinstance(connection.next_event(), h11.Request)
    return connection.send(response) or b""


@pytest.mark.parametrize("rounds", [1, 2, 3])
def test_a_response_is_what_h11_would_build_however_often_it_is_sent(rounds: int) -> None:
    plain = h11.Response(headers=PAGE_HEADERS, status_code=200)
    for _ in range(rounds):
        built = http11.response(headers=list(PAGE_HEADERS), status_code=200)
        assert built.headers.raw_items() == plain.headers.raw_items()
        assert (built.status_code, built.reason, built.http_version) == (200, b"", b"1.1")
        assert _wire(built) == _wire(plain)


def test_a_list_sent_again_reuses_what_h11_made_of_it(h11_checks: list[object]) -> None:
    reason = (REASON, b"File already exists.")
    first = http11.response(headers=[*PAGE_HEADERS, reason], status_code=304)
    assert h11_checks == [PAGE_HEADERS], "the first time, h11 checks the headers"

    h11_checks.clear()
    again = http11.response(headers=[*PAGE_HEADERS, reason], status_code=304)
    other_status = http11.response(headers=[*PAGE_HEADERS, reason], status_code=409)
    # Built from the headers h11 made the first time: no pair is looked at again.
    assert h11_checks == [first.headers, first.headers]
    assert again.headers is first.headers and again.reason == b"File already exists."
    assert _wire(again) == _wire(first)
    assert _wire(other_status).startswith(b"HTTP/1.1 409 File already exists.\r\n")


def test_only_200s_and_304s_are_remembered(remembered: dict[object, object]) -> None:
    location = (b"location", b"/simple/numpy/")
    http11.response(headers=[location, (b"content-length", b"0")], status_code=301)
    http11.response(headers=[(b"content-length", b"0")], status_code=404)
    assert remembered == {}
    http11.response(headers=PAGE_HEADERS, status_code=200)
    assert list(remembered) == [tuple(PAGE_HEADERS)]


@pytest.mark.parametrize(
    "bad",
    [
        (b"x-injected", b"one\r\nset-cookie: evil=1"),
        (b"x-newline", b"a\nb"),
        (b"bad name", b"value"),
        (b"", b"empty name"),
        (b"content-length", b"-1"),
    ],
)
def test_a_header_h11_refuses_is_refused_every_time(bad: tuple[bytes, bytes]) -> None:
    http11.response(headers=PAGE_HEADERS, status_code=200)  # the good ones, remembered
    for _ in range(3):
        with pytest.raises(h11.LocalProtocolError):
            http11.response(headers=[*PAGE_HEADERS, bad], status_code=200)
    with pytest.raises(h11.LocalProtocolError):
        h11.Response(headers=[bad], status_code=200)


def test_rules_across_headers_apply_to_a_list_with_remembered_parts() -> None:
    http11.response(headers=[(b"content-length", b"1")], status_code=200)
    http11.response(headers=[(b"content-length", b"2")], status_code=200)
    with pytest.raises(h11.LocalProtocolError, match="conflicting Content-Length"):
        http11.response(headers=[(b"content-length", b"1"), (b"content-length", b"2")], status_code=200)
    http11.response(headers=[(b"transfer-encoding", b"chunked")], status_code=200)
    with pytest.raises(h11.LocalProtocolError, match="multiple Transfer-Encoding"):
        http11.response(
            headers=[(b"transfer-encoding", b"chunked"), (b"transfer-encoding", b"chunked")],
            status_code=200,
        )


def test_the_reason_header_becomes_the_reason_phrase() -> None:
    reason = (REASON, b"File already exists.")
    built = http11.response(headers=[*PAGE_HEADERS[:2], reason, *PAGE_HEADERS[2:]], status_code=400)
    assert built.reason == b"File already exists."
    assert built.headers.raw_items() == h11.Response(headers=PAGE_HEADERS, status_code=400).headers.raw_items()
    assert _wire(built).startswith(b"HTTP/1.1 400 File already exists.\r\n")
    # Sent as the app spelled it, too.
    mixed = (REASON_HEADER.encode(), b"Forbidden.")
    assert http11.response(headers=[mixed], status_code=403).reason == b"Forbidden."


def test_every_reason_header_is_removed_and_the_first_one_is_the_phrase() -> None:
    built = http11.response(
        headers=[(REASON, b"First."), *PAGE_HEADERS, (memoryview(REASON_HEADER.encode()), b"Second.")],  # type: ignore[list-item]
        status_code=400,
    )
    assert built.reason == b"First."
    assert built.headers.raw_items() == h11.Response(headers=PAGE_HEADERS, status_code=400).headers.raw_items()


@pytest.mark.parametrize("phrase", [b"Bad\r\nSet-Cookie: evil=1", b"nul\x00byte", b"bell\x07"])
def test_a_reason_that_is_not_a_valid_phrase_is_not_sent(phrase: bytes) -> None:
    built = http11.response(headers=[(REASON_HEADER.encode(), phrase), *PAGE_HEADERS], status_code=400)
    assert built.reason == b""
    wire = _wire(built)
    assert wire.startswith(b"HTTP/1.1 400 \r\n")
    assert b"evil" not in wire and REASON not in wire.lower()


def test_an_int_enum_status_is_sent_as_its_number() -> None:
    for _ in range(2):  # built by h11, then from what it made
        built = http11.response(headers=PAGE_HEADERS, status_code=HTTPStatus.OK)
        assert type(built.status_code) is int
        assert _wire(built).startswith(b"HTTP/1.1 200 \r\n")


def test_headers_other_than_bytes_are_converted_by_h11_and_not_remembered(
    remembered: dict[object, object],
) -> None:
    for _ in range(2):
        built = http11.response(headers=[("content-type", "text/plain"), (bytearray(b"x-a"), b"1")], status_code=200)
        assert built.headers.raw_items() == [(b"content-type", b"text/plain"), (b"x-a", b"1")]
    http11.response(headers=[("content-type", "text/plain")], status_code=200)
    assert remembered == {}


def test_remembered_lists_are_bounded_and_long_ones_never_kept(
    remembered: dict[object, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http11, "HEADER_LISTS_MAX", 4)
    for serial in range(10):
        http11.response(headers=[*PAGE_HEADERS, (b"x-pypi-last-serial", str(serial).encode())], status_code=200)
        assert len(remembered) <= 4
    assert (*PAGE_HEADERS, (b"x-pypi-last-serial", b"9")) in remembered
    long = [*PAGE_HEADERS, (b"x-long", b"v" * http11.REMEMBERED_LIST_BYTES)]
    http11.response(headers=long, status_code=200)
    assert tuple(long) not in remembered


def test_install_gives_hypercorn_h11_with_our_response_once() -> None:
    http11.install()
    installed = hypercorn_h11.h11
    assert installed.Response is http11.response
    assert installed is not h11
    # Every other name is h11's own, read without a proxy in between.
    for name in ("Connection", "Request", "Data", "EndOfMessage", "NEED_DATA", "PAUSED", "LocalProtocolError"):
        assert getattr(installed, name) is getattr(h11, name)
    http11.install()
    assert hypercorn_h11.h11 is installed


def test_a_response_without_headers_gets_none_of_another_lists() -> None:
    http11.response(headers=[(bytearray(b"x-a"), b"1")], status_code=200)  # not remembered
    http11.response(headers=PAGE_HEADERS, status_code=200)  # remembered
    for _ in range(2):
        assert http11.response(headers=[], status_code=200).headers.raw_items() == []
