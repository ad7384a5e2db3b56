"""Upload latency of two Cheeseshop trees, side by side: A/B without the VM's drift.

A benchmark, not a test: it asserts nothing and is not collected by pytest. On a shared VM a
median moves by 10-30% from one run to the next, more than most changes are worth; two runs
minutes apart cannot tell them apart. This starts both servers at once, each on its own
empty database, with ``PYTHONPATH`` pointing at its tree (a checkout's ``core``), and sends
them the same uploads in turns of ``--batch`` (``upload_bench.upload_interleaved``: httpx,
one keep-alive connection each, each turn once the machine is quiet), so that both see the
same machine. It prints each one's median and quartiles. Swap A and B and run it again before believing a small gap.

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

from common import postgres_database
from upload_bench import Target, build_dists, cheeseshop, upload_interleaved, upload_with_httpx


@contextlib.contextmanager
def server(tag: str, tree: str, backend: str, workdir: Path) -> Iterator[Target]:
    """A fresh Cheeseshop (and its deliverer) running the code under ``tree``."""
    with contextlib.ExitStack() as stack:
        url = None
        if backend == "postgres":
            url = stack.enter_context(postgres_database(f"cheeseshop_bench_ab_{tag}"))
        yield stack.enter_context(cheeseshop(workdir, database_url=url, tree=tree))


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
    dists = build_dists(args.files + 20)
    warm_up, measured = dists[:20], dists[20:]
    with tempfile.TemporaryDirectory() as a_dir, tempfile.TemporaryDirectory() as b_dir:
        with server("a", args.a_path, args.backend, Path(a_dir)) as a, server(
            "b", args.b_path, args.backend, Path(b_dir)
        ) as b:
            upload_with_httpx("warm-up", a, warm_up, 60)
            upload_with_httpx("warm-up", b, warm_up, 60)
            results = upload_interleaved({"A": a, "B": b}, measured, 600, args.batch)
    for result in results:
        if result.errors:
            print(f"{result.server}: {result.first_error}", file=sys.stderr)
            return 1
    latencies = {result.server: result.latencies_ms for result in results}
    print(f"A ({args.a_path}): {quartiles(latencies['A'])}")
    print(f"B ({args.b_path}): {quartiles(latencies['B'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
