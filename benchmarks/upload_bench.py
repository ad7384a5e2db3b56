"""Upload benchmark: Cheeseshop (SQLite, PostgreSQL) against pypiserver and devpi-server.

A bare Quart app on hypercorn that stores each file and checks nothing (``quart-bare``) is
measured too: the floor any upload on this stack costs.

A benchmark, not a test: it asserts nothing and is not collected by pytest. It builds N
small distinct wheels (``bench-pkg-<i>`` 1.0, the same bytes for every server) and uploads
all of them to each server twice, each time to a freshly started, empty server:

* ``httpx``: one ``POST`` per file on one keep-alive connection per server, with the
  multipart form twine sends (metadata fields, ``:action=file_upload``,
  ``protocol_version=1``, the three digests, ``content``), timing every request: files/s,
  median and p99 latency. Every server runs at once and they take turns, ``--batch``
  files each (the order rotating each round), so that a machine whose speed drifts
  during the run (a small VM's does, within minutes) slows each alike.
* ``twine``: one real ``twine upload`` of all N files (twine uploads one after another),
  to each server in turn, timed as a whole, start-up included: files/s only, since twine
  prints no per-file times.

Every server listens on 127.0.0.1 on a free port and is stopped afterwards; nothing but the
``pip install`` of the peers leaves the machine (devpi gets no root/pypi mirror and runs in
offline mode). Each phase sends at most N uploads and stops at ``--time-cap`` seconds.
The peers are installed into venvs under ``~/.cache/cheeseshop-bench/venvs`` (outside the
repository), re-used while their package list is unchanged. A peer that cannot be installed
or started is reported and skipped.

    .venv/bin/python benchmarks/upload_bench.py [--files N] [--only NAME,...] [--batch B] [--time-cap S]
    .venv/bin/python benchmarks/upload_bench.py --profile [--files N] [--backend postgres]
    .venv/bin/python benchmarks/upload_bench.py --stages [--files N] [--backend postgres]
    .venv/bin/python benchmarks/upload_bench.py --cpu [--files N] [--only NAME,...]
    .venv/bin/python benchmarks/upload_bench.py --deliver [--files N] [--backend postgres]

``--profile`` instead runs Cheeseshop on SQLite (or ``--backend postgres``) in a child
process (hypercorn in-process) under cProfile, every thread profiled (the event loop, the
worker threads, aiosqlite's connection threads), with every SQL statement timed; it
uploads N files with httpx and prints the statements and the functions that cost the
most. ``--stages`` runs it without a profiler and times each step of the upload instead
(receiving the body, validating, checking the index, storing, committing), printing each
one's median and p90, and the CPU its thread spent meanwhile, beside the client's median
for the whole request. ``--cpu`` runs each server as the benchmark does and prints the
CPU time each process spends per upload (httpx): for Cheeseshop the web process, its
deliverer and PostgreSQL's processes, and the client, everywhere. ``--deliver`` uploads N
files with no deliverer running, then delivers the outbox events they left from the
benchmark's own process and prints the CPU and wall time per event. ``--keep`` keeps the
work directory (server logs, twine output) for a look afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from cheeseshop.testing.dists import Dist, build_wheel
from common import (
    CACHE,
    DEVPI_PACKAGES,
    ON_HYPERCORN,
    PASSWORD,
    PYPISERVER_PACKAGES,
    PYTHON,
    USERNAME,
    PeerUnavailable,
    cheeseshop_env,
    cheeseshop_revision,
    cheeseshop_token,
    ensure_venv,
    event_loop,
    free_port,
    postgres_database,
    log_errors,
    run,
    server_process,
    upload_form,
    version_of,
)

POSTGRES_DATABASE = "cheeseshop_bench"
REQUEST_TIMEOUT = 60.0


# -- the workload ------------------------------------------------------------------------


def build_dists(count: int) -> list[Dist]:
    """N distinct small wheels, one project each, identical bytes on every run."""
    return [build_wheel(f"bench-pkg-{i}", "1.0") for i in range(count)]


# -- results -----------------------------------------------------------------------------


@dataclass
class Result:
    """One phase against one server."""

    server: str
    client: str
    files: int
    ok: int = 0
    errors: int = 0
    wall: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    first_error: str | None = None
    server_log: str | None = None  # the server's last error lines, when there were errors

    @property
    def files_per_second(self) -> float:
        return self.ok / self.wall if self.wall else 0.0

    @property
    def median_ms(self) -> float | None:
        return statistics.median(self.latencies_ms) if self.latencies_ms else None

    @property
    def p99_ms(self) -> float | None:
        if not self.latencies_ms:
            return None
        ordered = sorted(self.latencies_ms)
        rank = max(1, -(-99 * len(ordered) // 100))  # nearest-rank percentile
        return ordered[rank - 1]


@dataclass
class Target:
    """A running, empty server ready for uploads."""

    upload_url: str
    username: str
    password: str


def upload_with_httpx(name: str, target: Target, dists: Sequence[Dist], cap: float) -> Result:
    """POST every file once on one keep-alive connection, timing each request."""
    forms = [upload_form(dist) for dist in dists]  # digests computed outside the clock
    result = Result(server=name, client="httpx", files=len(dists))
    with _client(target) as client:
        _post_forms(client, target, forms, result, cap)
    return result


Form = tuple[dict[str, str], dict[str, tuple[str, bytes, str]]]  # what upload_form makes


def _client(target: Target) -> httpx.Client:
    return httpx.Client(
        auth=(target.username, target.password), timeout=REQUEST_TIMEOUT, follow_redirects=False
    )


def _post_forms(
    client: httpx.Client, target: Target, forms: Sequence[Form], result: Result, cap: float
) -> None:
    """POST each form in turn, adding each outcome, its latency and the time taken to
    ``result``; stops once ``result`` has spent ``cap`` seconds in all."""
    started = time.perf_counter()
    for data, files in forms:
        if result.wall + time.perf_counter() - started > cap:
            result.first_error = result.first_error or f"time cap of {cap:.0f} s reached"
            break
        sent = time.perf_counter()
        try:
            response = client.post(target.upload_url, data=data, files=files)
        except httpx.HTTPError as error:
            result.errors += 1
            result.first_error = result.first_error or f"{type(error).__name__}: {error}"
            continue
        elapsed = time.perf_counter() - sent
        if response.is_success:
            result.ok += 1
            result.latencies_ms.append(elapsed * 1000)
        else:
            result.errors += 1
            result.first_error = result.first_error or (
                f"HTTP {response.status_code}: {response.text.strip()[:200]}"
            )
    result.wall += time.perf_counter() - started


def upload_interleaved(
    targets: Mapping[str, Target], dists: Sequence[Dist], cap: float, batch: int
) -> list[Result]:
    """:func:`upload_with_httpx` to every server at once, in turns: ``batch`` files to
    one, the same ``batch`` to the next, and so on, the order rotating each round.

    The servers run side by side, so whatever else the machine does meanwhile (another
    VM on the host, the kernel reclaiming memory) falls on each of them alike, where
    phases one after the other compared the minutes as much as the servers. Each batch
    waits until the machine is quiet (:func:`wait_for_quiet`).
    """
    forms = [upload_form(dist) for dist in dists]
    names = list(targets)
    results = {name: Result(server=name, client="httpx", files=len(dists)) for name in names}
    with contextlib.ExitStack() as stack:
        clients = {name: stack.enter_context(_client(targets[name])) for name in names}
        for round_number, start in enumerate(range(0, len(forms), batch)):
            turn = round_number % len(names)
            for name in names[turn:] + names[:turn]:
                wait_for_quiet()
                _post_forms(clients[name], targets[name], forms[start : start + batch], results[name], cap)
    return [results[name] for name in names]


def wait_for_quiet(*, window: float = 0.05, busy: float = 0.1, longest: float = 5.0) -> None:
    """Wait until the machine's CPUs were less than ``busy`` busy for a ``window`` of
    seconds (from ``/proc/stat``), at most ``longest`` seconds: until what a server does
    after answering is done (Cheeseshop's deliverer, devpi's event thread, which goes on
    for seconds after its last upload), so that it is not timed against the next one."""
    deadline = time.monotonic() + longest
    before = _cpu_times()
    while time.monotonic() < deadline:
        time.sleep(window)
        after = _cpu_times()
        idle = after[1] - before[1]
        total = after[0] - before[0]
        if total and 1 - idle / total < busy:
            return
        before = after


def _cpu_times() -> tuple[int, int]:
    """All CPUs' time so far, and their idle time (idle + iowait), in clock ticks."""
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    return sum(fields[:8]), fields[3] + fields[4]


