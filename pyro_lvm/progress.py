"""Progress bars that suit where they are written: tqdm's bar on a terminal; elsewhere (a log file, a pipe, CI) a
plain line every ``LINE_EVERY`` of the way, instead of tqdm's carriage-return updates, which a file keeps as one
ever-growing line."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm  # plain text bars: tqdm.auto would want ipywidgets in notebooks

LINE_EVERY = 0.05  # a line per 5% of the total


class Lines:
    """The subset of tqdm's interface the library uses, printing '<desc>: n/total (p%) 12.3 unit/s, k=v' lines."""

    def __init__(self, total: int, initial: int = 0, desc: str = "", unit: str = "it", file=None) -> None:
        self.total, self.n, self.desc, self.unit = total, initial, desc, unit
        self.file = file or sys.stderr
        self.every = max(1, int(total * LINE_EVERY))
        self.postfix = ""
        self._t0, self._n0 = time.perf_counter(), initial

    def update(self, n: int = 1) -> None:
        before, self.n = self.n, self.n + n
        if self.n // self.every != before // self.every or self.n == self.total:
            rate = (self.n - self._n0) / max(time.perf_counter() - self._t0, 1e-9)
            line = f"{self.desc}: {self.n}/{self.total} ({100 * self.n / self.total:.0f}%) {rate:.1f} {self.unit}/s"
            print(line + (f", {self.postfix}" if self.postfix else ""), file=self.file, flush=True)

    def set_postfix(self, **values: object) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        pass


class _Off(Lines):
    def update(self, n: int = 1) -> None:
        self.n += n


def bar(total: int, initial: int = 0, desc: str = "", unit: str = "it", enabled: bool = True, file=None):
    """tqdm on a terminal, ``Lines`` elsewhere, nothing when not ``enabled``."""
    out = file or sys.stderr
    if not enabled:
        return _Off(total, initial, desc, unit, out)
    if getattr(out, "isatty", lambda: False)():
        return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, file=out)
    return Lines(total, initial, desc, unit, out)
