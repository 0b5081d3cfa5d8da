"""`make bench`: every benchmark, each beside a baseline measured in the same run; prints one
table and writes it to var/bench.json."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from tests.bench import payments_bench, ratelimit_bench, sse_bench, verification_bench
from tests.bench.harness import Report
from tests.bench.stack import bench_stack

ROOT = Path(__file__).resolve().parents[2]


async def main() -> int:
    report = Report()
    print("running benchmarks (loopback only, bounded in time)...", flush=True)
    async with bench_stack() as stack:
        for bench in (payments_bench, verification_bench, sse_bench, ratelimit_bench):
            await bench.run(stack, report)
            await stack.stop_all()
    print()
    print(report.table())
    out = ROOT / "var" / "bench.json"
    report.write(out)
    print(f"\nwritten to {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
