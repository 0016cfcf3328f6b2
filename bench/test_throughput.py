"""pytest-benchmark entry: `make bench` (or `pytest bench --benchmark-enable`).

Each benchmark runs one configuration over the GSM8K programs; the ratios that
matter (potsandbox / ceiling, potsandbox / cold, pool / potsandbox) come from
benchmarks of one session, so they share the machine's load.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from potsandbox.executor import PoolConfig
from potsandbox.executor.pool import flavor_for

from throughput import (
    LEAN_ONLY,
    ceiling_rate,
    cold_rate,
    deadline_lateness,
    floor_rates,
    gsm8k_programs,
    light_programs,
    own_cpu_seconds,
    pool_rate,
    potsandbox_rate,
)

ROWS = gsm8k_programs()
LIGHT = light_programs(ROWS, own_cpu_seconds(ROWS))
"""Without the few programs that compute for seconds (they alone bound the rate of ROWS)."""
LEAN = [r for r in LIGHT if flavor_for(r["program"], r["prelude"] or "") == "lean"]
"""The light programs that need only the standard library (the floor runs no other)."""


def _record(benchmark: Any, rate: float, rows: list[dict[str, Any]] = ROWS) -> None:
    benchmark.extra_info["programs_per_second"] = round(rate, 1)
    benchmark.extra_info["programs"] = len(rows)


@pytest.mark.parametrize("flavor", ["full", "numpy", "lean"])
def test_ceiling_bare_fork_exit_reap(benchmark: Any, flavor: str) -> None:
    rate = benchmark.pedantic(
        lambda: asyncio.run(ceiling_rate(2000, flavor)), rounds=3, iterations=1
    )
    benchmark.extra_info["forks_per_second"] = round(rate, 1)


@pytest.mark.parametrize("huge_pages", [True, False], ids=["thp", "no-thp"])
def test_potsandbox_default_isolation(benchmark: Any, huge_pages: bool) -> None:
    config = PoolConfig(huge_pages=huge_pages)
    rate = benchmark.pedantic(
        lambda: asyncio.run(potsandbox_rate(ROWS, config))[0], rounds=3, iterations=1
    )
    _record(benchmark, rate)


def test_potsandbox_light_programs(benchmark: Any) -> None:
    rate = benchmark.pedantic(
        lambda: asyncio.run(potsandbox_rate(LIGHT, PoolConfig()))[0], rounds=3, iterations=1
    )
    _record(benchmark, rate, LIGHT)


def test_potsandbox_lean_programs(benchmark: Any) -> None:
    rate = benchmark.pedantic(
        lambda: asyncio.run(potsandbox_rate(LEAN, LEAN_ONLY))[0], rounds=3, iterations=1
    )
    _record(benchmark, rate, LEAN)


def test_floor_fork_exec_seccomp(benchmark: Any) -> None:
    """bare / exec / seccomp rates of the floor; the benchmark's time is one round of all."""
    rates = benchmark.pedantic(lambda: floor_rates(LEAN), rounds=3, iterations=1)
    benchmark.extra_info.update({f"{mode}_per_second": round(r, 1) for mode, r in rates.items()})
    benchmark.extra_info["programs"] = len(LEAN)


def test_cold_subprocess_per_program(benchmark: Any) -> None:
    rate = benchmark.pedantic(lambda: cold_rate(LIGHT[:100]), rounds=3, iterations=1)
    benchmark.extra_info["programs_per_second"] = round(rate, 1)


def test_unisolated_persistent_pool(benchmark: Any) -> None:
    rate = benchmark.pedantic(lambda: pool_rate(ROWS), rounds=3, iterations=1)
    _record(benchmark, rate)


def test_deadline_lateness_under_load(benchmark: Any) -> None:
    """Runaway programs beside the light ones: how late their timeouts are reported (ms)."""
    lateness = benchmark.pedantic(
        lambda: asyncio.run(deadline_lateness(LIGHT[:1000])), rounds=3, iterations=1
    )
    benchmark.extra_info.update({f"lateness_ms_{k}": v for k, v in lateness.items()})