def upload_with_twine(
    name: str, target: Target, paths: Sequence[Path], cap: float, log: Path
) -> Result:
    """One ``twine upload`` of every file, timed as a whole (interpreter start-up included)."""
    result = Result(server=name, client="twine", files=len(paths))
    command = [
        PYTHON,
        "-m",
        "twine",
        "upload",
        "--non-interactive",
        "--disable-progress-bar",
        "--repository-url",
        target.upload_url,
        "-u",
        target.username,
        "-p",
        target.password,
        *map(str, paths),
    ]
    env = {key: value for key, value in os.environ.items() if not key.startswith("TWINE_")}
    started = time.perf_counter()
    try:
        completed = subprocess.run(
            command,
            env=env,
            capture_output=True,
            text=True,
            timeout=cap,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired as expired:
        captured = expired.stdout or b""  # bytes on a timeout, whatever text= says
        output = captured.decode(errors="replace") if isinstance(captured, bytes) else captured
        result.first_error = f"time cap of {cap:.0f} s reached"
        returncode = None
    else:
        output = completed.stdout + completed.stderr
        returncode = completed.returncode
    result.wall = time.perf_counter() - started
    log.write_text(output)
    attempted = sum(
        line.startswith("Uploading ") and not line.startswith("Uploading distributions")
        for line in output.splitlines()
    )
    if returncode == 0:
        result.ok = attempted
    else:
        # twine stops at the first failed file.
        result.ok = max(0, attempted - 1)
        result.errors = 1 if returncode is not None else 0
        if result.first_error is None:
            lines = [line for line in output.splitlines() if "ERROR" in line or "Error" in line]
            result.first_error = (lines[0] if lines else output.strip()[-300:]).strip()
    return result


# -- processes ---------------------------------------------------------------------------


# -- the servers -------------------------------------------------------------------------
#
# Each is a context manager: given an empty work directory, it yields a Target on a fresh
# server and stops (and cleans up after) the server on exit.


@contextlib.contextmanager
def cheeseshop(
    workdir: Path, *, database_url: str | None = None, tree: str | None = None
) -> Iterator[Target]:
    """A fresh Cheeseshop and its deliverer; ``tree``: run the code under that ``core``
    directory (``PYTHONPATH``), not this checkout's."""
    env = cheeseshop_env(workdir, database_url)
    if tree is not None:
        env["PYTHONPATH"] = tree
    token = cheeseshop_token(env)
    port = free_port()
    command = [PYTHON, "-m", "cheeseshop", "serve", "--host", "127.0.0.1", "--port", str(port)]
    log = workdir / "server.log"
    # Timed once its deliverer process has started too (it logs this line when it has).
    with server_process(command, port=port, log=log, env=env, ready_text="delivering outbox events"):
        yield Target(f"http://127.0.0.1:{port}/legacy/", "__token__", token)


@contextlib.contextmanager
def cheeseshop_sqlite(workdir: Path) -> Iterator[Target]:
    with cheeseshop(workdir) as target:
        yield target


@contextlib.contextmanager
def cheeseshop_postgres(workdir: Path) -> Iterator[Target]:
    with postgres_database(POSTGRES_DATABASE) as url, cheeseshop(workdir, database_url=url) as target:
        yield target


@contextlib.contextmanager
def pypiserver(workdir: Path) -> Iterator[Target]:
    venv = ensure_venv("pypiserver", PYPISERVER_PACKAGES)
    htpasswd = workdir / "htpasswd"
    # {SHA} entries, as `htpasswd -s` (the command pypiserver's README gives) writes them.
    run(
        [
            venv / "bin" / "python",
            "-c",
            textwrap.dedent(f"""
        from passlib.apache import HtpasswdFile
        passwords = HtpasswdFile({str(htpasswd)!r}, new=True, default_scheme="ldap_sha1")
        passwords.set_password({USERNAME!r}, {PASSWORD!r})
        passwords.save()
    """),
        ]
    )
    packages = workdir / "packages"
    packages.mkdir()
    port = free_port()
    command = [
        venv / "bin" / "pypi-server",
        "run",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--authenticate",
        "update",
        "--passwords",
        htpasswd,
        "--disable-fallback",
        packages,
    ]
    with server_process(command, port=port, log=workdir / "server.log"):
        yield Target(f"http://127.0.0.1:{port}/", USERNAME, PASSWORD)


@contextlib.contextmanager
def devpi(workdir: Path) -> Iterator[Target]:
    venv = ensure_venv("devpi", DEVPI_PACKAGES)
    serverdir, clientdir = workdir / "server", workdir / "client"
    # No root/pypi: a stage index with no bases never asks pypi.org for anything.
    run(
        [
            venv / "bin" / "devpi-init",
            "--serverdir",
            serverdir,
            "--no-root-pypi",
            "--root-passwd",
            "root-password",
        ]
    )
    port = free_port()
    command = [
        venv / "bin" / "devpi-server",
        "--serverdir",
        serverdir,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--offline-mode",
    ]
    with server_process(command, port=port, log=workdir / "server.log"):
        client = [venv / "bin" / "devpi", "--clientdir", clientdir]
        run([*client, "use", f"http://127.0.0.1:{port}/"])
        run([*client, "user", "-c", USERNAME, f"password={PASSWORD}", "email=bench@example.com"])
        run([*client, "login", USERNAME, "--password", PASSWORD])
        run([*client, "index", "-c", f"{USERNAME}/dev", "type=stage", "bases=", "volatile=False"])
        yield Target(f"http://127.0.0.1:{port}/{USERNAME}/dev/", USERNAME, PASSWORD)


# Runs in the child: the least an upload can cost on Quart and hypercorn, as `cheeseshop
# serve` runs them (one process, no hypercorn access log). It checks the Basic credentials,
# parses the form with Quart's own parser, refuses a filename it already has, and writes
# the file with an fsync, as Cheeseshop's storage does. No validation, no database.
_BARE_QUART = """
import asyncio, base64, logging, os, signal, sys
from pathlib import Path
from hypercorn.asyncio import serve
from hypercorn.config import Config
from quart import Quart, request

port, packages, credentials = int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
expected = "Basic " + base64.b64encode(credentials.encode()).decode()
app = Quart("bare")

def store(path, data):
    with open(path, "xb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())

@app.post("/")
async def upload():
    if request.headers.get("Authorization") != expected:
        return "Unauthorized", 401, {"WWW-Authenticate": 'Basic realm="bare"'}
    form, files = await request.form, await request.files
    content = files.get("content")
    if form.get(":action") != "file_upload" or content is None:
        return "Not an upload", 400
    try:
        await asyncio.to_thread(store, packages / os.path.basename(content.filename), content.read())
    except FileExistsError:
        return "File already exists", 409
    return ""

""" + ON_HYPERCORN


@contextlib.contextmanager
def quart_bare(workdir: Path) -> Iterator[Target]:
    packages = workdir / "packages"
    packages.mkdir()
    port = free_port()
    command = [PYTHON, "-c", _BARE_QUART, str(port), packages, f"{USERNAME}:{PASSWORD}"]
    with server_process(command, port=port, log=workdir / "server.log"):
        yield Target(f"http://127.0.0.1:{port}/", USERNAME, PASSWORD)


SERVERS: dict[str, Callable[[Path], contextlib.AbstractContextManager[Target]]] = {
    "cheeseshop-sqlite": cheeseshop_sqlite,
    "cheeseshop-postgres": cheeseshop_postgres,
    "pypiserver": pypiserver,
    "devpi": devpi,
    "quart-bare": quart_bare,
}


def describe(name: str) -> str:
    """The server's software and version, for the report."""
    import importlib.metadata

    if name.startswith("cheeseshop"):
        return (
            f"cheeseshop {importlib.metadata.version('cheeseshop')} ({cheeseshop_revision()}), "
            f"{event_loop()}"
        )
    if name == "quart-bare":
        return (
            f"quart {importlib.metadata.version('quart')}, hypercorn "
            f"{importlib.metadata.version('hypercorn')}, {event_loop()}: form parsed, file written and fsynced, "
            "nothing checked (the floor)"
        )
    venv = CACHE / "venvs" / ("pypiserver" if name == "pypiserver" else "devpi")
    distribution = "pypiserver" if name == "pypiserver" else "devpi-server"
    with contextlib.suppress(PeerUnavailable, OSError):
        return f"{distribution} {version_of(venv, distribution)}"
    return distribution


# -- the report --------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return f"{value:.1f}" if value is not None else "-"


def table(results: Sequence[Result]) -> str:
    """The figures as a Markdown table."""
    columns = ["server", "client", "files/s", "median ms", "p99 ms", "errors", "uploaded"]
    rows = [
        [
            r.server,
            r.client,
            f"{r.files_per_second:.1f}",
            _ms(r.median_ms),
            _ms(r.p99_ms),
            str(r.errors),
            f"{r.ok}/{r.files}",
        ]
        for r in results
    ]
    widths = [max(len(row[i]) for row in [columns, *rows]) for i in range(len(columns))]

    def line(cells: Sequence[str]) -> str:
        # Names left-aligned, figures right-aligned.
        aligned = [
            cell.ljust(width) if i < 2 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(aligned) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(columns), rule, *map(line, rows)])


