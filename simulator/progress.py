"""A one-line progress bar for the terminal (plain lines when not a terminal)."""

from __future__ import annotations

import time
from typing import TextIO

WIDTH = 30
REDRAW_S = 0.2


class ProgressBar:
    """Counts work done and redraws a bar with the rate, at most every 0.2 s."""

    def __init__(self, label: str, *, out: TextIO, total: int | None = None) -> None:
        self.label = label
        self.out = out
        self.total = total
        self.count = 0
        self.started = time.perf_counter()
        self._drawn = 0.0
        self._tty = out.isatty()

    def add(self, n: int = 1) -> None:
        """Count ``n`` more done."""
        self.count += n
        now = time.perf_counter()
        if self._tty and now - self._drawn >= REDRAW_S:
            self._drawn = now
            self.out.write("\r" + self._line(now))
            self.out.flush()

    def _line(self, now: float) -> str:
        rate = self.count / max(now - self.started, 1e-9)
        if self.total:
            filled = int(WIDTH * min(1.0, self.count / self.total))
            bar = "#" * filled + "-" * (WIDTH - filled)
            return f"{self.label} [{bar}] {self.count}/{self.total} {rate:.1f}/s"
        spinner = "#" * (self.count // 25 % WIDTH + 1)
        return f"{self.label} [{spinner:<{WIDTH}}] {self.count} completions {rate:.1f}/s"

    def done(self, summary: str) -> None:
        """End the bar's line with a summary."""
        elapsed = time.perf_counter() - self.started
        prefix = "\r" if self._tty else ""
        self.out.write(f"{prefix}{self.label}: {summary} in {elapsed:.1f} s{' ' * 20}\n")
        self.out.flush()
