"""Best-so-far curves follow the order epochs finished (metrics.csv ``timestamp``), and the
tables of the same trials are the same whatever order Ray lists them in (a no-op
``--resume`` rewrites them unchanged). Issue 36."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pandas as pd

from vpr_tune import plots
from vpr_tune.analysis import best_so_far, load_experiment
from vpr_tune.compare import best_so_far_overlay
from vpr_tune.config import load_space
from vpr_tune.tune.results import (
    EPOCH_LOG,
    append_epoch_row,
    read_table,
    trial_tables,
    write_tables,
)

SPACE = """
    optimizer: {lr: {loguniform: [1.0e-3, 1.0e-1]}}
    budget: {max_epochs: 3}
    search: {algorithm: random, metric: val/R@1, scheduler: fifo}
"""


def _trial(exp: Path, trial_id: str, lr: float, r1s: list[float], tag: str = "") -> SimpleNamespace:
    path = exp / f"train_{trial_id}"
    path.mkdir(parents=True, exist_ok=True)
    rows = [{"epoch": e, "train/loss": 1.0 / e, "lr": lr, "val/R@1": r, "val/R@5": r,
             "val/R@10": r, "val/R@25": r, "timestamp": 1000, "time_total_s": float(e)}
            for e, r in enumerate(r1s, start=1)]
    (path / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return SimpleNamespace(trial_id=trial_id, status="TERMINATED", config={"optimizer.lr": lr},
                           path=str(path), local_path=None, error_file=None,
                           experiment_tag=tag)


def _interleaved(tmp_path: Path) -> tuple[Path, list[SimpleNamespace], dict]:
    """Trials a and b ran side by side: a's epochs finished at t=1, 3, 5, b's at 2, 4, 6
    (all within Ray's same whole second). b reaches 40 at its epoch 2: the 4th trial-epoch
    to finish, the 5th in metrics.csv's file order (a's three rows first)."""
    exp = tmp_path / "results" / "exp"
    exp.mkdir(parents=True)
    (exp / "space.yaml").write_text(textwrap.dedent(SPACE))
    trials = [_trial(exp, "a", 0.01, [10.0, 20.0, 30.0], "1_lr=0.01"),
              _trial(exp, "b", 0.02, [5.0, 40.0, 41.0], "2_lr=0.02")]
    for epoch in (1, 2, 3):
        for k, t in enumerate(trials):
            rows = [json.loads(x) for x in (Path(t.path) / "result.json").read_text().splitlines()]
            append_epoch_row(exp, {**rows[epoch - 1], "trial_id": t.trial_id,
                                   "arrived": 2.0 * epoch - 1 + k})
    base = load_space(exp / "space.yaml").base
    return exp, trials, base


def test_metrics_csv_keeps_when_each_epoch_finished(tmp_path):
    exp, trials, base = _interleaved(tmp_path)
    write_tables(exp, trials, base)
    curves = read_table(exp / "metrics.csv")
    assert "timestamp" in curves.columns
    assert list(curves["trial_id"]) == ["a", "a", "a", "b", "b", "b"]  # grouped, as before
    assert list(curves["timestamp"]) == [1.0, 3.0, 5.0, 2.0, 4.0, 6.0]


def test_best_so_far_is_drawn_in_finish_order(tmp_path):
    exp, trials, base = _interleaved(tmp_path)
    write_tables(exp, trials, base)
    loaded = load_experiment(exp)
    frame = best_so_far(loaded.curves)
    assert list(frame["trial_id"]) == ["a", "b", "a", "b", "a", "b"]
    assert int(frame.loc[frame["best"] >= 40, "trial_epochs"].iloc[0]) == 4  # not 5
    fig = plots.plot_best_so_far(loaded)
    step = next(line for line in fig.axes[0].lines if line.get_label() == "best so far")
    assert list(step.get_ydata()) == [10.0, 10.0, 20.0, 40.0, 40.0, 41.0]
    overlay = best_so_far_overlay([loaded])
    assert list(overlay.axes[0].lines[0].get_ydata()) == [10.0, 10.0, 20.0, 40.0, 40.0, 41.0]


def test_old_metrics_csv_without_timestamp_keeps_file_order(tmp_path):
    curves = pd.DataFrame({"trial_id": ["a", "a", "b"], "epoch": [1, 2, 1],
                           "val/R@1": [1.0, 3.0, 2.0]})
    assert list(best_so_far(curves)["best"]) == [1.0, 3.0, 3.0]


def test_tables_do_not_depend_on_the_order_ray_lists_trials(tmp_path):
    exp, trials, base = _interleaved(tmp_path)
    for t in trials:
        t.experiment_tag = ""  # no sampling counter: the id decides
    first = trial_tables(exp, trials, base)
    again = trial_tables(exp, list(reversed(trials)), base)
    pd.testing.assert_frame_equal(first[0], again[0])
    pd.testing.assert_frame_equal(first[1], again[1])
    assert list(first[0]["trial_id"]) == ["a", "b"]


def test_rows_only_in_result_json_take_rays_timestamp(tmp_path):
    exp, trials, base = _interleaved(tmp_path)
    (exp / EPOCH_LOG).unlink()
    _, curves = trial_tables(exp, trials, base)
    assert (curves["timestamp"] == 1000.0).all()
