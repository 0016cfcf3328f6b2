"""The zygote: a fresh, preloaded interpreter whose copies run one program each.

Started by the pool as `python -m potsandbox.executor.zygote` with a clean
environment and one socket. Before its first task it forks a fork server
(`spares.py`), which clones contained spares as the zygote's own children; the
zygote itself never forks a task, so no task inherits what it has read. It is the
trusted parent of every task: it sets the task's limits, hands over its spec, owns
the wall clock, reads stdout/stderr/result pipes with caps, kills the task at the
deadline or the output cap, reaps it and sends the verdict back.
"""

from __future__ import annotations

import collections
import contextlib
import getopt
import heapq
import itertools
import os
import select
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

from potsandbox.executor import (
    bpf,
    cgroups,
    channel,
    harness,
    namespaces,
    preload,
    spares,
    verdict,
)
from potsandbox.executor.containment import (
    RESULT_FD,
    Pipes,
    Sandbox,
    adopt,
    contain,
    contain_fork_server,
    contain_zygote,
    limit,
)
from potsandbox.executor.conventions import Convention, Kind
from potsandbox.executor.result import Status

if TYPE_CHECKING:
    from potsandbox.executor.landlock import Ruleset

READ_CHUNK = 1 << 16
WATCH_AFTER_S = 0.01
"""A task still running after this long has its pipes read as they fill (output caps; no
writer left blocked on a full pipe). A quicker task's pipes are read once, after its exit:
most tasks never cost an epoll registration or a wake-up for their output."""
RESULT_CAP = 1 << 20
"""A result frame larger than this is garbage, not an answer."""


@dataclass
class Task:
    """One running task process and everything read from it so far."""

    spec: dict[str, Any]
    pid: int
    pidfd: int
    started: float
    deadline: float
    fds: dict[int, str]
    out: dict[str, bytearray] = field(
        default_factory=lambda: {
            "stdout": bytearray(),
            "stderr": bytearray(),
            "result": bytearray(),
        }
    )
    killed_for: Status | None = None
    truncated: bool = False
    long: bool = False
    """Still running WATCH_AFTER_S after its start: tasks waiting behind it go back."""
    done: bool = False
    """Reaped: its timers are void even if a later task reuses its descriptor numbers."""


