"""`potsandbox` run / batch / info / serve against real servers on 127.0.0.1."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from potsandbox.client import Result, SandboxClient
from potsandbox.client.cli import main

from corpus import SAMPLE, difference, known_differences, records

WORKERS = ("--workers", "1", "--numpy-workers", "1", "--lean-workers", "1")


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """Connection flags of one embedded server shared by the module's commands."""
    with SandboxClient(server_args=WORKERS) as client:
        client.info()  # starts the server
        token_file = tmp_path_factory.mktemp("cli") / "token"
        token_file.write_text(client.token or "")
        yield ["--target", client.target or "", "--token-file", str(token_file)]


@pytest.fixture
def few_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Embedded servers started by the CLI itself inherit these settings."""
    monkeypatch.setenv("POTSANDBOX_WORKERS", "1")
    monkeypatch.setenv("POTSANDBOX_NUMPY_WORKERS", "1")
    monkeypatch.setenv("POTSANDBOX_LEAN_WORKERS", "1")


def _program(tmp_path: Path, text: str, name: str = "program.py") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_run_prints_the_answer(
    tmp_path: Path, remote: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["run", _program(tmp_path, "print(6 * 7)"), "--convention", "stdout", *remote])
    assert (code, capsys.readouterr().out) == (0, "42\n")


def test_run_json_prints_the_whole_result(
    tmp_path: Path, remote: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    program = _program(tmp_path, "def solve():\n    return 2 ** 10\n")
    assert (
        main(["run", program, "--convention", "solution", "--name", "solve", "--json", *remote])
        == 0
    )
    result = Result.from_dict(json.loads(capsys.readouterr().out))
    assert (result.ok, result.answer, result.convention) == (True, "1024", "call:solve")


def test_run_exits_1_when_the_program_fails(
    tmp_path: Path, remote: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", _program(tmp_path, "1 / 0"), *remote]) == 1
    assert "ZeroDivisionError" in capsys.readouterr().err
    loop = _program(tmp_path, "while True:\n    pass\n")
    assert main(["run", loop, "--timeout", "0.5", "--json", *remote]) == 1
    assert json.loads(capsys.readouterr().out)["status"] == "timeout"


def test_run_reads_standard_input_and_a_prelude(
    tmp_path: Path,
    remote: list[str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("ans = base + 1\n"))
    prelude = _program(tmp_path, "base = 41\n", "prelude.py")
    assert main(["run", "-", "--convention", "ans", "--prelude", prelude, *remote]) == 0
    assert capsys.readouterr().out == "42\n"


def test_run_refused_request_exits_1_with_the_reason(
    tmp_path: Path, remote: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", _program(tmp_path, "print(1)"), "--convention", "bogus", *remote]) == 1
    assert "convention" in capsys.readouterr().err


def test_run_without_target_uses_an_embedded_server(
    tmp_path: Path, few_workers: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", _program(tmp_path, "print(3)"), "--convention", "stdout"]) == 0
    assert capsys.readouterr().out == "3\n"


def test_batch_runs_the_sample_in_input_order(
    tmp_path: Path, remote: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "results.jsonl"
    assert main(["batch", str(SAMPLE), "-o", str(out), *remote]) == 0
    rows = list(records(SAMPLE))
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["id"] for line in lines] == [row["id"] for row in rows]
    known = known_differences()
    unexplained = {  # slow programs may cross the 5 s limit on a loaded machine
        row["id"]: diff
        for row, line in zip(rows, lines, strict=True)
        if row["observed_time_s"] < 1 and row["id"] not in known
        if (diff := difference(row, Result.from_dict(line)))
    }
    assert not unexplained
    assert [line["answer"] for line in lines[:3]] == [row["observed"] for row in rows[:3]]
    assert f"{len(rows)}/{len(rows)}" in capsys.readouterr().err


def test_batch_reports_malformed_lines_and_goes_on(
    tmp_path: Path, remote: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(
        "\n".join(
            [
                json.dumps({"id": "a", "program": "print(1)", "convention": "stdout"}),
                "{not json",
                "[1, 2]",
                json.dumps({"id": "no-program", "convention": "stdout"}),
                "",
                json.dumps({"id": "b", "program": "ans = 2", "convention": "ans"}),
                json.dumps({"id": "c", "program": "ans = 1", "convention": "bogus"}),
            ]
        )
        + "\n"
    )
    out = tmp_path / "out.jsonl"
    assert main(["batch", str(source), "-o", str(out), "--no-progress", *remote]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    summary = [(line["id"], line["status"], line["error_type"]) for line in lines]
    assert summary == [
        ("a", "ok", None),
        (None, "error", "InvalidRecord"),
        (None, "error", "InvalidRecord"),
        ("no-program", "error", "InvalidRecord"),
        ("b", "ok", None),
        ("c", "error", "InvalidRequest"),
    ]
    err = capsys.readouterr().err
    assert all(f"in.jsonl:{number}:" in err for number in (2, 3, 4))


def test_batch_from_stdin_without_target(
    few_workers: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = [json.dumps({"id": str(i), "program": f"ans = {i}"}) for i in range(5)]
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(lines)))
    assert main(["batch", "-", "--no-progress"]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(line["id"], line["answer"]) for line in out] == [(str(i), str(i)) for i in range(5)]


def test_info_prints_the_server_info_as_json(
    remote: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["info", *remote]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["workers"]["slots"] >= 1
    assert "timeout_s" in info["max_limits"]


def test_serve_delegates_to_the_server(tmp_path: Path) -> None:
    port_file = tmp_path / "port"
    command = [sys.executable, "-m", "potsandbox.client.cli", "serve", "--port", "0"]
    command += ["--port-file", str(port_file), *WORKERS]
    with (tmp_path / "server.log").open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=log)
    with process:
        try:
            deadline = time.monotonic() + 90
            while not (port_file.exists() and port_file.read_text().endswith("\n")):
                assert process.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
            port = int(port_file.read_text())
            with SandboxClient(f"127.0.0.1:{port}") as client:
                assert client.run("print(1)", convention="stdout").answer == "1"
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
    assert process.returncode == 0


def test_help_lists_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    usage = capsys.readouterr().out
    assert all(name in usage for name in ("serve", "run", "batch", "info"))
