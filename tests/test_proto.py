"""The wire contract: fresh stubs, lossless Result conversion, request validation, UTF-8."""

from __future__ import annotations

import math
import re
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import DecodeError

from potsandbox.executor.conventions import Convention, Kind
from potsandbox.executor.errors import ConfigError
from potsandbox.executor.limits import LimitPolicy, Limits
from potsandbox.executor.result import Result, Status
from potsandbox.executor.wire import (
    RequestError,
    TaskSpec,
    limits_from_proto,
    limits_to_proto,
    make_request,
    parse_request,
    result_from_proto,
    result_to_proto,
    status_from_proto,
    status_to_proto,
)
from potsandbox.v1 import sandbox_pb2 as pb

ROOT = Path(__file__).resolve().parents[1]
GENERATED_DIR = ROOT / "proto" / "potsandbox" / "v1"
POLICY = LimitPolicy()
MAX_PROGRAM_BYTES = 1000


def parse(req: pb.ExecuteRequest, policy: LimitPolicy = POLICY) -> TaskSpec:
    return parse_request(req, policy=policy, max_program_bytes=MAX_PROGRAM_BYTES)


def version_tuple(text: str) -> tuple[int, ...]:
    """Release numbers of a version string ("7.35.1" -> (7, 35, 1)); enough for floors."""
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


# --- generated code --------------------------------------------------------------


def test_generated_stubs_match_the_proto() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_proto.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr + done.stdout


def dependency_floor(package: str) -> str:
    """The `>=` version of `package` in [project] dependencies."""
    with (ROOT / "pyproject.toml").open("rb") as f:
        dependencies = tomllib.load(f)["project"]["dependencies"]
    for requirement in dependencies:
        match = re.fullmatch(rf"{package}\s*>=\s*([\w.]+).*", requirement)
        if match:
            return match.group(1)
    raise AssertionError(f"no {package}>= floor in [project] dependencies")


def test_protobuf_floor_covers_the_generated_code() -> None:
    # sandbox_pb2.py refuses to import on a protobuf runtime older than its generator.
    header = (GENERATED_DIR / "sandbox_pb2.py").read_text()
    generated = re.search(r"^# Protobuf Python Version: (\S+)$", header, re.MULTILINE)
    assert generated, "sandbox_pb2.py has no Protobuf Python Version header"
    floor = dependency_floor("protobuf")
    assert version_tuple(floor) >= version_tuple(generated.group(1)), (
        f"pyproject says protobuf>={floor} but the stubs need protobuf>={generated.group(1)}"
    )


def test_grpcio_floor_covers_the_generated_code() -> None:
    # sandbox_pb2_grpc.py raises RuntimeError on a grpcio older than GRPC_GENERATED_VERSION.
    source = (GENERATED_DIR / "sandbox_pb2_grpc.py").read_text()
    generated = re.search(r"^GRPC_GENERATED_VERSION = '(\S+)'$", source, re.MULTILINE)
    assert generated, "sandbox_pb2_grpc.py has no GRPC_GENERATED_VERSION"
    floor = dependency_floor("grpcio")
    assert version_tuple(floor) >= version_tuple(generated.group(1)), (
        f"pyproject says grpcio>={floor} but the stubs need grpcio>={generated.group(1)}"
    )


# --- Result <-> ExecuteResponse -------------------------------------------------


def full_result(status: Status) -> Result:
    """A Result with every field away from its default, so a dropped field shows."""
    return Result(
        status=status,
        answer="42",
        answer_number=42.0,
        convention="call:solution",
        stdout="out é\n",
        stderr="err\n",
        truncated=True,
        error_type="ZeroDivisionError",
        error_message="division by zero",
        error_line=3,
        exit_code=1,
        signal=9,
        wall_time_s=0.25,
        cpu_time_s=0.125,
        peak_memory_mb=31.5,
        task_id="task-7",
    )


