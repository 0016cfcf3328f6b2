"""Render an answer value as text, the way shared/corpus records `observed`.

Runs inside the task process, after the program: it must not import anything
new (numpy/sympy types are recognised by module name, not by import).
"""

from __future__ import annotations

from typing import Any

MAX_ANSWER_CHARS = 2000
"""Longer renderings are cut, as the reference run's `observed` was."""

MAX_MESSAGE_CHARS = 4096
"""Error messages are cut here, by the task and again by the parent."""

MAX_NAME_CHARS = 200
"""An exception type or convention name longer than this is cut, by the task and the parent."""

FLOAT_OVERFLOW = 2**1024
"""Integers beyond float range were recorded as "<int too large>" by the reference run."""

MAX_ARRAY_ITEMS = 10_000
"""numpy arrays up to this size render as lists, larger ones with str()."""


def render(value: Any) -> str:
    """int → str, float → repr, containers item by item, everything else → str."""
    return plain(_render(value, depth=0))[:MAX_ANSWER_CHARS]


def plain(text: str) -> str:
    """`text` as an exact str, copied by C code: the program's `__str__` may return a str
    subclass whose own slicing or length would run the program's code inside the report."""
    return str.__str__(text)


def as_number(value: Any) -> float | None:
    """The value as a float when it is a real number (not bool), else None."""
    value = _python_scalar(value)
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return _float(value)
    if _module_root(value) == "sympy" and getattr(value, "is_number", False):
        if getattr(value, "is_real", False) is not True:
            return None
        try:
            return _float(float(value))
        except (TypeError, ValueError, OverflowError):
            return None
    return None


def _float(value: int | float) -> float | None:
    try:
        return float(value)
    except OverflowError:
        return None


def _render(value: Any, depth: int) -> str:
    if depth > 50:
        return "..."
    value = _python_scalar(value)
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int) and abs(value) >= FLOAT_OVERFLOW:
        return "<int too large>"
    if isinstance(value, list | set | frozenset):
        return "[" + ", ".join(_render(item, depth + 1) for item in value) + "]"
    if isinstance(value, tuple):
        return "(" + ", ".join(_render(item, depth + 1) for item in value) + ")"
    if _is_small_ndarray(value):
        return _render(value.tolist(), depth + 1)
    return str(value)


def _python_scalar(value: Any) -> Any:
    """numpy scalars become their Python value; everything else is unchanged."""
    if _module_root(value) == "numpy" and hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        try:
            return value.item()
        except (TypeError, ValueError):
            return value
    return value


def _is_small_ndarray(value: Any) -> bool:
    return (
        _module_root(value) == "numpy"
        and type(value).__name__ == "ndarray"
        and getattr(value, "size", MAX_ARRAY_ITEMS + 1) <= MAX_ARRAY_ITEMS
    )


def _module_root(value: Any) -> str:
    return (type(value).__module__ or "").partition(".")[0]
