"""Benign controls under the full sandbox: the false-positive guard.

Ordinary Program-of-Thought programs (sympy, numpy, scipy, mpmath, the standard
library, threads, lazy imports, Unicode, output) must run to completion with the
exact answer they give under plain CPython. A syscall missing from the seccomp
allowlist or a path missing from the Landlock ruleset shows up here as a failing
control, not as a killed production task. The limits are roomy in wall time (this
machine is shared and tasks run at nice 19) but keep the hostile suite's memory cap.
"""

from __future__ import annotations

import datetime
import json
import random
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from potsandbox.executor import Executor, LimitPolicy, Limits, PoolConfig, Result, Status

from corpus import run_as_script

pytestmark = pytest.mark.timeout(120)

LIMITS = Limits(timeout_s=10.0, cpu_s=20.0, memory_mb=512, output_bytes=64 << 10)


@pytest.fixture(scope="module")
def ex() -> Iterator[Executor]:
    """One executor for the module, with every isolation layer the machine offers."""
    executor = Executor(
        PoolConfig(zygotes=1, numpy_zygotes=1, lean_zygotes=1, max_in_flight=2), LimitPolicy()
    )
    with executor:
        yield executor


def run(ex: Executor, program: str, convention: str = "auto") -> Result:
    """Run a dedented program with the module's limits."""
    return ex.run(textwrap.dedent(program), convention=convention, limits=LIMITS)


def show(result: Result) -> str:
    """A Result in one assertion message."""
    return (
        f"{result.status.value} {result.error_type}: {result.error_message} "
        f"signal={result.signal} exit={result.exit_code} answer={result.answer!r} "
        f"stdout={result.stdout[-300:]!r} stderr={result.stderr[-1500:]!r}"
    )


def assert_answer(result: Result, expected: str) -> None:
    """Completed normally with exactly this answer."""
    assert (result.status, result.answer) == (Status.OK, expected), show(result)


def test_the_full_sandbox_is_active(ex: Executor) -> None:
    """The controls below only guard against false positives if the layers are on."""
    missing = {"seccomp", "landlock-fs", "rlimits"} - set(ex.layers)
    if missing:
        pytest.skip(f"not verified: isolation layers {sorted(missing)} are not active")
    assert "rlimits" in ex.layers


# --------------------------------------------------------------------------- sympy

SYMPY = {
    "solve": (
        "from sympy import symbols, solve\nx = symbols('x')\nans = solve(x**2 - 5*x + 6, x)",
        "[2, 3]",
    ),
    "solve a system": (
        "from sympy import symbols, solve\nx, y = symbols('x y')\n"
        "sol = solve([x + y - 10, x - y - 2], [x, y])\nans = (sol[x], sol[y])",
        "(6, 4)",
    ),
    "simplify": (
        "from sympy import symbols, simplify\nx = symbols('x')\nans = simplify((x**2 - 1)/(x - 1))",
        "x + 1",
    ),
    "factor": (
        "from sympy import symbols, factor\nx = symbols('x')\nans = factor(x**3 - x)",
        "x*(x - 1)*(x + 1)",
    ),
    "integrate": (
        "from sympy import symbols, integrate\nx = symbols('x')\nans = integrate(x**2, (x, 0, 3))",
        "9",
    ),
    "integrate symbolically": (
        "from sympy import symbols, integrate, sin\nx = symbols('x')\nans = integrate(x*sin(x), x)",
        "-x*cos(x) + sin(x)",
    ),
    "rational arithmetic": (
        "from sympy import Rational, sqrt\nans = Rational(3, 4) + Rational(1, 6)",
        "11/12",
    ),
    "nsimplify": ("from sympy import nsimplify\nans = nsimplify(0.375)", "3/8"),
    "number theory": ("from sympy import factorint\nans = factorint(360)", "{2: 3, 3: 2, 5: 1}"),
    "lazy sympy.physics.units": (
        "from sympy.physics.units import convert_to, kilometer, meter\n"
        "ans = convert_to(3 * kilometer, meter)",
        "3000*meter",
    ),
    "lazy sympy.stats": (
        "from sympy.stats import Die, E\nans = E(Die('D', 6))",
        "7/2",
    ),
    "lazy sympy.combinatorics": (
        "from sympy.combinatorics import Permutation\nans = Permutation([1, 2, 0]).order()",
        "3",
    ),
    "lazy sympy.geometry": (
        "from sympy.geometry import Point, Triangle\n"
        "ans = Triangle(Point(0, 0), Point(4, 0), Point(0, 3)).area",
        "6",
    ),
    "lazy sympy.vector (not preloaded)": (
        "from sympy.vector import CoordSys3D\nN = CoordSys3D('N')\n"
        "ans = (3*N.i + 4*N.j).magnitude()",
        "5",
    ),
    "lazy sympy.crypto (not preloaded)": (
        "from sympy.crypto.crypto import encipher_shift\nans = encipher_shift('ABC', 1)",
        "BCD",
    ),
    "lazy sympy.physics.hydrogen (not preloaded)": (
        "from sympy.physics.hydrogen import E_nl\nans = E_nl(2)",
        "-1/8",
    ),
    "lazy sympy.parsing": (
        "from sympy.parsing.sympy_parser import parse_expr\nans = parse_expr('2*x + 3*x')",
        "5*x",
    ),
}