@pytest.mark.parametrize("status", list(Status), ids=str)
def test_every_status_round_trips_with_all_fields(status: Status) -> None:
    result = full_result(status)
    wire = pb.ExecuteResponse.FromString(result_to_proto(result).SerializeToString())
    assert result_from_proto(wire) == result


@pytest.mark.parametrize("status", list(Status), ids=str)
def test_every_status_round_trips_with_optionals_unset(status: Status) -> None:
    result = Result(status=status)
    wire = pb.ExecuteResponse.FromString(result_to_proto(result).SerializeToString())
    assert result_from_proto(wire) == result


def test_zero_values_survive_as_set_not_as_none() -> None:
    # proto3 `optional` is what tells exit_code=0 and answer="" from "absent".
    result = Result(
        status=Status.OK, answer="", answer_number=0.0, error_line=0, exit_code=0, signal=0
    )
    assert result_from_proto(result_to_proto(result)) == result


def test_non_finite_answer_number_survives() -> None:
    for number in (math.inf, -math.inf):
        result = Result(status=Status.OK, answer=str(number), answer_number=number)
        assert result_from_proto(result_to_proto(result)) == result
    back = result_from_proto(result_to_proto(Result(status=Status.OK, answer_number=math.nan)))
    assert back.answer_number is not None and math.isnan(back.answer_number)


def test_every_proto_status_but_unspecified_has_a_status() -> None:
    values = [v.number for v in pb.Status.DESCRIPTOR.values if v.number != pb.STATUS_UNSPECIFIED]
    assert sorted(status_to_proto(status_from_proto(v)) for v in values) == sorted(values)
    assert len(values) == len(Status)


@pytest.mark.parametrize("value", [pb.STATUS_UNSPECIFIED, 99], ids=["unspecified", "unknown"])
def test_unspecified_or_unknown_status_is_rejected(value: int) -> None:
    with pytest.raises(ValueError, match="unknown status"):
        result_from_proto(pb.ExecuteResponse(status=pb.Status.ValueType(value)))


def test_lone_surrogates_in_a_result_become_replacement_characters() -> None:
    # A program can bind `ans = "\udc80"`; the response must still serialize.
    result = Result(
        status=Status.OK,
        answer="a\udc80b",
        stdout="x\ud800",
        error_message="\udfff",
        task_id="id\udc80",
    )
    wire = pb.ExecuteResponse.FromString(result_to_proto(result).SerializeToString())
    back = result_from_proto(wire)
    assert back.answer == "a\ufffdb"
    assert back.stdout == "x\ufffd"
    assert back.error_message == "\ufffd"
    assert back.task_id == "id\ufffd"


# --- Limits ----------------------------------------------------------------------


def test_limits_round_trip_with_every_field_set() -> None:
    limits = Limits(timeout_s=1.5, cpu_s=3.0, memory_mb=512, output_bytes=4096)
    msg = limits_to_proto(limits)
    assert all(msg.HasField(f) for f in ("timeout_s", "cpu_s", "memory_mb", "output_bytes"))
    assert limits_from_proto(msg) == limits


def test_unset_limits_take_the_given_default() -> None:
    default = Limits(timeout_s=9.0, cpu_s=8.0, memory_mb=7, output_bytes=6)
    assert limits_from_proto(pb.Limits(cpu_s=2.0), default=default) == Limits(
        timeout_s=9.0, cpu_s=2.0, memory_mb=7, output_bytes=6
    )


# --- make_request ----------------------------------------------------------------


def test_make_request_sets_only_what_is_given() -> None:
    req = make_request("ans = 1", id="a")
    assert req.program == b"ans = 1"
    assert req.prelude == b""
    assert req.convention == ""
    assert req.name == ""
    assert not req.HasField("limits")
    assert req.id == "a"


def test_make_request_sets_each_limit_it_is_given() -> None:
    req = make_request("ans = 1", timeout_s=2.0, memory_mb=256)
    assert req.limits.HasField("timeout_s") and req.limits.timeout_s == 2.0
    assert req.limits.HasField("memory_mb") and req.limits.memory_mb == 256
    assert not req.limits.HasField("cpu_s")
    assert not req.limits.HasField("output_bytes")