def report(results: list[Result], skipped: dict[str, str], versions: dict[str, str]) -> str:
    """The table, versions, errors, peers not run and the goal check."""
    out = [table(results), ""]
    out += [f"{name}: {version}" for name, version in versions.items()]
    for result in results:
        if result.first_error:
            out.append(f"{result.server} ({result.client}) first error: {result.first_error}")
        if result.server_log:
            out.append(textwrap.indent(result.server_log, "    server log: ", lambda line: True))
    for name, why in skipped.items():
        out.append(f"{name}: NOT RUN: {why}")
    out.append("")
    out += goal_check(results)
    return "\n".join(out)


def goal_check(results: list[Result]) -> list[str]:
    """The issue's goal: median <= pypiserver's, files/s >= 5x devpi-server's."""
    by = {(r.server, r.client): r for r in results}
    lines = ["Goal, per Cheeseshop backend: median <= pypiserver's; files/s >= 5x devpi's."]
    for server in ("cheeseshop-sqlite", "cheeseshop-postgres"):
        ours = by.get((server, "httpx"))
        if ours is None or ours.median_ms is None:
            continue
        pypi = by.get(("pypiserver", "httpx"))
        if pypi is not None and pypi.median_ms is not None:
            met = ours.median_ms <= pypi.median_ms
            lines.append(
                f"  {server}: median {ours.median_ms:.1f} ms vs pypiserver {pypi.median_ms:.1f} ms "
                f"-> {'met' if met else 'NOT met'}"
            )
        for client in ("httpx", "twine"):
            mine, theirs = by.get((server, client)), by.get(("devpi", client))
            if mine and theirs and theirs.files_per_second:
                ratio = mine.files_per_second / theirs.files_per_second
                lines.append(
                    f"  {server}: {client} {mine.files_per_second:.1f} files/s = {ratio:.2f}x "
                    f"devpi ({theirs.files_per_second:.1f}) -> {'met' if ratio >= 5 else 'NOT met'}"
                )
    floor = by.get(("quart-bare", "httpx"))
    if floor is not None and floor.median_ms is not None:
        lines.append(
            f"  (the floor: a bare Quart upload on hypercorn, storing the file and checking "
            f"nothing, has a median of {floor.median_ms:.1f} ms)"
        )
    return lines