@pytest.mark.parametrize("case", list(SYMPY))
def test_sympy_program_gives_the_exact_answer(ex: Executor, case: str) -> None:
    program, expected = SYMPY[case]
    assert_answer(run(ex, program), expected)


# --------------------------------------------------------------------------- numpy, scipy


def test_numpy_linalg_solve_gives_the_exact_answer(ex: Executor) -> None:
    program = """
    import numpy as np
    ans = np.linalg.solve(np.array([[3.0, 1.0], [1.0, 2.0]]), np.array([9.0, 8.0]))
    """
    assert_answer(run(ex, program), "[2.0, 3.0]")


def test_numpy_eig_gives_the_exact_answer(ex: Executor) -> None:
    program = """
    import numpy as np
    values, vectors = np.linalg.eig(np.array([[2.0, 0.0], [0.0, 3.0]]))
    ans = sorted(values.tolist())
    """
    assert_answer(run(ex, program), "[2.0, 3.0]")


def test_numpy_300_square_matmul_gives_the_exact_answer(ex: Executor) -> None:
    program = """
    import numpy as np
    a = (np.arange(300 * 300, dtype=np.float64).reshape(300, 300) % 7) - 3
    ans = int((a @ a.T).trace())
    """
    a = (np.arange(300 * 300, dtype=np.float64).reshape(300, 300) % 7) - 3
    assert_answer(run(ex, program), str(int((a @ a.T).trace())))


def test_numpy_seeded_generator_gives_the_exact_answer(ex: Executor) -> None:
    program = "import numpy as np\nans = np.random.default_rng(7).integers(0, 10**6, 3).tolist()"
    expected = np.random.default_rng(7).integers(0, 10**6, 3).tolist()
    assert_answer(run(ex, program), "[" + ", ".join(map(str, expected)) + "]")


def test_lazy_scipy_optimize_gives_the_exact_answer(ex: Executor) -> None:
    program = """
    from scipy.optimize import brentq
    ans = round(brentq(lambda x: x**2 - 2, 0, 2), 6)
    """
    assert_answer(run(ex, program), "1.414214")


def test_lazy_scipy_integrate_gives_the_exact_answer(ex: Executor) -> None:
    program = """
    from scipy.integrate import quad
    value, error = quad(lambda x: x**2, 0, 3)
    ans = round(value, 9)
    """
    assert_answer(run(ex, program), "9.0")


def test_lazy_scipy_stats_gives_the_exact_answer(ex: Executor) -> None:
    program = "from scipy.stats import norm\nans = round(float(norm.cdf(1.96)), 4)"
    assert_answer(run(ex, program), "0.975")


def test_scipy_linalg_in_a_worker_thread_gives_the_exact_answer(ex: Executor) -> None:
    program = """
    import threading
    import numpy as np
    import scipy.linalg

    out = []
    worker = threading.Thread(target=lambda: out.append(scipy.linalg.det(np.eye(3) * 2)))
    worker.start()
    worker.join()
    ans = round(float(out[0]), 9)
    """
    assert_answer(run(ex, program), "8.0")


# --------------------------------------------------------------------------- standard library


def test_fractions_give_the_exact_answer(ex: Executor) -> None:
    program = "from fractions import Fraction\nans = Fraction(1, 3) + Fraction(1, 6)"
    assert_answer(run(ex, program), "1/2")


