"""The gRPC service, end to end: a real server subprocess running real programs.

Each test talks to `python -m potsandbox.executor.server` over the wire, as a client
would. One shared server serves most tests (module-scoped, limits lowered so hostile
programs end fast); overload, drain, token and TLS get servers of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import re
import secrets
import signal
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from processes import waiting_in
from prometheus_client.parser import text_string_to_metric_families

from potsandbox.client import SandboxClient
from potsandbox.executor import AsyncExecutor, PoolConfig, Result, Status
from potsandbox.executor.wire import make_request, result_from_proto
from potsandbox.v1 import sandbox_pb2 as pb

import servers
from corpus import (
    NEAR_LIMIT,
    REFERENCE_LIMITS,
    SAMPLE,
    convention_of,
    known_differences,
    records,
    require_corpus,
)
from servers import Server, free_port, running, server_command, start_server, wait_until

pytestmark = pytest.mark.timeout(120)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SANDBOX_SERVICE = "potsandbox.v1.Sandbox"
HEALTH_SERVICE = "grpc.health.v1.Health"
CANARY_VARIABLE = "POTSANDBOX_CANARY_SECRET"
CANARY = f"canary-{secrets.token_hex(8)}"
MAX_PROGRAM_BYTES = 1 << 20
"""ServerConfig.max_program_bytes; no flag sets it, so the tests use the default."""

ONE_ZYGOTE_EACH = ("--workers", "1", "--numpy-workers", "1", "--lean-workers", "1")
"""Servers started by one test only: the smallest pool with every zygote flavour."""

SHARED_FLAGS: dict[str, str] = {
    "--workers": "1",
    "--numpy-workers": "1",
    "--lean-workers": "2",
    "--max-in-flight": "2",
    "--timeout": "2",
    "--max-timeout": "30",
    "--cpu": "4",
    "--max-cpu": "60",
    "--memory-mb": "1024",
    "--max-memory-mb": "8192",
    "--output-bytes": "65536",
    "--max-output-bytes": "4194304",
    "--grace": "5",
}
"""The shared server: lowered defaults, maxima roomy enough for the corpus limits."""


def flags(table: dict[str, str]) -> list[str]:
    return [part for pair in table.items() for part in pair]


@pytest.fixture(scope="module")
def metrics_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, metrics_port: int) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("shared-server")
    args = [*flags(SHARED_FLAGS), "--metrics-port", str(metrics_port)]
    with running(workdir, *args, env={CANARY_VARIABLE: CANARY}) as srv:
        yield srv
    assert srv.process.returncode == 0, srv.log_text()
    assert not srv.orphans, f"processes outlived the server: {srv.orphans}"
    assert not srv.temp_files(), f"the server left temporary files: {srv.temp_files()}"


@pytest.fixture(scope="module")
def stub(server: Server) -> Any:
    return server.stub()


def sleeping_tasks(server: Server, count: int, timeout: float = 10) -> set[int]:
    """Wait until `count` task processes under the server are in time.sleep; their pids."""
    found: set[int] = set()

    def enough() -> bool:
        nonlocal found
        found = {p.pid for p in waiting_in(server.descendants(), "nanosleep")}
        return len(found) >= count

    assert wait_until(enough, timeout), f"expected {count} task processes, saw {found}"
    assert len(found) == count, f"expected {count} task processes, saw {found}"
    return found


def no_task_sleeps(server: Server) -> bool:
    return not waiting_in(server.descendants(), "nanosleep")


def gone(pids: set[int]) -> bool:
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            continue
    return True


# --- health, reflection, info ------------------------------------------------------


@pytest.mark.parametrize("service", ["", SANDBOX_SERVICE])
def test_health_check_answers_serving(server: Server, service: str) -> None:
    assert server.health(service) == SERVING


def test_health_check_of_an_unknown_service_is_not_found(server: Server) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        server.health("no.such.Service")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_the_sandbox_and_health_services(server: Server) -> None:
    reflect = reflection_pb2_grpc.ServerReflectionStub(server.channel())
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    (reply,) = list(reflect.ServerReflectionInfo(iter([request]), timeout=10))
    names = {service.name for service in reply.list_services_response.service}
    assert {SANDBOX_SERVICE, HEALTH_SERVICE} <= names


def test_reflection_describes_execute(server: Server) -> None:
    reflect = reflection_pb2_grpc.ServerReflectionStub(server.channel())
    request = reflection_pb2.ServerReflectionRequest(file_containing_symbol=SANDBOX_SERVICE)
    (reply,) = list(reflect.ServerReflectionInfo(iter([request]), timeout=10))
    protos = reply.file_descriptor_response.file_descriptor_proto
    assert protos, reply
    assert any(b"ExecuteStream" in proto for proto in protos)


def test_get_info_reports_the_flags_it_was_started_with(stub: Any) -> None:
    info = stub.GetInfo(pb.GetInfoRequest(), timeout=10)
    assert info.version == metadata.version("potsandbox")
    assert info.workers.zygotes == 4  # --workers 1 + --numpy-workers 1 + --lean-workers 2
    assert info.workers.slots == 2  # --max-in-flight 2
    assert "rlimits" in info.isolation
    # Started without --unconfined, so at least one kernel layer must be in force.
    assert any(layer.startswith(("seccomp", "landlock")) for layer in info.isolation), (
        info.isolation
    )
    defaults = info.default_limits
    assert (defaults.timeout_s, defaults.cpu_s, defaults.memory_mb, defaults.output_bytes) == (
        2.0,
        4.0,
        1024,
        65536,
    )
    maxima = info.max_limits
    assert (maxima.timeout_s, maxima.cpu_s, maxima.memory_mb, maxima.output_bytes) == (
        30.0,
        60.0,
        8192,
        4194304,
    )
    assert info.clamps_limits is False
    assert info.max_program_bytes == MAX_PROGRAM_BYTES


def test_a_program_runs_and_its_answer_comes_back(stub: Any) -> None:
    reply = stub.Execute(make_request("print(6 * 7)", convention="stdout", id="x-1"), timeout=10)
    result = result_from_proto(reply)
    assert (result.status, result.answer, result.stdout, result.task_id) == (
        Status.OK,
        "42",
        "42\n",
        "x-1",
    )


def test_the_largest_result_reaches_the_client_even_when_every_output_byte_is_undecodable(
    server: Server,
) -> None:
    """Stdout and stderr at the server's maximum cap, all of it invalid UTF-8: each byte
    becomes U+FFFD (three bytes), so the Result is three times the raw output and must
    still fit the server's send limit; the stdout answer is cut like any answer."""
    cap = int(SHARED_FLAGS["--max-output-bytes"])
    program = (
        "import os\n"
        f"os.write(1, b'\\xff' * {cap - 1})\n"
        f"os.write(2, b'\\xff' * {cap - 1})\n"
        "ans = 1\n"
    )
    long_line = "print('7' * 100_000)"
    with SandboxClient(f"127.0.0.1:{server.port}") as client:
        result = client.run(program, convention="ans", output_bytes=cap, timeout=20)
        line = client.run(long_line, convention="stdout", output_bytes=cap)
    assert (result.status, result.answer) == (Status.OK, "1"), result.error_message
    assert result.stdout == result.stderr == "\ufffd" * (cap - 1)
    assert line.status is Status.OK and line.stdout == "7" * 100_000 + "\n"
    assert line.answer == "7" * 2000 and line.answer_number == float("7" * 100_000)


