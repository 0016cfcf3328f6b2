"""The Python API: `Executor` (blocking, thread-backed) and `AsyncExecutor` (asyncio)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Iterable
from types import TracebackType
from typing import Self

from potsandbox.executor.conventions import Convention
from potsandbox.executor.errors import ConfigError, ExecutorClosed
from potsandbox.executor.limits import LimitPolicy, Limits
from potsandbox.executor.pool import PoolConfig, ZygotePool
from potsandbox.executor.result import Result


class AsyncExecutor:
    """Runs programs in the caller's event loop; every zygote is kept busy by concurrent awaits."""

    def __init__(self, config: PoolConfig | None = None, policy: LimitPolicy | None = None) -> None:
        self.policy = policy or LimitPolicy()
        self.pool = ZygotePool(config)

    @property
    def layers(self) -> tuple[str, ...]:
        """Isolation layers active in the zygotes (e.g. seccomp, landlock-fs, pidns)."""
        return self.pool.layers

    async def start(self) -> None:
        """Start the zygotes; returns once all have preloaded."""
        await self.pool.start()

    async def stop(self) -> None:
        """Kill every zygote and task, remove temporary files."""
        await self.pool.stop()

    async def run(
        self,
        program: str,
        *,
        prelude: str | None = None,
        convention: Convention | str = "auto",
        limits: Limits | None = None,
        task_id: str = "",
    ) -> Result:
        """Run one program and return its Result (program failures are results, not errors).

        Raises:
            LimitError: `limits` exceed the policy's maximum, or are not numbers.
            ConfigError: unknown convention, or an argument of the wrong type.
        """
        _require_text("program", program)
        _require_text("prelude", prelude or "")
        _require_text("task_id", task_id)
        if isinstance(convention, str):
            convention = Convention.parse(convention)
        elif not isinstance(convention, Convention):
            raise ConfigError(
                "convention", f"convention must be a str or Convention, got {convention!r}"
            )
        if limits is not None and not isinstance(limits, Limits):
            raise ConfigError("limits", f"limits must be Limits, got {type(limits).__name__}")
        resolved = self._resolve(limits)
        return await self.pool.run(
            program, prelude=prelude or "", convention=convention, limits=resolved, task_id=task_id
        )

    def _resolve(self, limits: Limits | None) -> Limits:
        if limits is None:
            return self.policy.default
        return self.policy.resolve(
            timeout_s=limits.timeout_s,
            cpu_s=limits.cpu_s,
            memory_mb=limits.memory_mb,
            output_bytes=limits.output_bytes,
        )

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


class Executor:
    """Blocking front end: a private event loop thread drives an AsyncExecutor."""

    def __init__(self, config: PoolConfig | None = None, policy: LimitPolicy | None = None) -> None:
        self._async = AsyncExecutor(config, policy)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def layers(self) -> tuple[str, ...]:
        """Isolation layers active in the zygotes."""
        return self._async.layers

    @property
    def pool(self) -> ZygotePool:
        """The zygotes (read only; it runs in the executor's loop thread)."""
        return self._async.pool

    def start(self) -> None:
        """Start the loop thread and the zygotes."""
        loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=loop.run_forever, name="potsandbox-executor", daemon=True
        )
        self._thread.start()
        self._loop = loop
        try:
            asyncio.run_coroutine_threadsafe(self._async.start(), loop).result()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the zygotes and the loop thread; leaves no process or file behind."""
        loop, self._loop = self._loop, None
        if loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._async.stop(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join()
        loop.close()

    def submit(
        self,
        program: str,
        *,
        prelude: str | None = None,
        convention: Convention | str = "auto",
        limits: Limits | None = None,
        task_id: str = "",
    ) -> concurrent.futures.Future[Result]:
        """Queue one program; cancelling the future kills its process."""
        if self._loop is None:
            raise ExecutorClosed("call start() or use the executor as a context manager")
        coro = self._async.run(
            program, prelude=prelude, convention=convention, limits=limits, task_id=task_id
        )
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def run(
        self,
        program: str,
        *,
        prelude: str | None = None,
        convention: Convention | str = "auto",
        limits: Limits | None = None,
        task_id: str = "",
    ) -> Result:
        """Run one program and wait for its Result."""
        return self.submit(
            program, prelude=prelude, convention=convention, limits=limits, task_id=task_id
        ).result()

    def map(
        self,
        programs: Iterable[str],
        *,
        convention: Convention | str = "auto",
        limits: Limits | None = None,
    ) -> list[Result]:
        """Run many programs concurrently; results in input order."""
        futures = [self.submit(p, convention=convention, limits=limits) for p in programs]
        return [f.result() for f in futures]

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _require_text(field: str, value: object) -> None:
    """A program reaches its task as text; anything else would fail there, as an exit of 70.

    Raises:
        ConfigError: `value` is not a str.
    """
    if not isinstance(value, str):
        raise ConfigError(field, f"{field} must be a str, got {type(value).__name__}")
