"""Benchmarks: quick runs keep every benchmark working (structure, finite numbers).

No timing asserts here: whether a bar passes depends on the machine; ``vpr-tune bench``
on the real sizes is what docs/performance.md reports.
"""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vpr_tune.bench import BENCHMARKS, bar_text, load, resolve_names
from vpr_tune.bench.common import Bar, alternate, median_ratio
from vpr_tune.cli import main
from vpr_tune.errors import UserError

# The raw numbers behind each ratio: lists of per-repetition measurements.
RAW = {"loader": ("real_img_s", "in_memory_img_s"), "cache": ("cache_img_s", "pil_img_s"),
       "eval": ("full_s", "forward_s"), "memory": ("uss_1x", "uss_4x"),
       "search": ("trial_busy_s",), "asha": (), "pareto": (), "trials": ("driver_rss_mb",),
       "scale": ("eval_s", "cache_build_img_s", "builder_peak_mb_above_start"),
       "study": ("manual_curve", "search_curve")}


def _run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    rc = main(args)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_alternate_interleaves_and_warms_up() -> None:
    calls: list[str] = []

    def side(tag: str) -> float:
        calls.append(tag)
        return float(len(calls))

    a, b = alternate(lambda: side("a"), lambda: side("b"), reps=3)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-up, then AB BA AB
    assert len(a) == len(b) == 3


def test_median_ratio_ignores_one_disturbed_repetition() -> None:
    assert median_ratio([2.0, 2.0, 50.0], [1.0, 1.0, 1.0]) == 2.0
    assert Bar(0.9, higher=True).passed(0.95) and not Bar(0.9, higher=True).passed(0.5)
    assert Bar(1.15, higher=False).passed(1.0) and not Bar(1.15, higher=False).passed(1.2)
    assert not Bar(1.0, higher=False).passed(math.nan)


def test_unknown_benchmark_lists_the_names(capsys) -> None:
    rc, _out, err = _run_cli(["bench", "speed"], capsys)
    assert rc == 2
    assert "unknown benchmark 'speed'" in err
    for name in BENCHMARKS:
        assert name in err
    with pytest.raises(UserError):
        resolve_names("Loader")
    assert resolve_names("all") == list(BENCHMARKS)


def test_each_benchmark_names_its_parts_and_its_bar_once() -> None:
    """The registry's "module.attr" strings import; the table's text is the module's Bar."""
    for name, bench in BENCHMARKS.items():
        assert callable(load(bench.run)) and (bench.plot is None or callable(load(bench.plot)))
        bar = load(bench.bar)
        assert isinstance(bar, Bar) and bar.figure, name
        assert bar_text(name) == f"{bar.figure} ({bar.op} {bar.value:g})"
    assert "(<= 0.35)" in bar_text("asha") and "(>= 0.9)" in bar_text("loader")