class Zygote:
    """Single-threaded epoll loop: task requests in, verdicts out.

    Lean on purpose: the loop keeps its per-task work and syscalls few (no selector
    objects, pipes watched only for tasks that outlive WATCH_AFTER_S, blocking pipes read
    once per readiness, closed fds leave the epoll set by themselves).
    """

    def __init__(
        self,
        sock: socket.socket,
        sandbox: Sandbox,
        fork_server: socket.socket,
        stock: list[spares.Spare],
        slots: int,
    ) -> None:
        self.sock = sock
        self.slots = slots
        """Tasks run at once; specs beyond them wait in `waiting`, started as tasks end."""
        self.sandbox = sandbox
        self.epoll = select.epoll()
        self.roles: dict[int, tuple[str, Task | None]] = {sock.fileno(): ("driver", None)}
        self.tasks: dict[int, Task] = {}
        self.timers: list[tuple[float, int, str, Task]] = []
        self.serial = itertools.count()
        self.reader = channel.FrameReader()
        self.epoll.register(sock.fileno(), select.EPOLLIN)
        self.fork_server = fork_server
        self.stock = stock
        self.waiting: collections.deque[dict[str, Any]] = collections.deque()
        self.requested = False
        self.roles[fork_server.fileno()] = ("spares", None)
        self.epoll.register(fork_server.fileno(), select.EPOLLIN)
        self._restock()

    def serve(self) -> None:
        """Run until the driver closes the socket, then kill whatever is left."""
        try:
            while self._step():
                pass
        finally:
            for task in list(self.tasks.values()):
                _kill(task)
            for spare in self.stock:
                spares.discard(spare)
            self.epoll.close()

    def _step(self) -> bool:
        ready = [(fd, self.roles.get(fd)) for fd, _ in self.epoll.poll(self._timeout())]
        for fd, binding in ready:
            if binding is None or self.roles.get(fd) is not binding:
                continue  # closed earlier in this batch; the number may already be reused
            role, task = binding
            if role == "driver":
                if not self._on_driver():
                    return False
            elif role == "spares":
                if not self._on_spares():
                    return False
            elif task is None:
                continue
            elif role == "exit":
                self._finish(task)
            else:
                self._on_pipe(task, fd, role)
        self._fire_timers()
        return True

    def _timeout(self) -> float:
        while self.timers and self.timers[0][3].done:
            heapq.heappop(self.timers)
        if not self.timers:
            return -1
        return max(0.0, self.timers[0][0] - time.monotonic())

    def _at(self, when: float, kind: str, task: Task) -> None:
        heapq.heappush(self.timers, (when, next(self.serial), kind, task))

    def _fire_timers(self) -> None:
        """Start reading the pipes of tasks still running; kill those past their deadline."""
        now = time.monotonic()
        while self.timers and self.timers[0][0] <= now:
            _, _, kind, task = heapq.heappop(self.timers)
            if task.done:
                continue
            if kind == "watch":
                task.long = True
                for fd, role in task.fds.items():
                    self._watch(fd, role, task)
                self._return_if_stuck()
            elif task.killed_for is None:
                task.killed_for = Status.TIMEOUT
                _kill(task)

    def _watch(self, fd: int, role: str, task: Task) -> None:
        self.roles[fd] = (role, task)
        self.epoll.register(fd, select.EPOLLIN)

    def _forget(self, fd: int) -> None:
        """Close `fd`; the kernel drops it from the epoll set with its last reference."""
        self.roles.pop(fd, None)
        os.close(fd)

    def _on_driver(self) -> bool:
        data = self.sock.recv(READ_CHUNK)
        if not data:
            return False
        for message in self.reader.feed(data):
            if message["op"] == "run":
                self._start(message)
            elif message["op"] == "cancel":
                self._cancel(message["id"])
            elif message["op"] == "fork_loop":
                self._fork_loop(message)
        return True

    def _fork_loop(self, message: dict[str, Any]) -> None:
        """The ceiling: fork children that exit at once, reap each, report the rate."""
        count = int(message["count"])
        started = time.monotonic()
        for _ in range(count):
            pid = os.fork()
            if pid == 0:
                os._exit(0)
            os.waitpid(pid, 0)
        elapsed = time.monotonic() - started
        self.sock.sendall(channel.encode({"op": "fork_loop", "count": count, "seconds": elapsed}))

    def _cancel(self, task_id: int) -> None:
        """The caller gave up: end the task now; its verdict is still sent and dropped."""
        for spec in [s for s in self.waiting if s["id"] == task_id]:
            self.waiting.remove(spec)  # not started: nothing to kill
            fields = {"status": Status.TIMEOUT.value, "error_type": "Cancelled"}
            self.sock.sendall(channel.encode({"op": "result", "id": task_id, **fields}))
        for task in self.tasks.values():
            if task.spec["id"] == task_id and task.killed_for is None:
                task.killed_for = Status.TIMEOUT
                _kill(task)

    def _start(self, spec: dict[str, Any]) -> None:
        self.waiting.append(spec)
        self._dispatch()
        self._return_if_stuck()

    def _return_if_stuck(self) -> None:
        """Give the waiting specs back when every slot holds a long task.

        The pool sends a spec ahead of a slot's end so that the next task starts the
        moment the last one exits; behind a long task it would only wait, while another
        zygote may be idle.
        """
        full = len(self.tasks) >= self.slots
        if self.waiting and full and all(task.long for task in self.tasks.values()):
            ids = [spec["id"] for spec in self.waiting]
            self.waiting.clear()
            self.sock.sendall(channel.encode({"op": "returned", "ids": ids}))

    def _dispatch(self) -> None:
        """Hand waiting specs to spares, up to the slots; ask for the next batch of spares
        before the stock runs out."""
        while self.waiting and self.stock and len(self.tasks) < self.slots:
            spare, spec = self.stock.pop(), self.waiting[0]
            started = time.monotonic()
            try:
                limit(spare.pid, self.sandbox, cpu_s=spec["cpu_s"], memory_mb=spec["memory_mb"])
                spares.hand_over(spare, spec)
            except (spares.SpareError, ProcessLookupError) as exc:  # died idle: take the next
                _log(f"spare {spare.pid} lost: {exc}")
                spares.discard(spare)
                os.waitpid(spare.pid, 0)
                continue
            self._track(self.waiting.popleft(), spare, started)
        self._restock()

    def _restock(self) -> None:
        if len(self.stock) <= spares.LOW_WATER and not self.requested:
            spares.request(self.fork_server)
            self.requested = True

    def _on_spares(self) -> bool:
        batch = spares.receive(self.fork_server)
        if batch is None:
            _log("the fork server is gone")
            return False
        self.stock.extend(batch)
        self.requested = False
        self._dispatch()
        return True

    def _track(self, spec: dict[str, Any], spare: spares.Spare, started: float) -> None:
        """Watch a running task: its exit, its deadline and, if it runs long, its pipes."""
        pidfd = os.pidfd_open(spare.pid)
        task = Task(spec, spare.pid, pidfd, started, started + spec["timeout_s"], {})
        task.fds.update(zip(spare.pipes, ("stdout", "stderr", "result"), strict=True))
        self._watch(pidfd, "exit", task)
        self.tasks[pidfd] = task
        self._at(started + WATCH_AFTER_S, "watch", task)
        self._at(task.deadline, "deadline", task)

    def _on_pipe(self, task: Task, fd: int, role: str) -> None:
        """One read per readiness: the pipe is blocking, and epoll says it has data or EOF."""
        if not self._take(task, role, os.read(fd, READ_CHUNK)):
            self._forget(fd)
            del task.fds[fd]

    def _take(self, task: Task, role: str, chunk: bytes) -> bool:
        """Keep what fits under the cap; False at end of file or once over the cap."""
        if not chunk:
            return False
        cap = RESULT_CAP if role == "result" else task.spec["output_bytes"]
        buf = task.out[role]
        room = cap - len(buf)
        buf += chunk[: max(room, 0)]
        if len(chunk) > room:
            self._over_cap(task, role)
            return False
        return True

    def _over_cap(self, task: Task, role: str) -> None:
        if role == "result":
            task.out["result"] += b"\0"  # marks the frame malformed
        elif task.killed_for is None:
            task.killed_for = Status.OUTPUT_LIMIT
        task.truncated = task.truncated or role != "result"
        _kill(task)

    def _finish(self, task: Task) -> None:
        """The task exited: read its pipes to the end (no writer is left), reap, report."""
        ended = time.monotonic()
        for fd, role in task.fds.items():
            self._drain(task, fd, role)
            self._forget(fd)
        self._forget(task.pidfd)
        del self.tasks[task.pidfd]
        task.done = True
        self._dispatch()  # the next task starts before this one's verdict is even decided
        drained = time.monotonic()
        _, status, usage = os.wait4(task.pid, 0)
        spec = task.spec
        observation = verdict.Observation(
            wait_status=status,
            cpu_time_s=usage.ru_utime + usage.ru_stime,
            wall_time_s=ended - task.started,
            peak_memory_mb=usage.ru_maxrss / 1024,
            killed_for=task.killed_for,
            frame=bytes(task.out["result"]),
            stdout=bytes(task.out["stdout"]),
            stderr=bytes(task.out["stderr"]),
            truncated=task.truncated,
        )
        fields = verdict.decide(
            observation,
            convention=Convention(Kind(spec["kind"]), spec["name"]),
            timeout_s=spec["timeout_s"],
            cpu_s=spec["cpu_s"],
        )
        if fields.get("error_type") == "PolicyViolation":
            _log(f"policy violation: task {spec['id']} killed by SIGSYS")
        fields["status"] = fields["status"].value
        if spec.get("trace"):
            fields["trace"] = _trace(task, observation.frame, ended, drained)
        self.sock.sendall(channel.encode({"op": "result", "id": spec["id"], **fields}))

    def _drain(self, task: Task, fd: int, role: str) -> None:
        """Read a pipe whose writer is gone to its end of file: a short read does not mean
        empty, as a program can put its pipe in packet mode (O_DIRECT), one write per read."""
        while self._take(task, role, os.read(fd, READ_CHUNK)):
            pass