# -- profiling ---------------------------------------------------------------------------

# Runs in the child: Cheeseshop under hypercorn in this process. cProfile hooks one thread
# only, so each new thread (worker threads, aiosqlite's connection threads) starts its own
# profiler; every SQL statement is timed too, since aiosqlite runs SQLite through
# functools.partial, which cProfile cannot see into. Both are written out on SIGTERM.
_PROFILED_SERVER = """
import asyncio, collections, cProfile, json, logging, pstats, signal, sys, threading, time
from hypercorn.asyncio import serve
from hypercorn.config import Config
from sqlalchemy import event
from sqlalchemy.engine import Engine
from cheeseshop.app import create_app
from cheeseshop.config import load_settings
from cheeseshop.web import http11

port, out = int(sys.argv[1]), sys.argv[2]
profilers = []
def start_thread_profiler(frame, event, arg):
    sys.setprofile(None)
    profiler = cProfile.Profile()
    profilers.append(profiler)
    profiler.enable()
threading.setprofile(start_thread_profiler)
http11.install()
app = create_app(load_settings())
statements = collections.defaultdict(list)
# Every engine: on SQLite the upload's transactions run on a second, synchronous engine.
@event.listens_for(Engine, "before_cursor_execute")
def before(conn, cursor, statement, parameters, context, executemany):
    conn.info["bench_started"] = time.perf_counter()
@event.listens_for(Engine, "after_cursor_execute")
def after(conn, cursor, statement, parameters, context, executemany):
    statements[" ".join(statement.split())].append(time.perf_counter() - conn.info["bench_started"])
main_profiler = cProfile.Profile()
main_profiler.enable()
""" + ON_HYPERCORN + """
main_profiler.disable()
stats = pstats.Stats(main_profiler)
for profiler in profilers:
    stats.add(profiler)
stats.dump_stats(out)
with open(out + ".sql.json", "w") as file:
    json.dump(statements, file)
"""

