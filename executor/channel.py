"""Length-prefixed marshal frames between the pool and its zygotes (both trusted)."""

from __future__ import annotations

import marshal
from typing import Any

from potsandbox.executor.limits import OUTPUT_BYTES_CEILING, largest_result_bytes

MAX_FRAME = largest_result_bytes(OUTPUT_BYTES_CEILING)
"""As large as the largest verdict, which carries a task's whole stdout and stderr as text
(up to three times their bytes): a smaller bound refused a hostile task's verdict, and
the pool took the refusal for its zygote's death."""

CONTAINED = b"R"
"""First byte a task writes on its result channel, once contained and before its program
runs: what follows comes from untrusted code; a channel without it can only carry a
containment failure."""


def encode(message: dict[str, Any]) -> bytes:
    """One frame: 4-byte big-endian length, then the marshalled dict."""
    data = marshal.dumps(message)
    return len(data).to_bytes(4, "big") + data


def decode(payload: bytes) -> dict[str, Any]:
    """Inverse of `encode` without the length prefix."""
    message = marshal.loads(payload)
    if not isinstance(message, dict):
        raise ValueError("frame is not a dict")
    return message


class FrameReader:
    """Reassembles frames from a byte stream that arrives in arbitrary pieces."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        """Add bytes; return every frame now complete."""
        self._buf += data
        frames = []
        while len(self._buf) >= 4:
            size = int.from_bytes(self._buf[:4], "big")
            if size > MAX_FRAME:
                raise ValueError(f"frame of {size} bytes exceeds {MAX_FRAME}")
            if len(self._buf) < 4 + size:
                break
            frames.append(decode(bytes(self._buf[4 : 4 + size])))
            del self._buf[: 4 + size]
        return frames
