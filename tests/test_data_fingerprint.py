"""The data fingerprint changes when an image is added, removed or rewritten; retest records it
and, when the data changed since the search, says so and evaluates again."""

from __future__ import annotations

from pathlib import Path

import yaml


def test_data_fingerprint_notices_added_removed_and_rewritten_files(tmp_path):
    from vpr_tune.data.fingerprint import data_fingerprint

    (tmp_path / "a").mkdir()
    for i in range(3):
        (tmp_path / "a" / f"{i}.jpg").write_bytes(b"x" * i)
    first = data_fingerprint(tmp_path)
    assert first.startswith("3 images") and data_fingerprint(tmp_path) == first
    (tmp_path / "a" / "3.jpg").write_bytes(b"new")
    added = data_fingerprint(tmp_path)
    (tmp_path / "a" / "0.jpg").unlink()
    removed = data_fingerprint(tmp_path)
    (tmp_path / "a" / "1.jpg").write_bytes(b"yy")
    rewritten = data_fingerprint(tmp_path)
    assert len({first, added, removed, rewritten}) == 4


def test_retest_records_the_data_fingerprint_and_warns_when_it_changed(
        hand_experiment, tmp_path, street_world_tiny):
    import shutil

    from vpr_tune.analysis import load_experiment
    from vpr_tune.data.fingerprint import data_fingerprint
    from vpr_tune.retest import retest

    root = tmp_path / "data"
    shutil.copytree(street_world_tiny, root)
    space = yaml.safe_load((hand_experiment / "space.yaml").read_text())
    space["resolved"] = {"data_root": str(root), "data_fingerprint": data_fingerprint(root)}
    (hand_experiment / "space.yaml").write_text(yaml.safe_dump(space))
    calls: list[Path] = []

    def fake_eval(ckpt, data_root, tests):
        calls.append(ckpt)
        return {name: {"R@1": 1.0, "R@5": 2.0, "R@10": 3.0, "R@25": 4.0} for name in tests}

    logs: list[str] = []
    retest(load_experiment(hand_experiment), 2, log=logs.append, evaluate_fn=fake_eval)
    md = (hand_experiment / "retest.md").read_text()
    assert data_fingerprint(root) in md and "changed" not in md
    assert not any("changed" in m for m in logs)

    # a query image rewritten and one added since the search
    queries = sorted((root / "sf_xs" / "test" / "queries").glob("*.jpg"))
    queries[0].write_bytes(queries[1].read_bytes())
    shutil.copy(queries[1], queries[1].with_name("@0@0@@@@@@@@extra.jpg"))
    retest(load_experiment(hand_experiment), 2, log=logs.append, evaluate_fn=fake_eval)
    md = (hand_experiment / "retest.md").read_text()
    assert "the data changed since the search" in md
    assert any("the data changed since the search" in m for m in logs)
    assert len(calls) == 4  # the cached results of the old data were not reused