def test_make_request_accepts_a_convention_object() -> None:
    req = make_request("x = 1", convention=Convention(Kind.VARIABLE, "x"))
    assert parse(req).convention == Convention(Kind.VARIABLE, "x")


def test_make_request_round_trips_through_parse_request() -> None:
    req = make_request(
        "def solve():\n    return 2\n",
        prelude="from math import *\n",
        convention="call",
        name="solve",
        timeout_s=1.0,
        cpu_s=2.0,
        memory_mb=100,
        output_bytes=1000,
        id="row-3",
    )
    spec = parse(pb.ExecuteRequest.FromString(req.SerializeToString()))
    assert spec == TaskSpec(
        program="def solve():\n    return 2\n",
        prelude="from math import *\n",
        convention=Convention(Kind.CALL, "solve"),
        limits=Limits(timeout_s=1.0, cpu_s=2.0, memory_mb=100, output_bytes=1000),
        id="row-3",
    )


@pytest.mark.parametrize("field", ["program", "prelude"])
def test_make_request_rejects_text_that_cannot_be_utf8(field: str) -> None:
    kwargs = {"program": "ans = 1", "prelude": ""} | {field: "ans = '\udc80'"}
    with pytest.raises(RequestError) as raised:
        make_request(kwargs["program"], prelude=kwargs["prelude"])
    assert raised.value.field == field


# --- parse_request ---------------------------------------------------------------


def test_defaults_fill_an_unset_convention_and_limits() -> None:
    spec = parse(pb.ExecuteRequest(program=b"print(1)"))
    assert spec.convention == Convention(Kind.AUTO)
    assert spec.limits == POLICY.default
    assert spec.prelude == ""
    assert spec.id == ""


@pytest.mark.parametrize(
    ("convention", "name", "expected"),
    [
        ("stdout", "", Convention(Kind.STDOUT)),
        ("ans", "", Convention(Kind.VARIABLE, "ans")),
        ("solution", "", Convention(Kind.CALL, "solution")),
        ("variable:result", "", Convention(Kind.VARIABLE, "result")),
        ("call:solve", "", Convention(Kind.CALL, "solve")),
        ("call", "solve_it", Convention(Kind.CALL, "solve_it")),
        ("last_expr", "", Convention(Kind.LAST_EXPR)),
        ("auto", "", Convention(Kind.AUTO)),
    ],
)
def test_every_convention_spelling_is_accepted(
    convention: str, name: str, expected: Convention
) -> None:
    assert parse(make_request("x", convention=convention, name=name)).convention == expected


def test_a_clamping_policy_clamps_instead_of_rejecting() -> None:
    policy = LimitPolicy(clamp=True)
    spec = parse(make_request("x", timeout_s=1e9), policy=policy)
    assert spec.limits.timeout_s == policy.maximum.timeout_s


def test_program_at_the_size_limit_is_accepted() -> None:
    assert len(parse(make_request("#" * MAX_PROGRAM_BYTES)).program) == MAX_PROGRAM_BYTES


def set_limit(**kwargs: float) -> Callable[[pb.ExecuteRequest], None]:
    def mutate(req: pb.ExecuteRequest) -> None:
        for key, value in kwargs.items():
            setattr(req.limits, key, value)

    return mutate


def set_fields(**kwargs: object) -> Callable[[pb.ExecuteRequest], None]:
    def mutate(req: pb.ExecuteRequest) -> None:
        for key, value in kwargs.items():
            setattr(req, key, value)

    return mutate


