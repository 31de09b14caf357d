"""``best --repeat`` reads every recall of a seed's run at one epoch: the one the search
metric chose (as ``best`` does), not each recall's own maximum."""

from __future__ import annotations

import json
from types import SimpleNamespace

from vpr_tune.repeats import _run_rows


def test_every_recall_comes_from_the_search_metrics_epoch(tmp_path):
    rows = [{"epoch": 1, "val/R@1": 30.0, "val/R@5": 50.0, "val/R@10": 60.0, "val/R@25": 70.0},
            {"epoch": 2, "val/R@1": 25.0, "val/R@5": 58.0, "val/R@10": 66.0, "val/R@25": 75.0}]
    (tmp_path / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    best, _, _ = _run_rows(SimpleNamespace(path=str(tmp_path)), "val/R@1", "max")
    assert best["val_R@1"] == 30.0 and best["val_R@5"] == 50.0  # epoch 1, not R@5's 58
    best, _, _ = _run_rows(SimpleNamespace(path=str(tmp_path)), "val/R@5", "max")
    assert best["val_R@1"] == 25.0 and best["val_R@5"] == 58.0  # epoch 2
