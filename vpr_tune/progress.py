"""Progress of long work (street-world generation, image-cache builds) as a callback.

The library calls ``progress(done, total)`` with increasing ``done``; the CLI renders a
rich progress bar, everything else gets one log line at most every few seconds:

>>> report = log_progress(print, "image cache 48x48", every=10.0)
>>> report(0, 35940); report(35940, 35940)       # doctest: +SKIP
image cache 48x48: 35,940/35,940 images (1,210 img/s, done in 29.7 s)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

Progress = Callable[[int, int], Any]  # (done, total): called with increasing `done`


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{seconds:.1f} s"


def progress_line(what: str, done: int, total: int, elapsed: float) -> str:
    """``what: done/total images (rate img/s, ~time left)`` for a log."""
    rate = done / elapsed if elapsed > 0 else 0.0
    head = f"{what}: {done:,}/{total:,} images ({rate:,.0f} img/s"
    if done >= total:
        return f"{head}, done in {_duration(elapsed)})"
    left = f"~{_duration((total - done) / rate)} left" if rate > 0 else "starting"
    return f"{head}, {left})"


def log_progress(log: Callable[[str], Any], what: str, every: float = 10.0) -> Progress:
    """A progress callback that logs a line at most every ``every`` seconds, and at the end."""
    start = time.perf_counter()
    last = [start]

    def report(done: int, total: int) -> None:
        now = time.perf_counter()
        if done >= total or now - last[0] >= every:
            last[0] = now
            log(progress_line(what, done, total, now - start))

    return report


class Ticker:
    """Calls ``progress(count(), total)`` every ``every`` seconds from a background thread
    while the block runs, and once more at the end (for work counted elsewhere, e.g. in
    worker processes)::

        with Ticker(lambda: counter.value, total, progress):
            run_jobs()
    """

    def __init__(self, count: Callable[[], int], total: int, progress: Progress,
                 every: float = 1.0) -> None:
        self.count, self.total, self.progress, self.every = count, total, progress, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.progress(min(self.count(), self.total), self.total)

    def __enter__(self) -> Ticker:
        self.progress(0, self.total)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        if exc[0] is None:
            self.progress(self.count(), self.total)
