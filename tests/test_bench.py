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

import numpy as np
import pandas as pd
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
    if name in ("asha", "pareto"):  # real searches; the arithmetic: fake runs below
        real = written["real_asha" if name == "asha" else "real_moasha"]
        assert real["trial_epochs"] > 0 and all(v > 0 for v in written[
            "fifo_trial_epochs"].values())
        # a real run's own arrival order, replayed, makes its decisions
        assert written["replay_matches_real"] is True and written["same_configs"] is True
        assert written["ratio_p10"] <= written["ratio"] <= written["ratio_p90"]
        assert 0 <= written["p_best_kept"] <= 1
    if name == "pareto":
        assert 0 <= written["p_hypervolume_ok"] <= 1
    if name == "study":
        assert written["verdict"] in ("search's winner better", "search's winner worse",
                                      "no difference resolved")
        assert all(len(r["runs"]) >= 3 for r in written["retrained"].values())
    for key in RAW[name]:
        values = written[key]
        assert len(values) >= 1
        assert all(math.isfinite(v) and v > 0 for v in values), (key, values)


def _fake_run(space_path: Path, name: str, storage: str, log=print, **_kw) -> Path:
    """Stands in for `run_experiment`: writes space.yaml, trials.csv, metrics.csv and
    epochs.jsonl as `vpr-tune run` does. Trial i's quality is a seeded permutation, its val
    R@1 10 x quality + epoch / 100; the config (lr) follows the seed and i. An ASHA run
    trains its trials one after another, stopped by the scheduler a search builds."""
    import json as _json

    import numpy as np
    import yaml

    from vpr_tune.tune.searchers import rung_objectives, rung_scheduler

    space = yaml.safe_load(Path(space_path).read_text())
    folder = Path(storage) / name
    folder.mkdir(parents=True)
    n, max_epochs = space["search"]["num_samples"], space["budget"]["max_epochs"]
    seed = space.get("seed", 0)
    quality = np.random.default_rng(seed).permutation(n)
    scheduler = None
    if space["search"]["scheduler"] == "asha":
        asha = space["asha"]
        scheduler = rung_scheduler(rung_objectives(space["search"], asha.get("metric")),
                                   max_epochs, asha["grace_period"], asha["reduction_factor"])
    trials, metrics, arrivals = [], [], []
    for i in range(n):
        tid = f"{name[:4]}{i}"
        trial = type("T", (), {"trial_id": tid})()
        if scheduler is not None:
            scheduler.on_trial_add(None, trial)
        epochs = 0
        for e in range(1, max_epochs + 1):
            row = {"trial_id": tid, "epoch": e, "training_iteration": e,
                   "val/R@1": 10.0 * quality[i] + e / 100, "val/MRR": 10.0 * quality[i],
                   "val/R@mean": 10.0 * quality[i] + e / 50}
            metrics.append(row)
            arrivals.append(row)
            epochs = e
            if scheduler is not None and scheduler.on_trial_result(None, trial, row) == "STOP":
                break
        trials.append({"trial_id": tid, "status": "TERMINATED",
                       "optimizer.lr": 1e-4 * (i + 1) * (seed + 1),
                       "best_val/R@1": 10.0 * quality[i] + epochs / 100, "epochs": epochs,
                       "time_s": 2.0 * epochs})
    time.sleep(0.2)  # a wall time that rounds to something
    for i in range(n):  # the progress lines `vpr-tune run` prints at each trial end
        log(f"[0:0{i}] trials {i + 1}/{n} done (finished {i + 1}), running 0")
    (folder / "space.yaml").write_text(yaml.safe_dump(space))
    pd.DataFrame(trials).to_csv(folder / "trials.csv", index=False)
    pd.DataFrame(metrics).drop(columns="training_iteration").to_csv(folder / "metrics.csv",
                                                                    index=False)
    (folder / "epochs.jsonl").write_text("".join(
        _json.dumps({k: v for k, v in r.items() if k != "training_iteration"}) + "\n"
        for r in arrivals))
    return folder


@pytest.fixture
def asha_bench(monkeypatch):
    """bench asha on the fake run, quick, at a size where ASHA stops trials."""
    import vpr_tune.bench.search as mod
    import vpr_tune.tune

    monkeypatch.setattr(vpr_tune.tune, "run_experiment", _fake_run)
    monkeypatch.setattr(mod, "ASHA_QUICK", (9, 9, 1))
    monkeypatch.setattr(mod, "ASHA", {"grace_period": 1, "reduction_factor": 3})
    monkeypatch.setattr(mod, "ASHA_ORDERS_QUICK", 30)
    return mod


