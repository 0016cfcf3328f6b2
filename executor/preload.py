"""What a zygote imports and warms before it starts forking tasks.

Anything imported here is shared copy-on-write by every task, so a program that
imports it pays nothing. Warm-up programs pull in the lazily imported submodules
and fill sympy's caches once, instead of in every task.
"""

from __future__ import annotations

import gc
import importlib

LEAN_MODULES = (
    "math", "cmath", "fractions", "decimal", "statistics", "itertools", "functools",
    "collections", "datetime", "re", "random", "string", "operator", "heapq", "bisect",
    "copy", "json", "traceback", "linecache", "ast",
)  # fmt: skip
"""The standard-library modules PoT programs use; the lean zygote stops here."""

NUMPY_MODULES = (*LEAN_MODULES, "numpy", "numpy.linalg", "numpy.polynomial")
"""Plus numpy, for the many programs that import nothing heavier (907 of the corpus's 961
GSM8K programs that need more than the standard library). Not numpy.random: it imports
threading, whose after-fork hook every task of the zygote would pay; it loads on first use."""

FULL_MODULES = (
    *NUMPY_MODULES,
    "numpy.random", "mpmath", "sympy", "sympy.solvers", "sympy.simplify", "sympy.integrals",
    "sympy.series", "sympy.matrices", "sympy.geometry", "sympy.ntheory",
    "sympy.combinatorics", "sympy.stats", "sympy.physics.units", "sympy.parsing.sympy_parser",
)  # fmt: skip
"""Plus numpy, mpmath and sympy with the submodules that programs pull in lazily."""

FLAVORS = {"lean": LEAN_MODULES, "numpy": NUMPY_MODULES, "full": FULL_MODULES}
"""Zygote flavours, smallest first; each preloads everything the one before it does."""

NUMPY_WARM_UP = """
import numpy as np
a = np.array([[3.0, 1.0], [1.0, 2.0]])
np.linalg.solve(a, np.array([9.0, 8.0]))
np.linalg.eigvals(a)
np.roots([1, -3, 2])
np.polyfit([0, 1, 2], [1, 3, 5], 1)
np.mean([1, 2, 3]), np.std([1, 2, 3]), np.median([1, 2, 3])
np.round(np.float64(2.675), 2), np.floor(2.5), np.ceil(2.5), np.sqrt(2.0)
str(np.float64(0.1) * 3), repr(np.int64(7)), float(np.sum(np.arange(10)))
"""

SYMPY_WARM_UP = """
import math, fractions, statistics
import sympy
from sympy import symbols, solve, simplify, factor, expand, Eq, Rational, sqrt, nsimplify
x, y = symbols('x y')
solve(Eq(2*x + 3, 7), x)
solve([x + y - 10, x - y - 2], [x, y])
simplify((x**2 - 1) / (x - 1))
factor(x**3 - x)
expand((x + 1)**5)
sympy.integrate(x**2, (x, 0, 1))
sympy.diff(sympy.sin(x) * x, x)
sympy.limit(sympy.sin(x) / x, x, 0)
sympy.Matrix([[1, 2], [3, 4]]).det()
sympy.N(sympy.pi, 20)
nsimplify(0.75)
sympy.binomial(10, 3)
sympy.isprime(97)
sympy.factorint(360)
str(Rational(3, 4) + sqrt(2))
statistics.mean([1, 2, 3])
float(fractions.Fraction(3, 4))
"""

WARM_UPS = {"lean": (), "numpy": (NUMPY_WARM_UP,), "full": (NUMPY_WARM_UP, SYMPY_WARM_UP)}
"""What each flavour runs once after importing, to fill caches the tasks then share."""


def preload(flavor: str) -> None:
    """Import and warm the shared modules of a flavour (a key of `FLAVORS`)."""
    for name in FLAVORS[flavor]:
        importlib.import_module(name)
    for warm_up in WARM_UPS[flavor]:
        exec(compile(warm_up, "<warm-up>", "exec"), {"__name__": "__warmup__"})


def freeze() -> None:
    """Move every live object out of the collector's reach, so tasks don't touch them."""
    gc.collect()
    gc.freeze()