def test_the_default_timeout_is_the_flag_not_the_library_default(stub: Any) -> None:
    started = time.monotonic()
    reply = stub.Execute(make_request("while True: pass"), timeout=20)
    assert reply.status == pb.STATUS_TIMEOUT
    assert 1.5 < time.monotonic() - started < 4.5  # --timeout 2, not the built-in 5 s


# --- bad requests -----------------------------------------------------------------

Build = Callable[[str], pb.ExecuteRequest]
"""Builds one request for a row, given the id to put on it."""


def limits(**values: float) -> Build:
    return lambda id: make_request("ans = 1", id=id, **values)  # type: ignore[arg-type]


def fields(**values: Any) -> Build:
    def build(id: str) -> pb.ExecuteRequest:
        request = make_request("ans = 1", id=id)
        for name, value in values.items():
            setattr(request, name, value)
        return request

    return build


OVER = b"x" * (MAX_PROGRAM_BYTES + 1)

BAD_REQUESTS = [
    pytest.param(fields(program=b""), "program", id="empty-program"),
    pytest.param(fields(program=b"  \n\t \n"), "program", id="whitespace-only-program"),
    pytest.param(fields(program=OVER), "program", id="program-over-max-program-bytes"),
    pytest.param(fields(prelude=b"#" + OVER), "prelude", id="prelude-over-max-program-bytes"),
    pytest.param(fields(program=b"ans = '\xff\xfe'"), "program", id="invalid-utf8-program"),
    pytest.param(fields(prelude=b"x = '\xc3\x28'"), "prelude", id="invalid-utf8-prelude"),
    pytest.param(fields(convention="answer_is_42"), "convention", id="unknown-convention"),
    pytest.param(fields(convention="stdout:x"), "convention", id="convention-taking-no-name"),
    pytest.param(fields(convention="variable", name="1abc"), "name", id="bad-variable-name"),
    pytest.param(fields(convention="call", name="f-g"), "name", id="bad-function-name"),
    pytest.param(
        fields(convention="variable:1abc"),
        "convention",
        id="bad-variable-name-in-convention",
    ),
    pytest.param(limits(timeout_s=31.0), "timeout_s", id="timeout-above-server-maximum"),
    pytest.param(limits(cpu_s=61.0), "cpu_s", id="cpu-above-server-maximum"),
    pytest.param(limits(memory_mb=8193), "memory_mb", id="memory-above-server-maximum"),
    pytest.param(limits(output_bytes=4194305), "output_bytes", id="output-above-server-maximum"),
    pytest.param(limits(timeout_s=-1.0), "timeout_s", id="negative-timeout"),
    pytest.param(limits(timeout_s=0.0), "timeout_s", id="zero-timeout"),
    pytest.param(limits(cpu_s=0.0), "cpu_s", id="zero-cpu"),
    pytest.param(limits(memory_mb=-64), "memory_mb", id="negative-memory"),
    pytest.param(limits(memory_mb=0), "memory_mb", id="zero-memory"),
    pytest.param(limits(output_bytes=0), "output_bytes", id="zero-output-bytes"),
    pytest.param(limits(timeout_s=math.nan), "timeout_s", id="nan-timeout"),
    pytest.param(limits(cpu_s=math.inf), "cpu_s", id="infinite-cpu"),
]