def test_decimal_with_higher_precision_gives_the_exact_answer(ex: Executor) -> None:
    program = """
    from decimal import Decimal, getcontext
    getcontext().prec = 50
    ans = Decimal(1) / Decimal(7)
    """
    assert_answer(run(ex, program), "0.14285714285714285714285714285714285714285714285714")


def test_mpmath_with_30_digits_gives_the_exact_answer(ex: Executor) -> None:
    program = "from mpmath import mp\nmp.dps = 30\nans = str(mp.pi)"
    assert_answer(run(ex, program), "3.14159265358979323846264338328")


def test_itertools_give_the_exact_answer(ex: Executor) -> None:
    program = """
    import itertools
    ans = sum(1 for p in itertools.permutations(range(6)) if p[0] < p[-1])
    """
    assert_answer(run(ex, program), "360")


def test_statistics_give_the_exact_answer(ex: Executor) -> None:
    program = """
    import statistics
    data = [2, 4, 4, 4, 5, 5, 7, 9]
    ans = (statistics.mean(data), statistics.median(data), statistics.pstdev(data))
    """
    assert_answer(run(ex, program), "(5, 4.5, 2.0)")


def test_seeded_random_gives_the_same_answer_as_plain_python(ex: Executor) -> None:
    program = "import random\nrandom.seed(42)\nans = [random.randint(1, 100) for _ in range(5)]"
    rng = random.Random(42)
    expected = [rng.randint(1, 100) for _ in range(5)]
    assert_answer(run(ex, program), "[" + ", ".join(map(str, expected)) + "]")


@pytest.mark.parametrize(
    "program",
    [
        "import random\nans = random.random()",
        "import numpy as np\nans = float(np.random.random())",  # numpy zygote: loaded here
        "import numpy as np, sympy\nans = float(np.random.random())",  # full: preloaded
        "import sympy\nans = sympy.randprime(1, 10**12)",  # sympy's own generator
    ],
    ids=["random", "numpy-zygote", "full-zygote", "sympy"],
)
def test_unseeded_generators_differ_between_tasks_like_fresh_interpreters(
    ex: Executor, program: str
) -> None:
    """Forked tasks must not replay the zygote's generator state."""
    results = [run(ex, program) for _ in range(3)]
    assert all(r.status == Status.OK for r in results), [show(r) for r in results]
    assert len({r.answer for r in results}) == 3, [r.answer for r in results]


def test_datetime_now_gives_the_current_date(ex: Executor) -> None:
    program = "from datetime import datetime\nans = datetime.now().date().isoformat()"
    result = run(ex, program)
    today = datetime.date.today()
    assert result.status is Status.OK, show(result)
    assert result.answer in {today.isoformat(), (today + datetime.timedelta(days=1)).isoformat()}


def test_time_sleep_of_a_tenth_of_a_second_completes(ex: Executor) -> None:
    result = run(ex, "import time\nstarted = time.monotonic()\ntime.sleep(0.1)\nans = 'slept'")
    assert_answer(result, "slept")
    assert result.wall_time_s >= 0.1, show(result)


def test_thread_pool_of_4_gives_the_exact_answer(ex: Executor) -> None:
    program = """
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(4) as pool:
        ans = sum(pool.map(lambda n: n * n, range(1000)))
    """
    assert_answer(run(ex, program), str(sum(n * n for n in range(1000))))


def test_recursion_depth_3000_gives_the_exact_answer(ex: Executor) -> None:
    program = """
    import sys
    sys.setrecursionlimit(5000)

    def depth(n):
        return 0 if n == 0 else 1 + depth(n - 1)

    ans = depth(3000)
    """
    assert_answer(run(ex, program), "3000")


def test_about_a_second_of_cpu_work_gives_the_exact_answer(ex: Executor) -> None:
    program = """
    total = 0
    for i in range(12_000_000):
        total += i % 7
    ans = total
    """
    result = run(ex, program)
    assert_answer(result, str(sum(i % 7 for i in range(12_000_000))))
    assert result.cpu_time_s > 0.2, show(result)


def test_reading_a_stdlib_file_gives_its_exact_length(ex: Executor) -> None:
    program = "import json\nwith open(json.__file__) as f:\n    ans = len(f.read())"
    assert_answer(run(ex, program), str(len(Path(json.__file__).read_text())))


