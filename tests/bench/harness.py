"""Load generation and the side-by-side table every benchmark reports into."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp


@dataclass
class Figure:
    benchmark: str
    metric: str
    value: float
    unit: str
    baseline: str
    baseline_value: float
    #: True when bigger is better (throughput), False for latencies and memory.
    higher_is_better: bool = True
    notes: str = ""

    @property
    def ratio(self) -> float:
        if self.baseline_value == 0:
            return float("nan")
        return self.value / self.baseline_value


@dataclass
class Report:
    figures: list[Figure] = field(default_factory=list)

    def add(self, figure: Figure) -> None:
        self.figures.append(figure)
        print(
            f"  {figure.benchmark}: {figure.metric} {figure.value:,.1f} {figure.unit}"
            f" (baseline {figure.baseline}: {figure.baseline_value:,.1f})",
            flush=True,
        )

    def table(self) -> str:
        head = ("benchmark", "metric", "ours", "baseline", "baseline value", "ratio")
        rows = [
            (
                f.benchmark,
                f"{f.metric} [{f.unit}]",
                f"{f.value:,.1f}",
                f.baseline,
                f"{f.baseline_value:,.1f}",
                f"{f.ratio:.2f}",
            )
            for f in self.figures
        ]
        widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
        line = "  ".join("-" * w for w in widths)
        out = ["  ".join(str(h).ljust(w) for h, w in zip(head, widths, strict=True)), line]
        out += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
        return "\n".join(out)

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = [asdict(f) | {"ratio": f.ratio} for f in self.figures]
        path.write_text(json.dumps({"figures": data}, indent=2))


def percentile(values: list[float], p: float) -> float:
    """The nearest-rank `p`th percentile of `values`."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


@dataclass
class LoadResult:
    requests: int
    errors: int
    seconds: float
    latencies: list[float]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        index = min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))
        return ordered[index]

    @property
    def median(self) -> float:
        return statistics.median(self.latencies) if self.latencies else float("nan")


async def closed_loop(
    call: Callable[[aiohttp.ClientSession], Awaitable[bool]],
    *,
    concurrency: int,
    seconds: float,
    warmup: float = 0.5,
) -> LoadResult:
    """`concurrency` workers call back to back for `seconds` (after a warm-up); bounded in
    both count of workers and time, and against loopback only."""
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:
        warm_until = time.perf_counter() + warmup
        while time.perf_counter() < warm_until:
            await call(http)
        stop_at = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                ok = await call(http)
                if ok:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return LoadResult(len(latencies), errors, elapsed, latencies)
