"""The web process's access lines are written in batches of whole lines (``BufferedLines``)."""

from __future__ import annotations

import fcntl
import logging
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest

from cheeseshop.web import access
from cheeseshop.web.access import BufferedLines, _whole_line_chunks


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_end, write_end = os.pipe()
    fcntl.fcntl(read_end, fcntl.F_SETFL, fcntl.fcntl(read_end, fcntl.F_GETFL) | os.O_NONBLOCK)
    yield read_end, write_end
    os.close(read_end)
    os.close(write_end)


def _drain(fd: int) -> bytes:
    data = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return data
        if not chunk:
            return data
        data += chunk


def _record(message: str) -> logging.LogRecord:
    return logging.LogRecord("cheeseshop.access", logging.INFO, __file__, 1, message, None, None)


def test_lines_wait_for_the_flush_and_close_writes_the_rest(pipe: tuple[int, int]) -> None:
    read_end, write_end = pipe
    handler = BufferedLines(write_end, interval=3600)
    try:
        handler.handle(_record("first"))
        handler.handle(_record("second"))
        assert _drain(read_end) == b""
    finally:
        handler.close()
    assert _drain(read_end) == b"first\nsecond\n"


def test_closing_twice_is_harmless(pipe: tuple[int, int]) -> None:
    # The test's close, then logging.shutdown's at exit: the second must not raise.
    handler = BufferedLines(pipe[1], interval=3600)
    handler.handle(_record("once"))
    handler.close()
    handler.close()
    assert _drain(pipe[0]) == b"once\n"


def test_the_timer_writes_buffered_lines(pipe: tuple[int, int]) -> None:
    read_end, write_end = pipe
    handler = BufferedLines(write_end, interval=0.05)
    try:
        handler.handle(_record("on time"))
        deadline = time.monotonic() + 5
        seen = b""
        while not seen and time.monotonic() < deadline:
            time.sleep(0.02)
            seen = _drain(read_end)
        assert seen == b"on time\n"
    finally:
        handler.close()


def test_a_full_buffer_is_written_at_once(pipe: tuple[int, int]) -> None:
    read_end, write_end = pipe
    handler = BufferedLines(write_end, interval=3600, buffer_bytes=20)
    try:
        handler.handle(_record("0123456789"))
        assert _drain(read_end) == b""
        handler.handle(_record("abcdefghij"))  # 22 bytes buffered: over the 20
        assert _drain(read_end) == b"0123456789\nabcdefghij\n"
    finally:
        handler.close()


def test_writes_are_whole_lines_of_at_most_pipe_buf(pipe: tuple[int, int], monkeypatch: pytest.MonkeyPatch) -> None:
    read_end, write_end = pipe
    writes: list[bytes] = []
    real_write = os.write

    def recording_write(fd: int, data: bytes | memoryview) -> int:
        writes.append(bytes(data))
        return real_write(fd, data)

    handler = BufferedLines(write_end, interval=3600)
    lines = [f"line {i} " + "x" * (i % 300) for i in range(200)]
    for line in lines:
        handler.handle(_record(line))
    monkeypatch.setattr(access.os, "write", recording_write)
    handler.close()

    assert len(writes) > 1
    assert all(len(chunk) <= select.PIPE_BUF and chunk.endswith(b"\n") for chunk in writes)
    assert b"".join(writes).decode().splitlines() == lines
    assert _drain(read_end) == b"".join(writes)


def test_whole_line_chunks_keep_an_overlong_line_alone() -> None:
    assert _whole_line_chunks([b"ab\n", b"cd\n", b"0123456789\n", b"e\n"], 6) == [
        b"ab\ncd\n",
        b"0123456789\n",
        b"e\n",
    ]
    assert _whole_line_chunks([], 6) == []