def test_listing_the_empty_working_directory_works(ex: Executor) -> None:
    program = "import os\nans = (os.path.isabs(os.getcwd()), os.listdir('.'))"
    assert_answer(run(ex, program), "(True, [])")


def test_input_raises_eof_error_like_plain_python(ex: Executor) -> None:
    program = "try:\n    input()\nexcept EOFError:\n    ans = 'eof'"
    assert_answer(run(ex, program), "eof")


def test_dunder_name_is_main(ex: Executor) -> None:
    program = "if __name__ == '__main__':\n    ans = 'main'"
    assert_answer(run(ex, program), "main")


def test_lean_zygote_has_loaded_neither_threading_nor_the_server_stack(ex: Executor) -> None:
    """As in a fresh interpreter; threading's after-fork hook alone would cost every task."""
    program = """
    import sys
    ans = sorted(m for m in ("threading", "pyseccomp", "asyncio", "grpc") if m in sys.modules)
    """
    assert_answer(run(ex, program), "[]")


def test_dataclass_defined_in_the_program_works(ex: Executor) -> None:
    program = """
    from dataclasses import dataclass, field

    @dataclass(frozen=True)
    class Item:
        name: str
        price: float
        tags: list = field(default_factory=list)

    cart = [Item("pen", 1.5), Item("book", 12.25, ["paper"])]
    ans = sum(item.price for item in cart)
    """
    assert_answer(run(ex, program), "13.75")


ENDINGS = {
    "thread": """
    import threading, time

    def late():
        time.sleep(0.2)
        print("from the thread")

    threading.Thread(target=late).start()
    print("main done")
    """,
    "timer": "import threading\nthreading.Timer(0.1, print, ['timer fired']).start()",
    "atexit": "import atexit\natexit.register(print, 'at exit')\nprint('main done')",
    "thread_then_atexit": """
    import atexit, threading
    atexit.register(print, 'second')
    threading.Thread(target=print, args=('first',)).start()
    """,
    "after_an_error": "import atexit\natexit.register(print, 'still ran')\n1 / 0",
    "failing_atexit": "import atexit\natexit.register(lambda: 1 / 0)\nprint('main done')",
    "finalizers": """
    import atexit

    class Account:
        def __init__(self, name):
            self.name = name

        def __del__(self):
            print("closing", self.name)

    def report():
        print("at exit")

    atexit.register(report)
    first, second = Account("first"), Account("second")
    """,
    "unfinished_generator": """
    def numbers():
        try:
            yield 1
        finally:
            print("generator closed")

    it = numbers()
    print(next(it))
    """,
}


@pytest.mark.parametrize("ending", list(ENDINGS))
def test_the_program_ends_as_a_script_does_threads_atexit_then_globals(
    ex: Executor, ending: str
) -> None:
    """Plain CPython joins non-daemon threads, runs atexit callbacks, then frees the
    program's globals (their `__del__`, unfinished generators' `finally`); what they all
    print is part of stdout, and of a `stdout` answer."""
    program = textwrap.dedent(ENDINGS[ending])
    plain = subprocess.run(
        [sys.executable, "-I", "-c", program], capture_output=True, text=True, timeout=60
    )
    result = run(ex, program, convention="stdout")
    assert result.stdout == plain.stdout, show(result)
    assert plain.stderr.count("ZeroDivisionError") == result.stderr.count("ZeroDivisionError")


