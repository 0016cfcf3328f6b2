"""Run one program inside the (already contained) task process and report its answer.

Everything here executes after the program's first instruction and is therefore
untrusted: the parent treats the frame it writes as the program's claim about its
answer and error, and decides the status itself from kernel facts.
"""

from __future__ import annotations

import ast
import atexit
import builtins
import contextlib
import ctypes
import gc
import io
import linecache
import mmap
import os
import sys
import traceback
import types
from _json import encode_basestring_ascii, make_encoder
from collections.abc import Callable
from typing import Any

from potsandbox.executor.conventions import Kind
from potsandbox.executor.render import MAX_MESSAGE_CHARS, MAX_NAME_CHARS, as_number, plain, render
from potsandbox.executor.verdict import POLICY_ERRNOS

PROGRAM_FILE = "<program>"
PRELUDE_FILE = "<prelude>"

_MISSING: Any = object()


def _unencodable(value: object) -> None:
    raise TypeError(f"{type(value).__name__} in a result frame")


_encode_frame = make_encoder(
    None, _unencodable, encode_basestring_ascii, None, ": ", ", ", False, False, True
)
"""json.dumps's own C encoder, built once in the zygote: one C call per task, where
json.dumps runs four Python functions whose first calls each copy pages (60 against 20
microseconds in a fresh child), and untouched by a program that rebinds `json.dumps`."""


_run_exitfuncs, _collect = atexit._run_exitfuncs, gc.collect
"""The interpreter's own finalization steps, bound before any program: one that rebinds
`gc.collect` changes its own calls, not how it ends."""

_write, _close, _memoryview, _len = os.write, os.close, memoryview, len
"""What reporting and ending need, bound before any program for the same reason: a
program that rebound `os.write` to a no-op kept the report spinning until its deadline."""

_gettrace, _settrace, _getprofile, _setprofile = (
    sys.gettrace,
    sys.settrace,
    sys.getprofile,
    sys.setprofile,
)
_held_hooks: list[Any] = [None, None]
"""The trace and profile functions the program left set, held while the harness's own
code runs and given back for the end of the script (`shut_down`): plain CPython runs no
Python of its own between the two, so a trace function must see none of ours, nor where
we are installed. Taken and given back inline, by C calls only: a call of a function of
ours would itself be traced (a profile function still sees `setprofile` as a `c_call`)."""


MEMORY_FRAME: dict[str, Any] = {
    "kind": "error",
    "type": "MemoryError",
    "message": "",
    "line": None,
    "memory": True,
}
"""Built before the program runs: reporting must not need memory the program exhausted.
`memory` marks the interpreter's own MemoryError (or a subclass, as numpy's), not a class
of the program that happens to share its name."""

RESERVE_BYTES = 1 << 20
"""Address space held back (an untouched anonymous mapping: no page is copied) and given
back so the report of an out-of-memory death can still allocate under RLIMIT_AS."""


def run(program: str, prelude: str, kind: Kind, name: str) -> dict[str, Any]:
    """Execute prelude then program in one fresh `__main__` namespace; return the frame."""
    reserve = mmap.mmap(-1, RESERVE_BYTES, flags=mmap.MAP_PRIVATE)
    try:
        return _run(program, prelude, kind, name, reserve)
    except MemoryError as exc:  # outside the program's run: the compiler's, say
        reserve.close()
        _print_uncaught(exc)
        return MEMORY_FRAME


def _run(program: str, prelude: str, kind: Kind, name: str, reserve: mmap.mmap) -> dict[str, Any]:
    _register_source(PROGRAM_FILE, program)
    _register_source(PRELUDE_FILE, prelude)
    try:
        prelude_code = _compile(prelude, PRELUDE_FILE, "exec") if prelude else None
        body, last_expr = _compile_program(program, kind)
    except (SyntaxError, ValueError) as exc:
        _print_uncaught(exc)
        return _syntax_frame(exc)
    except RecursionError as exc:  # nesting too deep for the compiler: the script fails
        _print_uncaught(exc)
        return _error_frame(exc)
    namespace = _fresh_main()
    # A function, made before the program can add an audit hook: calling it raises no
    # audit event, where eval() raises "exec", which a script's last line never does.
    final = types.FunctionType(last_expr, namespace) if last_expr is not None else None
    _after_clone()
    _match_script_recursion_depth()
    try:
        try:
            if prelude_code is not None:
                exec(prelude_code, namespace)
            exec(body, namespace)
            last_value = final() if final is not None else _MISSING
        except SystemExit as exc:
            if exc.code not in (None, 0):
                raise
            last_value = _MISSING
        finally:
            _held_hooks[:] = (_gettrace(), _getprofile())
            if _held_hooks[0] is not None:  # each call is an audit event
                _settrace(None)
            if _held_hooks[1] is not None:
                _setprofile(None)
        return _answer_frame(kind, name, namespace, last_value)
    except MemoryError as exc:
        reserve.close()
        line = _program_line(exc.__traceback__)
        namespace.clear()  # drop the program's objects so the report itself can allocate
        _print_uncaught(exc)
        exc.__traceback__ = None
        return MEMORY_FRAME | {"message": _safe_str(exc), "line": line}
    except BaseException as exc:  # the program's own failure is a result, not our fault
        _print_uncaught(exc)
        return _error_frame(exc)
    finally:
        _flush_streams()


