"""Read benchmark: Cheeseshop against pypiserver, devpi-server, nginx and a bare Quart app.

A benchmark, not a test: it asserts nothing and is not collected by pytest. One command
seeds the same data into every server, drives each with the same load, and prints one table:

* 50 projects x 20 versions, one small wheel each (``read-bench-00`` .. ``read-bench-49``);
* ``read-bench-big``: 500 versions x (wheel + sdist) = 1,000 files;
* enough empty projects (``root-filler-NNNNNN``) for the root index to list 100,000.

Cheeseshop gets the real files over HTTP (the multipart form twine sends, with a token made
by ``cheeseshop user create`` / ``token create``) and the filler projects as rows inserted
in bulk before it starts. pypiserver gets the files written into its package directory, and
the fillers as empty ``root-filler-NNNNNN-1.0.tar.gz`` files in a second, cached directory
that only a second pypiserver, measured on the root, serves (it rescans its directories on
every request). devpi-server gets the files over HTTP within ``--devpi-budget`` seconds (it
takes about 4 uploads/s), the measured pages first; its seeded server directory is cached,
so a later run carries on where this one stopped. Two ceilings serve the same JSON page
bytes: nginx (static file), a bare Quart app on hypercorn (from memory; once more with a
one-line access log per request), and a plain ASGI callable on hypercorn: the server's own
ceiling, which says whether a goal is within hypercorn's reach at all.

Each server runs as one process on 127.0.0.1 on a free port. All are set up first and then
measured one after another, so one run's figures are taken close together. Each target gets
a warm-up and a fixed-duration run at 32 connections with ``wrk`` (one thread; installed
with apt-get when missing and running as root, else a Python load generator is used and
named in the output), giving requests/s, p50 and p99 and the errors (non-2xx/3xx answers and
socket errors). A target so slow that 32 connections could not each finish two requests
within the cap is timed with a few sequential requests instead, and marked so. For
Cheeseshop's root the time of one request and the server's RSS before and after N requests
are recorded too.

    .venv/bin/python benchmarks/read_bench.py [--quick] [--only NAME,...] [--postgres] [--keep]

Every process started is stopped on exit, Ctrl-C and SIGTERM included. Nothing leaves the
machine but the peers' ``pip install`` (cached venvs) and, when missing, ``apt-get install``
of wrk and nginx.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import httpx
from cheeseshop.testing.dists import Dist, build_sdist, build_wheel
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
    run,
    server_process,
    upload_form,
    version_of,
)

JSON = "application/vnd.pypi.simple.v1+json"
HTML = "text/html"
POSTGRES_DATABASE = "cheeseshop_read_bench"
READ_CACHE = CACHE / "read-bench"
# pypiserver set up for a larger index: the watchdog-backed directory cache its README
# recommends for thousands of packages ("pypiserver[cache]"), and waitress, which bottle's
# "auto" server picks over the single-threaded wsgiref once it is installed.
PYPISERVER_WAITRESS_PACKAGES = ["pypiserver[cache]", "passlib", "waitress"]
UPLOAD_THREADS = 4
UPLOAD_TIMEOUT = 60.0
REQUEST_CAP = 120.0  # one probe request, at most
#: Longest wait for idle cores before a server is measured, and what counts as idle (the
#: share of both cores busy over 2 s: the bench itself and an idle server's timers).
QUIET_WAIT = 600.0
QUIET_BUSY = 0.10
SEQUENTIAL_REQUESTS = 3
APT_TIMEOUT = 600.0


# -- the data ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Dataset:
    """What every server is seeded with."""

    projects: int  # projects with `versions` wheels each; the first one is measured
    versions: int
    big_versions: int  # the big project has a wheel and an sdist per version
    root_projects: int  # the root lists this many projects in all (the fillers make it up)

    page_project = "read-bench-00"
    big_project = "read-bench-big"

    @property
    def big_files(self) -> int:
        return 2 * self.big_versions

    def groups(self) -> list[tuple[str, list[Dist]]]:
        """The files in seeding order: the measured pages first, the bulk last."""
        page = [build_wheel(self.page_project, f"1.{v}") for v in range(self.versions)]
        big = [
            dist
            for v in range(self.big_versions)
            for dist in (
                build_wheel(self.big_project, f"1.{v}"),
                build_sdist(self.big_project, f"1.{v}"),
            )
        ]
        rest = [
            build_wheel(f"read-bench-{p:02d}", f"1.{v}")
            for p in range(1, self.projects)
            for v in range(self.versions)
        ]
        return [("page", page), ("big", big), ("rest", rest)]

    def filler_names(self) -> list[str]:
        count = max(0, self.root_projects - self.projects - 1)
        return [f"root-filler-{i:06d}" for i in range(count)]

    def key(self, groups: Sequence[tuple[str, list[Dist]]]) -> str:
        """Names the cached seeded state: changes when any file's bytes change."""
        digest = hashlib.sha256()
        for _, dists in groups:
            for dist in dists:
                digest.update(dist.sha256.encode())
        return f"{self.projects}x{self.versions}-big{self.big_versions}-{digest.hexdigest()[:12]}"


FULL = Dataset(projects=50, versions=20, big_versions=500, root_projects=100_000)
QUICK = Dataset(projects=5, versions=20, big_versions=50, root_projects=5_000)


def form_for(dist: Dist) -> tuple[dict[str, str], dict[str, tuple[str, bytes, str]]]:
    """twine's upload form for a wheel or an sdist."""
    data, files = upload_form(dist)
    if dist.filename.endswith(".tar.gz"):
        data.update(filetype="sdist", pyversion="source")
    return data, files


@dataclass
class Seeding:
    """How much of each group a server holds."""

    counts: dict[str, tuple[int, int]] = field(default_factory=dict)  # group -> (held, total)
    seconds: float = 0.0
    uploaded: int = 0
    errors: int = 0
    first_error: str | None = None

    def complete(self, group: str) -> bool:
        held, total = self.counts.get(group, (0, 1))
        return held >= total

    def describe(self, group: str) -> str:
        held, total = self.counts.get(group, (0, 0))
        return f"{held}/{total}"


def upload_groups(
    url: str,
    auth: tuple[str, str],
    groups: Sequence[tuple[str, list[Dist]]],
    *,
    budget: float,
    skip: frozenset[str] = frozenset(),
) -> tuple[Seeding, set[str]]:
    """POST every file not in ``skip``, group by group.

    One project's files go one after another, as twine sends them; up to ``UPLOAD_THREADS``
    projects at a time. (Concurrent uploads into one new release or one new project are a
    race that Cheeseshop on PostgreSQL can lose with a 400, which is not what is measured
    here.) Stops starting uploads once ``budget`` seconds have passed. Returns the seeding
    state and the filenames uploaded now.
    """
    seeding = Seeding()
    done: set[str] = set()
    lock = threading.Lock()
    local = threading.local()
    clients: list[httpx.Client] = []
    started = time.monotonic()

    def client() -> httpx.Client:
        if not hasattr(local, "client"):
            local.client = httpx.Client(auth=auth, timeout=UPLOAD_TIMEOUT)
            with lock:
                clients.append(local.client)
        return local.client

    def upload(project: list[Dist]) -> None:
        for dist in project:
            if time.monotonic() - started > budget:
                return
            data, files = form_for(dist)
            try:
                response = client().post(url, data=data, files=files)
                failure = (
                    None
                    if response.is_success
                    else (f"HTTP {response.status_code}: {response.text.strip()[:200]}")
                )
            except httpx.HTTPError as error:
                failure = f"{type(error).__name__}: {error}"
            with lock:
                if failure is None:
                    done.add(dist.filename)
                else:
                    seeding.errors += 1
                    seeding.first_error = seeding.first_error or f"{dist.filename}: {failure}"

    try:
        with ThreadPoolExecutor(UPLOAD_THREADS) as pool:
            for group, dists in groups:
                projects: dict[str, list[Dist]] = {}
                for dist in dists:
                    if dist.filename not in skip:
                        projects.setdefault(dist.filename.split("-")[0], []).append(dist)
                list(pool.map(upload, projects.values()))
                held = sum(dist.filename in skip or dist.filename in done for dist in dists)
                seeding.counts[group] = (held, len(dists))
    finally:
        for each in clients:
            each.close()
    seeding.seconds = time.monotonic() - started
    seeding.uploaded = len(done)
    return seeding, done


