"""Upload latency of two Cheeseshop trees, side by side: A/B without the VM's drift.

A benchmark, not a test: it asserts nothing and is not collected by pytest. On a shared VM a
median moves by 10-30% from one run to the next, more than most changes are worth; two runs
minutes apart cannot tell them apart. This starts both servers at once, each on its own
empty database, with ``PYTHONPATH`` pointing at its tree (a checkout's ``core``), and sends
the uploads in alternating batches of ``--batch`` (httpx, one keep-alive connection each,
the same form as ``upload_bench.py``), so that both see the same machine. It prints each
one's median and quartiles. Swap A and B and run it again before believing a small gap.

    git clone -q . /tmp/before && git -C /tmp/before checkout -q <rev>
    .venv/bin/python benchmarks/upload_ab.py --a-path /tmp/before/core --b-path core \\
        [--backend sqlite|postgres] [--files N] [--batch N]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from common import (
    PYTHON,
    cheeseshop_env,
    cheeseshop_token,
    free_port,
    postgres_database,
    server_process,
)
from upload_bench import Target, build_dists, upload_with_httpx


@contextlib.contextmanager
def server(tag: str, tree: str, backend: str, workdir: Path) -> Iterator[Target]:
    """A fresh Cheeseshop (and its deliverer) running the code under ``tree``."""
    with contextlib.ExitStack() as stack:
        url = None
        if backend == "postgres":
            url = stack.enter_context(postgres_database(f"cheeseshop_bench_ab_{tag}"))
        env = {**cheeseshop_env(workdir, url), "PYTHONPATH": tree}
        token = cheeseshop_token(env)
        port = free_port()
        command = [PYTHON, "-m", "cheeseshop", "serve", "--host", "127.0.0.1", "--port", str(port)]
        log = workdir / "server.log"
        stack.enter_context(server_process(command, port=port, log=log, env=env, ready_text="delivering outbox events"))
        yield Target(f"http://127.0.0.1:{port}/legacy/", "__token__", token)


def quartiles(latencies: Sequence[float]) -> str:
    ordered = sorted(latencies)
    return (
        f"median {statistics.median(ordered):.2f} ms, p25 {ordered[len(ordered) // 4]:.2f}, "
        f"p75 {ordered[3 * len(ordered) // 4]:.2f} ({len(ordered)} uploads)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a-path", required=True, help="tree A's core directory")
    parser.add_argument("--b-path", required=True, help="tree B's core directory")
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="postgres")
    parser.add_argument("--files", type=int, default=500, help="uploads to each server [500]")
    parser.add_argument("--batch", type=int, default=20, help="uploads in a row to one server [20]")
    args = parser.parse_args(argv)
    dists = build_dists(2 * args.files + 40)
    warm_a, warm_b, rest = dists[:20], dists[20:40], dists[40:]
    latencies: dict[str, list[float]] = {"A": [], "B": []}
    with tempfile.TemporaryDirectory() as a_dir, tempfile.TemporaryDirectory() as b_dir:
        with server("a", args.a_path, args.backend, Path(a_dir)) as a, server(
            "b", args.b_path, args.backend, Path(b_dir)
        ) as b:
            upload_with_httpx("warm-up", a, warm_a, 60)
            upload_with_httpx("warm-up", b, warm_b, 60)
            for start in range(0, len(rest), 2 * args.batch):
                for name, target, offset in (("A", a, 0), ("B", b, args.batch)):
                    batch = rest[start + offset : start + offset + args.batch]
                    result = upload_with_httpx(name, target, batch, 600)
                    if result.errors:
                        print(f"{name}: {result.first_error}", file=sys.stderr)
                        return 1
                    latencies[name] += result.latencies_ms
    print(f"A ({args.a_path}): {quartiles(latencies['A'])}")
    print(f"B ({args.b_path}): {quartiles(latencies['B'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
