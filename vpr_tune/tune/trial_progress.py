"""The progress of a running search: a Ray Tune callback that appends each epoch to
metrics.csv, rewrites trials.csv at trial ends (``results.py``) and prints one line per
trial end (done, stopped early, errors, best so far, ETA); ``elapsed`` formats the clock."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray.tune import Callback

from vpr_tune.config import Space, parse_duration
from vpr_tune.errors import UserError
from vpr_tune.tune.results import append_epoch_row, trial_tables, write_tables

# Statuses of a trial that is over (counted as done in the progress line).
DONE = ("TERMINATED", "STOPPED_EARLY", "STOPPED_BUDGET", "ERROR", "DIVERGED")


def elapsed(start: float) -> str:
    s = int(time.time() - start)
    return f"{s // 60}:{s % 60:02d}"


def progress_callback(exp_dir: Path, space: Space, total: int, log: Callable[[str], Any]) -> Any:
    """A Ray Tune callback: rewrites the tables and prints one progress line per trial end."""
    return Progress(exp_dir, space, total, log)


class Progress(Callback):
    """See :func:`progress_callback`."""

    def __init__(self, exp_dir: Path, space: Space, total: int,
                 log: Callable[[str], Any]) -> None:
        self.exp_dir, self.space, self.total, self.log = exp_dir, space, total, log
        self.start = time.time()
        self.started: set[str] = set()
        self.ended: set[str] = set()
        self.interrupted = False  # Ctrl-C cut trials short (the search exits 130)
        self.rows: dict[str, Any] = {}  # finished trials' table rows, built once
        self.written, self.write_cost = 0.0, 0.0

    def __getstate__(self) -> dict[str, Any]:
        # Ray pickles the run config; the console behind ``log`` holds locks.
        return {"exp_dir": self.exp_dir, "space": self.space, "total": self.total,
                "start": self.start, "started": set(), "ended": set(), "rows": {},
                "written": 0.0, "write_cost": 0.0}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, log=print)

    def _tables(self, trials: list[Any], cut: set[str], out_of_time: bool, final: bool) -> Any:
        """The trials table, rewritten on disk unless writing would take more than ~5 % of
        the driver's time (many short trials); the last write is always complete. None when
        the disk refused it (the search goes on, the old tables stay)."""
        metric = self.space.base["search"]["metric"]
        now = time.time()
        try:
            if final or now - self.written >= 20 * self.write_cost:
                frame = write_tables(self.exp_dir, trials, self.space.base, metric,
                                     running=cut, budget=out_of_time, cache=self.rows)
                self.written, self.write_cost = time.time(), time.time() - now
                return frame
            return trial_tables(self.exp_dir, trials, self.space.base, metric,
                                cache=self.rows)[0]
        except UserError as exc:  # a full disk
            self.log(f"warning: {exc}; the previous tables stay valid")
            return None

    def _update(self, trials: list[Any], final: bool = False) -> None:
        # Ctrl-C: Ray marks the trials it stops TERMINATED, but they resume later.
        cut = {t.trial_id for t in trials if t.trial_id in self.started - self.ended
               and str(t.status) in ("TERMINATED", "PAUSED")} if final else set()
        budget = parse_duration(self.space.base["search"]["time_budget"])
        out_of_time = final and budget is not None and time.time() - self.start >= budget
        # Ctrl-C: trials cut short, or left unstarted (PENDING, or never created), at the end
        unfinished = any(str(t.status) not in ("TERMINATED", "ERROR") for t in trials)
        self.interrupted = self.interrupted or (final and not out_of_time and (
            bool(cut) or unfinished or len(trials) < self.total))
        frame = self._tables(trials, cut, out_of_time, final)
        if frame is None:
            return
        if out_of_time:
            ids = frame.loc[frame["status"] == "STOPPED_BUDGET", "trial_id"].tolist()
            self.log(f"time budget {self.space.base['search']['time_budget']} spent: "
                     f"{len(ids)} trial(s) cut (STOPPED_BUDGET){': ' if ids else ''}"
                     f"{', '.join(ids)}")
        elif cut:
            self.log(f"interrupted: {len(cut)} unfinished trial(s) continue from their last "
                     "checkpoint with --resume")
        if not frame.empty:
            self.last_line = time.time()
            self.log(self._line(frame, final))

    def _line(self, frame: Any, final: bool) -> str:
        """``[m:ss] trials d/n done (finished, stopped early, ...), running r | best | ETA``."""
        metric, mode = self.space.base["search"]["metric"], self.space.base["search"]["mode"]
        counts = frame["status"].value_counts().to_dict()
        ok = frame[~frame["status"].isin(["ERROR", "DIVERGED"])]
        col = f"best_{metric}"
        best = ""
        if col in ok and ok[col].notna().any():
            row = ok.loc[ok[col].idxmax() if mode == "max" else ok[col].idxmin()]
            best = f" | best {metric} {row[col]:.1f} ({row['trial_id']})"
        if "pareto" in frame:
            best += f" | Pareto front {int(frame['pareto'].sum())} trial(s)"
        done = sum(counts.get(s, 0) for s in DONE)
        spent = time.time() - self.start
        eta = ""
        if 0 < done < self.total and not final:
            eta = f" | ETA ~{elapsed(time.time() - spent * (self.total - done) / done)}"
        return (f"[{elapsed(self.start)}] trials {done}/{self.total} done "
                f"(finished {counts.get('TERMINATED', 0)}, stopped early "
                f"{counts.get('STOPPED_EARLY', 0)}, "
                + (f"cut by budget {counts['STOPPED_BUDGET']}, " if "STOPPED_BUDGET" in counts
                   else "") + f"errors {counts.get('ERROR', 0)}, "
                f"diverged {counts.get('DIVERGED', 0)}), running {counts.get('RUNNING', 0)}"
                f"{best}{eta}")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        append_epoch_row(self.exp_dir, result)
        # long epochs (real data): a line at most every 2 minutes between trial ends
        if time.time() - getattr(self, "last_line", self.start) > 120:
            self._update(trials)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.started.add(trial.trial_id)

    on_trial_restore = on_trial_start

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.ended.add(trial.trial_id)
        self._update(trials)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.ended.add(trial.trial_id)
        self._update(trials)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._update(trials, final=True)
