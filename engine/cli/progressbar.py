"""A text progress bar on stderr for CLI commands (an engine progress callback)."""
from __future__ import annotations

import sys
import time


class TextProgress:
    """Callable ``progress(stage, done, total)`` that draws one updating line on stderr."""

    def __init__(self, stream=None, min_interval: float = 0.2) -> None:
        self.stream = stream or sys.stderr
        self.min_interval = min_interval
        self._last = 0.0
        self._stage = None
        self._t0 = time.monotonic()

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if stage != self._stage:
            if self._stage is not None:
                self.stream.write("\n")
            self._stage, self._t0 = stage, now
        elif now - self._last < self.min_interval and done < total:
            return
        self._last = now
        if total > 0:
            frac = min(1.0, done / total)
            bar = "#" * int(30 * frac) + "-" * (30 - int(30 * frac))
            eta = ""
            if 0 < frac < 1:
                eta = f" ~{(now - self._t0) * (1 - frac) / frac:.0f}s left"
            self.stream.write(f"\r{stage:<28} [{bar}] {done}/{total}{eta}   ")
        else:
            self.stream.write(f"\r{stage:<28} ...")
        self.stream.flush()

    def close(self) -> None:
        if self._stage is not None:
            self.stream.write("\n")
            self.stream.flush()
