"""The sync and async clients against real servers on 127.0.0.1 (port 0), no mocks."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import psutil
import pytest
import trustme

from potsandbox.client import (
    AsyncSandboxClient,
    Result,
    SandboxClient,
    Status,
    TLSConfig,
    embedded,
    errors,
)
from potsandbox.client import client as client_module
from potsandbox.client.client import ORDERED_LOOKAHEAD, _Check
from potsandbox.executor.limits import OUTPUT_BYTES_CEILING, LimitPolicy, Limits

from corpus import SAMPLE, difference, records
from servers import Server, free_port, running, wait_until

WORKERS = ("--workers", "1", "--numpy-workers", "1", "--lean-workers", "1")
"""Two zygotes per server keep several servers affordable on a 2-core machine."""

START_TIMEOUT_S = 90.0

_SERVER_NUMBERS = itertools.count()


@dataclass
class Replica:
    """A server this test started, and the port of its Prometheus metrics."""

    server: Server
    metrics_port: int

    def tasks(self) -> float:
        """Tasks this server finished (the `potsandbox_tasks_total` series)."""
        return self.metric("potsandbox_tasks_total")

    def metric(self, name: str) -> float:
        """Sum of one Prometheus series over its labels."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith((f"{name} ", f"{name}{{"))
        )


@contextlib.contextmanager
def serve(
    tmp_path: Path, *args: str, credentials: grpc.ChannelCredentials | None = None
) -> Iterator[Server]:
    """A two-zygote server on port 0 in its own directory; stopped with its children."""
    workdir = tmp_path / f"server-{next(_SERVER_NUMBERS)}"
    with running(workdir, *WORKERS, *args, credentials=credentials) as server:
        yield server


@pytest.fixture(scope="module")
def client() -> Iterator[SandboxClient]:
    """One embedded-server client for the module (the server starts on first use)."""
    with SandboxClient(server_args=WORKERS, start_timeout=START_TIMEOUT_S) as c:
        yield c


# --- run ---------------------------------------------------------------------------------


def test_run_returns_the_answer_through_the_embedded_server(client: SandboxClient) -> None:
    assert client.run("print(1 + 1)", convention="stdout").answer == "2"
    assert client.run("ans = 6 * 7", convention="ans").answer == "42"
    result = client.run("def solve():\n    return 3\n", convention="solution", name="solve", id="q")
    assert (result.answer, result.convention, result.task_id) == ("3", "call:solve", "q")


def test_program_failures_are_results_not_exceptions(client: SandboxClient) -> None:
    failed = client.run("1 / 0")
    assert (failed.status, failed.error_type) == (Status.ERROR, "ZeroDivisionError")
    assert client.run("while True:\n    pass\n", timeout=0.5).status is Status.TIMEOUT


def test_run_of_an_invalid_request_raises_invalid_request(client: SandboxClient) -> None:
    with pytest.raises(errors.InvalidRequest) as caught:
        client.run("   ")
    assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(errors.InvalidRequest, match="convention"):
        client.run("print(1)", convention="bogus")


@pytest.mark.parametrize(
    ("field", "options"),
    [
        ("convention", {"convention": "variable:\udcff"}),
        ("name", {"name": "\udcff"}),
        ("id", {"id": "\udcff"}),
        ("prelude", {"prelude": "x = '\udcff'"}),
    ],
)
def test_text_that_is_not_utf8_is_invalid_request_naming_the_field(
    client: SandboxClient, field: str, options: dict[str, str]
) -> None:
    """Lone surrogates cannot travel in a protobuf string: the field is named, not a
    UnicodeEncodeError raised from the message's constructor."""
    with pytest.raises(errors.InvalidRequest, match=f"^{field}: {field} is not encodable"):
        client.run("ans = 1", **options)  # type: ignore[arg-type]


def test_deadline_shorter_than_the_timeout_cuts_the_program(client: SandboxClient) -> None:
    started = time.monotonic()
    result = client.run("import time\ntime.sleep(10)", timeout=30, deadline=1.0)
    assert result.status is Status.TIMEOUT
    assert time.monotonic() - started < 5


def test_info_describes_the_server(client: SandboxClient) -> None:
    info = client.info()
    assert info.workers.slots >= 1
    assert info.max_limits.timeout_s >= info.default_limits.timeout_s


def test_missing_server_extra_raises_with_the_install_hint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(embedded, "SERVER_MODULES", ("potsandbox_no_such_module",))
    with pytest.raises(errors.ServerNotInstalled, match=r"potsandbox\[server\]"):
        SandboxClient().run("print(1)")


# --- run_many / iter_results ---------------------------------------------------------------


def test_run_many_keeps_input_order_when_completion_order_differs(client: SandboxClient) -> None:
    programs = [f"import time\ntime.sleep({(8 - i) * 0.03})\nans = {i}" for i in range(8)]
    results = client.run_many(programs, convention="ans", concurrency=8)
    assert [r.answer for r in results] == [str(i) for i in range(8)]
    assert [r.task_id for r in results] == [str(i) for i in range(8)]


def test_invalid_items_become_error_results_and_the_batch_goes_on(
    client: SandboxClient,
) -> None:
    items: list[object] = [
        "print(1)",
        "",
        {"id": "bad-convention", "program": "ans = 1", "convention": "bogus"},
        {"id": "no-program", "convention": "stdout"},
        {"id": "no-output", "program": "ans = 1"},
        42,
        {"id": "surrogate", "program": "ans = 1", "convention": "variable:\udcff"},
        {"id": _UnprintableId(), "program": "ans = 1"},
        {"id": "fine", "program": "ans = 2", "convention": "ans"},
    ]
    results = client.run_many(items, convention="stdout", timeout=None)  # type: ignore[arg-type]
    assert [r.status for r in results] == [
        Status.OK,
        Status.ERROR,
        Status.ERROR,
        Status.ERROR,
        Status.NO_ANSWER,
        Status.ERROR,
        Status.ERROR,
        Status.ERROR,
        Status.OK,
    ]
    refused = [r for r in results if r.error_type == "InvalidRequest"]
    ids = ["1", "bad-convention", "no-program", "5", "surrogate", "7"]
    assert [r.task_id for r in refused] == ids
    assert "RuntimeError: no text" in (refused[-1].error_message or "")
    assert results[-1].answer == "2"


class _UnprintableId:
    """A record id whose str() fails: the item's error, never a lost or short batch."""

    def __str__(self) -> str:
        raise RuntimeError("no text")


def test_limits_above_the_server_maximum_are_refused_locally(client: SandboxClient) -> None:
    results = client.run_many(["print(1)", "print(2)"], timeout=10_000)
    assert {r.error_type for r in results} == {"InvalidRequest"}
    assert "timeout_s" in (results[0].error_message or "")


def test_server_refusal_mid_stream_fails_only_the_refused_items(client: SandboxClient) -> None:
    """When local validation is behind the server's, unanswered items go over unary calls."""
    remote = pickle.loads(pickle.dumps(client))
    unbounded = Limits(
        timeout_s=1e9, cpu_s=1e9, memory_mb=1 << 40, output_bytes=OUTPUT_BYTES_CEILING
    )
    remote._check = _Check(LimitPolicy(maximum=unbounded), max_program_bytes=1 << 20)
    results = remote.run_many(["print(1)", "print(2)", "print(3)"], timeout=10_000)
    assert len(results) == 3
    assert {r.error_type for r in results} == {"InvalidRequest"}
    assert all("timeout_s" in (r.error_message or "") for r in results)
    remote.close()


def test_corpus_records_run_as_they_are(client: SandboxClient) -> None:
    rows = list(itertools.islice(records(SAMPLE), 40))
    results = client.run_many(rows)
    assert [r.task_id for r in results] == [row["id"] for row in rows]
    fast = [(row, r) for row, r in zip(rows, results, strict=True) if row["observed_time_s"] < 1]
    assert [difference(row, r) for row, r in fast] == [None] * len(fast)


def test_progress_bar_is_drawn_on_stderr(
    client: SandboxClient, capsys: pytest.CaptureFixture[str]
) -> None:
    client.run_many([f"ans = {i}" for i in range(12)], progress=True)
    assert "12/12" in capsys.readouterr().err


def test_iter_results_in_order_or_as_completed(client: SandboxClient) -> None:
    programs = [f"import time\ntime.sleep({(6 - i) * 0.03})\nans = {i}" for i in range(6)]
    ordered = [r.answer for r in client.iter_results(programs, ordered=True, concurrency=6)]
    assert ordered == [str(i) for i in range(6)]
    completed = [r.task_id for r in client.iter_results(programs, concurrency=6)]
    assert sorted(completed) == [str(i) for i in range(6)]


def test_iter_results_reads_an_endless_input_lazily(client: SandboxClient) -> None:
    pulled = itertools.count()
    endless = (f"ans = {next(pulled)}" for _ in itertools.count())
    stream = client.iter_results(endless, ordered=True, concurrency=4)
    first = list(itertools.islice(stream, 20))
    stream.close()
    assert [r.answer for r in first] == [str(i) for i in range(20)]
    # Results released together may run ahead of the 20 taken by up to one lookahead.
    assert next(pulled) <= 20 + 2 * ORDERED_LOOKAHEAD * 4 + 4


def test_run_many_deadline_turns_the_rest_into_results(client: SandboxClient) -> None:
    programs = ["import time\ntime.sleep(3)"] * 3
    started = time.monotonic()
    results = client.run_many(programs, concurrency=1, deadline=1.0)
    assert time.monotonic() - started < 10
    assert len(results) == 3
    assert all(r.status in (Status.TIMEOUT, Status.ERROR) for r in results)


# --- async ---------------------------------------------------------------------------------


async def test_async_client_run_run_many_and_iter_results(client: SandboxClient) -> None:
    async with AsyncSandboxClient(client.target, token=client.token) as aclient:
        assert (await aclient.run("print(5)", convention="stdout")).answer == "5"
        results = await aclient.run_many([f"ans = {i}" for i in range(10)] + [""])
        assert [r.answer for r in results[:10]] == [str(i) for i in range(10)]
        assert results[10].error_type == "InvalidRequest"
        slow_first = ["import numpy, time\ntime.sleep(1.5)\nans = 'slow'", "ans = 'fast'"]
        order = [r.answer async for r in aclient.iter_results(slow_first, concurrency=2)]
        assert order == ["fast", "slow"]


async def test_async_client_with_embedded_server() -> None:
    async with AsyncSandboxClient(server_args=WORKERS) as aclient:
        results = await aclient.run_many(["print(1)", "print(2)"], convention="stdout")
        assert [r.answer for r in results] == ["1", "2"]


OWNER = """
import sys
from potsandbox.client import SandboxClient

client = SandboxClient(server_args=sys.argv[1:])
print(client.run("ans = 6 * 7", convention="ans").answer, flush=True)
sys.stdin.read()  # until the test kills this process outright
"""


def test_an_owner_killed_outright_leaves_no_server_and_no_files(tmp_path: Path) -> None:
    """No finalizer runs on SIGKILL: the server must notice and stop, and no token stays."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, *WORKERS],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "TMPDIR": str(tmp)},
    )
    family: list[psutil.Process] = []
    try:
        assert owner.stdout is not None
        assert owner.stdout.readline() == b"42\n"
        family = psutil.Process(owner.pid).children(recursive=True)
        assert family, "the embedded server should be the owner's child"
        assert not list(tmp.glob("potsandbox-embedded-*")), "the token file outlived start-up"
        owner.kill()
        owner.wait(10)
        _, alive = psutil.wait_procs(family, timeout=30)
        assert not alive, f"still running after the owner died: {alive}"
        assert list(tmp.iterdir()) == []
    finally:
        for process in [owner, *family]:
            with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
                process.kill()
        owner.wait(10)


# --- pickling and processes ----------------------------------------------------------------


def _double(job: tuple[SandboxClient, int]) -> tuple[int, str | None]:
    client, number = job
    return os.getpid(), client.run(f"print({number} * 2)", convention="stdout").answer


def test_pickle_round_trip_shares_the_embedded_server(client: SandboxClient) -> None:
    copy = pickle.loads(pickle.dumps(client))
    assert copy._embedded is None
    assert copy.target == client.target
    assert copy.run("print(7)", convention="stdout").answer == "7"
    copy.close()  # a copy never stops the server it did not start
    assert client.run("print(8)", convention="stdout").answer == "8"


@pytest.mark.parametrize("method", ["spawn", "fork", "forkserver"])
def test_pickled_client_works_in_multiprocessing(client: SandboxClient, method: str) -> None:
    client.run("print(0)")  # the parent's channel is open when the children start
    with multiprocessing.get_context(method).Pool(2) as pool:
        answers = pool.map(_double, [(client, n) for n in range(6)])
    assert [answer for _, answer in answers] == [str(2 * n) for n in range(6)]
    assert os.getpid() not in {pid for pid, _ in answers}


def test_forked_child_reopens_its_own_channel(client: SandboxClient) -> None:
    client.run("print(0)")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child uses the inherited object, not a pickled copy
        code = 1
        try:
            answer = client.run("print(11)", convention="stdout").answer or ""
            os.write(write_end, answer.encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert os.read(read_end, 100) == b"11"
    os.close(read_end)
    assert client.run("print(12)", convention="stdout").answer == "12"


# --- retries, auth, TLS ----------------------------------------------------------------------


def test_retries_ride_out_resource_exhausted(tmp_path: Path) -> None:
    program = "import time\ntime.sleep(0.2)\nprint(1)"
    with serve(tmp_path, "--max-in-flight", "1", "--queue-size", "0") as server:
        patient = SandboxClient(server.address, max_retries=100, backoff=0.05, max_backoff=0.5)
        with patient, ThreadPoolExecutor(6) as pool:
            results = list(pool.map(lambda _: patient.run(program, convention="stdout"), range(6)))
        assert [r.answer for r in results] == ["1"] * 6

        impatient = SandboxClient(server.address, max_retries=0)
        with impatient, ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(impatient.run, program) for _ in range(6)]
            outcomes = [f.exception() for f in futures]
        overloaded = [e for e in outcomes if isinstance(e, errors.Overloaded)]
        assert overloaded, outcomes
        assert overloaded[0].code is grpc.StatusCode.RESOURCE_EXHAUSTED


def test_deadline_passing_in_the_queue_raises_deadline_exceeded(tmp_path: Path) -> None:
    port = free_port()
    with (
        serve(tmp_path, "--max-in-flight", "1", "--metrics-port", str(port)) as server,
        SandboxClient(server.address) as client,
        ThreadPoolExecutor(1) as pool,
    ):
        blocker = pool.submit(client.run, "import time\ntime.sleep(3)\nans = 1")
        assert wait_until(lambda: Replica(server, port).metric("potsandbox_busy_workers") == 1, 10)
        with pytest.raises(errors.DeadlineExceeded) as caught:  # queued behind the blocker
            client.run("print(1)", deadline=0.5)
        assert caught.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
        assert blocker.result().ok


def test_token_is_required_and_checked(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    with serve(tmp_path, "--token-file", str(token_file)) as server:
        with SandboxClient(server.address, token="s3cret") as good:
            assert good.run("print(1)", convention="stdout").answer == "1"
        for token in ("wrong", None):
            with SandboxClient(server.address, token=token) as bad:
                with pytest.raises(errors.Unauthenticated):
                    bad.run("print(1)")
                with pytest.raises(errors.Unauthenticated):
                    bad.run_many(["print(1)"])


def test_mutual_tls_accepts_known_clients_and_refuses_others(tmp_path: Path) -> None:
    ca = trustme.CA()
    server_cert = ca.issue_cert("localhost", "127.0.0.1")
    client_cert = ca.issue_cert("client.example")
    paths = {
        "cert": tmp_path / "server.pem",
        "key": tmp_path / "server.key",
        "ca": tmp_path / "ca.pem",
    }
    paths["cert"].write_bytes(b"".join(blob.bytes() for blob in server_cert.cert_chain_pems))
    server_cert.private_key_pem.write_to_path(str(paths["key"]))
    ca.cert_pem.write_to_path(str(paths["ca"]))
    mtls = ("--tls-cert", str(paths["cert"]), "--tls-key", str(paths["key"]))
    known = TLSConfig(
        root_ca=paths["ca"],
        client_cert=b"".join(blob.bytes() for blob in client_cert.cert_chain_pems),
        client_key=client_cert.private_key_pem.bytes(),
        server_name="localhost",
    )
    health_check = known.credentials()
    with serve(
        tmp_path, *mtls, "--tls-client-ca", str(paths["ca"]), credentials=health_check
    ) as server:
        with SandboxClient(server.address, tls=known) as good:
            assert good.run("print(1)", convention="stdout").answer == "1"
            assert pickle.loads(pickle.dumps(good)).run("print(2)").status is Status.OK
        anonymous = TLSConfig(root_ca=paths["ca"], server_name="localhost")
        stranger = trustme.CA().issue_cert("client.example")
        unknown = TLSConfig(
            root_ca=paths["ca"],
            client_cert=stranger.cert_chain_pems[0].bytes(),
            client_key=stranger.private_key_pem.bytes(),
            server_name="localhost",
        )
        for tls in (anonymous, unknown):
            bad = SandboxClient(server.address, tls=tls, max_retries=0, deadline=10)
            with bad, pytest.raises(errors.SandboxError):
                bad.run("print(1)")


# --- several replicas ------------------------------------------------------------------------


@contextlib.contextmanager
def replicas(tmp_path: Path) -> Iterator[list[Replica]]:
    """Three servers, each with its own metrics port."""
    with contextlib.ExitStack() as stack:
        started = []
        for _ in range(3):
            port = free_port()
            server = stack.enter_context(serve(tmp_path, "--metrics-port", str(port)))
            started.append(Replica(server, port))
        yield started


@pytest.fixture(scope="module")
def three_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Replica]]:
    with replicas(tmp_path_factory.mktemp("replicas")) as started:
        yield started


def test_round_robin_spreads_work_over_three_servers(three_servers: list[Replica]) -> None:
    targets = [replica.server.address for replica in three_servers]
    with SandboxClient(targets) as spread:
        assert [spread.run(f"print({i})", convention="stdout").answer for i in range(30)] == [
            str(i) for i in range(30)
        ]
        results = spread.run_many([f"ans = {i}" for i in range(30)], convention="ans")
        assert [r.answer for r in results] == [str(i) for i in range(30)]
    handled = [replica.tasks() for replica in three_servers]
    assert all(count > 0 for count in handled), handled


def test_dns_target_with_round_robin(three_servers: list[Replica]) -> None:
    with SandboxClient(f"dns:///{three_servers[0].server.address}") as client:
        assert client.streams > 1
        results = client.run_many([f"ans = {i}" for i in range(10)], convention="ans")
    assert [r.answer for r in results] == [str(i) for i in range(10)]


def test_streams_rotate_over_the_servers(
    three_servers: list[Replica], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_module, "ROTATE_AFTER", 5)
    with SandboxClient([replica.server.address for replica in three_servers]) as spread:
        results = spread.run_many([f"ans = {i}" for i in range(90)], convention="ans")
    assert [r.answer for r in results] == [str(i) for i in range(90)]


def test_killing_a_server_mid_batch_loses_no_result(tmp_path: Path) -> None:
    total = 300
    programs = [f"import time\ntime.sleep(0.01)\nans = {i}" for i in range(total)]
    answers: dict[str, str | None] = {}
    with (
        replicas(tmp_path) as doomed,
        SandboxClient([r.server.address for r in doomed], backoff=0.05, max_backoff=0.5) as client,
    ):
        victim = doomed[0].server
        for _ in range(6):  # connect to every server before the streams are placed
            client.run("print(0)")
        for count, result in enumerate(client.iter_results(programs, convention="ans")):
            assert result.status is Status.OK, result
            answers[result.task_id] = result.answer
            if count == 40:
                assert doomed[0].tasks() > 0  # the victim has a share of the batch
                victim.process.send_signal(signal.SIGKILL)
    assert victim.process.wait(10) == -signal.SIGKILL
    assert answers == {str(i): str(i) for i in range(total)}


def test_result_type_is_the_executor_result(client: SandboxClient) -> None:
    assert isinstance(client.run("print(1)"), Result)


def test_client_is_thread_safe(client: SandboxClient) -> None:
    barrier = threading.Barrier(4)

    def one(number: int) -> str | None:
        barrier.wait()
        return client.run(f"print({number})", convention="stdout").answer

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(one, range(4))) == ["0", "1", "2", "3"]


def test_async_results_match_sync_results(client: SandboxClient) -> None:
    async def go() -> list[Result]:
        async with AsyncSandboxClient(client.target, token=client.token) as aclient:
            return await aclient.run_many(["ans = 1", "1/0"])

    sync = client.run_many(["ans = 1", "1/0"])
    assert [(r.status, r.answer) for r in asyncio.run(go())] == [(r.status, r.answer) for r in sync]