def test_asha_figures_from_replays_of_the_run_outputs(asha_bench) -> None:
    asha = asha_bench.bench_asha(quick=True, log=lambda _m: None)
    assert asha["fifo_trial_epochs"] == {"0": 81, "1": 81}
    assert asha["orders"] == 60 and len(asha["replay_ratios"]) == 60
    assert asha["per_seed"]["0"]["orders"] == asha["per_seed"]["1"]["orders"] == 30
    # the figure is the median over all replayed orders, with its spread
    assert asha["ratio"] == pytest.approx(float(np.median(asha["replay_ratios"])), abs=1e-4)
    assert 0 < asha["ratio_p10"] <= asha["ratio"] <= asha["ratio_p90"] < 1
    # each curve ranks its trial from epoch 1 on: the best is never stopped
    assert asha["p_best_kept"] == 1.0
    # the real run's own arrivals, replayed, stop each trial where it stopped
    real = asha["real_asha"]
    assert asha["replay_matches_real"] is True
    assert real["epochs_real"] == real["epochs_replayed"] and min(real["epochs_real"]) == 1
    assert asha["same_configs"] is True and asha["same_curves"] is True
    assert asha["spearman_rung1_vs_final"]["0"] == pytest.approx(1.0)
    assert asha["passed"] is (asha["ratio"] <= 0.35)
    # other ladders replayed on the same pilots: the benchmark's own setting among them
    sweep = pd.DataFrame(asha["settings_sweep"])
    assert set(zip(sweep["seed"], sweep["reduction_factor"], strict=True)) == {
        (s, f) for s in (0, 1) for f in (2.0, 3.0, 4.0)}
    own = sweep[(sweep["grace_period"] == 1) & (sweep["reduction_factor"] == 3.0)]
    assert sorted(own["ratio_median"]) == sorted(
        asha["per_seed"][s]["ratio_median"] for s in ("0", "1"))
    assert sweep["ratio_median"].between(0, 1).all() and sweep["p_best_kept"].eq(1).all()


def test_asha_fails_when_the_replay_does_not_reproduce_the_real_run(asha_bench,
                                                                    monkeypatch) -> None:

    import vpr_tune.tune

    def tampered(space_path, name, storage, **kwargs):
        folder = _fake_run(space_path, name, storage, **kwargs)
        if name == "asha":  # the run kept a trial the scheduler would have stopped
            trials = pd.read_csv(folder / "trials.csv")
            trials.loc[trials["epochs"].idxmin(), "epochs"] = 9
            trials.to_csv(folder / "trials.csv", index=False)
        return folder

    monkeypatch.setattr(vpr_tune.tune, "run_experiment", tampered)
    passing = dataclasses.replace(asha_bench.ASHA_BAR, value=1.0)  # the ratio passes
    monkeypatch.setattr(asha_bench, "ASHA_BAR", passing)
    asha = asha_bench.bench_asha(quick=True, log=lambda _m: None)
    assert asha["replay_matches_real"] is False and asha["passed"] is False


def test_search_figures_from_the_run_outputs(monkeypatch) -> None:
    import vpr_tune.tune
    from vpr_tune.bench.search import bench_search

    monkeypatch.setattr(vpr_tune.tune, "run_experiment", _fake_run)
    search = bench_search(quick=True, log=lambda _m: None)
    assert search["trial_busy_s"] == [4.0, 4.0] and search["cores"] == 2
    assert search["ratio"] == pytest.approx(8.0 / (2 * search["wall_s"]), rel=0.1)
    assert search["reproducible_ratio"] == pytest.approx(
        8.0 / (2 * search["reproducible_wall_s"]), rel=0.1)


