"""Answer conventions: how the answer is read from a finished program."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from potsandbox.executor.errors import ConfigError


class Kind(enum.StrEnum):
    """Where the answer comes from."""

    STDOUT = "stdout"
    """Last non-empty line of standard output."""
    VARIABLE = "variable"
    """Value bound to a global name after the run (default `ans`)."""
    CALL = "call"
    """Return value of a global function called with no arguments (default `solution`)."""
    LAST_EXPR = "last_expr"
    """Value of the program's final expression statement."""
    AUTO = "auto"
    """call `solution` if defined, else `ans` if bound, else last expression, else stdout."""


DEFAULT_NAMES = {Kind.VARIABLE: "ans", Kind.CALL: "solution"}

_ALIASES = {"ans": (Kind.VARIABLE, "ans"), "solution": (Kind.CALL, "solution")}


@dataclass(frozen=True, slots=True)
class Convention:
    """A convention and, for `variable`/`call`, the name it reads."""

    kind: Kind = Kind.AUTO
    name: str = ""

    @classmethod
    def parse(cls, text: str | None, name: str | None = None) -> Convention:
        """Read `stdout`, `ans`, `solution`, `variable[:NAME]`, `call[:NAME]`, `last_expr`, `auto`.

        `name` (e.g. the corpus `entrypoint`) overrides the name in `text`.

        Raises:
            ConfigError: unknown convention or a name that is not an identifier.
        """
        text = (text or "").strip() or "auto"
        head, _, given = text.partition(":")
        if head in _ALIASES and not given:
            kind, default = _ALIASES[head]
        else:
            try:
                kind = Kind(head)
            except ValueError:
                known = ", ".join([*(k.value for k in Kind), *_ALIASES])
                raise ConfigError(
                    "convention", f"unknown convention {text!r}; use one of {known}"
                ) from None
            default = DEFAULT_NAMES.get(kind, "")
            if given and kind not in DEFAULT_NAMES:
                raise ConfigError("convention", f"convention: {head!r} takes no name")
        chosen = name or given or default
        if kind in DEFAULT_NAMES and not chosen.isidentifier():
            raise ConfigError("convention", f"convention: name {chosen!r} is not an identifier")
        return cls(kind, chosen if kind in DEFAULT_NAMES else "")

    def __str__(self) -> str:
        return f"{self.kind.value}:{self.name}" if self.name else self.kind.value