def _kill(task: Task) -> None:
    with contextlib.suppress(OSError):  # already gone
        signal.pidfd_send_signal(task.pidfd, signal.SIGKILL)


_exit = os._exit
"""Bound before any program runs: a task ends by it even if its program rebound `os._exit`."""


def _run_spare(sandbox: Sandbox, pipes: Pipes) -> NoReturn:
    """A spare's life: contain, wait for the spec, run it, report, exit. Never returns.

    Containment comes first, before any task exists; a failure is reported as the
    result of whichever task the spare is then given.
    """
    try:
        failure = _contained(sandbox, pipes)
        spec = spares.read_spec(pipes.spec if _is_open(pipes.spec) else 0)  # 0 once wired
        if spec is None:
            _exit(0)  # discarded unused
        started = time.monotonic()
        if failure is not None:
            result_fd = RESULT_FD if _is_open(RESULT_FD) else pipes.result
            harness.write_frame(result_fd, {"kind": "internal", "message": failure})
            _exit(0)
        os.write(RESULT_FD, channel.CONTAINED)
        frame = harness.run(spec["program"], spec["prelude"], Kind(spec["kind"]), spec["name"])
        if spec.get("trace"):
            frame["trace"] = (started, time.monotonic())
        harness.write_frame(RESULT_FD, frame)
        harness.shut_down()
        _exit(0)
    except MemoryError:
        harness.write_frame(RESULT_FD, harness.MEMORY_FRAME)
        _exit(0)
    finally:
        _exit(70)