# Threads blocked waiting for work or I/O, not costs: left out of the printed profile.
_IDLE = ("'get' of '_queue.SimpleQueue'", "'poll' of 'select.epoll'", "'acquire' of '_thread.lock'")


@contextlib.contextmanager
def instrumented_cheeseshop(
    workdir: Path, backend: str, script: str, *args: str
) -> Iterator[tuple[Target, dict[str, str]]]:
    """Cheeseshop on ``backend`` ("sqlite" in ``workdir``, or "postgres" in a fresh
    database) run by ``script`` (``python -c script PORT *args``), with its user and
    token, and no deliverer; yields the upload target and the server's environment,
    stops it on exit."""
    with contextlib.ExitStack() as stack:
        url = None
        if backend == "postgres":
            url = stack.enter_context(postgres_database(POSTGRES_DATABASE))
        env = cheeseshop_env(workdir, url)
        token = cheeseshop_token(env)
        port = free_port()
        command = [PYTHON, "-c", script, str(port), *args]
        with server_process(command, port=port, log=workdir / "server.log", env=env):
            yield Target(f"http://127.0.0.1:{port}/legacy/", "__token__", token), env


def profile_cheeseshop(dists: Sequence[Dist], cap: float, top: int, backend: str) -> None:
    """Upload ``dists`` to a profiled Cheeseshop on ``backend``; print SQL and Python costs."""
    import json
    import pstats

    with tempfile.TemporaryDirectory(prefix="cheeseshop-profile-") as tmp:
        workdir = Path(tmp)
        stats_file = workdir / "upload.prof"
        with instrumented_cheeseshop(
            workdir, backend, _PROFILED_SERVER, str(stats_file)
        ) as (target, _):
            result = upload_with_httpx(f"cheeseshop-{backend} (profiled)", target, dists, cap)
        print(table([result]))
        if not stats_file.exists():
            log = (workdir / "server.log").read_text(errors="replace")
            print(f"no profile written; server log:\n{log[-2000:]}")
            return
        uploads = max(result.ok, 1)
        statements: dict[str, list[float]] = json.loads(Path(f"{stats_file}.sql.json").read_text())
        total = sum(map(sum, statements.values()))
        count = sum(map(len, statements.values()))
        print(
            f"\n== SQL: {count / uploads:.1f} statements, {total * 1000 / uploads:.1f} ms "
            f"per upload; top {min(top, len(statements))} by total time =="
        )
        print(f"{'total ms':>9} {'calls':>6} {'/upload':>7} {'max ms':>7}  statement")
        for statement, times in sorted(statements.items(), key=lambda item: -sum(item[1]))[:top]:
            print(
                f"{sum(times) * 1000:9.1f} {len(times):6d} {len(times) / uploads:7.1f} "
                f"{max(times) * 1000:7.1f}  {statement[:100]}"
            )
        stats = pstats.Stats(str(stats_file))
        idle = [
            key
            for key in stats.stats  # type: ignore[attr-defined]
            if any(name in pstats.func_std_string(key) for name in _IDLE)
        ]
        for key in idle:
            del stats.stats[key]  # type: ignore[attr-defined]
        for order in ("tottime", "cumulative"):
            print(
                f"\n== Python: top {top} by {order} "
                f"(all threads, idle waits removed, {result.ok} uploads) =="
            )
            stats.strip_dirs().sort_stats(order).print_stats(top)