WARM_UP_PROGRAMS = (
    ("def solution():\n    return sum(i * i for i in range(10)) / 7", Kind.AUTO),
    ("def solution():\n    return 6 * 7", Kind.CALL),
    ("values = [1, 2.5, 'three']\nans = {'values': values, 'n': len(values)}", Kind.VARIABLE),
    ("from fractions import Fraction\nFraction(6, 7) * 7", Kind.LAST_EXPR),
    ("x = 6 * 7", Kind.STDOUT),
    ("def f(n):\n    return 1 / n\n\nans = f(0)", Kind.AUTO),
    ("ans = (", Kind.AUTO),
)
"""The task path's branches: every convention, containers, an error, a syntax error."""

WARM_UP_ROUNDS = 8
"""CPython 3.11 quickens a function's bytecode after 8 calls, writing to its code object."""


def warm_up() -> None:
    """Run the task path in the zygote before its heap is frozen and shared.

    A function's first calls write to its code object (a warm-up counter, then the
    quickened bytecode); taken here once, those writes are not copy-on-write faults in
    every task (about 40 of the 250 a light program's run and report cost). Only these
    fixed programs run; the zygote's `__main__` is restored and their stderr dropped.
    """
    main = sys.modules["__main__"]
    remaining = _RECURSION_REMAINING.value if _RECURSION_REMAINING is not None else 0
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            for _ in range(WARM_UP_ROUNDS):
                for program, kind in WARM_UP_PROGRAMS:
                    frame = run(program, "", kind, "solution" if kind is Kind.CALL else "ans")
                    read_end, write_end = os.pipe()
                    write_frame(write_end, frame)
                    os.close(read_end)
    finally:
        sys.modules["__main__"] = main
        sys.setrecursionlimit(SCRIPT_RECURSION_LIMIT)
        if _RECURSION_REMAINING is not None:
            _RECURSION_REMAINING.value = remaining
        linecache.cache.pop(PROGRAM_FILE, None)
        linecache.cache.pop(PRELUDE_FILE, None)


def stdio_as_pipes() -> None:
    """Rebuild sys.stdin, stdout and stderr, in the zygote, as the interpreter builds them
    for pipes, which a task's descriptors 0-2 are.

    Built on the zygote's own /dev/null, they took themselves for seekable, and
    `sys.stdout.reconfigure(encoding=...)` then asked a task's pipe for its position and
    failed (ESPIPE) where a script's succeeds. Everything else is copied from the old ones.
    """
    read_end, write_end = os.pipe()
    saved = [os.dup(fd) for fd in (0, 1, 2)]
    try:
        for fd in (0, 1, 2):
            os.dup2(read_end if fd == 0 else write_end, fd)
        streams = [_rebuilt(stream, fd) for fd, stream in enumerate(_stdio())]
    finally:
        for fd, copy in enumerate(saved):
            os.dup2(copy, fd)
            os.close(copy)
        os.close(read_end)
        os.close(write_end)
    for name, stream in zip(("stdin", "stdout", "stderr"), streams, strict=True):
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)


def _stdio() -> tuple[io.TextIOWrapper, io.TextIOWrapper, io.TextIOWrapper]:
    streams = (sys.__stdin__, sys.__stdout__, sys.__stderr__)
    if not all(isinstance(stream, io.TextIOWrapper) for stream in streams):
        raise RuntimeError("the zygote started without descriptors 0-2")
    return streams  # type: ignore[return-value]


