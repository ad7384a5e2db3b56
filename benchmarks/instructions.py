"""Instructions per request of ``cheeseshop serve``, counted by callgrind.

A benchmark, not a test: it asserts nothing and is not collected by pytest. On a small,
shared VM a latency or a requests/s figure moves by 10-20% from one run to the next, so a
change of a few percent cannot be seen in it. The number of instructions the web process
executes per request does not move: this script runs ``cheeseshop serve`` (SQLite) under
``valgrind --tool=callgrind``, uploads one wheel so that there is a page to serve, sends
``--warm-up`` requests, zeroes the counters, sends ``--requests`` more one after another
on one keep-alive connection, and prints the instructions counted per request. Only the
web process is counted (not its deliverer, nor the client), and only in user space: the
kernel's work for a system call is not in the figure.

    .venv/bin/python benchmarks/instructions.py [--requests N] [--path simple|json|file|upload]
        [--backend sqlite|postgres]

``simple`` is the JSON Simple page (``Accept: application/vnd.pypi.simple.v1+json``),
``json`` the PyPI JSON API page, ``file`` the wheel itself, and ``upload`` an upload of a
new project's wheel (each request a different one, as ``upload_bench.py`` sends them). It needs valgrind (apt-get
install valgrind); a run of 1,000 requests takes about a minute.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import httpx
from cheeseshop.testing.dists import build_wheel

from common import (
    PYTHON,
    cheeseshop_env,
    cheeseshop_revision,
    cheeseshop_token,
    free_port,
    postgres_database,
    server_process,
    upload_form,
)

PROJECT = "instructions-bench"
#: Each --path: the URL path and the Accept header of its request.
PATHS = {
    "simple": (f"/simple/{PROJECT}/", "application/vnd.pypi.simple.v1+json"),
    "json": (f"/pypi/{PROJECT}/json", "application/json"),
    "file": (None, "*/*"),
    "upload": ("/legacy/", "*/*"),  # a POST: see _count_uploads
}


def count(
    requests: int, warm_up: int, path: str, keep: Path | None = None, backend: str = "sqlite"
) -> tuple[int, int]:
    """Instructions counted over ``requests`` requests of ``path``, and the requests answered;
    ``keep``: where to copy callgrind's dump of them (for ``callgrind_annotate``)."""
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("valgrind is not installed: apt-get install valgrind")
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cheeseshop-instructions-")))
        database_url = None
        if backend == "postgres":
            database_url = stack.enter_context(postgres_database("cheeseshop_instructions"))
        env = cheeseshop_env(workdir, database_url)
        token = cheeseshop_token(env)
        port = free_port()
        out = workdir / "callgrind.out"
        command = [
            "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-instr=no",
            PYTHON, "-m", "cheeseshop", "serve", "--host", "127.0.0.1", "--port", str(port),
        ]  # fmt: skip
        # The interpreter starts some 50 times slower under valgrind.
        log = workdir / "server.log"
        with server_process(command, port=port, log=log, env=env, start_timeout=600) as server:
            base = f"http://127.0.0.1:{port}"
            dist = build_wheel(PROJECT, "1.0")
            data, files = upload_form(dist)
            with httpx.Client(timeout=120) as client:
                auth = ("__token__", token)
                client.post(f"{base}/legacy/", data=data, files=files, auth=auth).raise_for_status()
                if path == "upload":
                    answered = _count_uploads(client, base, auth, server.pid, requests, warm_up)
                else:
                    answered = _count_gets(client, base, path, server.pid, requests, warm_up)
        return _measured(workdir, keep), answered


def _count_gets(client: httpx.Client, base: str, path: str, pid: int, requests: int, warm_up: int) -> int:
    """Send ``warm_up`` requests of ``path``, zero the counters, send ``requests`` more; the
    requests answered with a 2xx."""
    target, accept = PATHS[path]
    if target is None:
        links = client.get(f"{base}/pypi/{PROJECT}/json").json()["urls"]
        target = httpx.URL(links[0]["url"]).path
    headers = {"Accept": accept}
    for _ in range(warm_up):
        client.get(base + target, headers=headers).raise_for_status()
    _callgrind_control("--zero", pid)
    answered = sum(client.get(base + target, headers=headers).is_success for _ in range(requests))
    _callgrind_control("--dump=measured", pid)
    return answered


def _count_uploads(
    client: httpx.Client, base: str, auth: tuple[str, str], pid: int, requests: int, warm_up: int
) -> int:
    """Upload ``warm_up`` new projects' wheels, zero the counters, upload ``requests`` more;
    the uploads answered 200."""
    dists = [build_wheel(f"{PROJECT}-{n}", "1.0") for n in range(warm_up + requests)]

    def send(dist: object) -> bool:
        data, files = upload_form(dist)
        return client.post(f"{base}/legacy/", data=data, files=files, auth=auth).status_code == 200

    for dist in dists[:warm_up]:
        send(dist)
    _callgrind_control("--zero", pid)
    answered = sum(send(dist) for dist in dists[warm_up:])
    _callgrind_control("--dump=measured", pid)
    return answered


def _measured(workdir: Path, keep: Path | None) -> int:
    """The instructions in callgrind's dump of the measured requests (copied to ``keep``)."""
    for dump in sorted(workdir.glob("callgrind.out*")):
        text = dump.read_text(errors="replace")
        if "measured" in text[:2000]:
            totals = re.search(r"^(?:summary|totals):\s*(\d+)", text, re.M)
            if totals:
                if keep is not None:
                    shutil.copyfile(dump, keep)
                return int(totals.group(1))
    raise SystemExit("callgrind wrote no dump of the measured requests")


def _callgrind_control(option: str, pid: int) -> None:
    subprocess.run(["callgrind_control", option, str(pid)], check=True, capture_output=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000, help="requests counted [1000]")
    parser.add_argument("--warm-up", type=int, default=100, help="requests before counting [100]")
    parser.add_argument(
        "--path", choices=sorted(PATHS), default="simple", help="what is asked for [simple]"
    )
    parser.add_argument(
        "--backend", choices=("sqlite", "postgres"), default="sqlite",
        help="the database; PostgreSQL's own work is not counted [sqlite]",
    )
    parser.add_argument(
        "--keep", type=Path, help="copy callgrind's dump of the counted requests here, for callgrind_annotate"
    )
    args = parser.parse_args(argv)
    instructions, answered = count(args.requests, args.warm_up, args.path, args.keep, args.backend)
    print(
        f"{args.path} ({args.backend}): {instructions / args.requests:,.0f} instructions per request in the web "
        f"process ({args.requests} requests, {answered} answered with 2xx; "
        f"cheeseshop {cheeseshop_revision()}, Python {sys.version.split()[0]})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