# -- stages ------------------------------------------------------------------------------

# The upload's steps, in the order they run, as (module, function or "Class.method") to
# time: the modules look them up as globals or attributes, so wrapping one times every call.
STAGES = (
    ("views", "_upload"),
    ("views", "receive_upload"),
    ("views", "_Uploader.file_limits"),  # the token and the project's limits: one read
    ("views", "_authenticated"),
    ("views", "handle_upload"),
    ("service", "_Steps.check_and_publish"),  # one trip to an upload thread
    ("service", "_check_form"),  # the form, the filename, the digests
    ("service", "_check_archive"),  # the archive and its metadata, beside the file's put
    ("service", "_Steps.existing"),  # duplicates, project, role, similar names: one read
    ("service", "_Steps.publish"),
    ("service", "_describe"),
    ("service", "_Steps.commit_settling_races"),
    ("service", "_record_upload"),  # the write transaction, waiting for the two puts
    ("service", "_put_file"),  # from the form's check on, in a put thread
    ("service", "_put_metadata"),  # from the archive's check on, in another
)

# Runs in the child: Cheeseshop on hypercorn, as `cheeseshop serve` runs it, with each of
# STAGES (given as JSON) wrapped to record how long every call took; written out at exit.
_STAGED_SERVER = """
import asyncio, collections, functools, inspect, json, logging, signal, sys, time
from hypercorn.asyncio import serve
from hypercorn.config import Config
from cheeseshop.app import create_app, prepare_web_process
from cheeseshop.config import load_settings
from cheeseshop.upload import service, views

port, out, stages = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
times = collections.defaultdict(list)

def timed(module, name):
    # name: a function of the module, or "Class.method"; either may be sync or async.
    *owner_path, attribute = name.split(".")
    owner = functools.reduce(getattr, owner_path, module)
    inner = getattr(owner, attribute)

    # Each call: its wall time, and the CPU time of the thread it ran in meanwhile.
    if inspect.iscoroutinefunction(inner):
        @functools.wraps(inner)
        async def wrapper(*args, **kwargs):
            started, cpu = time.perf_counter(), time.thread_time()
            try:
                return await inner(*args, **kwargs)
            finally:
                times[name].append((time.perf_counter() - started, time.thread_time() - cpu))
    else:
        @functools.wraps(inner)
        def wrapper(*args, **kwargs):
            started, cpu = time.perf_counter(), time.thread_time()
            try:
                return inner(*args, **kwargs)
            finally:
                times[name].append((time.perf_counter() - started, time.thread_time() - cpu))

    setattr(owner, attribute, wrapper)

for module, name in stages:
    timed({"views": views, "service": service}[module], name)
prepare_web_process()
app = create_app(load_settings())
""" + ON_HYPERCORN + """
with open(out, "w") as file:
    json.dump(times, file)
"""


