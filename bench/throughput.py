"""Throughput of potsandbox against its ceiling and the usual alternatives, in one run.

Configurations, interleaved round by round so machine noise hits all of them alike:
- ceiling: bare fork + exit + reap loops in the same zygotes (nothing else);
- potsandbox: the Executor with its default isolation on real GSM8K programs;
- cold: a fresh `python3 -I` subprocess per program, 2 at a time;
- pool: an unisolated persistent process pool that exec()s programs in reused workers;
- floor (bench/floor.py): fork + exec only, with and without the syscall filter, on the
  programs that need only the standard library, against a bare fork of the same process;
- deadline: how late runaway programs are reported after their deadline, under load.

The programs' own work is measured too (each exec()'d once in this process): it
bounds what any executor can reach on this many cores, and two GSM8K programs spend
seconds computing, so rates are given for all programs and for the "light" ones.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import io
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from floor import MODES as FLOOR_MODES

from potsandbox.executor import AsyncExecutor, Convention, Limits, PoolConfig, Status
from potsandbox.executor.pool import flavor_for
from potsandbox.executor.preload import FLAVORS

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus" / "pot_public.jsonl"
SAMPLE = ROOT / "examples" / "data" / "pot_sample.jsonl"
LIMITS = Limits(timeout_s=5.0, memory_mb=4096)
HEAVY_S = 0.05
"""A program whose own run (exec in a warm interpreter) takes longer than this is heavy."""
LEAN_ONLY = PoolConfig(zygotes=0, numpy_zygotes=0, lean_zygotes=2)
"""Two standard-library zygotes: the configuration the floor is compared against."""


def gsm8k_programs(limit: int | None = None) -> list[dict[str, Any]]:
    """The GSM8K part of the corpus (the shipped sample when ../shared is absent)."""
    path = CORPUS if CORPUS.exists() else SAMPLE
    rows = [json.loads(line) for line in path.open() if line.strip()]
    rows = [r for r in rows if r["dataset"] == "gsm8k" and r["observed_status"] == "ok"]
    return rows[:limit] if limit else rows


async def potsandbox_rate(
    rows: list[dict[str, Any]], config: PoolConfig
) -> tuple[float, list[dict[str, float]]]:
    """Programs per second through the Executor, plus per-task traces when enabled."""
    async with AsyncExecutor(config) as executor:
        await _run_rows(executor, rows[:50])  # warm the zygotes' page cache
        executor.pool.traces.clear()
        started = time.perf_counter()
        await _run_rows(executor, rows)
        elapsed = time.perf_counter() - started
        return len(rows) / elapsed, list(executor.pool.traces)


async def _run_rows(executor: AsyncExecutor, rows: list[dict[str, Any]]) -> None:
    conventions = [Convention.parse(r["convention"], r.get("entrypoint")) for r in rows]
    results = await asyncio.gather(
        *(
            executor.run(r["program"], prelude=r["prelude"], convention=c, limits=LIMITS)
            for r, c in zip(rows, conventions, strict=True)
        )
    )
    failed = [r.status for r in results if not r.ok]
    assert len(failed) <= len(rows) // 50, f"unexpected failures: {failed[:5]}"


async def ceiling_rate(count: int, flavor: str) -> float:
    """Bare fork+exit+reap per second of the zygotes, all of one flavor in parallel."""
    config = PoolConfig(
        zygotes=2 if flavor == "full" else 0,
        numpy_zygotes=2 if flavor == "numpy" else 0,
        lean_zygotes=2 if flavor == "lean" else 0,
    )
    async with AsyncExecutor(config) as executor:
        await executor.pool.fork_rate(count // 4, flavor)
        return await executor.pool.fork_rate(count, flavor)


def floor_rates(rows: list[dict[str, Any]]) -> dict[str, float]:
    """bench/floor.py over `rows`, one round, in a fresh interpreter: bare, exec, seccomp."""
    done = subprocess.run(
        [sys.executable, "-I", str(Path(__file__).with_name("floor.py")), "1"],
        input=json.dumps([_source(r) for r in rows]),
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
    )
    rates: dict[str, float] = json.loads(done.stdout)
    return rates


def cold_rate(rows: list[dict[str, Any]]) -> float:
    """A fresh interpreter per program, two at a time."""

    def one(row: dict[str, Any]) -> None:
        source = _source(row)
        subprocess.run(
            [sys.executable, "-I", "-c", source], capture_output=True, timeout=30, check=False
        )

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(2) as threads:
        list(threads.map(one, rows))
    return len(rows) / (time.perf_counter() - started)


def _warm() -> None:
    import numpy  # noqa: F401
    import sympy  # noqa: F401


def _exec(source: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(BaseException):
        exec(source, {"__name__": "__main__"})
    return out.getvalue()


def _source(row: dict[str, Any]) -> str:
    """Prelude then program, as one script for the baselines that take a single source."""
    return (row["prelude"] or "") + "\n" + row["program"]


def light_programs(rows: list[dict[str, Any]], costs: list[float]) -> list[dict[str, Any]]:
    """The rows whose own run costs less than HEAVY_S."""
    return [r for r, cost in zip(rows, costs, strict=True) if cost < HEAVY_S]


def own_cpu_seconds(rows: list[dict[str, Any]]) -> list[float]:
    """CPU each program spends on its own work in a warm interpreter (no isolation at all)."""
    _warm()
    costs = []
    for row in rows:
        started = time.process_time()
        _exec(_source(row))
        costs.append(time.process_time() - started)
    return costs


def pool_rate(rows: list[dict[str, Any]]) -> float:
    """Unisolated: two persistent workers exec() every program (state leaks between them)."""
    sources = [_source(r) for r in rows]
    with concurrent.futures.ProcessPoolExecutor(2, initializer=_warm) as pool:
        list(pool.map(_exec, sources[:50]))
        started = time.perf_counter()
        list(pool.map(_exec, sources, chunksize=8))
        return len(rows) / (time.perf_counter() - started)


DEADLINE_S = 0.5
RUNAWAYS = ("while True:\n    pass", "import time\ntime.sleep(60)")
"""A busy and a sleeping program: each must be killed and reported at DEADLINE_S."""


async def deadline_lateness(rows: list[dict[str, Any]], count: int = 40) -> dict[str, float]:
    """How late after its deadline a runaway task is reported, with `rows` running beside it.

    Lateness is the task's wall time (the zygote's clock, from hand-over to the exit it
    saw after its SIGKILL) minus the deadline; the issue asks for at most 50 ms.
    """
    limits = dataclasses.replace(LIMITS, timeout_s=DEADLINE_S)
    async with AsyncExecutor(PoolConfig()) as executor:
        runaways = [
            executor.run(RUNAWAYS[i % 2], convention=Convention.parse("stdout"), limits=limits)
            for i in range(count)
        ]
        results = (await asyncio.gather(*runaways, _run_rows(executor, rows)))[:-1]
    late = sorted((r.wall_time_s - DEADLINE_S) * 1e3 for r in results)
    assert all(r.status is Status.TIMEOUT for r in results), [r.status for r in results]
    return {
        "median": round(statistics.median(late), 1),
        "p95": round(late[int(0.95 * (len(late) - 1))], 1),
        "max": round(late[-1], 1),
    }


def breakdown(traces: list[dict[str, float]]) -> dict[str, float]:
    """Median microseconds of each step of a task, from the zygote's and child's clocks."""
    steps = {
        "spec handed to a contained spare -> spare has read it": ("handed_over", "spec_read"),
        "run program + answer": ("spec_read", "ran"),
        "result -> zygote sees exit": ("ran", "exit_seen"),
        "drain pipes": ("exit_seen", "drained"),
        "reap (wait4)": ("drained", "reaped"),
        "total": ("handed_over", "reaped"),
    }
    usable = [t for t in traces if "spec_read" in t]
    return (
        {
            name: round(statistics.median(t[b] - t[a] for t in usable) * 1e6, 1)
            for name, (a, b) in steps.items()
        }
        if usable
        else {}
    )


def main() -> None:
    """Print one interleaved comparison (3 rounds) as JSON."""
    rows = gsm8k_programs()
    costs = own_cpu_seconds(rows)
    light = light_programs(rows, costs)
    cores = len(os.sched_getaffinity(0))
    rounds = int(os.environ.get("BENCH_ROUNDS", "3"))
    lean = [r for r in light if flavor_for(r["program"], r["prelude"] or "") == "lean"]
    ceilings = [f"ceiling_{flavor}" for flavor in FLAVORS]
    floors = [f"floor_{mode}" for mode in FLOOR_MODES]
    names = (*ceilings, "potsandbox_all", "potsandbox_light", "potsandbox_lean", *floors)
    names += ("cold", "pool_all", "pool_light")
    figures: dict[str, list[float]] = {k: [] for k in names}
    traces: list[dict[str, float]] = []
    for _ in range(rounds):
        for flavor in FLAVORS:
            figures[f"ceiling_{flavor}"].append(asyncio.run(ceiling_rate(2000, flavor)))
        figures["potsandbox_all"].append(asyncio.run(potsandbox_rate(rows, PoolConfig()))[0])
        rate, round_traces = asyncio.run(potsandbox_rate(light, PoolConfig(trace=True)))
        figures["potsandbox_light"].append(rate)
        traces.extend(round_traces)
        figures["potsandbox_lean"].append(asyncio.run(potsandbox_rate(lean, LEAN_ONLY))[0])
        for mode, rate in floor_rates(lean).items():
            figures[f"floor_{mode}"].append(rate)
        figures["cold"].append(cold_rate(light[:100]))
        figures["pool_all"].append(pool_rate(rows))
        figures["pool_light"].append(pool_rate(light))
    lateness = asyncio.run(deadline_lateness(light[:1000]))
    medians = {k: round(statistics.median(v), 1) for k, v in figures.items()}
    shares = collections.Counter(flavor_for(r["program"], r["prelude"] or "") for r in light)
    mixed_ceiling = len(light) / sum(n / medians[f"ceiling_{f}"] for f, n in shares.items())
    print(
        json.dumps(
            {
                "programs": len(rows),
                "light_programs": len(light),
                "rounds": rounds,
                "per_second": medians,
                "own_work": {
                    "cpu_seconds_all": round(sum(costs), 2),
                    "cpu_seconds_light": round(sum(c for c in costs if c < HEAVY_S), 2),
                    "bound_all_per_second": round(len(rows) * cores / sum(costs), 1),
                },
                "flavors_light": dict(shares),
                "ceiling_mixed": round(mixed_ceiling, 1),
                "light_vs_mixed_ceiling": round(medians["potsandbox_light"] / mixed_ceiling, 3),
                "lean_programs": len(lean),
                "lean_vs_ceiling": {
                    k: round(medians[k] / medians["ceiling_lean"], 3)
                    for k in ("potsandbox_lean", *floors)
                },
                "all": figures,
                "breakdown_us": breakdown(traces),
                "deadline_lateness_ms": lateness,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
