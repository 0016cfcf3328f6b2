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

FULL_MODULES = (
    *LEAN_MODULES,
    "numpy", "numpy.linalg", "numpy.polynomial", "numpy.random",
    "mpmath", "sympy", "sympy.solvers", "sympy.simplify", "sympy.integrals",
    "sympy.series", "sympy.matrices", "sympy.geometry", "sympy.ntheory",
    "sympy.combinatorics", "sympy.stats", "sympy.physics.units", "sympy.parsing.sympy_parser",
)  # fmt: skip
"""Plus numpy, mpmath and sympy with the submodules that programs pull in lazily."""

WARM_UP = """
import math, fractions, statistics
import numpy as np
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
a = np.array([[3.0, 1.0], [1.0, 2.0]])
np.linalg.solve(a, np.array([9.0, 8.0]))
np.linalg.eigvals(a)
np.roots([1, -3, 2])
np.polyfit([0, 1, 2], [1, 3, 5], 1)
np.mean([1, 2, 3]), np.std([1, 2, 3]), np.median([1, 2, 3])
statistics.mean([1, 2, 3])
float(fractions.Fraction(3, 4))
"""


def preload(full: bool) -> None:
    """Import and warm the shared modules."""
    for name in FULL_MODULES if full else LEAN_MODULES:
        importlib.import_module(name)
    if full:
        exec(compile(WARM_UP, "<warm-up>", "exec"), {"__name__": "__warmup__"})


def freeze() -> None:
    """Move every live object out of the collector's reach, so tasks don't touch them."""
    gc.collect()
    gc.freeze()