def write_fillers(names: Sequence[str]) -> Path:
    """A cached directory of empty ``<name>-1.0.tar.gz`` files, for pypiserver's root."""
    directory = READ_CACHE / f"pypiserver-fillers-{len(names)}"
    marker = directory / ".complete"
    if marker.exists():
        return directory
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    for name in names:
        (directory / f"{name}-1.0.tar.gz").touch()
    marker.touch()
    return directory


async def _insert_fillers(url: str, names: Sequence[str]) -> None:
    from cheeseshop.db import make_engine
    from cheeseshop.db.models import Project, ProjectStatus, utcnow
    from cheeseshop.packaging.names import confusable_fold, normalize
    from sqlalchemy import insert

    now = utcnow()
    rows = [
        {
            "name": name,
            "normalized_name": normalize(name),
            # The column's Python default, computed here for all rows at once.
            "ultranormalized_name": confusable_fold(name),
            "status": ProjectStatus.ACTIVE.value,
            "created": now,
            "total_size": 0,
            "last_serial": 0,
        }
        for name in names
    ]
    engine = make_engine(url)
    try:
        async with engine.begin() as connection:
            for start in range(0, len(rows), 10_000):
                await connection.execute(insert(Project.__table__), rows[start : start + 10_000])
    finally:
        await engine.dispose()


def insert_fillers(url: str, names: Sequence[str]) -> float:
    """Insert the filler projects straight into ``projects``; returns the seconds taken."""
    started = time.monotonic()
    asyncio.run(_insert_fillers(url, names))
    return time.monotonic() - started


# -- load --------------------------------------------------------------------------------


@dataclass
class Load:
    """What one load run gave."""

    requests: int
    seconds: float
    p50_ms: float | None
    p99_ms: float | None
    errors: int
    detail: str = ""

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


_WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _wrk_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if not match:
        raise ValueError(f"unreadable wrk time {text!r}")
    return float(match.group(1)) * _WRK_UNITS[match.group(2)]


def parse_wrk(output: str) -> Load:
    """requests, duration, p50, p99 and errors from ``wrk --latency`` output."""
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m|h)", output)
    if total is None:
        raise ValueError(f"unreadable wrk output:\n{output[-500:]}")
    requests = int(total.group(1))
    seconds = _wrk_ms(total.group(2) + total.group(3)) / 1000
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", output, re.MULTILINE))
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    socket_errors = [int(n) for n in sockets.groups()] if sockets else [0, 0, 0, 0]
    statuses = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    non_2xx = int(statuses.group(1)) if statuses else 0
    detail = []
    if non_2xx:
        detail.append(f"{non_2xx} non-2xx/3xx")
    for name, count in zip(("connect", "read", "write", "timeout"), socket_errors, strict=True):
        if count:
            detail.append(f"{count} {name} errors")
    return Load(
        requests=requests,
        seconds=seconds,
        p50_ms=_wrk_ms(percentiles["50"]) if "50" in percentiles and requests else None,
        p99_ms=_wrk_ms(percentiles["99"]) if "99" in percentiles and requests else None,
        errors=non_2xx + sum(socket_errors),
        detail=", ".join(detail),
    )


def _percentile(values: Sequence[float], percent: int) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-percent * len(ordered) // 100))  # nearest rank
    return ordered[rank - 1]