def _contained(sandbox: Sandbox, pipes: Pipes) -> str | None:
    """Contain this process; the failure's description, or None."""
    try:
        contain(sandbox, pipes)
    except BaseException as exc:
        return f"containment: {exc}"
    return None


def _log(message: str) -> None:
    sys.stderr.write(f'{{"event": "zygote", "pid": {os.getpid()}, "message": "{message}"}}\n')
    sys.stderr.flush()


def _trace(task: Task, frame: bytes, ended: float, drained: float) -> dict[str, float]:
    """Benchmark timestamps (CLOCK_MONOTONIC): the zygote's own and, untrusted, the child's."""
    stamps = {"handed_over": task.started, "exit_seen": ended}
    stamps |= {"drained": drained, "reaped": time.monotonic()}
    with contextlib.suppress(Exception):
        spec_read, ran = (verdict.parse_frame(frame[len(channel.CONTAINED) :]) or {})["trace"]
        stamps |= {"spec_read": spec_read, "ran": ran}
    return stamps


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _read_paths(workdir: str) -> list[str]:
    """Read-only view of the filesystem: the Python installation, its libraries, the workdir."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, workdir}
    paths.update(p for p in sys.path if p)
    paths.update(os.path.dirname(os.path.realpath(p)) for p in (sys.executable,))
    paths.update(SYSTEM_READ_PATHS)
    return sorted(p for p in paths if os.path.exists(p))


SYSTEM_READ_PATHS = (
    "/usr/lib", "/usr/lib64", "/lib", "/lib64", "/usr/local/lib", "/usr/share/zoneinfo",
    "/etc/localtime", "/dev/null", "/dev/zero", "/dev/urandom", "/dev/random",
    "/sys/devices/system/cpu",
)  # fmt: skip
"""Shared libraries loaded lazily, time zones, the harmless devices and CPU counts."""


def _memory_size() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmSize missing from /proc/self/status")


def _build_sandbox(workdir: str, unconfined: bool, pid_init: bool) -> tuple[Sandbox, list[str]]:
    layers: list[str] = []
    filter_ = _seccomp_filter()
    if filter_ is not None:
        layers.append("seccomp")
    ruleset = _landlock_ruleset(workdir)
    if ruleset is not None:
        layers.extend(f"landlock-{feature}" for feature in ruleset.features)
    if filter_ is None and ruleset is None and not unconfined:
        raise SystemExit("refusing to start: neither seccomp nor Landlock is available")
    layers.extend(("no-capabilities", "rlimits"))
    sandbox = Sandbox(
        seccomp=filter_,
        landlock=ruleset,
        base_vm_bytes=_memory_size() + HEADROOM_BYTES,
        orphan_signal=not pid_init,
    )
    return sandbox, layers


def _seccomp_filter() -> bpf.SeccompFilter | None:
    try:
        return bpf.SeccompFilter(bpf.compile_in_child())
    except OSError as exc:  # no libseccomp, or a kernel without filters
        _log(f"seccomp unavailable: {exc}")
        return None


def _landlock_ruleset(workdir: str) -> Ruleset | None:
    try:
        from potsandbox.executor import landlock

        if landlock.abi_version() <= 0:
            _log("landlock unavailable: the kernel does not support it")
            return None
        return landlock.Ruleset.read_only(_read_paths(workdir))
    except (ImportError, OSError) as exc:
        _log(f"landlock unavailable: {exc}")
        return None


HEADROOM_BYTES = 64 << 20
"""Address space for the task's own bookkeeping beyond the zygote's, not counted as budget."""


@dataclass(frozen=True, slots=True)
class Options:
    """The zygote's command line, as the pool writes it."""

    fd: int
    workdir: str
    flavor: str = "full"
    slots: int = 1
    no_namespaces: bool = False
    unconfined: bool = False
    pids_cgroup: str = ""
    """The cgroup (made by the pool, with its pids.max) to join before anything forks."""