def test_python_m_vpr_tune_bench_is_the_cli() -> None:
    proc = subprocess.run([sys.executable, "-m", "vpr_tune.bench", "nope"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "unknown benchmark 'nope'" in proc.stderr


# search and asha start Ray and run real searches: slow suite (their arithmetic is tested
# with a fake run below)
@pytest.mark.parametrize("name", ["loader", "cache", "eval", "memory", "scale",
                                  pytest.param("search", marks=pytest.mark.slow),
                                  pytest.param("trials", marks=pytest.mark.slow),
                                  pytest.param("study", marks=pytest.mark.slow),
                                  pytest.param("asha", marks=pytest.mark.slow),
                                  pytest.param("pareto", marks=pytest.mark.slow)])
def test_quick_benchmark_writes_its_record(name: str, tmp_path: Path, capsys) -> None:
    rc, out, _err = _run_cli(["bench", name, "--quick", "--json", "--out", str(tmp_path)],
                             capsys)
    assert rc == 0
    printed = json.loads(out)
    written = json.loads((tmp_path / f"{name}.json").read_text())
    assert printed == written
    bar = load(BENCHMARKS[name].bar)  # the record carries its module's Bar
    assert written["name"] == name and written["quick"] is True
    assert (written["bar"], written["bar_op"], written["figure"]) == (bar.value, bar.op,
                                                                      bar.figure)
    ratio = written["ratio"]
    # study: infinite when the tiny search never came within 0.5 point of the manual best
    unreached = name == "study" and written["search_epochs_to_manual_best"] is None
    assert isinstance(ratio, float) and (math.isfinite(ratio) or unreached)
    if name != "memory":  # a USS difference on tiny quick sizes may be negative noise
        assert ratio > 0
    assert written["passed"] is bar.passed(ratio)
    if name == "asha":  # two real searches; the arithmetic is tested with a fake run below
        assert written["asha_trial_epochs"] > 0 and written["fifo_trial_epochs"] > 0
        assert isinstance(written["best_within_1_point"], bool)
    if name == "pareto":
        assert written["moasha_trial_epochs"] > 0 and written["same_configs"] is True
        assert written["hypervolume_fifo"] > 0 and written["front_fifo"]
    for key in RAW[name]:
        values = written[key]
        assert len(values) >= 1
        assert all(math.isfinite(v) and v > 0 for v in values), (key, values)


def _fake_run(space_path: Path, name: str, storage: str, log=print, **_kw) -> Path:
    """Stands in for `run_experiment`: writes trials.csv/metrics.csv as `vpr-tune run` does.
    Trial i has R@1 = 10 * i after every epoch; ASHA keeps the last trial to the end."""
    import pandas as pd
    import yaml

    space = yaml.safe_load(Path(space_path).read_text())
    storage = Path(storage)
    n, max_epochs = space["search"]["num_samples"], space["budget"]["max_epochs"]
    asha = space["search"]["scheduler"] == "asha"
    trials, metrics = [], []
    for i in range(n):
        epochs = (max_epochs if i == n - 1 else 1) if asha else max_epochs
        for e in range(1, epochs + 1):
            metrics.append({"trial_id": f"t{i}", "epoch": e, "val/R@1": 10.0 * i + e / 100})
        trials.append({"trial_id": f"t{i}", "status": "TERMINATED", "optimizer.lr": 1e-4 * i,
                       "best_val/R@1": 10.0 * i + epochs / 100, "epochs": epochs,
                       "time_s": 2.0 * epochs})
    (storage / name).mkdir(parents=True)
    time.sleep(0.2)  # a wall time that rounds to something
    for i in range(n):  # the progress lines `vpr-tune run` prints at each trial end
        log(f"[0:0{i}] trials {i + 1}/{n} done (finished {i + 1}), running 0")
    pd.DataFrame(trials).to_csv(storage / name / "trials.csv", index=False)
    pd.DataFrame(metrics).to_csv(storage / name / "metrics.csv", index=False)
    return storage / name


def test_asha_and_search_figures_from_the_run_outputs(monkeypatch) -> None:
    import vpr_tune.tune
    from vpr_tune.bench.search import bench_asha, bench_search

    monkeypatch.setattr(vpr_tune.tune, "run_experiment", _fake_run)
    asha = bench_asha(quick=True, log=lambda _m: None)
    # 3 trials x 3 epochs under FIFO; ASHA: 1 + 1 + 3 epochs
    assert (asha["asha_trial_epochs"], asha["fifo_trial_epochs"]) == (5, 9)
    assert asha["ratio"] == round(5 / 9, 4) and asha["passed"] is False  # 0.56 > 0.35
    assert asha["same_configs"] is True and asha["best_within_1_point"] is True
    assert asha["same_curves"] is True  # each ASHA curve is the start of its FIFO twin's
    assert asha["spearman_rung1_vs_final"] == pytest.approx(1.0)
    search = bench_search(quick=True, log=lambda _m: None)
    assert search["trial_busy_s"] == [4.0, 4.0] and search["cores"] == 2
    assert search["ratio"] == pytest.approx(8.0 / (2 * search["wall_s"]), rel=0.1)


def test_asha_fails_when_its_trials_trained_other_curves_than_fifos(monkeypatch) -> None:
    import pandas as pd

    import vpr_tune.bench.search as bench_search_mod
    import vpr_tune.tune

    def other_curves(space_path, name, storage, **kwargs):
        folder = _fake_run(space_path, name, storage, **kwargs)
        if name == "asha":  # same configs, other numbers (as two threads per trial gave)
            metrics = pd.read_csv(folder / "metrics.csv")
            metrics["val/R@1"] += 0.5
            metrics.to_csv(folder / "metrics.csv", index=False)
        return folder

    monkeypatch.setattr(vpr_tune.tune, "run_experiment", other_curves)
    passing = dataclasses.replace(bench_search_mod.ASHA_BAR, value=1.0)  # the ratio passes
    monkeypatch.setattr(bench_search_mod, "ASHA_BAR", passing)
    asha = bench_search_mod.bench_asha(quick=True, log=lambda _m: None)
    assert asha["same_configs"] is True and asha["same_curves"] is False
    assert asha["passed"] is False


def test_trials_figures_from_the_run_outputs(monkeypatch) -> None:
    import vpr_tune.tune
    from vpr_tune.bench.trials import bench_trials

    monkeypatch.setattr(vpr_tune.tune, "run_experiment", _fake_run)
    lines: list[str] = []
    result = bench_trials(quick=True, log=lines.append)
    n = result["trials"]
    # the fake's trials report 2 s each: overhead = (wall x 2 - 2 s x n) / n
    assert result["trial_time_s"] == 2.0 * n and result["concurrency"] == 2
    # wall_s is rounded to 0.01 s in the record: allow that rounding times 2 / n
    assert result["ratio"] == pytest.approx((result["wall_s"] * 2 - 2.0 * n) / n, abs=0.02)
    assert len(result["driver_rss_mb"]) == n  # one reading at each trial end
    assert math.isfinite(result["driver_rss_growth_mb_per_trial"])
    assert result["driver_cpu_s_per_trial"] >= 0
    assert any(f"trials {n}/{n} done" in ln for ln in lines)


def test_study_curves_count_trial_epochs_in_the_order_they_finished(tmp_path: Path) -> None:
    from vpr_tune.bench.study import _epoch_rows, best_so_far, first_reaching, plot

    for trial, rows in {"a": [(10, 1, 5.0), (30, 2, 12.0)],
                        "b": [(20, 1, 9.0), (40, 2, 8.0), (50, 3, 14.0)]}.items():
        folder = tmp_path / f"train_{trial}"
        folder.mkdir()
        (folder / "result.json").write_text("\n".join(json.dumps(
            {"timestamp": t, "time_total_s": e, "trial_id": trial, "epoch": e, "val/R@1": r,
             "diverged": 0}) for t, e, r in rows) + "\n")
    rows = _epoch_rows(tmp_path)
    assert [(r[2], r[3]) for r in rows] == [("a", 1), ("b", 1), ("a", 2), ("b", 2), ("b", 3)]
    curve = best_so_far([r[4] for r in rows])
    assert curve == [5.0, 9.0, 12.0, 12.0, 14.0]
    assert first_reaching(curve, 11.5) == 3 and first_reaching(curve, 20.0) is None
    png = plot({"manual_curve": curve, "search_curve": curve[:3], "manual_runs": 2,
                "max_epochs": 3, "search_trials": 2, "manual_best_val_r1": 14.0,
                "within_points": 0.5, "search_epochs_to_manual_best": None},
               tmp_path / "study.png")
    assert png.stat().st_size > 1000