class LoadGenerator:
    """wrk when available, else an asyncio + httpx loop (much slower: it is a ceiling too)."""

    def __init__(self, *, use_wrk: bool, connections: int) -> None:
        self.use_wrk = use_wrk
        self.connections = connections

    @property
    def name(self) -> str:
        if self.use_wrk:
            return f"wrk ({self.connections} connections, 1 thread)"
        return f"Python httpx/asyncio load generator ({self.connections} connections)"

    def run(
        self, url: str, accept: str | None, duration: float, timeout: float, encoding: str | None = None
    ) -> Load:
        if self.use_wrk:
            return self._wrk(url, accept, duration, timeout, encoding)
        return asyncio.run(self._python(url, accept, duration, timeout, encoding))

    def _wrk(
        self, url: str, accept: str | None, duration: float, timeout: float, encoding: str | None
    ) -> Load:
        command = [
            "wrk",
            "-t1",
            f"-c{self.connections}",
            f"-d{max(1, round(duration))}s",
            "--timeout",
            f"{max(1, round(timeout))}s",
            "--latency",
        ]
        if accept:
            command += ["-H", f"Accept: {accept}"]
        if encoding:
            command += ["-H", f"Accept-Encoding: {encoding}"]
        completed = subprocess.run(
            [*command, url],
            capture_output=True,
            text=True,
            timeout=duration + timeout + 30,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if completed.returncode != 0:
            raise RuntimeError(f"wrk failed: {(completed.stdout + completed.stderr)[-400:]}")
        return parse_wrk(completed.stdout)

    async def _python(
        self, url: str, accept: str | None, duration: float, timeout: float, encoding: str | None
    ) -> Load:
        headers = request_headers(accept, encoding)
        latencies: list[float] = []
        errors = 0
        limits = httpx.Limits(
            max_connections=self.connections, max_keepalive_connections=self.connections
        )
        async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
            started = time.perf_counter()
            deadline = started + duration

            async def worker() -> None:
                nonlocal errors
                while time.perf_counter() < deadline:
                    sent = time.perf_counter()
                    try:
                        response = await client.get(url, headers=headers)
                        await response.aread()
                    except httpx.HTTPError:
                        errors += 1
                        continue
                    latencies.append((time.perf_counter() - sent) * 1000)
                    if response.status_code >= 400:
                        errors += 1

            await asyncio.gather(*(worker() for _ in range(self.connections)))
            elapsed = time.perf_counter() - started
        return Load(
            requests=len(latencies),
            seconds=elapsed,
            p50_ms=_percentile(latencies, 50),
            p99_ms=_percentile(latencies, 99),
            errors=errors,
            detail=f"{errors} errors" if errors else "",
        )


# -- measurements ------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One URL to load, and how it is asked for."""

    key: str  # html20, json20, jsonbig, root, pypijson, download, rootgz
    label: str
    path: str
    accept: str | None
    #: Accept-Encoding sent; None sends none with wrk, "identity" with httpx (which
    #: would otherwise ask for gzip by itself).
    encoding: str | None = None


def root_gzip_target(dataset: Dataset) -> Target:
    """The root as pip asks for it (``Accept-Encoding: gzip, deflate``), for servers that
    can compress: a 4.7 MB page is mostly a matter of bytes on the wire."""
    return Target("rootgz", f"root {dataset.root_projects:,} projects (JSON, gzip)", "/simple/", JSON, "gzip, deflate")


def targets(dataset: Dataset) -> list[Target]:
    page, big = dataset.page_project, dataset.big_project
    return [
        Target("html20", f"simple {dataset.versions} files (HTML)", f"/simple/{page}/", HTML),
        Target("json20", f"simple {dataset.versions} files (JSON)", f"/simple/{page}/", JSON),
        Target("jsonbig", f"simple {dataset.big_files} files (JSON)", f"/simple/{big}/", JSON),
        Target("pypijson", "PyPI JSON API", f"/pypi/{page}/json", None),
        Target("download", "file download", "", None),
        Target("root", f"root {dataset.root_projects:,} projects (JSON)", "/simple/", JSON),
    ]


@dataclass
class Measurement:
    """One server x target."""

    server: str
    target: str
    status: str = "-"
    content_type: str = "-"
    size: int | None = None
    load: Load | None = None
    note: str = ""
    sequential: bool = False

    @property
    def ran(self) -> bool:
        return self.load is not None


#: Extra load runs on the root at most, and the RSS growth under which a run shows that
#: memory has levelled off.
RELOADS = 6
PLATEAU_KIB = 1024


@dataclass
class RootCheck:
    """Cheeseshop's root: one request's time, and RSS before and after many requests."""

    server: str
    projects: int
    first_s: float
    median_s: float
    count: int  # sequential requests after the first
    rss_before_kib: int
    rss_after_first_kib: int
    rss_after_kib: int  # after `count` more
    loaded: int = 0  # requests of the load run that followed
    rss_after_load_kib: int | None = None
    # More identical load runs, until one adds less than PLATEAU_KIB (at most RELOADS): 32
    # connections each buffering a 4.7 MB answer take RSS up to a high-water mark over the
    # first few runs (the allocator keeps what it was given); a leak keeps growing with
    # every run instead. (requests, RSS after the run) of each.
    reloads: list[tuple[int, int]] = field(default_factory=list)

    def levelled_off(self) -> bool | None:
        """Whether the last load run added less than PLATEAU_KIB; None if none ran again."""
        if self.rss_after_load_kib is None or not self.reloads:
            return None
        before = self.reloads[-2][1] if len(self.reloads) > 1 else self.rss_after_load_kib
        return self.reloads[-1][1] - before < PLATEAU_KIB


@dataclass
class Context:
    """What every server's run shares."""

    args: argparse.Namespace
    dataset: Dataset
    groups: list[tuple[str, list[Dist]]]
    load: LoadGenerator
    root: Path
    results: list[Measurement] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    root_checks: list[RootCheck] = field(default_factory=list)
    pages: dict[str, bytes] = field(default_factory=dict)  # target key -> Cheeseshop's bytes
    # (server, target) -> (url, accept, encoding) of every target loaded in the usual way,
    # and the requests/s of the interleaved rounds run on some of them at the end.
    loadable: dict[tuple[str, str], tuple[str, str | None, str | None]] = field(default_factory=dict)
    rounds: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    round_lines: list[str] = field(default_factory=list)

    @property
    def dists(self) -> list[Dist]:
        return [dist for _, group in self.groups for dist in group]


def _short_type(content_type: str) -> str:
    media = content_type.split(";")[0].strip()
    return {
        JSON: "json",
        "application/json": "json",
        HTML: "html",
        "application/vnd.pypi.simple.v1+html": "html",
        "application/octet-stream": "binary",
        "text/plain": "text",
    }.get(media, media or "-")


def request_headers(accept: str | None, encoding: str | None) -> dict[str, str]:
    """The headers of a probe or a Python load request: what wrk sends, bar the Host."""
    headers = {"Accept-Encoding": encoding or "identity"}
    if accept:
        headers["Accept"] = accept
    return headers


def probe(url: str, accept: str | None, encoding: str | None = None) -> tuple[httpx.Response, float]:
    """One request, timed (connection set-up included)."""
    headers = request_headers(accept, encoding)
    with httpx.Client(timeout=REQUEST_CAP, follow_redirects=False) as client:
        started = time.perf_counter()
        response = client.get(url, headers=headers)
        return response, time.perf_counter() - started


def measure(
    ctx: Context,
    server: str,
    target: str,
    url: str,
    accept: str | None,
    *,
    process: subprocess.Popen[bytes] | None = None,
    encoding: str | None = None,
) -> Measurement:
    """Probe ``url`` a few times, then load it (or keep the probes when far too slow).

    ``process``, when given, is the server's: a failed probe then says whether it still runs.
    """
    args = ctx.args
    result = Measurement(server=server, target=target)
    try:
        response, first = probe(url, accept, encoding)
        times = [first]
        while len(times) < SEQUENTIAL_REQUESTS and sum(times) < args.max_duration:
            times.append(probe(url, accept, encoding)[1])
    except httpx.HTTPError as error:
        result.note = f"not run: probe failed: {type(error).__name__}: {error}"
        if process is not None:
            state = "running" if process.poll() is None else f"exited with {process.returncode}"
            result.note += f" (the server process is {state})"
        return result
    result.status = str(response.status_code)
    result.content_type = _short_type(response.headers.get("content-type", ""))
    # Bytes on the wire: a gzipped answer counts at its compressed size.
    result.size = int(response.headers.get("content-length") or len(response.content))
    # The best probe, not the first: a first request pays for cold caches and imports.
    seconds = min(times)
    # Each of the connections should finish at least two requests within the window.
    needed = seconds * args.connections * 2
    print(
        f"    {target}: HTTP {response.status_code}, {len(response.content):,} bytes, "
        f"{first * 1000:.1f} ms first, {seconds * 1000:.1f} ms best of {len(times)}",
        flush=True,
    )
    try:
        if needed <= args.duration:
            if args.warmup > 0:
                ctx.load.run(url, accept, args.warmup, timeout=10, encoding=encoding)
            result.load = ctx.load.run(url, accept, args.duration, timeout=10, encoding=encoding)
            ctx.loadable[(server, target)] = (url, accept, encoding)
        elif needed <= args.max_duration:
            result.load = ctx.load.run(url, accept, needed, timeout=needed, encoding=encoding)
            result.note = f"run for {needed:.0f} s: one request takes {seconds:.2f} s"
        else:
            result.sequential = True
            result.load = Load(
                requests=len(times),
                seconds=sum(times),
                p50_ms=statistics.median(times) * 1000,
                p99_ms=max(times) * 1000,
                errors=0 if response.status_code < 400 else len(times),
            )
            result.note = (
                f"{len(times)} sequential requests (best {seconds:.2f} s): too slow for "
                f"{args.connections} connections within {args.max_duration:.0f} s"
            )
    except (RuntimeError, subprocess.TimeoutExpired, httpx.HTTPError) as error:
        result.note = f"load failed: {error}"[:300]
    if result.load is not None and result.load.requests == 0:
        result.note = f"no response completed within the {result.load.seconds:.0f} s run"
    if result.load is not None:
        load = result.load
        print(
            f"      {load.rps:.1f} req/s, p50 {_ms(load.p50_ms)} ms, p99 {_ms(load.p99_ms)} ms, "
            f"{load.errors} errors {('(' + load.detail + ')') if load.detail else ''}",
            flush=True,
        )
    return result


def not_run(server: str, target: str, why: str) -> Measurement:
    return Measurement(server=server, target=target, note=f"not run: {why}")


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.hrefs.extend(value for name, value in attrs if name == "href" and value)


def download_url(page_url: str) -> str | None:
    """The first wheel linked from a project's HTML page, fragment dropped."""
    response, _ = probe(page_url, HTML)
    links = _Links()
    links.feed(response.text)
    for href in links.hrefs:
        absolute = urllib.parse.urljoin(page_url, href)
        if urllib.parse.urlsplit(absolute).path.endswith(".whl"):
            return urllib.parse.urldefrag(absolute)[0]
    return None


def wait_http(url: str, timeout: float = 60) -> None:
    """Wait until ``url`` answers at all (some servers listen before they can answer)."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(url, timeout=max(5.0, deadline - time.monotonic()))
            return
        if time.monotonic() > deadline:
            raise PeerUnavailable(f"{url} did not answer within {timeout:.0f} s")
        time.sleep(0.2)


def rss_kib(pid: int) -> int:
    """The resident set size of ``pid`` (VmRSS), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def measure_pages(
    ctx: Context,
    server: str,
    base: str,
    seeding: Seeding,
    *,
    paths: dict[str, str | None] | None = None,
    missing: dict[str, str] | None = None,
    keys: Sequence[str] = ("html20", "json20", "jsonbig", "pypijson", "download"),
) -> None:
    """Load each of ``keys`` on a running server, skipping what it lacks or was not seeded."""
    paths, missing = paths or {}, missing or {}
    for target in targets(ctx.dataset):
        if target.key not in keys:
            continue
        if target.key in missing:
            ctx.results.append(not_run(server, target.label, missing[target.key]))
            continue
        group = "big" if target.key == "jsonbig" else "page"
        if not seeding.complete(group):
            project = ctx.dataset.big_project if group == "big" else ctx.dataset.page_project
            ctx.results.append(
                not_run(
                    server,
                    target.label,
                    f"{project} not seeded ({seeding.describe(group)} files within the budget)",
                )
            )
            continue
        path = paths.get(target.key, target.path)
        if target.key == "download":
            page = base + paths.get("html20", targets(ctx.dataset)[0].path)
            url = download_url(page)
            if url is None:
                ctx.results.append(not_run(server, target.label, f"no wheel link on {page}"))
                continue
        else:
            url = base + path
        result = measure(ctx, server, target.label, url, target.accept)
        ctx.results.append(result)
        if server.startswith("cheeseshop") and target.key in ("json20", "jsonbig"):
            with contextlib.suppress(httpx.HTTPError):
                body, _ = probe(url, target.accept)
                if body.is_success:
                    ctx.pages.setdefault(target.key, body.content)


# -- the servers -------------------------------------------------------------------------
#
# Each server is a context manager. Entering it installs, starts and seeds the server (which
# then idles); it yields the function that measures it; leaving it stops the server. main()
# sets up every server first and then measures them one after another, so the figures of one
# run are taken within a few minutes of each other, not spread over the seeding.

Bench = Callable[[], None]


@contextlib.contextmanager
def cheeseshop_server(ctx: Context, name: str, database_url: str | None) -> Iterator[Bench]:
    workdir = ctx.root / name
    workdir.mkdir()
    env = cheeseshop_env(workdir, database_url)
    token = cheeseshop_token(env)  # migrates, too
    url = database_url or f"sqlite+aiosqlite:///{(workdir / 'data' / 'cheeseshop.db').resolve()}"
    fillers = ctx.dataset.filler_names()
    seconds = insert_fillers(url, fillers)
    print(f"  {len(fillers):,} filler projects inserted in {seconds:.1f} s", flush=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [PYTHON, "-m", "cheeseshop", "serve", "--host", "127.0.0.1", "--port", str(port)]
    ctx.versions[name] = (
        f"cheeseshop {importlib.metadata.version('cheeseshop')} ({cheeseshop_revision()}), "
        f"hypercorn {importlib.metadata.version('hypercorn')}, "
        f"quart {importlib.metadata.version('quart')}, {event_loop()}, 1 worker"
    )
    with server_process(command, port=port, log=workdir / "server.log", env=env) as process:
        wait_http(base + "/")
        seeding, _ = upload_groups(
            f"{base}/legacy/", ("__token__", token), ctx.groups, budget=ctx.args.seed_cap
        )
        report_seeding(ctx, name, seeding)
        by_key = {t.key: t for t in targets(ctx.dataset)}
        for key in ("json20", "jsonbig", "root"):  # the bytes the ceilings serve
            with contextlib.suppress(httpx.HTTPError):
                response, _ = probe(base + by_key[key].path, JSON)
                if response.is_success:
                    ctx.pages.setdefault(key, response.content)

        def bench() -> None:
            measure_pages(ctx, name, base, seeding)
            root = by_key["root"]
            check = root_check(ctx, name, base + root.path, process.pid)
            result = measure(ctx, name, root.label, base + root.path, root.accept, process=process)
            ctx.results.append(result)
            if result.load is not None and not result.sequential:
                check.loaded = result.load.requests
                check.rss_after_load_kib = rss_kib(process.pid)
                for _ in range(RELOADS):
                    again = measure(ctx, name, root.label, base + root.path, root.accept, process=process)
                    if again.load is None or again.sequential:
                        break
                    check.reloads.append((again.load.requests, rss_kib(process.pid)))
                    if check.levelled_off():
                        break
            gz = root_gzip_target(ctx.dataset)
            ctx.results.append(
                measure(ctx, name, gz.label, base + gz.path, gz.accept, process=process, encoding=gz.encoding)
            )

        yield bench


def root_check(ctx: Context, server: str, url: str, pid: int) -> RootCheck:
    """Time one root request; read the RSS before it, after it and after N more."""
    before = rss_kib(pid)
    response, first = probe(url, JSON)
    after_first = rss_kib(pid)
    times = [probe(url, JSON)[1] for _ in range(ctx.args.rss_requests)]
    after = rss_kib(pid)
    check = RootCheck(
        server=server,
        projects=len(response.json().get("projects", [])) if response.is_success else 0,
        first_s=first,
        median_s=statistics.median(times) if times else first,
        count=len(times),
        rss_before_kib=before,
        rss_after_first_kib=after_first,
        rss_after_kib=after,
    )
    ctx.root_checks.append(check)
    print(
        f"    root: first request {first:.3f} s, median of {len(times)} "
        f"{check.median_s:.3f} s; RSS {before / 1024:.1f} -> {after_first / 1024:.1f} -> "
        f"{after / 1024:.1f} MiB",
        flush=True,
    )
    return check


@contextlib.contextmanager
def cheeseshop_sqlite(ctx: Context) -> Iterator[Bench]:
    with cheeseshop_server(ctx, "cheeseshop-sqlite", None) as bench:
        yield bench


@contextlib.contextmanager
def cheeseshop_postgres(ctx: Context) -> Iterator[Bench]:
    with postgres_database(POSTGRES_DATABASE) as url, cheeseshop_server(ctx, "cheeseshop-postgres", url) as bench:
        ctx.versions["cheeseshop-postgres"] += f"; PostgreSQL {postgres_version(url)}"
        yield bench


def postgres_version(url: str) -> str:
    async def query() -> str:
        import asyncpg

        connection = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
        try:
            return str(await connection.fetchval("SHOW server_version"))
        finally:
            await connection.close()

    with contextlib.suppress(Exception):
        return asyncio.run(query())
    return "(version unknown)"


@contextlib.contextmanager
def pypiserver_server(
    ctx: Context, name: str, venv_name: str, packages: list[str]
) -> Iterator[Bench]:
    venv = ensure_venv(venv_name, packages)
    cached = "waitress" in packages
    ctx.versions[name] = f"pypiserver {version_of(venv, 'pypiserver')}" + (
        f", waitress {version_of(venv, 'waitress')} (4 threads), "
        f"watchdog {version_of(venv, 'watchdog')} (cached directory listing)"
        if cached
        else ", bottle's wsgiref server (single-threaded), no listing cache"
    )
    workdir = ctx.root / name
    files = workdir / "packages"
    files.mkdir(parents=True)
    for dist in ctx.dists:
        dist.write(files)
    seeding = Seeding(counts={group: (len(d), len(d)) for group, d in ctx.groups})
    fillers = write_fillers(ctx.dataset.filler_names())

    def command(port: int, *roots: Path) -> list[str | Path]:
        # -a . -P .: no authentication at all; nothing is uploaded over HTTP here.
        return [
            venv / "bin" / "pypi-server", "run", "--host", "127.0.0.1", "--port", str(port),
            "-a", ".", "-P", ".", "--disable-fallback", *roots,
        ]  # fmt: skip

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with server_process(command(port, files), port=port, log=workdir / "server.log"):
        # A cheap URL: pypiserver's others, "/" included, walk its package directories.
        wait_http(base + "/favicon.ico")

        def bench() -> None:
            measure_pages(
                ctx, name, base, seeding, paths={"pypijson": f"/{ctx.dataset.page_project}/json"}
            )
            # The root with every filler: a second server, with the fillers as a second root.
            root_port = free_port()
            root_base = f"http://127.0.0.1:{root_port}"
            log = workdir / "server-root.log"
            with server_process(
                command(root_port, files, fillers), port=root_port, log=log
            ) as process:
                wait_http(root_base + "/favicon.ico")
                by_key = {t.key: t for t in targets(ctx.dataset)}
                root, page = by_key["root"], by_key["json20"].path
                result = measure(
                    ctx, name, root.label, root_base + root.path, root.accept, process=process
                )
                ctx.results.append(result)
                if not result.ran:
                    tail = log.read_text(errors="replace").strip().splitlines()[-3:]
                    ctx.notes.append(f"{name}: its root server's log ends: {' | '.join(tail)}")
                with contextlib.suppress(httpx.HTTPError):
                    best = min(probe(root_base + page, JSON)[1] for _ in range(3))
                    ctx.notes.append(
                        f"{name}: with the {len(ctx.dataset.filler_names()):,} filler files "
                        f"present, a request for {page} takes {best * 1000:.0f} ms (best of 3; "
                        + (
                            "it goes through its cached list of every file on each request"
                            if cached
                            else "it walks its directories on every request"
                        )
                        + "); its page figures above are without the fillers"
                    )

        yield bench


@contextlib.contextmanager
def pypiserver_default(ctx: Context) -> Iterator[Bench]:
    with pypiserver_server(ctx, "pypiserver", "pypiserver", PYPISERVER_PACKAGES) as bench:
        yield bench


@contextlib.contextmanager
def pypiserver_waitress(ctx: Context) -> Iterator[Bench]:
    name = "pypiserver-waitress"
    with pypiserver_server(ctx, name, name, PYPISERVER_WAITRESS_PACKAGES) as bench:
        yield bench


@contextlib.contextmanager
def devpi_server(ctx: Context) -> Iterator[Bench]:
    name = "devpi"
    venv = ensure_venv("devpi", DEVPI_PACKAGES)
    version = version_of(venv, "devpi-server")
    ctx.versions[name] = (
        f"devpi-server {version}, devpi-client {version_of(venv, 'devpi-client')} "
        "(waitress, its default 50 threads)"
    )
    workdir = ctx.root / name
    workdir.mkdir()
    serverdir, clientdir = workdir / "server", workdir / "client"
    cache = READ_CACHE / f"devpi-{version}-{ctx.dataset.key(ctx.groups)}"
    state_file = cache / "seeded.json"
    fresh = not state_file.exists()
    state = {} if fresh else json.loads(state_file.read_text())
    seeded: set[str] = set(state.get("files", []))
    if fresh:
        # No root/pypi: a stage index with no bases never asks pypi.org for anything.
        run([
            venv / "bin" / "devpi-init", "--serverdir", serverdir,
            "--no-root-pypi", "--root-passwd", "root-password",
        ])  # fmt: skip
    else:
        shutil.copytree(cache / "server", serverdir)
        print(f"  {len(seeded)} files already seeded (cached in {cache})", flush=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [
        venv / "bin" / "devpi-server", "--serverdir", serverdir,
        "--host", "127.0.0.1", "--port", str(port), "--offline-mode",
    ]  # fmt: skip
    index = f"/{USERNAME}/dev"
    with server_process(command, port=port, log=workdir / "server.log"):
        wait_http(base + "/+api")
        if fresh:
            client = [venv / "bin" / "devpi", "--clientdir", clientdir]
            run([*client, "use", base + "/"])
            run([*client, "user", "-c", USERNAME, f"password={PASSWORD}", "email=b@example.com"])
            run([*client, "login", USERNAME, "--password", PASSWORD])
            run([*client, "index", "-c", index[1:], "type=stage", "bases=", "volatile=False"])
        seeding, done = upload_groups(
            f"{base}{index}/",
            (USERNAME, PASSWORD),
            ctx.groups,
            budget=ctx.args.devpi_budget,
            skip=frozenset(seeded),
        )
        seeded |= done
        report_seeding(ctx, name, seeding, budget=ctx.args.devpi_budget)
        if seeding.uploaded:
            state["uploads_per_second"] = seeding.uploaded / seeding.seconds

        def bench() -> None:
            page, big = ctx.dataset.page_project, ctx.dataset.big_project
            measure_pages(
                ctx,
                name,
                base,
                seeding,
                paths={
                    "html20": f"{index}/+simple/{page}/",
                    "json20": f"{index}/+simple/{page}/",
                    "jsonbig": f"{index}/+simple/{big}/",
                },
                missing={"pypijson": "devpi-server has no /pypi/<project>/json API"},
            )
            root = next(t for t in targets(ctx.dataset) if t.key == "root")
            # Measured when it was seeded; 4/s (upload_bench's figure) when that is unknown.
            per_second = state.get("uploads_per_second", 4.0)
            hours = ctx.dataset.root_projects / max(per_second, 0.1) / 3600
            ctx.results.append(
                not_run(
                    name,
                    root.label,
                    f"{ctx.dataset.root_projects:,} projects over HTTP would take about "
                    f"{hours:.1f} h at {per_second:.1f} uploads/s",
                )
            )

        yield bench
    # Saved only after devpi stopped, so the copy is consistent.
    if done and seeding.errors == 0:
        staging = cache.with_name(cache.name + ".new")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(serverdir, staging / "server")
        state["files"] = sorted(seeded)
        (staging / "seeded.json").write_text(json.dumps(state))
        shutil.rmtree(cache, ignore_errors=True)
        staging.rename(cache)


def report_seeding(ctx: Context, name: str, seeding: Seeding, budget: float | None = None) -> None:
    held = ", ".join(f"{group} {seeding.describe(group)}" for group, _ in ctx.groups)
    rate = seeding.uploaded / seeding.seconds if seeding.seconds else 0.0
    line = (
        f"{name}: seeded over HTTP: {held} ({seeding.uploaded} uploaded now in "
        f"{seeding.seconds:.0f} s, {rate:.1f}/s, up to {UPLOAD_THREADS} projects at a time"
        f"{f', budget {budget:.0f} s' if budget is not None else ''}; "
        f"{seeding.errors} errors)"
    )
    if seeding.first_error:
        line += f"; first error: {seeding.first_error}"
    print(f"  {line}", flush=True)
    ctx.notes.append(line)


# -- the ceilings ------------------------------------------------------------------------


def ceiling_pages(ctx: Context) -> dict[str, bytes]:
    """The JSON pages to serve: Cheeseshop's own bytes, else a stand-in of the same shape."""
    pages = dict(ctx.pages)
    if len(pages) < 2 and not any("stand-in" in note for note in ctx.notes):
        ctx.notes.append(
            "ceilings: no Cheeseshop page was fetched in this run; they serve a stand-in JSON "
            "page of the same shape, built by this script"
        )
    for key, project in (
        ("json20", ctx.dataset.page_project),
        ("jsonbig", ctx.dataset.big_project),
    ):
        if key in pages:
            continue
        dists = [d for d in ctx.dists if d.filename.startswith(project.replace("-", "_") + "-")]
        body = {
            "meta": {"api-version": "1.1", "_last-serial": 1},
            "name": project,
            "versions": sorted({d.filename.split("-")[1].removesuffix(".tar.gz") for d in dists}),
            "files": [
                {
                    "filename": d.filename,
                    "url": f"http://127.0.0.1/packages/{d.filename}",
                    "hashes": {"sha256": d.sha256},
                    "requires-python": None,
                    "size": len(d.content),
                    "upload-time": "2026-01-01T00:00:00.000000Z",
                    "yanked": False,
                    "core-metadata": {"sha256": hashlib.sha256(d.metadata).hexdigest()},
                }
                for d in dists
            ],
        }
        pages[key] = json.dumps(body, separators=(",", ":")).encode()
    return pages


def _ceiling_targets(ctx: Context) -> list[tuple[str, str]]:
    by_key = {t.key: t for t in targets(ctx.dataset)}
    found = [("json20", by_key["json20"].label), ("jsonbig", by_key["jsonbig"].label)]
    # The root only when a Cheeseshop root was fetched: there is no stand-in for it.
    if "root" in ctx.pages:
        found.append(("root", by_key["root"].label))
    return found


NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    types {{ }}
    default_type {json};
    server {{
        listen 127.0.0.1:{port};
        root {dir}/pages;
    }}
}}
"""


@contextlib.contextmanager
def nginx_server(ctx: Context) -> Iterator[Bench]:
    name = "nginx (ceiling)"
    nginx = shutil.which("nginx") or (apt_install("nginx") and shutil.which("nginx"))
    if not nginx:
        raise PeerUnavailable("nginx is not installed (apt-get install nginx)")
    version = subprocess.run([nginx, "-v"], capture_output=True, text=True, check=False)
    ctx.versions[name] = (
        version.stderr.strip().removeprefix("nginx version: ") + ", 1 worker process, static file"
    )
    workdir = ctx.root / "nginx"
    (workdir / "pages").mkdir(parents=True)
    # nginx's workers run as "nobody" when started as root: they must reach the pages.
    for directory in (ctx.root, workdir, workdir / "pages"):
        directory.chmod(0o755)
    for key, body in ceiling_pages(ctx).items():
        (workdir / "pages" / key).write_bytes(body)
        (workdir / "pages" / key).chmod(0o644)
    port = free_port()
    config = workdir / "nginx.conf"
    config.write_text(NGINX_CONF.format(dir=workdir, port=port, json=JSON))
    command = [nginx, "-p", workdir, "-c", config, "-e", workdir / "error.log"]
    with server_process(command, port=port, log=workdir / "server.log"):

        def bench() -> None:
            for key, label in _ceiling_targets(ctx):
                url = f"http://127.0.0.1:{port}/{key}"
                ctx.results.append(measure(ctx, name, label, url, JSON))

        yield bench


# Runs in the child: Quart on hypercorn as `cheeseshop serve` runs it (asyncio loop, one
# process, no hypercorn access log), returning bytes it read at start-up. With "1", it also
# writes one access line per response through `logging` from an after_request hook, as an
# app that logs its requests must.
_BARE_QUART = """
import asyncio, logging, signal, sys
from pathlib import Path
from hypercorn.asyncio import serve
from hypercorn.config import Config
from quart import Quart, Response

port, pages, access_log = int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1"
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
bodies = {path.name: path.read_bytes() for path in pages.iterdir()}
app = Quart("bare")

@app.get("/<key>")
async def page(key):
    return Response(bodies[key], content_type="application/vnd.pypi.simple.v1+json")

if access_log:
    from quart import request
    access = logging.getLogger("bare.access")

    @app.after_request
    async def line(response):
        access.info('%s "%s %s %s" %d %s "%s"', request.remote_addr, request.method,
                    request.full_path.rstrip("?"), request.http_version, response.status_code,
                    response.content_length, request.headers.get("User-Agent", "-"))
        return response

""" + ON_HYPERCORN


# Runs in the child: no framework at all, a plain ASGI callable on hypercorn answering
# from memory with the two headers a response needs. This is hypercorn's own ceiling: what
# any app on it (Cheeseshop's ASGI fast path included) can approach but not pass.
_BARE_ASGI = """
import asyncio, logging, signal, sys
from pathlib import Path
from hypercorn.asyncio import serve
from hypercorn.config import Config

port, pages = int(sys.argv[1]), Path(sys.argv[2])
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
responses = {
    ("/" + path.name).encode(): (
        [(b"content-type", b"application/vnd.pypi.simple.v1+json"),
         (b"content-length", str(path.stat().st_size).encode())],
        path.read_bytes(),
    )
    for path in pages.iterdir()
}

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    found = responses.get(scope["raw_path"])
    if found is None:
        await send({"type": "http.response.start", "status": 404, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})
        return
    await send({"type": "http.response.start", "status": 200, "headers": found[0]})
    await send({"type": "http.response.body", "body": found[1]})

""" + ON_HYPERCORN


@contextlib.contextmanager
def python_ceiling(ctx: Context, name: str, directory: str, script: str, *args: str) -> Iterator[Bench]:
    """A ceiling run as ``python -c script PORT PAGES *args``, serving the ceiling pages."""
    workdir = ctx.root / directory
    (workdir / "pages").mkdir(parents=True)
    for key, body in ceiling_pages(ctx).items():
        (workdir / "pages" / key).write_bytes(body)
    port = free_port()
    command = [PYTHON, "-c", script, str(port), workdir / "pages", *args]
    with server_process(command, port=port, log=workdir / "server.log"):
        wait_http(f"http://127.0.0.1:{port}/json20")

        def bench() -> None:
            for key, label in _ceiling_targets(ctx):
                url = f"http://127.0.0.1:{port}/{key}"
                ctx.results.append(measure(ctx, name, label, url, JSON))

        yield bench


@contextlib.contextmanager
def asgi_server(ctx: Context) -> Iterator[Bench]:
    name = "asgi-bare (ceiling)"
    ctx.versions[name] = (
        f"hypercorn {importlib.metadata.version('hypercorn')}, {event_loop()}, a plain ASGI "
        "callable, no framework, 1 worker, bytes from memory, 2 response headers, no access log"
    )
    with python_ceiling(ctx, name, "asgi", _BARE_ASGI) as bench:
        yield bench


@contextlib.contextmanager
def quart_server(ctx: Context, *, access_log: bool) -> Iterator[Bench]:
    name = "quart-bare, access log" if access_log else "quart-bare (ceiling)"
    ctx.versions[name] = (
        f"quart {importlib.metadata.version('quart')}, hypercorn "
        f"{importlib.metadata.version('hypercorn')}, {event_loop()}, 1 worker, bytes from "
        "memory, access log "
        f"{'written from an after_request hook' if access_log else 'off'}"
    )
    directory = "quart-logged" if access_log else "quart"
    with python_ceiling(ctx, name, directory, _BARE_QUART, "1" if access_log else "0") as bench:
        yield bench


SERVERS: dict[str, Callable[[Context], contextlib.AbstractContextManager[Bench]]] = {
    "cheeseshop-sqlite": cheeseshop_sqlite,
    "cheeseshop-postgres": cheeseshop_postgres,
    "pypiserver": pypiserver_default,
    "pypiserver-waitress": pypiserver_waitress,
    "devpi": devpi_server,
    "nginx": nginx_server,
    "quart-bare": lambda ctx: quart_server(ctx, access_log=False),
    "quart-bare-logged": lambda ctx: quart_server(ctx, access_log=True),
    "asgi-bare": asgi_server,
}
DEFAULT = [name for name in SERVERS if name != "cheeseshop-postgres"]


# -- tools -------------------------------------------------------------------------------


def apt_install(package: str) -> bool:
    """``apt-get install -y package`` when running as root; whether it worked."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return False
    print(f"  installing {package} with apt-get ...", flush=True)
    try:
        completed = subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", package],
            capture_output=True,
            text=True,
            timeout=APT_TIMEOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return completed.returncode == 0


def choose_load(args: argparse.Namespace) -> LoadGenerator:
    use_wrk = args.load == "wrk" or (
        args.load == "auto" and (shutil.which("wrk") is not None or apt_install("wrk"))
    )
    if use_wrk and shutil.which("wrk") is None:
        raise SystemExit("--load wrk: wrk is not installed and could not be installed")
    return LoadGenerator(use_wrk=use_wrk, connections=args.connections)


def tool_version(command: Sequence[str]) -> str:
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        completed = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
        return (completed.stdout + completed.stderr).strip().splitlines()[0]
    return "not installed"


def machine(started: datetime.datetime) -> list[str]:
    memory = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return [
        f"date: {started:%Y-%m-%d %H:%M} to {datetime.datetime.now().astimezone():%H:%M %Z}",
        f"machine: {os.cpu_count()} cores, {memory} RAM, Linux {platform.release()}, "
        f"Python {platform.python_version()}",
        f"cheeseshop: {cheeseshop_revision()}",
    ]


def busy_share(seconds: float = 2.0) -> float:
    """The share of all cores' time spent busy over the next ``seconds`` (from /proc/stat)."""

    def sample() -> tuple[int, int]:
        fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle and iowait
        return sum(fields), idle

    total_before, idle_before = sample()
    time.sleep(seconds)
    total_after, idle_after = sample()
    elapsed = total_after - total_before
    return 0.0 if elapsed <= 0 else 1 - (idle_after - idle_before) / elapsed


def wait_until_quiet(ctx: Context, before: str, *, limit: float = QUIET_WAIT, busy: float = QUIET_BUSY) -> None:
    """Wait (at most ``limit`` seconds) until the cores are idle before measuring ``before``.

    Servers keep working after their seeding: devpi-server spent minutes at 100% of a core
    indexing what it had been sent, while the others were being measured. Every server's
    figures must be taken on idle cores, so the run waits; a note says how long, or that
    the cores never went quiet.
    """
    started = time.monotonic()
    share = busy_share()
    while share > busy and time.monotonic() - started < limit:
        share = busy_share()
    waited = time.monotonic() - started
    if share > busy:
        ctx.notes.append(
            f"before {before}: the cores were still {share:.0%} busy after {waited:.0f} s of "
            "waiting (other processes at work); its figures are taken on shared cores"
        )
    elif waited > 10:
        ctx.notes.append(f"before {before}: waited {waited:.0f} s for the cores to go idle")
    print(f"  cores {share:.0%} busy after {waited:.0f} s", flush=True)


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: well over 2 here means others shared the cores."""
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "?"


# -- the report --------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return f"{value:.1f}" if value is not None else "-"


def table(results: Sequence[Measurement]) -> str:
    """The figures as a Markdown table."""
    columns = ["server", "target", "status", "type", "bytes", "req/s", "p50 ms", "p99 ms", "errors"]
    rows = []
    for r in results:
        load = r.load
        rows.append([
            r.server,
            r.target,
            r.status,
            r.content_type,
            f"{r.size:,}" if r.size is not None else "-",
            (f"{load.rps:.1f}" + ("*" if r.sequential else "")) if load else "not run",
            _ms(load.p50_ms) if load else "-",
            _ms(load.p99_ms) if load else "-",
            str(load.errors) if load else "-",
        ])  # fmt: skip
    widths = [max(len(row[i]) for row in [columns, *rows]) for i in range(len(columns))]

    def line(cells: Sequence[str]) -> str:
        aligned = [
            cell.ljust(width) if i < 4 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(aligned) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(columns), rule, *map(line, rows)])


#: The target the interleaved rounds run: the page the 10x goal is about.
GOAL_PAGE = "json20"


def _label(ctx: Context, key: str) -> str:
    return next(t.label for t in targets(ctx.dataset) if t.key == key)


def interleave(ctx: Context, key: str) -> list[str]:
    """Load target ``key`` again on every server that loaded it, server after server, for
    ``--rounds`` rounds; the lines to print.

    This VM's speed drifts by a third within minutes, and each server is measured in its own
    minutes: a ratio between two servers' single runs can be off by that much. The goals
    are judged on the median of each server's runs, the first one and these, which were
    taken as close together as the servers could be.
    """
    label = _label(ctx, key)
    servers = [server for (server, target) in ctx.loadable if target == label]
    lines = []
    for round_ in range(ctx.args.rounds):
        for server in servers:
            url, accept, encoding = ctx.loadable[(server, label)]
            try:
                load = ctx.load.run(url, accept, ctx.args.duration, timeout=10, encoding=encoding)
            except (RuntimeError, subprocess.TimeoutExpired, httpx.HTTPError) as error:
                lines.append(f"  {server}: round {round_ + 1} failed: {error}"[:300])
                continue
            if load.requests and load.errors < load.requests:
                ctx.rounds.setdefault((server, label), []).append(load.rps)
            print(f"  round {round_ + 1}, {server}, {label}: {load.rps:.1f} req/s", flush=True)
    for server in servers:
        first = next(r for r in ctx.results if (r.server, r.target) == (server, label))
        runs = [first.load.rps if first.load else 0.0, *ctx.rounds.get((server, label), [])]
        lines.append(
            f"  {server}: {', '.join(f'{rps:.0f}' for rps in runs)} req/s; "
            f"median {statistics.median(runs):.0f}"
        )
    return lines


def goals(ctx: Context) -> list[str]:
    """The project's read goals, checked against this run's figures."""
    label = {t.key: t.label for t in targets(ctx.dataset)}
    by = {(r.server, r.target): r for r in ctx.results if r.load is not None}

    def rps(server: str, key: str) -> float | None:
        """The median of the server's runs of ``key`` (see :func:`interleave`)."""
        result = by.get((server, label[key]))
        if result is None or result.load is None or result.sequential:
            return None
        if result.load.errors >= result.load.requests:
            return None
        return statistics.median([result.load.rps, *ctx.rounds.get((server, label[key]), [])])

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    lines = ["Goals (figures from this run only):"]
    for server in ("cheeseshop-sqlite", "cheeseshop-postgres"):
        if (server, label["json20"]) not in by:
            continue
        lines.append(f"  {server}:")
        for key, goal in (("json20", 10), ("jsonbig", 100)):
            mine = rps(server, key)
            if mine is None:
                continue
            for peer in ("devpi", "pypiserver", "pypiserver-waitress"):
                theirs = rps(peer, key)
                if theirs is None:
                    if any(r.server == peer for r in ctx.results):
                        lines.append(f"    {label[key]} vs {peer}: no figure for {peer}")
                    continue
                served = by[(peer, label[key])].content_type
                lines.append(
                    f"    {label[key]}: {mine:.0f} req/s = {mine / theirs:.1f}x {peer} "
                    f"({theirs:.0f}{', served as ' + served if served != 'json' else ''}) "
                    f"-> goal >= {goal}x: {verdict(mine / theirs >= goal)}"
                )
                server_ceiling = rps("asgi-bare (ceiling)", key)
                if server_ceiling is not None and goal * theirs > server_ceiling:
                    lines.append(
                        f"      ({goal}x {peer} is {goal * theirs:.0f} req/s: above hypercorn's "
                        f"own ceiling here, a bare ASGI callable at {server_ceiling:.0f} req/s)"
                    )
            for ceiling in (
                "quart-bare (ceiling)",
                "quart-bare, access log",
                "asgi-bare (ceiling)",
                "nginx (ceiling)",
            ):
                theirs = rps(ceiling, key)
                if theirs is None:
                    continue
                share = mine / theirs
                framework = ceiling == "quart-bare (ceiling)"
                met = f" -> goal >= 80%: {verdict(share >= 0.8)}" if framework else ""
                lines.append(
                    f"    {label[key]}: {share:.0%} of {ceiling} ({theirs:.0f} req/s){met}"
                )
        slow, bounded = [], []
        checked = 0
        for result in ctx.results:
            if result.server != server or result.load is None or result.sequential:
                continue
            if result.load.p99_ms is None:
                continue
            checked += 1
            if result.load.p99_ms < 50:
                continue
            # Beside nginx's p99 for the same bytes: a page that nginx cannot serve in 50 ms
            # at this concurrency is bounded by the machine, not by the server. Little's law
            # says why: the mean latency is the connections over the requests per second.
            static = by.get(("nginx (ceiling)", result.target))
            if static is not None and static.load is not None and static.load.p99_ms and static.load.p99_ms >= 50:
                mean = 1000 * ctx.args.connections / static.load.rps
                bounded.append(
                    f"{result.target} {result.load.p99_ms:.0f} ms, where nginx sending the same "
                    f"file has {static.load.p99_ms:.0f} ms (its mean alone is {ctx.args.connections} "
                    f"connections / {static.load.rps:.0f} req/s = {mean:.0f} ms)"
                )
            else:
                slow.append(f"{result.target} {result.load.p99_ms:.0f} ms")
        summary = f"over: {', '.join(slow)}" if slow else "all under"
        if bounded and not slow:
            summary = f"all under, but for {len(bounded)} out of any server's reach here"
        lines.append(
            f"    p99 < 50 ms at {ctx.args.connections} connections: {verdict(not slow)} "
            f"({checked} targets; {summary})"
        )
        for line in bounded:
            lines.append(f"      out of reach on this machine: {line}")
        ceiling = by.get(("quart-bare (ceiling)", label["json20"]))
        if ceiling is not None and ceiling.load is not None and ceiling.load.p99_ms is not None:
            lines.append(
                f"      (the bare Quart ceiling's p99 on {label['json20']}: "
                f"{ceiling.load.p99_ms:.0f} ms)"
            )
        for check in ctx.root_checks:
            if check.server != server:
                continue
            lines.append(
                f"    root ({check.projects:,} projects): the first request {check.first_s:.3f} s, "
                f"then a median of {check.median_s:.3f} s over {check.count} -> goal < 1 s: "
                f"{verdict(check.first_s < 1 and check.median_s < 1)}"
            )
            last, requests = check.rss_after_kib, check.count
            rss = (
                f"    RSS: {check.rss_before_kib / 1024:.1f} MiB before the first root request, "
                f"{check.rss_after_first_kib / 1024:.1f} after it, "
                f"{check.rss_after_kib / 1024:.1f} after {check.count} more"
            )
            if check.rss_after_load_kib is not None:
                last, requests = check.rss_after_load_kib, requests + check.loaded
                rss += (
                    f", {check.rss_after_load_kib / 1024:.1f} after the load run's "
                    f"{check.loaded:,} more"
                )
            growth = (last - check.rss_after_first_kib) / max(requests, 1)
            lines.append(f"{rss} ({growth:+.2f} KiB per request after the first)")
            levelled = check.levelled_off()
            if levelled is not None:
                runs = ", ".join(f"{kib / 1024:.1f} after {n:,} more" for n, kib in check.reloads)
                lines.append(
                    f"    memory per request: further load runs took RSS to {runs} -> goal: "
                    f"no growth per request (a run adding < {PLATEAU_KIB // 1024} MiB): "
                    f"{verdict(levelled)}"
                )
    return lines


def report(ctx: Context) -> str:
    out = [table(ctx.results), ""]
    if any(r.sequential for r in ctx.results):
        out += ["* timed with sequential requests (1 connection), not under load; see notes", ""]
    out.append("Servers:")
    out += [f"  {name}: {version}" for name, version in ctx.versions.items()]
    for name, why in ctx.skipped.items():
        out.append(f"  {name}: NOT RUN: {why}")
    notes = [f"  {r.server} / {r.target}: {r.note}" for r in ctx.results if r.note]
    notes += [
        f"  {r.server} / {r.target}: {r.load.detail}"
        for r in ctx.results
        if r.load is not None and r.load.detail
    ]
    notes += [f"  {note}" for note in ctx.notes]
    if notes:
        out += ["", "Notes:", *notes]
    if ctx.round_lines:
        out += [
            "",
            f"Interleaved runs of {_label(ctx, GOAL_PAGE)} (the table's, then {ctx.args.rounds} more, server "
            "after server); the goals below take each server's median:",
            *ctx.round_lines,
        ]
    out += ["", *goals(ctx)]
    return "\n".join(out)


# -- main --------------------------------------------------------------------------------


def _terminate_on_sigterm() -> None:
    # SIGTERM ends the script as Ctrl-C does, so every `finally` stops its server.
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: less data, short runs")
    parser.add_argument(
        "--only",
        default=None,
        help=f"comma-separated servers [{','.join(DEFAULT)}]; from: {', '.join(SERVERS)}",
    )
    parser.add_argument("--postgres", action="store_true", help="also cheeseshop-postgres")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    parser.add_argument("--duration", type=float, help="seconds per measured run [10; quick 3]")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up per target [3; quick 1]")
    parser.add_argument("--connections", type=int, default=32, help="connections [32]")
    parser.add_argument(
        "--max-duration",
        type=float,
        help="longest run for a slow target before it is timed sequentially [60; quick 15]",
    )
    parser.add_argument(
        "--devpi-budget", type=float, default=600.0, help="seconds of devpi uploads [600]"
    )
    parser.add_argument(
        "--seed-cap", type=float, default=1800.0, help="seconds of Cheeseshop uploads [1800]"
    )
    parser.add_argument(
        "--rss-requests", type=int, help="root requests between RSS readings [20; quick 5]"
    )
    parser.add_argument(
        "--load", choices=("auto", "wrk", "python"), default="auto", help="load generator [auto]"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        help="interleaved extra runs of the JSON Simple page on every server, judged on the "
        "median [2; quick 0]",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    args.duration = args.duration or (3.0 if quick else 10.0)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if quick else 3.0)
    args.max_duration = args.max_duration or (15.0 if quick else 60.0)
    args.rss_requests = args.rss_requests if args.rss_requests is not None else (5 if quick else 20)
    args.rounds = args.rounds if args.rounds is not None else (0 if quick else 2)
    names = DEFAULT + (["cheeseshop-postgres"] if args.postgres else [])
    if args.only:
        names = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(names) - set(SERVERS))
    if unknown:
        parser.error(f"unknown server: {', '.join(unknown)}")
    names = [name for name in SERVERS if name in names]  # Cheeseshop first: ceilings use its pages

    _terminate_on_sigterm()
    dataset = QUICK if quick else FULL
    started, began = time.monotonic(), datetime.datetime.now().astimezone()
    groups = dataset.groups()
    load = choose_load(args)
    print("\n".join(machine(began)), flush=True)
    print(f"load average at the start: {load_average()}", flush=True)
    print(
        f"data: {dataset.projects} projects x {dataset.versions} wheels, {dataset.big_project} "
        f"with {dataset.big_files} files, root of {dataset.root_projects:,} projects "
        f"({sum(len(g) for _, g in groups)} files built in {time.monotonic() - started:.1f} s); "
        f"load: {load.name}, {args.warmup:.0f} s warm-up + {args.duration:.0f} s per target",
        flush=True,
    )
    root = Path(tempfile.mkdtemp(prefix="cheeseshop-read-bench-"))
    if args.keep:
        print(f"work directory (kept): {root}", flush=True)
    ctx = Context(args=args, dataset=dataset, groups=groups, load=load, root=root)
    try:
        with contextlib.ExitStack() as running:
            benches: dict[str, Bench] = {}
            for name in names:
                print(f"{name}: setting up (load average {load_average()})", flush=True)
                try:
                    benches[name] = running.enter_context(SERVERS[name](ctx))
                except PeerUnavailable as error:
                    ctx.skipped[name] = str(error)
                    print(f"  skipped: {error}", flush=True)
            print(f"set up in {(time.monotonic() - started) / 60:.1f} min; measuring", flush=True)
            measuring = time.monotonic()
            for name, bench in benches.items():
                print(f"{name}: (load average {load_average()})", flush=True)
                wait_until_quiet(ctx, name)
                try:
                    bench()
                except PeerUnavailable as error:
                    ctx.skipped[name] = str(error)
                    print(f"  failed: {error}", flush=True)
            if args.rounds:
                print(f"interleaved rounds ({args.rounds}) of {_label(ctx, GOAL_PAGE)}:", flush=True)
                ctx.round_lines = interleave(ctx, GOAL_PAGE)
            ctx.notes.append(
                f"all measurements were taken within {(time.monotonic() - measuring) / 60:.1f} "
                "min, every server running (the others idle) throughout"
            )
    except KeyboardInterrupt:
        print("\ninterrupted; partial results:", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print()
    print("\n".join(machine(began)))
    print(
        f"load generator: {load.name}"
        + (f"; {tool_version(['wrk', '-v']).split(' Copyright')[0]}" if load.use_wrk else "")
    )
    print(f"load average at the end: {load_average()}")
    print(f"total time: {(time.monotonic() - started) / 60:.1f} min")
    print()
    print(report(ctx))
    return 0


if __name__ == "__main__":
    sys.exit(main())
