"""Shared fixtures; what they are built from lives in ``tests/helpers.py``."""

from __future__ import annotations

import os

import pytest

from tests.helpers import FakeTrainer, use_trainer, write_hand_experiment, write_space
from vpr_tune.tune.ray_env import set_ray_environment

# Ray and torch must not grab every core of the 2-core test machine per process.
os.environ.setdefault("OMP_NUM_THREADS", "1")
set_ray_environment()  # what a search sets; tests that call ray.init() need it too
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def _close_figures():
    """Tests that draw return figures and keep them; pyplot holds each until closed."""
    yield
    import sys

    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")


# ---------------------------------------------------------------- experiments
@pytest.fixture
def fake_trainer(monkeypatch):
    """Ray trials build :class:`tests.helpers.FakeTrainer` (trains nothing) for the test."""
    with use_trainer(monkeypatch, FakeTrainer) as cls:
        yield cls


@pytest.fixture
def hand_experiment(tmp_path, monkeypatch):
    """``results/hand`` under a tmp storage (also the cwd's results/), street-world data."""
    monkeypatch.delenv("VPR_TUNE_DATA", raising=False)
    return write_hand_experiment(tmp_path / "results" / "hand")


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory, street_world_tiny):
    """(street-world tiny root, [3 real best.pt files]) made with ``Trainer.save_model``, as
    a trial writes them: untrained ResNet-18 + GeM at 32 px with seeds 0..2, so their
    Recall@N differ."""
    from vpr_tune.config import defaults
    from vpr_tune.train import Trainer

    base = tmp_path_factory.mktemp("retest")
    root = street_world_tiny
    paths = []
    for seed in range(3):
        cfg = defaults()
        cfg["seed"] = seed
        cfg["data"].update(image_size=[32, 32], augment=False)
        cfg["budget"].update(max_epochs=1, batches_per_epoch=1, places_per_batch=4,
                             images_per_place=2, eval_batch_size=32)
        trainer = Trainer(cfg, root, device="cpu", log=lambda _m: None)
        paths.append(trainer.save_model(base / f"seed{seed}.pt"))
    return root, paths


@pytest.fixture
def retest_experiment(hand_experiment, tiny_checkpoints):
    """The hand-made experiment on tiny street-world with real checkpoints for t0/t4/t5
    (its top trials), ready for ``best --retest``."""
    import shutil

    import yaml

    from vpr_tune.analysis import read_table

    root, checkpoints = tiny_checkpoints
    space = yaml.safe_load((hand_experiment / "space.yaml").read_text())
    space["data"] = {"root": str(root)}
    (hand_experiment / "space.yaml").write_text(yaml.safe_dump(space))
    trials = read_table(hand_experiment / "trials.csv").set_index("trial_id")
    for tid, src in zip(("t0", "t4", "t5"), checkpoints, strict=True):
        shutil.copy2(src, trials.loc[tid, "checkpoint"])
    return hand_experiment


# ---------------------------------------------------------------- data
@pytest.fixture(scope="session")
def street_world_tiny(tmp_path_factory):
    """Root of a street-world ``tiny`` dataset (seed 0), generated once per test session.

    Read-only for tests: copy it (``shutil.copytree``) before changing anything.
    """
    from vpr_tune.data.street_world import synthesize

    base = tmp_path_factory.mktemp("street_world")
    return synthesize(base / "tiny", size="tiny", seed=0, log=lambda _m: None)


@pytest.fixture(scope="session")
def searched_experiment(tmp_path_factory, street_world_tiny):
    """An experiment made by a real tiny search through the CLI (3 trials, 2 epochs, 32 px)."""
    base = tmp_path_factory.mktemp("search")
    space = write_space(base / "tiny.yaml",
                        optimizer={"name": {"choice": ["sgd", "adam"]},
                                   "lr": {"loguniform": [1.0e-3, 1.0e-1]}},
                        search={"scheduler": "asha"})
    storage = base / "results"
    from vpr_tune.cli import main

    rc = main(["run", str(space), "--name", "tiny", "--storage", str(storage),
               "--data", str(street_world_tiny)])
    assert rc == 0
    return storage / "tiny"


# ---------------------------------------------------------------- CI: no silent skips
def pytest_sessionfinish(session, exitstatus):
    """Under CI (``CI=true``) a skipped test fails the run: README's claims rest on every
    test (the S3 one skips when its local server cannot start)."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if os.environ.get("CI", "").lower() in ("1", "true", "yes") and skipped:
        reporter.write_line(f"CI: {len(skipped)} test(s) skipped; a skip is a failure here: "
                            + ", ".join(r.nodeid for r in skipped[:5]), red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
