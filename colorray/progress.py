"""Progress lines a person can read in a log (DVC stage output, CI, a terminal): what runs, how
far it is, how long it has taken and about how long is left. One line at most every `every_s`
seconds, so a slow machine is told from a hung one without flooding the log."""

from __future__ import annotations

import time
from typing import Callable


def format_seconds(s: float) -> str:
    """95 -> '1m35s', 4000 -> '1h06m'."""
    s = int(round(max(0.0, s)))
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"


class Progress:
    """`p = Progress("classifier: training", total=epochs * batches, unit="batches")`, then
    `p.update()` per unit of work; prints at the first update, every `every_s` seconds, and at
    the end."""

    def __init__(self, what: str, total: int, unit: str = "", log: Callable[[str], None] = print,
                 every_s: float = 15.0):
        self.what, self.total, self.unit, self.log, self.every_s = what, max(1, total), unit, log, every_s
        self.done = 0
        self.start = time.perf_counter()
        self._last: float | None = None

    def update(self, n: int = 1, note: str = "") -> None:
        self.done += n
        now = time.perf_counter()
        if self._last is not None and now - self._last < self.every_s and self.done < self.total:
            return
        self._last = now
        elapsed = now - self.start
        left = elapsed / self.done * (self.total - self.done) if self.done else 0.0
        eta = f", ~{format_seconds(left)} left" if self.done < self.total else ""
        self.log(f"{self.what}: {self.done}/{self.total}{' ' + self.unit if self.unit else ''} "
                 f"({100 * self.done // self.total}%), {format_seconds(elapsed)}{eta}{'; ' + note if note else ''}")