def test_a_failing_write_never_reaches_the_caller(
    pipe: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, write_end = pipe
    reported: list[logging.LogRecord] = []
    handler = BufferedLines(write_end, interval=3600, buffer_bytes=1)
    monkeypatch.setattr(handler, "handleError", reported.append)

    def broken_pipe(fd: int, data: bytes | memoryview) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(access.os, "write", broken_pipe)
    record = _record("lost")
    handler.handle(record)  # no exception: the request that logged it is not failed
    assert reported == [record]
    handler.close()


def test_buffer_lines_is_installed_once_at_info_with_the_usual_format(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(access.log, "handlers", [])
    monkeypatch.setattr(access.log, "propagate", True)
    level = access.log.level
    access.log.setLevel(logging.WARNING)  # as in a worker whose logging nobody set up
    try:
        access.buffer_lines()
        access.buffer_lines()
        [handler] = access.log.handlers
        assert isinstance(handler, BufferedLines)
        assert access.log.propagate is False  # written once, not also by the root handler
        assert access.log.isEnabledFor(logging.INFO)
        line = handler.format(_record('127.0.0.1 "GET /simple/ 1.1" 200 5 "-"'))
        assert line.endswith(' INFO cheeseshop.access: 127.0.0.1 "GET /simple/ 1.1" 200 5 "-"')
    finally:
        for handler in access.log.handlers:
            handler.close()
        access.log.setLevel(level)


def test_buffer_lines_leaves_an_operators_handler_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    own = logging.NullHandler()
    monkeypatch.setattr(access.log, "handlers", [own])
    access.buffer_lines()
    assert access.log.handlers == [own]


@pytest.fixture
def batched(monkeypatch: pytest.MonkeyPatch, pipe: tuple[int, int]) -> Iterator[BufferedLines]:
    """The access logger as ``buffer_lines`` leaves it, writing to ``pipe``."""
    monkeypatch.setattr(access.log, "handlers", [])
    monkeypatch.setattr(access.log, "filters", [])
    monkeypatch.setattr(access.log, "propagate", True)
    monkeypatch.setattr(access, "_batched", None)
    level = access.log.level
    access.buffer_lines(pipe[1])
    [handler] = access.log.handlers
    assert isinstance(handler, BufferedLines)
    yield handler
    handler.close()
    access.log.setLevel(level)


RESPONSE = (("10.0.0.1", 0), "GET", "/simple/caf\u00e9/", "1.1", 200, 11818, "pip/24.0 {\"ci\":null}")


def _only_ours(monkeypatch: pytest.MonkeyPatch) -> list[logging.Handler]:
    """The access logger's handlers without pytest's: since pytest 8 it adds its capturing
    handlers to loggers that do not propagate, as ``buffer_lines`` makes this one."""
    ours = [handler for handler in access.log.handlers if isinstance(handler, BufferedLines)]
    monkeypatch.setattr(access.log, "handlers", ours)
    return ours


def _records_made(monkeypatch: pytest.MonkeyPatch) -> list[logging.LogRecord]:
    """Every log record made from now on (the direct path makes none)."""
    made: list[logging.LogRecord] = []
    factory = logging.getLogRecordFactory()

    def recording(*args: object, **kwargs: object) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        made.append(record)
        return record

    monkeypatch.setattr(logging, "_logRecordFactory", recording)
    return made


@pytest.fixture
def far_from_utc() -> Iterator[None]:
    """Local time five hours behind UTC, so local and UTC stamps differ."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "America/New_York"
    time.tzset()
    yield
    if before is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = before
    time.tzset()


def _direct_then_logged(pipe: tuple[int, int], monkeypatch: pytest.MonkeyPatch, instant: float) -> tuple[bytes, bytes]:
    """The access line for RESPONSE at ``instant``: written directly, then through logging."""
    monkeypatch.setattr(time, "time", lambda: instant)
    monkeypatch.setattr(time, "time_ns", lambda: int(instant * 1e9))
    [handler] = _only_ours(monkeypatch)
    records = _records_made(monkeypatch)
    access.log_response(*RESPONSE)  # straight into the buffer: no record
    assert records == []
    with monkeypatch.context() as patched:
        patched.setattr(access.log, "filters", [lambda record: True])  # now through logging
        access.log_response(*RESPONSE)
    assert len(records) == 1
    handler.flush()
    direct, logged, rest = _drain(pipe[0]).split(b"\n")
    assert rest == b""
    return direct, logged


@pytest.mark.usefixtures("far_from_utc")
@pytest.mark.parametrize("converter", ["localtime", "gmtime"])
def test_an_access_line_written_directly_is_the_line_logging_would_write(
    batched: BufferedLines, pipe: tuple[int, int], monkeypatch: pytest.MonkeyPatch, converter: str
) -> None:
    # logging.Formatter.converter = time.gmtime is how an operator logs in UTC.
    monkeypatch.setattr(access._FORMATTER, "converter", getattr(time, converter))
    # One handler across second boundaries: its once-a-second stamp must follow.
    for instant in (1764392761.0, 1764392761.0007, 1764392761.9999, 1764392762.0004, 1780000000.123456):
        direct, logged = _direct_then_logged(pipe, monkeypatch, instant)
        assert direct == logged
        assert direct.endswith(' INFO cheeseshop.access: 10.0.0.1 "GET /simple/café/ 1.1" 200 11818 "pip/24.0 {\"ci\":null}"'.encode())
    expected = time.strftime("%Y-%m-%d %H:%M:%S", getattr(time, converter)(1780000000))
    assert direct.startswith(f"{expected},123 ".encode())


@pytest.mark.parametrize("change", ["handler filter", "handler level", "another formatter"])
def test_a_changed_handler_gets_log_records_again(
    batched: BufferedLines, pipe: tuple[int, int], monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    _only_ours(monkeypatch)
    if change == "handler filter":
        monkeypatch.setattr(batched, "filters", [lambda record: "skip" not in record.getMessage()])
    elif change == "handler level":
        monkeypatch.setattr(batched, "level", logging.WARNING)
    else:
        monkeypatch.setattr(batched, "formatter", logging.Formatter("%(levelname)s %(message)s"))
    access.log_response(None, "GET", "/skip/me/", "1.1", 200, 5, None)
    access.log_response(None, "GET", "/simple/", "1.1", 200, 5, None)
    batched.flush()
    written = _drain(pipe[0])
    if change == "another formatter":
        assert written == b'INFO - "GET /skip/me/ 1.1" 200 5 "-"\nINFO - "GET /simple/ 1.1" 200 5 "-"\n'
    elif change == "handler filter":
        assert written.endswith(b' INFO cheeseshop.access: - "GET /simple/ 1.1" 200 5 "-"\n')
        assert b"skip" not in written
    else:
        assert written == b""


def test_access_lines_reach_an_operators_handler_added_later(
    batched: BufferedLines, pipe: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.core.test_serve_setup import Collect

    collect = Collect()
    monkeypatch.setattr(access.log, "handlers", [batched, collect])
    access.log_response(None, "HEAD", "/packages/a/b/c.whl", "1.1", 304, None, None)
    batched.flush()
    [record] = collect.records
    assert record.getMessage() == '- "HEAD /packages/a/b/c.whl 1.1" 304 - "-"'
    assert _drain(pipe[0]).endswith(b' INFO cheeseshop.access: - "HEAD /packages/a/b/c.whl 1.1" 304 - "-"\n')


def test_no_access_line_when_info_is_off(batched: BufferedLines, pipe: tuple[int, int]) -> None:
    access.log.setLevel(logging.WARNING)
    access.log_response(None, "GET", "/simple/", "1.1", 200, 5, None)
    batched.flush()
    assert _drain(pipe[0]) == b""


def test_a_worker_killed_by_sigterm_writes_its_buffered_lines_first() -> None:
    # A worker of `serve --workers N`, which hypercorn's parent may SIGTERM mid-shutdown.
    script = textwrap.dedent(
        """
        import logging, os, signal
        from cheeseshop.web import access
        handler = access.BufferedLines(1, interval=3600)
        access.log.addHandler(handler)
        access.log.setLevel(logging.INFO)
        access.write_before_terminating()
        access.log.info("held in memory")
        os.kill(os.getpid(), signal.SIGTERM)
        print("still alive", flush=True)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert result.returncode == -signal.SIGTERM, result.stderr.decode()
    assert result.stdout == b"held in memory\n"