def _rebuilt(old: io.TextIOWrapper, fd: int) -> io.TextIOWrapper:
    """What the interpreter's create_stdio() makes of `fd` with `old`'s settings."""
    old.flush()
    binary = open(fd, "rb" if fd == 0 else "wb", closefd=False)  # noqa: SIM115
    binary.raw.name = old.buffer.raw.name  # type: ignore[attr-defined]
    stream = io.TextIOWrapper(
        binary,
        encoding=old.encoding,
        errors=old.errors,
        newline="\n",
        line_buffering=old.line_buffering,
        write_through=old.write_through,
    )
    stream.mode = old.mode  # type: ignore[misc]
    return stream


def shut_down() -> None:
    """End as a script ends under plain CPython, after the answer has been reported.

    The interpreter waits for non-daemon threads, runs atexit callbacks, then drops
    `__main__` and collects it, which runs the `__del__` of the program's objects and
    the `finally` of its unfinished generators; what all of these print is part of the
    program's output. A thread that never ends keeps the task alive until its deadline,
    as it would keep the reference interpreter. Daemon threads are abandoned, as there.
    Their exceptions are printed, never raised. The program's trace and profile functions
    are back on for its callbacks and finalizers, and off again for our last flush.
    """
    try:
        threading = sys.modules.get("threading")  # loaded by the zygote as often as not
        if threading is not None:
            threading._shutdown()
        if _held_hooks[0] is not None:
            _settrace(_held_hooks[0])
        if _held_hooks[1] is not None:
            _setprofile(_held_hooks[1])
        _run_exitfuncs()
        sys.modules.pop("__main__", None)
        _collect()  # the program's functions hold its globals in a cycle
    except BaseException as exc:
        with contextlib.suppress(BaseException):  # e.g. no memory left to print it
            traceback.print_exception(exc)
    finally:
        if _gettrace() is not None:
            _settrace(None)
        if _getprofile() is not None:
            _setprofile(None)
        _flush_streams()


def write_frame(fd: int, frame: dict[str, Any]) -> None:
    """Send the frame to the parent and close the channel before the slow exit.

    JSON, not marshal: the parent decodes what a hostile program may have written in
    its place, and a few marshal bytes can make the decoder allocate gigabytes."""
    data = "".join(_encode_frame(frame, 0)).encode()
    view = _memoryview(_len(data).to_bytes(4, "big") + data)
    while view:
        written = _write(fd, view)
        view = view[written:]
    _close(fd)


def _compile_program(program: str, kind: Kind) -> tuple[types.CodeType, types.CodeType | None]:
    """Compile as plain CPython would; split off a final expression when it may be the answer."""
    if kind not in (Kind.LAST_EXPR, Kind.AUTO):
        return _compile(program, PROGRAM_FILE, "exec"), None
    try:
        tree = _compile(program, PROGRAM_FILE, "exec", ast.PyCF_ONLY_AST)
    except RecursionError:  # too deep for ast's objects: the compiler's own verdict, unchained
        tree = None
    if tree is None:
        return _compile(program, PROGRAM_FILE, "exec"), None
    final = tree.body[-1] if tree.body else None
    if not isinstance(final, ast.Expr):
        return _compile(tree, PROGRAM_FILE, "exec"), None
    tree.body.pop()
    last = ast.Expression(final.value)
    return _compile(tree, PROGRAM_FILE, "exec"), _compile(last, PROGRAM_FILE, "eval")


def _compile(source: Any, filename: str, mode: str, flags: int = 0) -> Any:
    """compile() without this module's `from __future__` imports: inherited, they turned
    every program's annotations into strings (an undefined name in one raised nothing)."""
    return compile(source, filename, mode, flags, dont_inherit=True)


def _after_clone() -> None:
    """What a fresh interpreter has of its own that a clone shares with the zygote.

    Task processes are raw clones (spares.py), so no at-fork hook runs in them: `random`,
    numpy's legacy global generator and sympy's own (which have no hook) are reseeded
    from the OS, and the main thread takes the task's thread id, as `threading`'s hook
    would give it.
    """
    for name in ("random", "numpy.random", "sympy.core.random"):
        module = sys.modules.get(name)
        if module is not None:
            module.seed()
    threading = sys.modules.get("threading")
    if threading is not None:  # the main thread's id is the task's, not the zygote's
        threading.main_thread()._set_native_id()


SCRIPT_RECURSION_LIMIT = sys.getrecursionlimit()
"""The interpreter's default, which a script's first frame starts under."""

_REMAINING_OFFSET, _LIMIT_OFFSET = 32, 36
"""Where CPython 3.11's PyThreadState keeps recursion_remaining and recursion_limit."""


