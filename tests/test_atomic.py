"""Atomic writes: a writer that dies half-way leaves the previous file whole and no litter."""

from __future__ import annotations

import pandas as pd
import pytest

from vpr_tune.atomic import atomic_path, write_csv, write_text


def test_failed_write_keeps_the_old_file(tmp_path) -> None:
    path = tmp_path / "trials.csv"
    write_csv(pd.DataFrame({"trial_id": ["a", "b"], "R@1": [1.0, 2.0]}), path)
    with pytest.raises(KeyboardInterrupt), atomic_path(path) as tmp:
        tmp.write_text("trial_id,R@1\nc,")  # half a row, then the kill
        raise KeyboardInterrupt
    assert pd.read_csv(path)["trial_id"].tolist() == ["a", "b"]
    assert [p.name for p in tmp_path.iterdir()] == ["trials.csv"]


def test_write_text_creates_folders_and_replaces(tmp_path) -> None:
    path = tmp_path / "a" / "b" / "retest.md"
    write_text(path, "one")
    write_text(path, "two")
    assert path.read_text() == "two"
    assert [p.name for p in path.parent.iterdir()] == ["retest.md"]