def parse_options(argv: list[str]) -> Options:
    """`--fd N --workdir DIR [--flavor F] [--slots N] [--pids-cgroup DIR] [--no-namespaces]
    [--unconfined]`.

    getopt, not argparse: argparse imports shutil, which maps zlib, bz2 and lzma with
    their C libraries (30 mappings, 0.5 MiB) into the zygote, and so into every task,
    whose fork and exit then cost about 5 % more.

    Raises:
        SystemExit: an unknown, missing or malformed option.
    """
    try:
        pairs, rest = getopt.getopt(argv, "", [*_VALUED, *_FLAGS])
        given = {name[2:]: value for name, value in pairs}
        missing = [f"--{name}" for name in ("fd", "workdir") if name not in given]
        if rest or missing:
            raise getopt.GetoptError(f"missing {missing} or unexpected {rest}")
        for name in ("fd", "slots"):
            if not given.get(name, "1").isdigit():
                raise getopt.GetoptError(f"--{name} must be a number, not {given[name]!r}")
        flavor = given.get("flavor", "full")
        if flavor not in preload.FLAVORS:
            raise getopt.GetoptError(f"--flavor must be one of {sorted(preload.FLAVORS)}")
        return Options(
            fd=int(given["fd"]),
            workdir=given["workdir"],
            flavor=flavor,
            slots=max(1, int(given.get("slots", "1"))),
            no_namespaces="no-namespaces" in given,
            unconfined="unconfined" in given,
            pids_cgroup=given.get("pids-cgroup", ""),
        )
    except getopt.GetoptError as exc:
        raise SystemExit(f"potsandbox.executor.zygote: {exc}") from None


_VALUED = ("fd=", "workdir=", "flavor=", "slots=", "pids-cgroup=")
_FLAGS = ("no-namespaces", "unconfined")


def _join_pids_cgroup(path: str) -> list[str]:
    """Join the pool's pids cgroup, if it made one; the layer it adds, if any."""
    if not path:
        return []
    try:
        cgroups.join(path)
    except OSError as exc:
        _log(f"running without the pids cgroup: {exc}")
        return []
    return ["pids-cgroup"]


def main(argv: list[str] | None = None) -> None:
    """Enter namespaces, preload, build the filters once, then serve tasks."""
    args = parse_options(sys.argv[1:] if argv is None else argv)
    sock = socket.socket(fileno=args.fd)
    layers = _join_pids_cgroup(args.pids_cgroup)
    layers += [] if args.no_namespaces else namespaces.enter()
    sys.argv = [""]  # what a program sees of its command line, as under `python -c`
    os.chdir(args.workdir)
    harness.stdio_as_pipes()
    preload.preload(args.flavor)
    sandbox, more = _build_sandbox(args.workdir, args.unconfined, pid_init="pidns" in layers)
    layers.extend(more)
    contain_zygote()
    for name in ("PYTHONMALLOC", "GLIBC_TUNABLES"):
        os.environ.pop(name, None)
    harness.warm_up()
    sys.stdout.flush()
    preload.freeze()
    if not spares.available():
        raise SystemExit(f"refusing to start: no clone syscall number for {os.uname().machine}")
    life = spares.Life(
        task=lambda pipes: _run_spare(sandbox, pipes),
        prepare=lambda: contain_fork_server(sandbox),
        adopt=adopt,
    )
    fork_server = spares.start_fork_server(life, close=(sock.fileno(),))
    spares.request(fork_server)
    stock = spares.receive(fork_server)
    if stock is None:  # clone(CLONE_PARENT) refused, or the spares could not start
        raise SystemExit("refusing to start: the fork server could not make a spare")
    layers.append("fork-server")
    ready = {"op": "ready", "pid": os.getpid(), "layers": layers, "flavor": args.flavor}
    sock.sendall(channel.encode(ready))
    Zygote(sock, sandbox, fork_server, stock, args.slots).serve()


if __name__ == "__main__":
    main()