def _recursion_counter() -> ctypes.c_int | None:
    """This thread's recursion_remaining, the counter behind the recursion depth, where
    the interpreter's layout is the one known (checked: the limit beside it, and one level
    fewer a call deeper); None elsewhere."""
    if sys.implementation.name != "cpython" or sys.version_info[:2] != (3, 11):
        return None
    thread_state = ctypes.pythonapi.PyThreadState_Get
    thread_state.restype = ctypes.c_void_p
    address = thread_state()
    remaining = ctypes.c_int.from_address(address + _REMAINING_OFFSET)
    limit = ctypes.c_int.from_address(address + _LIMIT_OFFSET)
    outer = remaining.value
    inner = (lambda: remaining.value)()  # read one call deeper
    known = limit.value == SCRIPT_RECURSION_LIMIT and outer - inner == 1
    return remaining if known else None


_RECURSION_REMAINING = _recursion_counter()
"""The main thread's counter: a task is a clone, with the zygote's main thread state."""


def _match_script_recursion_depth() -> None:
    """Give the program the recursion depth a script has: the levels the harness's frames
    below it use (12 frames in a task, and one more for `exec` entering the evaluation loop
    afresh) are taken off the depth the interpreter counts, or RecursionError would come
    13 calls early, its traceback would count 13 repeats fewer, and a limit the program
    sets would be 13 levels short. `sys.getrecursionlimit()` reads as in a script. Where
    the counter is unknown, the limit is raised by those levels instead."""
    frame: types.FrameType | None = sys._getframe(1)
    below = 1  # exec's new entry into the evaluation loop
    while frame is not None:
        below += 1
        frame = frame.f_back
    if _RECURSION_REMAINING is None:
        sys.setrecursionlimit(SCRIPT_RECURSION_LIMIT + below)
    else:
        _RECURSION_REMAINING.value += below


def _fresh_main() -> dict[str, Any]:
    module = types.ModuleType("__main__")
    module.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = module
    return module.__dict__


def _answer_frame(kind: Kind, name: str, namespace: dict[str, Any], last: Any) -> dict[str, Any]:
    reader = _READERS[kind]
    source, value = reader(name, namespace, last)
    if source == "stdout":
        return {"kind": "stdout", "convention": "stdout"}
    if value is _MISSING:
        return {"kind": "no_answer", "convention": source}
    return {
        "kind": "answer",
        "convention": source,
        "answer": render(value),
        "number": as_number(value),
    }


def _read_variable(name: str, namespace: dict[str, Any], last: Any) -> tuple[str, Any]:
    return f"variable:{name}", namespace.get(name, _MISSING)


def _read_call(name: str, namespace: dict[str, Any], last: Any) -> tuple[str, Any]:
    function = namespace.get(name, _MISSING)
    if function is _MISSING:
        return f"call:{name}", _MISSING
    return f"call:{name}", function()


def _read_last_expr(name: str, namespace: dict[str, Any], last: Any) -> tuple[str, Any]:
    return "last_expr", last


def _read_stdout(name: str, namespace: dict[str, Any], last: Any) -> tuple[str, Any]:
    return "stdout", _MISSING


def _read_auto(name: str, namespace: dict[str, Any], last: Any) -> tuple[str, Any]:
    if callable(namespace.get("solution")):
        return _read_call("solution", namespace, last)
    if "ans" in namespace:
        return _read_variable("ans", namespace, last)
    if last is not _MISSING and last is not None:  # a final print(...) is not an answer
        return "last_expr", last
    return "stdout", _MISSING


_READERS: dict[Kind, Callable[[str, dict[str, Any], Any], tuple[str, Any]]] = {
    Kind.VARIABLE: _read_variable,
    Kind.CALL: _read_call,
    Kind.LAST_EXPR: _read_last_expr,
    Kind.STDOUT: _read_stdout,
    Kind.AUTO: _read_auto,
}


def _error_frame(exc: BaseException) -> dict[str, Any]:
    frame: dict[str, Any] = {
        "kind": "error",
        "type": _type_name(exc),
        "message": _safe_str(exc),
        "line": _program_line(exc.__traceback__),
    }
    # A program may set any object as `errno`: only a true int is compared, and reported.
    if isinstance(exc, OSError) and type(exc.errno) is int and exc.errno in POLICY_ERRNOS:
        frame["errno"] = exc.errno
    return frame


def _syntax_frame(exc: SyntaxError | ValueError) -> dict[str, Any]:
    in_program = isinstance(exc, SyntaxError) and exc.filename == PROGRAM_FILE
    return {
        "kind": "syntax_error",
        "type": _type_name(exc),
        "message": _safe_str(exc),
        "line": exc.lineno if in_program and isinstance(exc, SyntaxError) else None,
    }


