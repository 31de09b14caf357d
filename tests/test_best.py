"""`vpr-tune best [--retest]`: ranking, JSON, clear errors, retest CSV, determinism, reuse."""

from __future__ import annotations

import json
import os
import shutil

import pandas as pd
import pytest

from vpr_tune.analysis import read_table
from vpr_tune.cli import main
from vpr_tune.metrics import RECALLS
from vpr_tune.retest import CACHE_FILE

RETEST_COLUMNS = [
    "rank", "trial_id", "optimizer.name", "optimizer.lr", "optimizer.weight_decay",
    "scheduler.name", *(f"val_R@{n}{x}" for n in (1, 5) for x in ("", "_lo", "_hi")),
    "within_noise", *(f"{s}_{r}{x}" for s in ("sf_test", "tokyo") for r in RECALLS
                      for x in ("", "_lo", "_hi")),
    "sf_test_within_noise", "tokyo_within_noise",
]


def _best(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(["best", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def _storage(folder) -> list[str]:
    return ["--storage", str(folder.parent)]


def test_json_ranks_finished_trials_only(hand_experiment, capsys) -> None:
    rc, out, _ = _best(capsys, "hand", "--json", *_storage(hand_experiment))
    assert rc == 0
    data = json.loads(out)
    ids = [t["trial_id"] for t in data["trials"]]
    assert ids == ["t0", "t4", "t5", "t1"]  # t2 ERROR (70) and t3 DIVERGED (80) never rank
    assert [t["rank"] for t in data["trials"]] == [1, 2, 3, 4]
    assert data["varying"] == [
        "optimizer.name", "optimizer.lr", "optimizer.weight_decay", "scheduler.name"
    ]
    assert data["trials"][0]["val_R@1"] == 60.0 and data["trials"][0]["epochs"] == 4
    assert data["synthetic"] is True
    assert "optimizer.momentum" not in data["trials"][0]  # constant where defined


def test_top_and_metric(hand_experiment, capsys) -> None:
    rc, out, _ = _best(capsys, "hand", "--json", "--top", "2", "--metric", "val/R@5",
                       *_storage(hand_experiment))
    assert rc == 0
    assert [t["trial_id"] for t in json.loads(out)["trials"]] == ["t0", "t4"]
    rc, _, err = _best(capsys, "hand", "--metric", "val/R@3", *_storage(hand_experiment))
    assert rc == 2 and "val/R@3" in err


def test_table_defaults_to_newest_and_labels_synthetic(hand_experiment, capsys) -> None:
    newer = hand_experiment.parent / "newer"
    shutil.copytree(hand_experiment, newer)
    os.utime(newer / "trials.csv", (2e9, 2e9))
    rc, out, _ = _best(capsys, *_storage(hand_experiment))
    assert rc == 0
    assert "newer" in out and "synthetic (street-world)" in out
    lines = [ln for ln in out.splitlines() if ln.strip().startswith(("1 ", "2 ", "3 ", "4 "))]
    assert [ln.split()[1] for ln in lines] == ["t0", "t4", "t5", "t1"]
    assert "weight_decay" in out and "momentum" not in out


def test_a_conditional_column_none_of_the_shown_trials_has_is_not_printed(
        hand_experiment, capsys) -> None:
    # momentum varies among the SGD trials; the top two are Adam/AdamW: an empty column
    trials = read_table(hand_experiment / "trials.csv")
    trials.loc[trials["trial_id"] == "t0", ["optimizer.name", "optimizer.momentum"]] = \
        ["adam", None]
    trials.loc[trials["trial_id"] == "t5", "optimizer.momentum"] = 0.95
    trials.to_csv(hand_experiment / "trials.csv", index=False)
    rc, out, _ = _best(capsys, "hand", "--top", "2", *_storage(hand_experiment))
    assert rc == 0 and "weight_decay" in out and "momentum" not in out
    rc, out, _ = _best(capsys, "hand", "--top", "3", *_storage(hand_experiment))
    assert rc == 0 and "momentum" in out  # t5 (SGD, 0.95) is shown
    rc, out, _ = _best(capsys, "hand", "--top", "2", "--json", *_storage(hand_experiment))
    assert "optimizer.momentum" in json.loads(out)["trials"][0]  # scripts keep the key


def test_unknown_experiment_is_one_clear_error(hand_experiment, capsys) -> None:
    rc, out, err = _best(capsys, "nosuch", *_storage(hand_experiment))
    assert rc == 2
    assert "nosuch" in err and "Traceback" not in err + out
    assert "experiments there: hand" in err


def test_no_finished_trial_is_one_clear_error(hand_experiment, capsys) -> None:
    trials = read_table(hand_experiment / "trials.csv")
    trials["status"] = ["ERROR", "DIVERGED", "ERROR", "DIVERGED", "ERROR", "PENDING"]
    trials.to_csv(hand_experiment / "trials.csv", index=False)
    rc, _, err = _best(capsys, "hand", *_storage(hand_experiment))
    assert rc == 2
    assert "no finished trial" in err and "ERROR" in err


def test_missing_checkpoint_is_one_clear_error(hand_experiment, capsys) -> None:
    trials = read_table(hand_experiment / "trials.csv")
    missing = trials.loc[trials["trial_id"] == "t4", "checkpoint"].item()
    os.remove(missing)
    rc, _, err = _best(capsys, "hand", "--retest", "--top", "2", *_storage(hand_experiment))
    assert rc == 2
    assert "t4" in err and "checkpoint" in err and missing in err.replace("\n", "")
    assert not (hand_experiment / "retest.csv").exists()


def test_retest_writes_csv_md_and_is_deterministic(retest_experiment, capsys) -> None:
    args = ["hand", "--retest", "--top", "3", "--json", *_storage(retest_experiment)]
    rc, out, err = _best(capsys, *args)
    assert rc == 0, err
    first = read_table(retest_experiment / "retest.csv")
    assert list(first.columns) == RETEST_COLUMNS
    assert list(first["trial_id"]) == ["t0", "t4", "t5"]
    assert list(first["val_R@1"]) == [60.0, 58.0, 30.0]
    for name in ("sf_test", "tokyo"):  # recall is cumulative in N and a percentage
        r = first[[f"{name}_R@1", f"{name}_R@5", f"{name}_R@10"]].to_numpy()
        assert ((r >= 0) & (r <= 100)).all() and (r[:, :-1] <= r[:, 1:]).all()
    assert first["sf_test_R@10"].nunique() > 1 or first["tokyo_R@10"].nunique() > 1
    data = json.loads(out)
    assert data["retest"][0]["trial_id"] == "t0"
    md = (retest_experiment / "retest.md").read_text()
    assert "synthetic" in md.lower() and "| sf_test_R@1 |" in md
    # every test recall with its interval over that set's queries, from the kept ranks
    from vpr_tune.noise import load_set_ranks, retest_ranks_path
    from vpr_tune.uncertainty import recall

    for row in data["retest"]:
        kept = load_set_ranks(retest_ranks_path(retest_experiment, row["trial_id"]))
        assert sorted(kept) == ["sf_test", "tokyo"]
        for name in kept:
            for n, r in zip((1, 5, 10, 25), RECALLS, strict=True):
                col = f"{name}_{r}"
                assert recall(kept[name], n) == pytest.approx(row[col], abs=1e-4)
                assert row[f"{col}_lo"] <= row[col] <= row[f"{col}_hi"]
            assert isinstance(row[f"{name}_within_noise"], bool)
            assert len(kept[name]) == data["test_sets"][name]["queries"]
    splits = {n["split"]: n for n in data["retest_noise"]}
    assert set(splits) == {"val", "sf_test", "tokyo"} and splits["sf_test"]["queries"] > 0
    winner = splits["sf_test"]["winner"]
    assert next(r for r in data["retest"] if r["trial_id"] == winner)["sf_test_within_noise"]
    assert "within noise of the sf_test winner" in md or "no trial is within noise of the " \
        "sf_test winner" in md

    # a second run reuses every row (the evaluator would say which checkpoint it loads)
    rc, _, err = _best(capsys, *args)
    assert rc == 0 and err.count("reused") == 3
    pd.testing.assert_frame_equal(read_table(retest_experiment / "retest.csv"), first)

    # --force recomputes, and the numbers are identical (deterministic evaluation)
    rc, _, err = _best(capsys, *args, "--force")
    assert rc == 0 and "reused" not in err
    pd.testing.assert_frame_equal(read_table(retest_experiment / "retest.csv"), first)

    # a lost ranks file is measured again rather than reused without intervals
    os.remove(retest_experiment / "ranks" / "retest" / "t4.npz")
    rc, _, err = _best(capsys, *args)
    assert rc == 0 and err.count("reused") == 2
    pd.testing.assert_frame_equal(read_table(retest_experiment / "retest.csv"), first)


def test_retest_recomputes_a_changed_checkpoint(retest_experiment, capsys) -> None:
    args = ["hand", "--retest", "--top", "2", *_storage(retest_experiment)]
    assert main(["best", *args]) == 0
    capsys.readouterr()
    cache = json.loads((retest_experiment / CACHE_FILE).read_text())
    assert len(cache) == 2
    trials = read_table(retest_experiment / "trials.csv").set_index("trial_id")
    ckpt = trials.loc["t4", "checkpoint"]
    os.utime(ckpt, (2e9, 2e9))  # as if the trial wrote a new best checkpoint
    rc, out, _ = _best(capsys, *args)
    assert rc == 0 and out.count("reused") == 1  # t0 reused, t4 re-evaluated
    assert "sf_test R@1" in out and "tokyo R@10" in out


@pytest.mark.slow
def test_best_retest_report_after_a_real_search(searched_experiment, capsys) -> None:
    from vpr_tune.analysis import load_experiment

    storage = ["--storage", str(searched_experiment.parent)]
    capsys.readouterr()
    rc, out, err = _best(capsys, "--json", *storage)  # newest experiment
    assert rc == 0, err
    data = json.loads(out)
    assert data["experiment"] == "tiny" and data["synthetic"] is True
    exp = load_experiment(searched_experiment)
    finished = exp.trials[~exp.trials["status"].isin(["ERROR", "DIVERGED"])]
    assert len(data["trials"]) == len(finished) >= 2
    values = [t["val_R@1"] for t in data["trials"]]
    assert values == sorted(values, reverse=True)
    assert set(data["varying"]) <= {"optimizer.name", "optimizer.lr"} and data["varying"]

    rc, _, err = _best(capsys, "tiny", "--retest", "--top", "2", *storage)
    assert rc == 0, err
    table = read_table(searched_experiment / "retest.csv")
    assert list(table.columns) == ["rank", "trial_id", *data["varying"], *RETEST_COLUMNS[6:]]
    assert list(table["trial_id"]) == [t["trial_id"] for t in data["trials"][:2]]
    rc, _, err = _best(capsys, "tiny", "--retest", "--top", "2", "--force", *storage)
    pd.testing.assert_frame_equal(read_table(searched_experiment / "retest.csv"), table)

    assert main(["report", "tiny", *storage]) == 0
    report = searched_experiment / "report"
    assert (report / "report.md").exists() and (report / "curves.png").exists()
    assert (report / "retest.png").exists()