ENDED_BY_AN_EXCEPTION = {
    "nested_calls": """
    def ratio(a, b):
        return a / b

    def solution():
        return ratio(3, 0)

    ans = solution()
    """,
    "chained": """
    try:
        {}["missing"]
    except KeyError as exc:
        raise ValueError("no such item") from exc
    """,
    "during_handling": "try:\n    int('x')\nexcept ValueError:\n    print(undefined)",
    "final_expression": "values = [1, 2]\nvalues[5]",
    "syntax_error": "x = (1,\nans = 2",
    "invalid_syntax": "ans = 1 +* 2",
    "tab_error": "if 1:\n\tx = 1\n        y = 2",
    "infinite_recursion": "def down(n):\n    return down(n + 1)\n\ndown(0)",
    "exit_with_a_message": "import sys\nsys.exit('no solution')",
    "exit_with_a_code": "print('partial')\nraise SystemExit(3)",
    "own_excepthook": """
    import sys

    def hook(kind, value, tb):
        print("hooked", kind.__name__, value, tb.tb_lineno, file=sys.stderr)

    sys.excepthook = hook
    1 / 0
    """,
    "failing_excepthook": """
    import sys

    def hook(kind, value, tb):
        raise RuntimeError("the hook failed")

    sys.excepthook = hook
    1 / 0
    """,
    "excepthook_formatting_the_exception": """
    import sys
    import traceback

    def hook(kind, value, tb):
        print("".join(traceback.format_exception(value)), file=sys.stderr)

    sys.excepthook = hook
    1 / 0
    """,
    "deep_recursion_under_a_raised_limit": """
    import sys

    sys.setrecursionlimit(100_000)

    def down(n):
        return down(n + 1)

    down(0)
    """,
    "traceback_limit": """
    import sys

    sys.tracebacklimit = 2

    def outer():
        middle()

    def middle():
        inner()

    def inner():
        1 / 0

    outer()
    """,
    "no_traceback": "import sys\nsys.tracebacklimit = 0\n1 / 0",
    "no_stderr": "import sys\nsys.stderr = None\n1 / 0",
    "exit_message_without_stderr": "import sys\nsys.stderr = None\nsys.exit('no solution')",
}
"""Programs that end on an exception: tracebacks, syntax errors, SystemExit, own hooks."""


@pytest.mark.parametrize("case", list(ENDED_BY_AN_EXCEPTION))
def test_a_failing_program_prints_what_plain_python_prints(
    ex: Executor, case: str, tmp_path: Path
) -> None:
    """As for a script file: frame for frame, source lines and carets included, the bare
    syntax error, SystemExit's message or nothing; only the file's name differs."""
    program = textwrap.dedent(ENDED_BY_AN_EXCEPTION[case])
    plain = run_as_script(program, tmp_path)
    result = run(ex, program)
    assert result.status in (Status.ERROR, Status.SYNTAX_ERROR), show(result)
    assert plain.returncode != 0, plain
    assert result.stderr == plain.stderr


def test_recursion_goes_exactly_as_deep_as_in_a_script(ex: Executor, tmp_path: Path) -> None:
    """The harness's own frames below the program must not cost it recursion levels."""
    program = textwrap.dedent(
        """
        depth = 0

        def down(n):
            global depth
            depth = n
            down(n + 1)

        try:
            down(1)
        except RecursionError:
            pass
        print(depth)
        """
    )
    plain = run_as_script(program, tmp_path)
    results = [
        run(ex, imports + program, convention="stdout")
        for imports in ("", "import numpy\n", "import sympy\n")
    ]
    assert plain.stdout.strip().isdigit(), plain
    assert [r.stdout for r in results] == [plain.stdout] * 3, [show(r) for r in results]


def test_10_kb_of_output_is_kept_whole(ex: Executor) -> None:
    program = "for i in range(1000):\n    print(f'{i:09d}')"
    result = run(ex, program, convention="stdout")
    expected = "".join(f"{i:09d}\n" for i in range(1000))
    assert_answer(result, "000000999")
    assert result.stdout == expected
    assert not result.truncated


def test_unicode_in_stdout_and_answer_is_exact(ex: Executor) -> None:
    program = "print('数学 🎉 ñ Ω')\nans = '答案 ✅ 42'"
    result = run(ex, program)
    assert_answer(result, "答案 ✅ 42")
    assert result.stdout == "数学 🎉 ñ Ω\n"


def test_printing_a_lone_surrogate_writes_its_byte_as_plain_python_does(ex: Executor) -> None:
    """In the C.UTF-8 locale plain python3 writes stdout with surrogateescape: text decoded
    from undecodable bytes prints back as those bytes instead of failing."""
    program = "print('\\udcff')\nprint('after')"
    plain = subprocess.run(
        [sys.executable, "-I", "-c", program],
        capture_output=True,
        env={"LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"},
        timeout=60,
    )
    result = run(ex, program, convention="stdout")
    assert (plain.returncode, plain.stdout) == (0, b"\xff\nafter\n"), plain
    assert (result.status, result.stdout) == (Status.OK, "\ufffd\nafter\n"), show(result)