def _print_uncaught(exc: BaseException) -> None:
    """Print what the interpreter prints when the exception ends a script.

    SystemExit prints no traceback, only a code that is not an int. Any other goes to the
    program's own sys.excepthook if it set one, else prints its traceback from the
    program's first frame on, never the harness's frames, which would tell the program's
    author where we are installed: a syntax error in the program itself has none of the
    program's, so it prints bare, as the interpreter prints it.
    """
    stderr = getattr(sys, "stderr", None)
    if isinstance(exc, SystemExit):
        if not isinstance(exc.code, int):
            with contextlib.suppress(Exception):  # a hostile __str__ changes nothing here
                if stderr is None:  # the interpreter then writes to descriptor 2 itself
                    os.write(2, f"{exc.code}\n".encode(errors="backslashreplace"))
                else:
                    print(exc.code, file=stderr)
        return
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename not in (PROGRAM_FILE, PRELUDE_FILE):
        tb = tb.tb_next
    exc.__traceback__ = tb  # what a hook or a program's finalizer may read of it
    hook = getattr(sys, "excepthook", None)
    # A hostile message (its __len__, say) ends it early; so does memory still exhausted.
    with contextlib.suppress(Exception):
        if hook is None or hook is sys.__excepthook__:
            if stderr is not None:  # without sys.stderr the interpreter prints nothing
                _print_traceback(exc, tb)
        else:
            _call_excepthook(hook, exc, tb)


TRACEBACK_LIMIT = 1000
"""The entries the interpreter prints of a traceback when `sys.tracebacklimit` is unset."""


def _print_traceback(exc: BaseException, tb: types.TracebackType | None) -> None:
    """Print as the interpreter's own printer does: only the innermost entries of each
    traceback, where `traceback` prints all of them, from the outermost on, formatting
    each: a million-deep RecursionError took it seconds, and so the task its timeout."""
    limit = getattr(sys, "tracebacklimit", TRACEBACK_LIMIT)
    limit = min(max(limit, 0), sys.maxsize) if isinstance(limit, int) else TRACEBACK_LIMIT
    traceback.print_exception(type(exc), exc, _innermost(tb, limit), limit=-limit)


def _innermost(tb: types.TracebackType | None, limit: int) -> types.TracebackType | None:
    """The last `limit` entries of a traceback, found by following its links only:
    `traceback` reads every entry's code positions on its way to the last ones."""
    depth, entry = 0, tb
    while entry is not None:
        depth, entry = depth + 1, entry.tb_next
    for _ in range(depth - limit):
        tb = tb.tb_next if tb is not None else None
    return tb


def _call_excepthook(
    hook: Callable[..., object], exc: BaseException, tb: types.TracebackType | None
) -> None:
    """The program's own sys.excepthook, called as the interpreter calls it; when the hook
    itself fails, both tracebacks, as the interpreter prints them."""
    try:
        hook(type(exc), exc, tb)
    except Exception as failure:
        if failure.__context__ is exc:  # the interpreter calls the hook outside any handler
            failure.__context__ = None
        print("Error in sys.excepthook:", file=sys.stderr)
        hook_tb = failure.__traceback__.tb_next if failure.__traceback__ else None
        _print_traceback(failure, hook_tb)
        print("\nOriginal exception was:", file=sys.stderr)
        _print_traceback(exc, tb)


def _program_line(tb: types.TracebackType | None) -> int | None:
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == PROGRAM_FILE:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _type_name(exc: BaseException) -> str:
    """The exception's class name, cut: a program can name a class with megabytes, and an
    uncut name would push the report past the result pipe's cap, hiding the error."""
    return plain(type(exc).__name__)[:MAX_NAME_CHARS]


def _safe_str(exc: BaseException) -> str:
    try:
        return plain(str(exc))[:MAX_MESSAGE_CHARS]
    except Exception:  # a hostile __str__ must not hide the error itself
        return f"<unprintable {_type_name(exc)}>"


def _register_source(filename: str, source: str) -> None:
    """Let tracebacks on stderr show the program's lines, as they would from a file.

    linecache ends a file's last line with a newline; traceback counts it when it places
    the carets, so an entry without it would shift them by one column on that line."""
    lines = source.splitlines(True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    linecache.cache[filename] = (len(source), None, lines, filename)


def _flush_streams() -> None:
    for name in ("stdout", "stderr"):
        with contextlib.suppress(Exception):  # the program may have closed, replaced or
            getattr(sys, name).flush()  # deleted them (plain CPython then ends quietly)
