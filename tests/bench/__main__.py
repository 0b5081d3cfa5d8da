"""`make bench`: every benchmark, each beside a baseline measured in the same run; prints one
table and writes it to var/bench.json.

`python -m tests.bench NAME...` runs only those (names below), into var/bench-NAME....json."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from tests.bench import (
    endtoend_bench,
    latency_bench,
    payments_bench,
    pubsub_bench,
    ratelimit_bench,
    sse_bench,
    verification_bench,
)
from tests.bench.harness import Report
from tests.bench.stack import bench_stack

ROOT = Path(__file__).resolve().parents[2]

BENCHMARKS = {
    "payments": payments_bench,
    "verification": verification_bench,
    "endtoend": endtoend_bench,
    "latency": latency_bench,
    "sse": sse_bench,
    "ratelimit": ratelimit_bench,
    "pubsub": pubsub_bench,
}


async def main(names: list[str]) -> int:
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        print(f"unknown benchmark(s) {', '.join(unknown)}; there are: {', '.join(BENCHMARKS)}")
        return 2
    selected = [name for name in BENCHMARKS if name in names] if names else list(BENCHMARKS)
    report = Report()
    print("running benchmarks (loopback only, bounded in time)...", flush=True)
    async with bench_stack() as stack:
        for name in selected:
            await BENCHMARKS[name].run(stack, report)
            await stack.stop_all()
    print()
    print(report.table())
    out = ROOT / "var" / ("bench.json" if not names else f"bench-{'-'.join(selected)}.json")
    report.write(out)
    print(f"\nwritten to {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