@pytest.mark.parametrize(("build", "field"), BAD_REQUESTS)
def test_bad_execute_request_is_invalid_argument_naming_the_field(
    stub: Any, build: Build, field: str
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.Execute(build("bad-1"), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value
    assert field in (caught.value.details() or ""), caught.value.details()


STREAM_ONLY = [pytest.param(fields(id=""), "id", id="stream-item-missing-id")]


@pytest.mark.parametrize(("build", "field"), BAD_REQUESTS + STREAM_ONLY)
def test_bad_stream_item_ends_the_stream_invalid_argument_naming_the_field(
    stub: Any, build: Build, field: str
) -> None:
    good = make_request("ans = 5", convention="ans", id="good-1")
    replies: list[pb.ExecuteResponse] = []
    with pytest.raises(grpc.RpcError) as caught:
        for reply in stub.ExecuteStream(iter([good, build("bad-2")]), timeout=20):
            replies.append(reply)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value
    assert field in (caught.value.details() or ""), caught.value.details()
    # Results already received stand: the good program ran to the end.
    assert [(r.id, r.status, r.answer) for r in replies] == [("good-1", pb.STATUS_OK, "5")]


def test_bad_stream_item_error_names_the_request_id(stub: Any) -> None:
    requests = [make_request("ans = 1", id="fine"), make_request(b"", id="item-bad-77")]
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.ExecuteStream(iter(requests), timeout=20))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "item-bad-77" in (caught.value.details() or ""), caught.value.details()


def test_invalid_argument_leaves_the_server_serving(server: Server, stub: Any) -> None:
    with pytest.raises(grpc.RpcError):
        stub.Execute(make_request(b"\xff"), timeout=10)
    assert server.health() == SERVING
    assert stub.Execute(make_request("ans = 3", convention="ans"), timeout=10).answer == "3"


# --- streaming --------------------------------------------------------------------


def test_stream_of_3000_programs_returns_each_id_exactly_once(stub: Any) -> None:
    count = 3000
    sent: list[str] = []

    def programs() -> Iterator[pb.ExecuteRequest]:
        for i in range(count):
            sent.append(f"t{i}")
            yield make_request(f"ans = {i} * 3", convention="ans", id=f"t{i}")

    answers: dict[str, str] = {}
    seen: Counter[str] = Counter()
    for reply in stub.ExecuteStream(programs(), timeout=110):
        seen[reply.id] += 1
        assert reply.status == pb.STATUS_OK, reply
        answers[reply.id] = reply.answer
    assert len(sent) == count
    assert sorted(seen) == sorted(sent)
    assert set(seen.values()) == {1}
    assert all(answers[f"t{i}"] == str(i * 3) for i in range(count))


SOAK_HOSTILE = (
    "import os\nos.fork()",
    "x = 'a' * (10**10)",
    "while True:\n    print('y' * 1000)",
    "import time\ntime.sleep(100)",
    "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)",
    "import threading, time\n"
    "for _ in range(50):\n    threading.Thread(target=time.sleep, args=(9,)).start()",
    "import socket\nsocket.socket().connect(('127.0.0.1', 1))",
    "open('/tmp/soak', 'w').write('1')",
    "import os\n"
    "for fd in range(3, 1024):\n    try:\n        os.write(fd, b'\\0' * 64)\n"
    "    except OSError:\n        pass",
    "import ctypes\nctypes.string_at(0)",
    "import sys\nsys.setrecursionlimit(10**6)\ndef f():\n    return f()\nf()",
    "import numpy as np\na = np.ones((10**6, 10**4))",
    "import os\nos.write(1, b'\\xff' * 10**6)",
    "import os\nos.kill(1, 9)",
    "import mmap\nm = mmap.mmap(-1, 1 << 40)",
    "import fcntl, os\n"
    "fcntl.fcntl(0, fcntl.F_SETFL, os.O_NONBLOCK)\nfcntl.fcntl(1, fcntl.F_SETFL, os.O_DIRECT)",
)
"""One of each kind of trouble a program can make for the service that runs it."""


def _long_lived_state(server: Server) -> dict[int, tuple[int, Counter[str]]]:
    """Threads and non-pipe descriptors of the server and of each process under it."""
    state = {}
    for process in [psutil.Process(server.pid), *server.descendants()]:
        with contextlib.suppress(psutil.Error, OSError):
            links = [
                os.readlink(f"/proc/{process.pid}/fd/{fd}")
                for fd in os.listdir(f"/proc/{process.pid}/fd")
            ]
            kinds = Counter(link.split(":")[0] if ":" in link else link for link in links)
            kinds.pop("pipe", None)  # a zygote holds four per spare in stock, a number that varies
            state[process.pid] = (process.num_threads(), kinds)
    return state


def test_a_soak_of_mixed_programs_leaves_the_service_as_it_found_it(
    server: Server, stub: Any
) -> None:
    """security.md §4.10-11: one hostile program in four, in one stream, concurrently.
    Each id is answered once, each benign answer is its solo run's, no zygote is replaced,
    and afterwards every long-lived process holds the threads and descriptors (pipes
    aside) it held before, and none of them leaves a zombie."""
    benign = [r for r in records(SAMPLE) if r["id"] not in known_differences()][:40]
    benign = [r for r in benign if r["observed_status"] == "ok" and r["observed_time_s"] < 0.5]
    requests = {}
    for i in range(400):
        if i % 4 == 3:
            program = SOAK_HOSTILE[i // 4 % len(SOAK_HOSTILE)]
            requests[f"h{i}"] = make_request(program, id=f"h{i}")
        else:
            record = benign[i % len(benign)]
            task_id = f"b{i}:{record['id']}"
            requests[task_id] = reference_request(record | {"id": task_id})
    solo = {r["id"]: stub.Execute(reference_request(r), timeout=60) for r in benign}
    before = _long_lived_state(server)
    seen: Counter[str] = Counter()
    for reply in stub.ExecuteStream(iter(requests.values()), timeout=110):
        seen[reply.id] += 1
        if reply.id.startswith("b"):
            alone = solo[reply.id.partition(":")[2]]
            assert (reply.status, reply.answer) == (alone.status, alone.answer), reply
    assert seen == Counter(list(requests)), "an id was lost or answered twice"
    assert wait_until(lambda: not any(_zombies(server)), 10), _zombies(server)
    after = _long_lived_state(server)
    assert wait_until(lambda: _same_where_both(before, _long_lived_state(server)), 10), (
        before,
        after,
    )


def _zombies(server: Server) -> list[int]:
    found = []
    for process in server.descendants():
        with contextlib.suppress(psutil.Error):
            if process.status() == psutil.STATUS_ZOMBIE:
                found.append(process.pid)
    return found


def _same_where_both(
    before: dict[int, tuple[int, Counter[str]]], after: dict[int, tuple[int, Counter[str]]]
) -> bool:
    """Every process alive in both snapshots (the server, zygotes, fork servers, idle
    spares) holds what it held; processes that came or went are tasks and spares."""
    return all(after[pid] == before[pid] for pid in before.keys() & after.keys())


def test_a_slow_reader_holds_no_more_results_than_the_stream_window(
    stub: Any, metrics_port: int
) -> None:
    """A client that stops reading stops the stream: a task keeps its place in the window
    until its result is handed over, so at most the window's results (256) wait in the
    server; released at completion, they piled up as fast as tasks ran."""
    program = "print('x' * 60_000)"  # the responses fill the transport's buffers quickly
    requests = (make_request(program, convention="stdout", id=str(i)) for i in range(100_000))
    ok = 'potsandbox_tasks_total{status="ok"}'
    before = scrape(metrics_port).get(ok, 0.0)
    call = stub.ExecuteStream(requests, timeout=60)
    try:
        time.sleep(8)  # never read
        ran = scrape(metrics_port).get(ok, 0.0) - before
    finally:
        call.cancel()
    assert 0 < ran < 256 + 200, f"{ran:.0f} results waited for a client that reads none"


def test_streams_ended_early_give_back_every_admission_place(tmp_path: Path) -> None:
    """A stream's tasks hold admission places; one cancelled before its first step never
    gave its place back, and with one place (no queue) the first such loss refused every
    later call as overload."""
    args = ("--workers", "0", "--numpy-workers", "0", "--lean-workers", "1")
    with running(tmp_path, *args, "--max-in-flight", "1", "--queue-size", "0") as srv:
        stub = srv.stub()
        rng = random.Random(7)
        for i in range(200):
            batch = [make_request("ans = 1", id=f"{i}-{j}") for j in range(30)]
            call = stub.ExecuteStream(iter(batch), timeout=30)
            time.sleep(rng.uniform(0.002, 0.02))
            call.cancel()
        assert wait_until(lambda: no_task_sleeps(srv), 10)
        reply = stub.Execute(make_request("ans = 6 * 7", convention="ans"), timeout=30)
        assert (reply.status, reply.answer) == (pb.STATUS_OK, "42"), reply


def test_concurrent_unary_calls_all_return(stub: Any) -> None:
    def one(i: int) -> pb.ExecuteResponse:
        return stub.Execute(make_request(f"ans = {i} + 1", convention="ans"), timeout=30)

    with ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(one, range(64)))
    assert [r.answer for r in replies] == [str(i + 1) for i in range(64)]


# --- deadlines and cancellation ------------------------------------------------------

SLEEPER = "import time\ntime.sleep(60)\n"


def test_deadline_kills_the_sandboxed_process(server: Server, stub: Any) -> None:
    future = stub.Execute.future(make_request(SLEEPER, timeout_s=25), timeout=1.0)
    task = sleeping_tasks(server, 1)
    try:
        reply = future.result(timeout=10)
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED, exc
    else:
        assert reply.status == pb.STATUS_TIMEOUT, reply
    assert wait_until(lambda: gone(task), 1.0), f"task {task} still alive after the deadline"
    assert wait_until(lambda: no_task_sleeps(server), 1.0)


def test_cancel_kills_the_sandboxed_process(server: Server, stub: Any) -> None:
    future = stub.Execute.future(make_request(SLEEPER, timeout_s=25), timeout=30)
    task = sleeping_tasks(server, 1)
    assert future.cancel()
    assert wait_until(lambda: gone(task), 1.0), f"task {task} still alive after cancel"
    assert wait_until(lambda: no_task_sleeps(server), 1.0)
    assert future.cancelled()


def test_cancelling_a_stream_kills_its_running_programs(server: Server, stub: Any) -> None:
    stop = threading.Event()

    def requests() -> Iterator[pb.ExecuteRequest]:
        for i in range(2):
            yield make_request(SLEEPER, timeout_s=25, id=f"s{i}")
        stop.wait(30)  # keep the request side open

    call = stub.ExecuteStream(requests(), timeout=30)
    try:
        tasks = sleeping_tasks(server, 2)
        call.cancel()
        assert wait_until(lambda: gone(tasks), 1.0), f"tasks {tasks} still alive after cancel"
    finally:
        stop.set()
    assert wait_until(lambda: no_task_sleeps(server), 1.0)


def test_server_still_serves_after_cancellations(stub: Any) -> None:
    reply = stub.Execute(make_request("ans = 11", convention="ans"), timeout=10)
    assert (reply.status, reply.answer) == (pb.STATUS_OK, "11")


# --- metrics ---------------------------------------------------------------------


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def test_metrics_count_tasks_and_expose_the_gauges(stub: Any, metrics_port: int) -> None:
    before = scrape(metrics_port).get('potsandbox_tasks_total{status="ok"}', 0.0)
    for i in range(3):
        stub.Execute(make_request(f"ans = {i}", convention="ans"), timeout=10)
    stub.Execute(make_request("1/0"), timeout=10)
    with pytest.raises(grpc.RpcError):
        stub.Execute(make_request(b""), timeout=10)
    samples = scrape(metrics_port)
    assert samples['potsandbox_tasks_total{status="ok"}'] >= before + 3 > 0
    assert samples['potsandbox_tasks_total{status="error"}'] >= 1
    assert samples['potsandbox_rejected_total{code="INVALID_ARGUMENT"}'] >= 1
    assert samples["potsandbox_queue_depth"] == 0
    assert samples["potsandbox_busy_workers"] == 0
    assert samples["potsandbox_task_seconds_count"] >= 4


# --- secrets ---------------------------------------------------------------------


def test_server_environment_does_not_reach_programs(server: Server, stub: Any) -> None:
    program = (
        "import os\n"
        f"print(os.environ.get({CANARY_VARIABLE!r}))\n"
        "print(sorted(k for k in os.environ if k.startswith('POTSANDBOX')))\n"
    )
    reply = stub.Execute(make_request(program, convention="stdout"), timeout=10)
    assert reply.status == pb.STATUS_OK, reply
    assert reply.stdout == "None\n[]\n"
    # Positive twin: the secret is there to be stolen, in the server's own environment.
    assert (
        f"{CANARY_VARIABLE}={CANARY}".encode() in Path(f"/proc/{server.pid}/environ").read_bytes()
    )


def test_programs_cannot_read_the_server_environ_under_proc(server: Server, stub: Any) -> None:
    program = (
        "import os\n"
        "targets = [f'/proc/{pid}/environ' for pid in (SERVER, 1)]\n"
        "try:\n"
        "    targets += [f'/proc/{p}/environ' for p in os.listdir('/proc') if p.isdigit()]\n"
        "except OSError as e:\n"
        "    print('listdir', type(e).__name__)\n"
        "for path in targets:\n"
        "    try:\n"
        "        with open(path, 'rb') as f:\n"
        "            print(path, 'LEAKED' if CANARY in f.read() else 'read')\n"
        "    except OSError as e:\n"
        "        print(path, type(e).__name__)\n"
    )
    prelude = f"SERVER = {server.pid}\nCANARY = {CANARY.encode()!r}\n"
    reply = stub.Execute(make_request(program, prelude=prelude, convention="stdout"), timeout=10)
    assert reply.status == pb.STATUS_OK, reply
    assert CANARY not in reply.stdout + reply.stderr
    assert "LEAKED" not in reply.stdout, reply.stdout
    outcome = dict(line.rsplit(" ", 1) for line in reply.stdout.splitlines())
    assert outcome[f"/proc/{server.pid}/environ"] in ("PermissionError", "FileNotFoundError")
    # Positive twin: outside the sandbox the same path holds the secret.
    assert CANARY.encode() in Path(f"/proc/{server.pid}/environ").read_bytes()


# --- parity with the engine ------------------------------------------------------

_ADDRESS = re.compile(r" at 0x[0-9a-f]+")
_RANDOM = re.compile(r"\brandom\b")


def comparable(result: Result) -> tuple[Any, ...]:
    """The fields that must not depend on the transport (timings left out)."""
    return (
        result.status,
        _ADDRESS.sub(" at 0x", result.answer) if result.answer is not None else None,
        _ADDRESS.sub(" at 0x", result.stdout),
        result.error_type,
        result.error_line,
        result.exit_code,
        result.convention,
        result.truncated,
    )


def skip_reason(row: dict[str, Any], *results: Result) -> str | None:
    """Why a program may legitimately differ between two runs, or None."""
    if row["id"] in known_differences():
        return "random"
    if _RANDOM.search(f"{row.get('prelude') or ''}\n{row['program']}"):
        return "random"
    limit = REFERENCE_LIMITS.timeout_s
    if row["observed_time_s"] >= NEAR_LIMIT * limit:
        return "near the time limit"
    if any(r.wall_time_s >= NEAR_LIMIT * limit or r.status is Status.TIMEOUT for r in results):
        return "near the time limit"
    return None


def reference_request(row: dict[str, Any]) -> pb.ExecuteRequest:
    convention = convention_of(row)
    return make_request(
        row["program"],
        prelude=row.get("prelude") or "",
        convention=convention,
        timeout_s=REFERENCE_LIMITS.timeout_s,
        cpu_s=REFERENCE_LIMITS.cpu_s,
        memory_mb=REFERENCE_LIMITS.memory_mb,
        output_bytes=REFERENCE_LIMITS.output_bytes,
        id=row["id"],
    )


async def run_directly(rows: list[dict[str, Any]]) -> tuple[dict[str, Result], tuple[str, ...]]:
    config = PoolConfig(zygotes=1, numpy_zygotes=1, lean_zygotes=2, max_in_flight=2)
    async with AsyncExecutor(config) as executor:
        results = await asyncio.gather(
            *(
                executor.run(
                    row["program"],
                    prelude=row.get("prelude") or "",
                    convention=convention_of(row),
                    limits=REFERENCE_LIMITS,
                    task_id=row["id"],
                )
                for row in rows
            )
        )
        return {r.task_id: r for r in results}, executor.layers


def run_over_grpc(stub: Any, rows: list[dict[str, Any]], timeout: float) -> dict[str, Result]:
    results: dict[str, Result] = {}
    for reply in stub.ExecuteStream((reference_request(row) for row in rows), timeout=timeout):
        assert reply.id not in results, f"{reply.id} answered twice"
        results[reply.id] = result_from_proto(reply)
    return results


def check_parity(stub: Any, path: Path, timeout: float) -> None:
    rows = list(records(path))
    direct, layers = asyncio.run(run_directly(rows))
    info = stub.GetInfo(pb.GetInfoRequest(), timeout=10)
    assert tuple(info.isolation) == layers, "the server and the engine are not equally confined"
    remote = run_over_grpc(stub, rows, timeout)
    assert set(remote) == set(direct) == {row["id"] for row in rows}
    skipped: Counter[str] = Counter()
    differences = {}
    for row in rows:
        ours, theirs = direct[row["id"]], remote[row["id"]]
        reason = skip_reason(row, ours, theirs)
        if reason is not None:
            skipped[reason] += 1
            continue
        if comparable(ours) != comparable(theirs):
            differences[row["id"]] = (comparable(ours), comparable(theirs))
    compared = len(rows) - sum(skipped.values())
    print(f"\n{len(rows)} programs, {compared} compared, skipped: {dict(skipped)}")
    assert compared >= 0.9 * len(rows)
    assert not differences, f"{len(differences)} programs differ over gRPC: {differences}"


@pytest.mark.timeout(600)
def test_shipped_sample_gives_the_same_results_over_grpc_as_in_process(stub: Any) -> None:
    check_parity(stub, SAMPLE, timeout=500)


@pytest.mark.slow
@pytest.mark.timeout(7200)
def test_full_public_corpus_gives_the_same_results_over_grpc_as_in_process(stub: Any) -> None:
    check_parity(stub, require_corpus(), timeout=7000)


# --- overload ---------------------------------------------------------------------


def test_overload_is_resource_exhausted_and_no_accepted_task_is_lost(tmp_path: Path) -> None:
    args = ["--max-in-flight", "1", "--queue-size", "0", *ONE_ZYGOTE_EACH]
    with running(tmp_path, *args, "--timeout", "2", "--grace", "5") as srv:
        stub = srv.stub()
        program = make_request("import time\ntime.sleep(0.5)\nprint('slept')", convention="stdout")
        futures = []
        for _wave in range(4):
            futures += [stub.Execute.future(program, timeout=15) for _ in range(6)]
            time.sleep(0.6)
        accepted, refused = [], []
        for future in futures:
            try:
                accepted.append(future.result(timeout=20))
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc
                assert exc.details(), "RESOURCE_EXHAUSTED without a message"
                refused.append(exc)
        assert accepted and refused, (len(accepted), len(refused))
        print(f"\n{len(accepted)} accepted, {len(refused)} refused: {refused[0].details()!r}")
        assert len(accepted) + len(refused) == len(futures)
        assert all(r.status == pb.STATUS_OK and r.answer == "slept" for r in accepted), accepted
        # The admission count came back down: the next call is accepted.
        assert stub.Execute(program, timeout=15).status == pb.STATUS_OK


# --- graceful shutdown -----------------------------------------------------------


GRACE_S = 10


def test_sigterm_drains_in_flight_tasks_and_exits_zero(tmp_path: Path) -> None:
    args = [
        "--workers",
        "1",
        "--numpy-workers",
        "1",
        "--lean-workers",
        "4",
        "--max-in-flight",
        "4",
        "--timeout",
        "5",
    ]
    srv = start_server(tmp_path, *args, "--grace", str(GRACE_S))
    try:
        stub = srv.stub()
        program = make_request("import time\ntime.sleep(1.5)\nans = 7", convention="ans")
        futures = [stub.Execute.future(program, timeout=30) for _ in range(4)]
        sleeping_tasks(srv, 4)
        watch = health_pb2_grpc.HealthStub(srv.channel()).Watch(
            health_pb2.HealthCheckRequest(service=""), timeout=20
        )
        assert next(watch).status == SERVING
        srv.process.send_signal(signal.SIGTERM)
        sent = time.monotonic()

        assert next(watch).status == NOT_SERVING  # readiness probes see the drain at once
        watch.cancel()
        with pytest.raises(grpc.RpcError) as caught:
            stub.Execute(make_request("ans = 1"), timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value

        replies = [future.result(timeout=15) for future in futures]
        assert [(r.status, r.answer) for r in replies] == [(pb.STATUS_OK, "7")] * 4, replies
        assert srv.process.wait(timeout=GRACE_S) == 0, srv.log_text()
        assert time.monotonic() - sent < GRACE_S
        assert wait_until(lambda: not srv.leftovers(), 2.0), srv.leftovers()
        assert not srv.temp_files(), srv.temp_files()
    finally:
        srv.stop()


# --- authentication ----------------------------------------------------------------


def test_token_is_required_for_the_sandbox_but_not_for_health(tmp_path: Path) -> None:
    token = secrets.token_urlsafe(24)
    token_file = tmp_path / "token"
    token_file.write_text(f"{token}\n")
    args = ["--token-file", token_file, *ONE_ZYGOTE_EACH]
    with running(tmp_path / "srv", *args, "--max-in-flight", "1", "--grace", "5") as srv:
        stub = srv.stub()
        request = make_request("ans = 2", convention="ans", id="auth-1")
        calls: list[tuple[str, Callable[[], object]]] = [
            ("no token", lambda: stub.Execute(request, timeout=10)),
            (
                "wrong token",
                lambda: stub.Execute(
                    request, timeout=10, metadata=[("authorization", "Bearer wrong")]
                ),
            ),
            (
                "token without Bearer",
                lambda: stub.Execute(request, timeout=10, metadata=[("authorization", token)]),
            ),
            ("no token, GetInfo", lambda: stub.GetInfo(pb.GetInfoRequest(), timeout=10)),
            ("no token, stream", lambda: list(stub.ExecuteStream(iter([request]), timeout=10))),
        ]
        for what, call in calls:
            with pytest.raises(grpc.RpcError) as caught:
                call()
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED, what

        metadata = [("authorization", f"Bearer {token}")]
        reply = stub.Execute(request, timeout=10, metadata=metadata)
        assert (reply.status, reply.answer) == (pb.STATUS_OK, "2")
        streamed = list(stub.ExecuteStream(iter([request]), timeout=10, metadata=metadata))
        assert [r.answer for r in streamed] == ["2"]
        assert srv.health() == SERVING
        assert srv.health(SANDBOX_SERVICE) == SERVING


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    ca = trustme.CA()
    directory = tmp_path_factory.mktemp("pki")
    server_cert = ca.issue_cert("127.0.0.1", "localhost")
    client_cert = ca.issue_cert("client.potsandbox.test")
    stranger = trustme.CA().issue_cert("client.potsandbox.test")
    paths = {
        "ca": directory / "ca.pem",
        "cert": directory / "server.pem",
        "key": directory / "server.key",
    }
    ca.cert_pem.write_to_path(str(paths["ca"]))
    server_cert.private_key_pem.write_to_path(str(paths["key"]))
    paths["cert"].write_bytes(b"".join(blob.bytes() for blob in server_cert.cert_chain_pems))
    return {
        "paths": paths,
        "ca": ca.cert_pem.bytes(),
        "client": client_cert,
        "stranger": stranger,
    }


def client_credentials(pki: dict[str, Any], leaf: Any | None) -> grpc.ChannelCredentials:
    if leaf is None:
        return grpc.ssl_channel_credentials(root_certificates=pki["ca"])
    return grpc.ssl_channel_credentials(
        root_certificates=pki["ca"],
        private_key=leaf.private_key_pem.bytes(),
        certificate_chain=b"".join(blob.bytes() for blob in leaf.cert_chain_pems),
    )


def test_mtls_admits_only_clients_with_a_certificate_from_the_ca(
    tmp_path: Path, pki: dict[str, Any]
) -> None:
    paths = pki["paths"]
    args = ["--tls-cert", paths["cert"], "--tls-key", paths["key"], "--tls-client-ca", paths["ca"]]
    good = client_credentials(pki, pki["client"])
    with running(tmp_path, *args, *ONE_ZYGOTE_EACH, "--grace", "5", credentials=good) as srv:
        request = make_request("ans = 4", convention="ans")
        reply = srv.stub().Execute(request, timeout=10)
        assert (reply.status, reply.answer) == (pb.STATUS_OK, "4")

        for what, creds in [
            ("no client certificate", client_credentials(pki, None)),
            ("certificate from another CA", client_credentials(pki, pki["stranger"])),
        ]:
            with pytest.raises(grpc.RpcError) as caught:
                srv.stub(creds).Execute(request, timeout=10)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, what
        with (
            grpc.insecure_channel(srv.address) as plaintext,
            pytest.raises(grpc.RpcError) as caught,
        ):
            plaintext.unary_unary("/potsandbox.v1.Sandbox/GetInfo")(b"", timeout=10)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_server_refuses_a_public_bind_without_token_or_tls(tmp_path: Path, host: str) -> None:
    port_file = tmp_path / "port"
    done = subprocess.run(
        server_command("--host", host, "--port", "0", "--port-file", port_file),
        capture_output=True,
        text=True,
        timeout=60,
        env=servers.environment(),
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert host in done.stderr and "--token-file" in done.stderr, done.stderr
    assert "--insecure" in done.stderr, done.stderr
    assert not port_file.exists(), "the server got as far as binding"