AS_IN_A_SCRIPT = {
    "annotations_evaluated": """
    def total(prices: Vector) -> float:
        return sum(prices)

    print(total([1.5, 2.5]))
    """,
    "module_annotations": "x: int = 5\nprint(__annotations__)",
    "stdout_reconfigured": """
    import sys

    sys.stdout.reconfigure(encoding="utf-8")
    sys.stderr.reconfigure(errors="replace")
    print("Total: 42", sys.stdout.seekable(), sys.stdin.seekable())
    """,
    "own_recursion_limit": """
    import sys

    sys.setrecursionlimit(1500)

    def depth(n):
        return 0 if n == 0 else 1 + depth(n - 1)

    print(sys.getrecursionlimit(), depth(1497))
    for n in (1498, 1499):
        try:
            print(depth(n))
        except RecursionError:
            print(n, "too deep")
    """,
    "rebound_os_functions": """
    import builtins
    import os

    os.write = lambda fd, data: 0
    os.close = os._exit = builtins.memoryview = None
    print(3)
    """,
    "main_thread_identity": """
    import threading

    print(threading.get_native_id() == threading.main_thread().native_id)
    """,
    "audit_hook": """
    import atexit
    import sys

    events = []
    sys.addaudithook(lambda event, args: events.append(event))
    atexit.register(lambda: print(events))
    6 * 7
    """,
}
"""Programs whose output, status included, depends on interpreter state a script has."""


@pytest.mark.parametrize("case", list(AS_IN_A_SCRIPT))
def test_interpreter_state_is_a_scripts(ex: Executor, case: str, tmp_path: Path) -> None:
    """No future import of the harness reaches the program, its standard streams are those
    of pipes, its main thread is its own, and an audit hook it adds sees nothing of ours."""
    program = textwrap.dedent(AS_IN_A_SCRIPT[case])
    plain = run_as_script(program, tmp_path, stdin=subprocess.PIPE)
    result = run(ex, program, convention="last_expr" if case == "audit_hook" else "stdout")
    assert (result.stdout, result.stderr) == (plain.stdout, plain.stderr), show(result)
    assert (result.status is Status.OK) == (plain.returncode == 0), show(result)


def test_unicode_last_stdout_line_is_the_answer(ex: Executor) -> None:
    result = run(ex, "print('ignored')\nprint('π ≈ 3.14159 🥧')", convention="stdout")
    assert_answer(result, "π ≈ 3.14159 🥧")


# --------------------------------------------------------------------------- conventions

CONVENTIONS = {
    "stdout": ("print(6 * 7)", "42"),
    "ans": ("ans = 6 * 7", "42"),
    "solution": ("def solution():\n    return 6 * 7", "42"),
    "variable:result": ("result = 6 * 7", "42"),
    "call:solve": ("def solve():\n    return 6 * 7", "42"),
    "last_expr": ("x = 6\nx * 7", "42"),
}


@pytest.mark.parametrize("convention", list(CONVENTIONS))
def test_each_answer_convention_reads_the_answer(ex: Executor, convention: str) -> None:
    program, expected = CONVENTIONS[convention]
    result = run(ex, program, convention=convention)
    assert_answer(result, expected)


@pytest.mark.parametrize("style", ["stdout", "ans", "solution", "last_expr"])
def test_auto_convention_reads_each_default_style(ex: Executor, style: str) -> None:
    program, expected = CONVENTIONS[style]
    assert_answer(run(ex, program), expected)


def test_conventions_run_on_the_same_program_agree(ex: Executor) -> None:
    program = "def solution():\n    return 42\nans = solution()\nprint(ans)\nans"
    answers = {c: run(ex, program, c).answer for c in ("stdout", "ans", "solution", "last_expr")}
    assert set(answers.values()) == {"42"}, answers


def test_answer_number_is_reported_for_a_float_answer(ex: Executor) -> None:
    result = run(ex, "ans = 2.5")
    assert_answer(result, "2.5")
    assert result.answer_number == 2.5


def test_the_interpreter_is_the_configured_python(ex: Executor) -> None:
    program = "import sys\nans = '.'.join(map(str, sys.version_info[:2]))"
    assert_answer(run(ex, program), f"{sys.version_info[0]}.{sys.version_info[1]}")