def test_asha_fails_when_its_trials_trained_other_curves_than_fifos(asha_bench,
                                                                    monkeypatch) -> None:

    import vpr_tune.tune

    def other_curves(space_path, name, storage, **kwargs):
        folder = _fake_run(space_path, name, storage, **kwargs)
        if name == "asha":  # same configs, other numbers (as two threads per trial gave)
            metrics = pd.read_csv(folder / "metrics.csv")
            metrics["val/R@1"] += 0.5
            metrics.to_csv(folder / "metrics.csv", index=False)
        return folder

    monkeypatch.setattr(vpr_tune.tune, "run_experiment", other_curves)
    passing = dataclasses.replace(asha_bench.ASHA_BAR, value=1.0)  # the ratio passes
    monkeypatch.setattr(asha_bench, "ASHA_BAR", passing)
    asha = asha_bench.bench_asha(quick=True, log=lambda _m: None)
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


def test_study_verdict_is_an_interval_not_one_maximum(tmp_path: Path) -> None:
    from vpr_tune.bench.study import difference, mean_interval, plot

    study = mean_interval([20.0, 22.0, 21.0, 21.0])
    assert study["mean"] == 21.0 and study["lo"] < 21.0 < study["hi"]
    # half-width of the t-interval: t(0.975, 3) x sd / sqrt(4)
    assert study["hi"] - 21.0 == pytest.approx(3.182 * 0.8165 / 2, abs=0.01)
    close = difference([21.5, 20.5, 22.0, 20.0], [20.0, 22.0, 21.0, 21.0])
    assert close["verdict"] == "no difference resolved" and close["not_worse"] is True
    assert close["lo"] < 0 < close["hi"] and "interval [" in close["text"]
    worse = difference([15.0, 15.5, 14.5, 15.0], [20.0, 22.0, 21.0, 21.0])
    assert worse["verdict"] == "search's winner worse" and worse["not_worse"] is False
    better = difference([25.0, 25.5, 24.5, 25.0], [20.0, 22.0, 21.0, 21.0])
    assert better["verdict"] == "search's winner better"
    assert difference([3.0, 3.0, 3.0], [3.0, 3.0, 3.0])["lo"] == 0.0  # no spread at all
    png = plot({"manual_curve": [5.0, 9.0], "search_curve": [4.0], "manual_runs": 2,
                "max_epochs": 1, "search_trials": 1, "verdict": close["verdict"],
                "retrained": {"manual": study, "search": mean_interval([21.5, 20.5, 22.0])}},
               tmp_path / "study.png")
    assert png.stat().st_size > 1000


def test_study_retrains_each_winner_with_its_whole_config(monkeypatch, tmp_path) -> None:
    """trials.csv has a column per searched value only: the study's winner from stage 2
    (scheduler searched, optimizer fixed) is retrained with the optimizer stage 1 chose."""
    import itertools

    import vpr_tune.bench.study as study

    retrained: dict[str, dict] = {}

    def fake_run(space, name, storage, log):
        grid = {"optimizer.name": space["optimizer"]["name"],
                "optimizer.lr": space["optimizer"]["lr"],
                "scheduler.name": space["scheduler"]["name"], "seed": space["seed"]}
        searched = {k: v["grid"] for k, v in grid.items() if isinstance(v, dict) and "grid" in v}
        if name == "search":  # TPE's trials: every value is a column
            rows = [{"optimizer.name": "sgd", "optimizer.lr": 0.005, "scheduler.name": "none",
                     "best_val/R@1": 15.0 + i, "epochs": 2 if i else 8} for i in range(3)]
        else:
            rows = [{**dict(zip(searched, combo, strict=True)), "epochs": 8}
                    for combo in itertools.product(*searched.values())]
            for r in rows:  # stage 2's cosine run is the study's best
                r["best_val/R@1"] = 20.0 if r.get("scheduler.name") == "cosine" else 10.0
                if name.startswith("retrain"):
                    r["best_val/R@1"] = 14.0 + r["seed"]
                    retrained[name] = {k: v for k, v in grid.items() if k != "seed"}
        (storage / name).mkdir()
        return 1.0, pd.DataFrame(rows).assign(status="TERMINATED"), None

    monkeypatch.setattr(study, "_run", fake_run)
    result = study.bench_study(quick=True, log=lambda _m: None)
    chosen = result["manual_stage1_best"]
    assert retrained["retrain-manual"] == {"optimizer.name": chosen["name"],
                                           "optimizer.lr": chosen["lr"],
                                           "scheduler.name": "cosine"}
    assert retrained["retrain-search"]["optimizer.name"] == "sgd"
    assert result["retrained"]["manual"]["runs"] == [15.0, 16.0, 17.0]
    assert result["difference"]["mean"] == 0.0 and result["verdict"] == "no difference resolved"
