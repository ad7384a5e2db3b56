"""The access log: one line per request, written by the app rather than by hypercorn.

hypercorn's own access log builds a dictionary of every environment variable for each
request, which costs more than serving a cached Simple page. This writes the same shape
of line (``client "METHOD /path?query HTTP-version" status bytes "user agent"``) to the
``cheeseshop.access`` logger at INFO, from the values at hand.

In the web process the lines are written in batches (:func:`buffer_lines`): a write to
stderr for every line was the costliest step of our own in answering a cached page.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import threading
import time

from quart import Quart, Response, request

from cheeseshop.logs import LOG_FORMAT

__all__ = [
    "BufferedLines",
    "buffer_lines",
    "install",
    "lean_log_records",
    "log_response",
    "write_before_terminating",
]

log = logging.getLogger("cheeseshop.access")

#: At most this long between a request and its access line reaching stderr (nginx's
#: ``access_log … flush=`` makes the same trade, with 5 s).
FLUSH_SECONDS = 0.5
#: Lines held before they are written at once, whatever the time.
BUFFER_BYTES = 64 * 1024
#: The date and time of :data:`~cheeseshop.logs.LOG_FORMAT` (``logging.Formatter``'s
#: default), to which the milliseconds are added.
_DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
#: The handler :func:`buffer_lines` installed, which :func:`log_response` writes to
#: directly while it formats with :data:`_FORMATTER`.
_batched: BufferedLines | None = None
_FORMATTER = logging.Formatter(LOG_FORMAT)
#: Writes up to this size reach a pipe in one piece (POSIX's PIPE_BUF; 512 is its minimum).
_ATOMIC_WRITE = getattr(select, "PIPE_BUF", 512)


def install(app: Quart) -> None:
    """Log every response of ``app`` (when ``cheeseshop.access`` is enabled for INFO), and
    write out buffered lines when it stops serving."""

    @app.after_serving
    async def write_buffered_lines() -> None:
        # A worker of `serve --workers N` ends in os._exit (it is a multiprocessing child),
        # so logging.shutdown never flushes its handlers: what they still hold goes now.
        for handler in log.handlers:
            handler.flush()

    @app.after_request
    async def access_line(response: Response) -> Response:
        if log.isEnabledFor(logging.INFO):
            log_response(
                (request.remote_addr, 0) if request.remote_addr else None,
                request.method,
                request.full_path.rstrip("?"),
                request.http_version,
                response.status_code,
                response.content_length,
                request.headers.get("User-Agent"),
            )
        return response


def lean_log_records() -> None:
    """Make every log record of this process skip what the web process's format never shows.

    By default each record looks up the calling frame, the thread and the process; on a
    cache hit, that is a good part of the access line, and the access line is the
    costliest thing the fast path does (JSON pages under wrk: 6–12% more requests per
    second without these lookups). These are the switches the logging HOWTO's
    "Optimization" section names. For ``cheeseshop serve`` only: its format
    (``asctime levelname name: message``) uses none of them, whereas Celery's worker
    format shows the process name.
    """
    logging._srcfile = None  # type: ignore[attr-defined]  # no findCaller() per record
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


_ACCESS_LINE = '%s "%s %s %s" %d %s "%s"'


def log_response(
    client: tuple[str, int] | None,
    method: str,
    path: str,
    http_version: str,
    status: int,
    length: int | None,
    user_agent: str | None,
) -> None:
    """Write one access-log line (if INFO is enabled for ``cheeseshop.access``).

    With :func:`buffer_lines`' handler the only one on the logger, the line goes straight
    into its buffer, in the same format, without a log record: building and formatting
    the record cost more than the rest of a cache hit of ours. Otherwise (an operator's
    handler or filter) it is logged as any other line.
    """
    if not log.isEnabledFor(logging.INFO):
        return
    args = (
        client[0] if client else "-",
        method,
        path,
        http_version,
        status,
        "-" if length is None else length,
        user_agent or "-",
    )
    handler = _batched
    if (
        handler is not None
        and log.handlers == [handler]
        and not log.filters
        and not handler.filters
        and handler.formatter is _FORMATTER
        and handler.level <= logging.INFO
    ):
        handler.write_info(log.name, _ACCESS_LINE % args)
    else:
        log.info(_ACCESS_LINE, *args)


class BufferedLines(logging.Handler):
    """A handler that writes its lines to a file descriptor in batches, not one by one.

    Lines wait in memory until ``buffer_bytes`` have gathered or a daemon thread's flush,
    every ``interval`` seconds; :meth:`close` (``logging.shutdown`` at exit) writes what is
    left. Each ``write(2)`` is at most ``select.PIPE_BUF`` bytes of whole lines (a longer
    line goes alone), so on a pipe shared by several processes, as stderr is under
    ``--workers N``, no line is ever cut by another process's.
    """

    def __init__(self, fd: int, *, interval: float = FLUSH_SECONDS, buffer_bytes: int = BUFFER_BYTES) -> None:
        super().__init__()
        self.fd = fd
        self.buffer_bytes = buffer_bytes
        self._lines: list[bytes] = []
        self._size = 0
        self._stamp = (-1, "")
        self._stopping = threading.Event()
        self._flusher = threading.Thread(
            target=self._flush_every, args=(interval,), name="cheeseshop-access-log", daemon=True
        )
        self._flusher.start()

    def emit(self, record: logging.LogRecord) -> None:
        """Buffer one formatted line (called with the handler's lock held)."""
        try:
            line = (self.format(record) + "\n").encode("utf-8", "backslashreplace")
        except Exception:
            self.handleError(record)
            return
        self._add(line, record)

    def _add(self, line: bytes, record: logging.LogRecord | None) -> None:
        self._lines.append(line)
        self._size += len(line)
        if self._size >= self.buffer_bytes:
            try:
                self._write()
            except Exception:
                # stderr gone or not writable: as StreamHandler does, never the request's error.
                self.handleError(record or logging.makeLogRecord({"msg": line}))

    def write_info(self, name: str, message: str) -> None:
        """Buffer the line an INFO record of logger ``name`` with ``message`` would give, now.

        Exactly what :data:`~cheeseshop.logs.LOG_FORMAT` makes of the record, for the
        callers that have no record (:func:`log_response`); lines through :meth:`emit` are
        formatted by the handler's own formatter, as usual.
        """
        now = time.time()
        second = int(now)
        stamped, stamp = self._stamp
        if second != stamped:  # the date and time change once a second, not per line
            converter = self.formatter.converter if self.formatter else time.localtime
            stamp = time.strftime(_DATE_FORMAT, converter(second))
            self._stamp = (second, stamp)
        line = f"{stamp},{int((now - second) * 1000):03d} INFO {name}: {message}\n"
        with self.lock:  # type: ignore[union-attr]  # created by Handler.__init__
            self._add(line.encode("utf-8", "backslashreplace"), None)

    def flush(self) -> None:
        """Write every buffered line now."""
        with self.lock:  # type: ignore[union-attr]  # created by Handler.__init__
            self._write()

    def close(self) -> None:
        """Stop the flushing thread and write what is left."""
        self._stopping.set()
        try:
            self.flush()
        finally:
            super().close()

    def _flush_every(self, interval: float) -> None:
        while not self._stopping.wait(interval):
            try:
                self.flush()
            except Exception:
                pass  # stderr gone (closed pipe): the lines are dropped, as print's would be

    def _write(self) -> None:
        lines, self._lines, self._size = self._lines, [], 0
        for chunk in _whole_line_chunks(lines, _ATOMIC_WRITE):
            view = memoryview(chunk)
            while view:
                view = view[os.write(self.fd, view) :]


def _whole_line_chunks(lines: list[bytes], limit: int) -> list[bytes]:
    """``lines`` joined into as few chunks of at most ``limit`` bytes as whole lines allow. Pure."""
    chunks: list[bytes] = []
    current: list[bytes] = []
    size = 0
    for line in lines:
        if current and size + len(line) > limit:
            chunks.append(b"".join(current))
            current, size = [], 0
        current.append(line)
        size += len(line)
    if current:
        chunks.append(b"".join(current))
    return chunks


def write_before_terminating() -> None:
    """On SIGTERM, write the buffered lines, then die of the signal as before.

    For the workers of ``serve --workers N``: hypercorn's parent sends SIGTERM to the
    workers still running once the first has shut down, and a worker dies of it at once,
    with its last lines still in memory. Call it in the worker's main thread.
    """

    def terminated(signum: int, frame: object) -> None:
        for handler in log.handlers:
            try:
                handler.flush()
            except Exception:
                pass  # the process is ending either way
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    signal.signal(signal.SIGTERM, terminated)


def buffer_lines(fd: int = 2) -> None:
    """Write the access log to ``fd`` (stderr) through :class:`BufferedLines`, at INFO.

    Only the access lines are batched, in the usual format: warnings and errors keep
    their own handler and appear at once, so an access line may follow a later error
    line by up to :data:`FLUSH_SECONDS`. For ``cheeseshop serve`` and its workers: a write
    per line cost 3–5% of the cached pages a process answers (``benchmarks/README.md``).
    A no-op when the access logger has a handler already (this one, or the operator's).
    """
    global _batched
    if log.handlers:
        return
    handler = BufferedLines(fd)
    handler.setFormatter(_FORMATTER)
    log.addHandler(handler)
    _batched = handler
    log.setLevel(logging.INFO)
    log.propagate = False