def time_stages(dists: Sequence[Dist], cap: float, backend: str) -> None:
    """Upload ``dists`` to Cheeseshop on ``backend`` with every step of STAGES timed; print the
    median and p90 of each, beside the client's median for the whole request."""
    import json

    warm_up = min(20, len(dists) // 5)
    with tempfile.TemporaryDirectory(prefix="cheeseshop-stages-") as tmp:
        workdir = Path(tmp)
        out = workdir / "stages.json"
        with instrumented_cheeseshop(
            workdir, backend, _STAGED_SERVER, str(out), json.dumps(STAGES)
        ) as (target, _):
            upload_with_httpx("warm-up", target, dists[:warm_up], cap)
            result = upload_with_httpx(
                f"cheeseshop-{backend} (stages timed)", target, dists[warm_up:], cap
            )
        print(table([result]))
        if not out.exists():
            print(f"no timings written; server log:\n{(workdir / 'server.log').read_text()[-2000:]}")
            return
        times: dict[str, list[tuple[float, float]]] = json.loads(out.read_text())
    print(f"\n== Each step: ms over {result.ok} uploads (after {warm_up} to warm up), in order ==")
    print("(cpu: the CPU time of the thread the step ran in, while it ran; for a step that")
    print(" awaits, the event loop's only, not that of the threads it waits for)")
    print(f"{'step':32} {'median':>7} {'p90':>7} {'cpu':>7}")
    for _, name in STAGES:
        calls = times.get(name, [])[warm_up:]
        if calls:
            spent = sorted(wall for wall, _ in calls)
            p90 = spent[min(len(spent) - 1, int(len(spent) * 0.9))]
            cpu = statistics.median(cpu for _, cpu in calls)
            print(
                f"{name:32} {statistics.median(spent) * 1000:7.2f} {p90 * 1000:7.2f} "
                f"{cpu * 1000:7.2f}"
            )
    if result.latencies_ms:
        print(f"{'(the client: the whole request)':32} {statistics.median(result.latencies_ms):7.2f}")


# -- delivering the outbox ----------------------------------------------------------------


#: Events per batch of --deliver: what one sweep of ``cheeseshop deliver`` takes at most.
SWEEP_BATCH = 100


def measure_delivery(dists: Sequence[Dist], cap: float, backend: str) -> None:
    """Upload ``dists`` to Cheeseshop on ``backend`` with no deliverer running, then deliver
    the events they left in the outbox from this process, in batches as ``cheeseshop
    deliver`` does, and print the CPU and wall time per event.

    With the default plugins each upload leaves one event, its new release's e-mail. This
    process's CPU time is all the deliverer's while it delivers, so the figure does not
    move with what else the machine runs, as latencies do on a small VM.
    """
    import asyncio

    from cheeseshop.app import build_services
    from cheeseshop.config import load_settings

    async def deliver_all(env: dict[str, str]) -> tuple[int, float, float]:
        settings = load_settings(environ=env).model_copy(update={"outbox_delivery": "inline"})
        services = build_services(settings)
        try:
            ids, _ = await services.outbox.due(limit=10 * len(dists))
            warm_up, measured = ids[:20], ids[20:]
            await services.outbox.deliver_many(warm_up)
            cpu, wall = time.process_time(), time.perf_counter()
            # In batches, as the deliverer's sweep takes them (Outbox.due's default limit).
            for start in range(0, len(measured), SWEEP_BATCH):
                await services.outbox.deliver_many(measured[start : start + SWEEP_BATCH])
            return len(measured), time.process_time() - cpu, time.perf_counter() - wall
        finally:
            await services.cache.close()
            await services.db.dispose()

    with tempfile.TemporaryDirectory(prefix="cheeseshop-deliver-") as tmp:
        workdir = Path(tmp)
        out = workdir / "stages.json"  # no step is timed: the staged server, minus stages
        with instrumented_cheeseshop(
            workdir, backend, _STAGED_SERVER, str(out), "[]"
        ) as (target, env):
            result = upload_with_httpx(f"cheeseshop-{backend} (no deliverer)", target, dists, cap)
            events, cpu, wall = asyncio.run(deliver_all(env))
    print(table([result]))
    if not events:
        print("no events were left to deliver")
        return
    print(
        f"\n== Delivering: {events} events (after 20 to warm up), {SWEEP_BATCH} at a time ==\n"
        f"CPU {cpu * 1000 / events:.2f} ms per event, wall {wall * 1000 / events:.2f} ms per event"
    )


# -- CPU per upload ----------------------------------------------------------------------

#: Which part of a run a process is, by what its command line holds (first match wins).
_CPU_ROLES = (
    (" -m cheeseshop serve", "cheeseshop serve (web)"),
    (" -m cheeseshop deliver", "cheeseshop deliver"),
    ("bin/pypi-server", "pypiserver"),
    ("bin/devpi-server", "devpi-server"),
    ('Quart("bare")', "quart-bare"),
)


def _cpu_ticks() -> dict[int, tuple[str, int, int]]:
    """The CPU ticks (user, system) of every process that takes part in a run, by pid.

    PostgreSQL's processes count as one: a connection's backend is a process of its own.
    """
    processes = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            raw_command = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
            command = raw_command.decode(errors="replace")
        except OSError:
            continue  # ended meanwhile
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        role = "postgres (every process)" if name == "postgres" else None
        role = role or next((label for marker, label in _CPU_ROLES if marker in command), None)
        if role is not None:
            fields = stat[stat.rindex(")") + 2 :].split()
            processes[int(entry)] = (role, int(fields[11]), int(fields[12]))
    return processes


def measure_cpu(name: str, dists: Sequence[Dist], cap: float) -> None:
    """Upload ``dists`` with httpx to the server ``name`` (as the benchmark runs it: for
    Cheeseshop, ``cheeseshop serve`` and its deliverer); print the CPU time each process
    spent per upload, user and system.

    On a machine with few cores a request's latency follows the CPU every process of the
    run spends on it, the deliverer's and PostgreSQL's included, not the web process's
    alone. From /proc (Linux only); after a warm-up of 20 uploads.
    """
    tick = os.sysconf("SC_CLK_TCK")
    warm_up = min(20, len(dists) // 5)
    with tempfile.TemporaryDirectory(prefix="cheeseshop-cpu-") as tmp:
        with SERVERS[name](Path(tmp)) as target:
            upload_with_httpx("warm-up", target, dists[:warm_up], cap)
            time.sleep(0.5)  # the deliverer's share of the warm-up
            before, client_before = _cpu_ticks(), os.times()
            result = upload_with_httpx(name, target, dists[warm_up:], cap)
            time.sleep(1.0)  # Cheeseshop's deliverer polls: let it deliver the last events
            after, client_after = _cpu_ticks(), os.times()
    print(table([result]))
    uploads = max(result.ok, 1)
    spent: dict[str, list[float]] = {
        "the client (httpx)": [
            client_after.user - client_before.user,
            client_after.system - client_before.system,
        ]
    }
    for pid, (role, user, system) in after.items():
        _, user_before, system_before = before.get(pid, (role, 0, 0))
        totals = spent.setdefault(role, [0.0, 0.0])
        totals[0] += (user - user_before) / tick
        totals[1] += (system - system_before) / tick
    print(f"\n== CPU per upload, ms, over {result.ok} uploads (after {warm_up} to warm up) ==")
    print(f"{'process':28} {'user':>6} {'system':>7} {'total':>6}")
    for role, (user, system) in sorted(spent.items(), key=lambda item: -sum(item[1])):
        if user + system:
            print(
                f"{role:28} {user * 1000 / uploads:6.2f} {system * 1000 / uploads:7.2f} "
                f"{(user + system) * 1000 / uploads:6.2f}"
            )
    total = sum(map(sum, spent.values())) * 1000 / uploads
    print(
        f"{'all of them':28} {'':6} {'':7} {total:6.2f}  (wall {result.wall * 1000 / uploads:.2f} "
        f"ms per upload, {os.cpu_count()} cores)\n"
    )


# -- main --------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=500, help="wheels to upload per phase [500]")
    parser.add_argument(
        "--only",
        default=",".join(SERVERS),
        help="comma-separated servers [all]: " + ", ".join(SERVERS),
    )
    parser.add_argument("--time-cap", type=float, default=300.0, help="seconds per phase [300]")
    parser.add_argument(
        "--batch", type=int, default=25, help="httpx uploads in a row to one server [25]"
    )
    parser.add_argument(
        "--profile", action="store_true", help="profile Cheeseshop under cProfile instead"
    )
    parser.add_argument(
        "--stages",
        action="store_true",
        help="time each step of Cheeseshop's upload instead",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the work directory (server and twine logs) and print its path",
    )
    parser.add_argument(
        "--deliver",
        action="store_true",
        help="time delivering the uploads' outbox events (CPU and wall per event) instead",
    )
    parser.add_argument(
        "--cpu",
        action="store_true",
        help="print the CPU each process spends per upload, for each --only server, instead",
    )
    parser.add_argument(
        "--backend",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help="the database of --profile, --stages and --deliver [sqlite]",
    )
    parser.add_argument("--top", type=int, default=30, help="profile entries to print [30]")
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(names) - set(SERVERS))
    if unknown or args.files < 1 or args.batch < 1:
        parser.error(f"unknown server: {', '.join(unknown)}" if unknown else "--files and --batch must be >= 1")

    dists = build_dists(args.files)
    if args.profile:
        profile_cheeseshop(dists, args.time_cap, args.top, args.backend)
        return 0
    if args.stages:
        time_stages(dists, args.time_cap, args.backend)
        return 0
    if args.deliver:
        measure_delivery(dists, args.time_cap, args.backend)
        return 0
    if args.cpu:
        for name in names:
            measure_cpu(name, dists, args.time_cap)
        return 0

    size = statistics.mean(len(dist.content) for dist in dists)
    print(
        f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}, {os.cpu_count()} cores, "
        f"{platform.platform(terse=True)}, Python {platform.python_version()}; "
        f"{args.files} wheels of ~{size:.0f} bytes",
        flush=True,
    )
    results: list[Result] = []
    skipped: dict[str, str] = {}
    versions: dict[str, str] = {}
    root = Path(tempfile.mkdtemp(prefix="cheeseshop-bench-"))
    if args.keep:
        print(f"work directory (kept): {root}", flush=True)
    try:
        wheels = root / "wheels"
        wheels.mkdir()
        paths = [dist.write(wheels) for dist in dists]
        # httpx: every server at once, taking turns (upload_interleaved).
        targets: dict[str, Target] = {}
        with contextlib.ExitStack() as running:
            for name in names:
                print(f"{name}: starting", flush=True)
                workdir = root / f"{name}-httpx"
                workdir.mkdir()
                try:
                    targets[name] = running.enter_context(SERVERS[name](workdir))
                except PeerUnavailable as error:
                    skipped[name] = str(error)
                    print(f"  skipped: {error}", flush=True)
            print(f"httpx: {args.files} files to each, {args.batch} at a time, in turns", flush=True)
            for result in upload_interleaved(targets, dists, args.time_cap, args.batch):
                if result.errors:
                    result.server_log = log_errors(root / f"{result.server}-httpx" / "server.log")
                results.append(result)
                print(
                    f"  {result.server}: {result.ok}/{result.files} in {result.wall:.1f} s, "
                    f"{result.errors} errors",
                    flush=True,
                )
        # twine: one run per server, on a fresh one (a run is timed as a whole).
        for name in targets:
            workdir = root / f"{name}-twine"
            workdir.mkdir()
            try:
                with SERVERS[name](workdir) as target:
                    result = upload_with_twine(name, target, paths, args.time_cap, workdir / "twine.log")
            except PeerUnavailable as error:
                skipped[name] = str(error)
                print(f"{name}: twine skipped: {error}", flush=True)
                continue
            if result.errors:
                result.server_log = log_errors(workdir / "server.log")
            results.append(result)
            versions[name] = describe(name)
            print(
                f"{name}: twine {result.ok}/{result.files} in {result.wall:.1f} s, {result.errors} errors",
                flush=True,
            )
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    results.sort(key=lambda result: (names.index(result.server), result.client != "httpx"))
    print()
    print(report(results, skipped, versions))
    return 0


if __name__ == "__main__":
    sys.exit(main())