BAD_REQUESTS: list[tuple[str, Callable[[pb.ExecuteRequest], None], str]] = [
    ("empty program", set_fields(program=b""), "program"),
    ("whitespace program", set_fields(program=b" \n\t"), "program"),
    ("program over size", set_fields(program=b"#" * (MAX_PROGRAM_BYTES + 1)), "program"),
    ("prelude over size", set_fields(prelude=b"#" * (MAX_PROGRAM_BYTES + 1)), "prelude"),
    ("program invalid utf8", set_fields(program=b"ans = '\xff'"), "program"),
    ("program encoded surrogate", set_fields(program=b"ans = '\xed\xb2\x80'"), "program"),
    ("program truncated utf8", set_fields(program=b"ans = '\xc3"), "program"),
    ("prelude invalid utf8", set_fields(prelude=b"\xfe"), "prelude"),
    ("unknown convention", set_fields(convention="answer"), "convention"),
    ("name on a nameless convention", set_fields(convention="stdout:x"), "convention"),
    ("bad name in convention", set_fields(convention="variable:1x"), "convention"),
    ("bad name field", set_fields(convention="call", name="not a name"), "name"),
    ("timeout above max", set_limit(timeout_s=POLICY.maximum.timeout_s + 1), "limits.timeout_s"),
    ("cpu above max", set_limit(cpu_s=POLICY.maximum.cpu_s * 2), "limits.cpu_s"),
    ("memory above max", set_limit(memory_mb=POLICY.maximum.memory_mb + 1), "limits.memory_mb"),
    ("output above max", set_limit(output_bytes=1 << 40), "limits.output_bytes"),
    ("negative timeout", set_limit(timeout_s=-1.0), "limits.timeout_s"),
    ("negative cpu", set_limit(cpu_s=-0.5), "limits.cpu_s"),
    ("negative memory", set_limit(memory_mb=-1), "limits.memory_mb"),
    ("negative output", set_limit(output_bytes=-1), "limits.output_bytes"),
    ("zero timeout", set_limit(timeout_s=0.0), "limits.timeout_s"),
    ("nan timeout", set_limit(timeout_s=math.nan), "limits.timeout_s"),
    ("infinite cpu", set_limit(cpu_s=math.inf), "limits.cpu_s"),
]


@pytest.mark.parametrize(
    ("mutate", "field"), [row[1:] for row in BAD_REQUESTS], ids=[row[0] for row in BAD_REQUESTS]
)
def test_bad_request_raises_request_error_naming_the_field(
    mutate: Callable[[pb.ExecuteRequest], None], field: str
) -> None:
    req = make_request("ans = 1", id="r1")
    mutate(req)
    # Through the wire, as the server would receive it.
    received = pb.ExecuteRequest.FromString(req.SerializeToString())
    with pytest.raises(RequestError) as raised:
        parse(received)
    assert raised.value.field == field
    assert str(raised.value)


def test_request_error_is_a_config_error_with_a_field() -> None:
    assert issubclass(RequestError, ConfigError)
    assert RequestError("program", "program is empty").field == "program"


def test_invalid_utf8_error_names_the_byte_offset() -> None:
    with pytest.raises(RequestError, match="byte 7"):
        parse(pb.ExecuteRequest(program=b"ans = '\xff'"))


# --- why program/prelude are bytes -----------------------------------------------


def field_bytes(descriptor: Descriptor, field_name: str, payload: bytes) -> bytes:
    """Hand-encode one length-delimited field, bypassing protobuf's UTF-8 checks."""
    number = descriptor.fields_by_name[field_name].number
    return bytes([(number << 3) | 2, len(payload)]) + payload


def test_invalid_utf8_program_reaches_the_server_intact() -> None:
    raw = field_bytes(pb.ExecuteRequest.DESCRIPTOR, "program", b"print('\xff')")
    req = pb.ExecuteRequest.FromString(raw)  # bytes field: parses fine
    assert req.program == b"print('\xff')"
    with pytest.raises(RequestError) as raised:
        parse(req)
    assert raised.value.field == "program"


def test_invalid_utf8_in_a_string_field_fails_before_the_server_sees_it() -> None:
    # The reason for `bytes`: a `string` field with bad UTF-8 is a DecodeError at
    # deserialization, which gRPC reports as a generic INTERNAL with no field.
    raw = field_bytes(pb.ExecuteRequest.DESCRIPTOR, "convention", b"\xff")
    with pytest.raises(DecodeError):
        pb.ExecuteRequest.FromString(raw)
