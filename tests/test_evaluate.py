"""Evaluation: exact search and recall@N against brute force on hand-made descriptors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers import make_tiny_root, tiny_cfg
from vpr_tune.evaluate import describe_batches, hits_matrix, recall_at_n, search


def brute_recall(db, q, positives, ns):
    """Reference: per query, full sort by L2 distance, then check the first N."""
    out = {}
    for n in ns:
        hit = 0
        for qi in range(len(q)):
            order = np.argsort(((db - q[qi]) ** 2).sum(1), kind="stable")[:n]
            hit += bool(set(order.tolist()) & set(positives[qi].tolist()))
        out[n] = 100.0 * hit / len(q)
    return out


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_recall_hand_made() -> None:
    # db on the unit circle at angles 0, 90, 180, 270 deg; queries near known db images
    db = unit(np.array([[1, 0], [0, 1], [-1, 0], [0, -1]], dtype=np.float64))
    q = unit(np.array([[1, 0.1], [0.1, 1], [-1, -0.2]], dtype=np.float64))
    preds = search(db, q, k=4)
    assert preds[:, 0].tolist() == [0, 1, 2]
    positives = [np.array([0]), np.array([3]), np.array([], dtype=np.int64)]
    r = recall_at_n(preds, positives, ns=(1, 2, 3, 4))
    # q0 hits at rank 1; q1's positive (270 deg) is the farthest -> rank 4; q2 has none
    assert r == pytest.approx({1: 100 / 3, 2: 100 / 3, 3: 100 / 3, 4: 200 / 3})


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recall_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    db = unit(rng.normal(size=(300, 16)))
    q = unit(db[rng.integers(0, 300, 80)] + 0.4 * rng.normal(size=(80, 16)))
    positives = [np.flatnonzero(rng.random(300) < 0.02) for _ in range(80)]
    positives[3] = np.zeros(0, dtype=np.int64)
    ns = (1, 5, 10, 25)
    got = recall_at_n(search(db, q, 25), positives, ns)
    assert got == pytest.approx(brute_recall(db, q, positives, ns))
    # cumulative in N
    assert got[1] <= got[5] <= got[10] <= got[25]


def test_small_database_and_edge_cases() -> None:
    db = unit(np.eye(3))
    q = unit(np.array([[1.0, 0.2, 0.0]]))
    preds = search(db, q, 25)
    assert preds.shape == (1, 3)  # k capped at the database size
    assert recall_at_n(preds, [np.array([2])], (1, 25)) == {1: 0.0, 25: 100.0}
    assert recall_at_n(np.zeros((0, 3), dtype=np.int64), [], (1,)) == {1: 0.0}
    # -1 (faiss "no result") never counts as a hit
    assert not hits_matrix(np.array([[-1, 0]]), [np.array([0])])[0, 0]


def test_describe_batches_in_order() -> None:
    class Flat(torch.nn.Module):
        dim = 4

        def forward(self, x):
            return torch.nn.functional.normalize(x.flatten(1)[:, :4], dim=1)

    data = torch.randn(10, 3, 2, 2)
    out = describe_batches(Flat(), iter(data.split(3)), 10, "cpu")
    assert np.allclose(out, torch.nn.functional.normalize(data.flatten(1)[:, :4], dim=1))


def test_cli_eval_json_and_predictions(tmp_path, monkeypatch, capsys) -> None:
    import csv
    import json

    from vpr_tune.cli import main
    from vpr_tune.train import Trainer

    monkeypatch.setenv("VPR_TUNE_CACHE", str(tmp_path / "cache"))
    root = make_tiny_root(tmp_path / "data")
    trainer = Trainer(tiny_cfg(), root, device="cpu", log=lambda *_: None)
    val = trainer.validate()
    ckpt = trainer.save_checkpoint(tmp_path / "best.pt")
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(ckpt), "--data", str(root), "--json",
                 "--save-preds", "3", "--preds-dir", str(tmp_path / "p")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["R@1"] == pytest.approx(val["val/R@1"])  # same model, same split
    assert (out["queries"], out["database"], out["queries_without_positive"]) == (8, 8, 0)
    assert out["synthetic"] is False
    for n in (1, 5, 10, 25):  # each recall with its 95 % interval over the 8 queries
        assert out[f"R@{n}_lo"] <= out[f"R@{n}"] <= out[f"R@{n}_hi"]
    assert main(["eval", "--checkpoint", str(ckpt), "--data", str(root)]) == 0
    assert f"{out['R@1']:.1f} ({out['R@1_lo']:.1f}–{out['R@1_hi']:.1f})" in \
        capsys.readouterr().out
    rows = list(csv.DictReader((tmp_path / "p" / "predictions.csv").open()))
    assert len(rows) == 8 * 3 and rows[0]["rank"] == "1"
    assert rows[0]["query"].startswith("queries/") and rows[0]["database"].startswith("database/")
    r1 = 100 * sum(r["correct"] == "1" for r in rows if r["rank"] == "1") / 8
    assert r1 == pytest.approx(out["R@1"])
    assert len(list((tmp_path / "p" / "preds").glob("*.png"))) == 8
    # a file that is not a checkpoint: one clear line, exit 2
    (tmp_path / "junk.pt").write_text("x")
    assert main(["eval", "--checkpoint", str(tmp_path / "junk.pt"), "--data", str(root)]) == 2
    assert "not a vpr-tune checkpoint" in capsys.readouterr().err


def test_street_world_tiny_mixvpr_eval_other_split(street_world_tiny, tmp_path, capsys) -> None:
    """A MixVPR model trained at 32x32 evaluates on another split through the CLI; the
    report says the data is synthetic."""
    import json

    from vpr_tune.cli import main
    from vpr_tune.train import Trainer

    cfg = tiny_cfg(model={"aggregator": {"name": "mixvpr", "out_channels": 32,
                                         "mix_depth": 1, "out_rows": 2}},
                   budget={"max_epochs": 1, "batches_per_epoch": 1})
    trainer = Trainer(cfg, street_world_tiny, device="cpu", log=lambda *_: None)
    row = trainer.run_epoch()
    assert 0.0 <= row["val/R@1"] <= 100.0
    ckpt = trainer.save_checkpoint(tmp_path / "m.pt")
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(ckpt), "--data", str(street_world_tiny),
                 "--split", "tokyo_xs/test", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["synthetic"] is True and out["queries"] > 0 and out["database"] > 0
    assert out["R@1"] <= out["R@5"] <= out["R@10"] <= out["R@25"]
