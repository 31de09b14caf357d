"""search_spaces/recipes/: each published recipe validates, holds the published values, is
the first point of the search around it, and trains; each search dry-runs.

Offline here: the recipes' weights (ImageNet, DINOv2's lvd142m) cannot be downloaded, so the
training test swaps in random weights and a tiny budget (28-32 px, 4 x 2 images, 1 batch).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from vpr_tune.config import load_space

RECIPES = Path(__file__).resolve().parents[1] / "search_spaces" / "recipes"
NAMES = ("mixvpr", "salad", "boq")
# The published values each recipe must hold (checked against the sources in its header).
PUBLISHED = {
    "mixvpr": {"model.backbone": "resnet50", "model.cut": "layer3", "model.freeze_stages": 3,
               "model.aggregator.out_channels": 1024, "model.aggregator.out_rows": 4,
               "optimizer.name": "sgd", "optimizer.lr": 0.05, "optimizer.weight_decay": 0.001,
               "scheduler.gamma": 0.3, "budget.places_per_batch": 120,
               "budget.images_per_place": 4, "data.image_size": [320, 320],
               "data.eval_image_size": None},
    "salad": {"model.backbone": "dinov2_vitb14", "model.train_blocks": 4,
              "model.aggregator.name": "salad", "optimizer.name": "adamw",
              "optimizer.lr": 6e-5, "optimizer.weight_decay": 9.5e-9,
              "scheduler.name": "linear", "scheduler.end_factor": 0.2,
              "budget.max_epochs": 4, "budget.places_per_batch": 60,
              "data.image_size": [224, 224], "data.eval_image_size": [322, 322]},
    "boq": {"model.backbone": "dinov2_vitb14", "model.train_blocks": 2,
            "model.aggregator.name": "boq", "optimizer.name": "adamw", "optimizer.lr": 2e-4,
            "optimizer.backbone_lr_scale": 0.2, "scheduler.warmup_epochs": 10,
            "scheduler.gamma": 0.1, "budget.max_epochs": 40, "budget.places_per_batch": 160,
            "data.image_size": [280, 280], "data.eval_image_size": [322, 322]},
}
DIMS = {"mixvpr": 4096, "salad": 8448, "boq": 12288}


def _get(cfg: dict, dotted: str):
    for key in dotted.split("."):
        cfg = cfg[key]
    return cfg


@pytest.mark.parametrize("name", NAMES)
def test_recipe_holds_the_published_values(name: str) -> None:
    recipe = load_space(RECIPES / f"{name}.yaml")
    assert not recipe.params  # a train YAML: every value fixed
    for dotted, value in PUBLISHED[name].items():
        assert _get(recipe.base, dotted) == value, dotted
    header = (RECIPES / f"{name}.yaml").read_text().split("\nseed:")[0]
    assert "Source:" in header and "R@1" in header and "real data" in header
    assert "Projected GPU hours" in header and "A100-class" in header


@pytest.mark.parametrize("name", NAMES)
def test_search_starts_from_the_recipe(name: str) -> None:
    """The search's first point is the recipe: each searched key at the recipe's value, and
    every key it fixes as the recipe fixes it (bar the epochs a search may shorten)."""
    recipe = load_space(RECIPES / f"{name}.yaml").base
    search = load_space(RECIPES / f"{name}_search.yaml")
    first = search.base["search"]["points_to_evaluate"][0]
    assert set(first) == set(search.params)
    for dotted, value in first.items():
        assert _get(recipe, dotted) == value, dotted
    for section in ("data", "model", "loss", "miner", "optimizer", "scheduler", "budget"):
        for key, value in search.base[section].items():
            if f"{section}.{key}" not in search.params and key != "max_epochs":
                assert recipe[section].get(key) == value, f"{section}.{key}"


@pytest.mark.parametrize("name", NAMES)
def test_recipe_trains_a_batch(street_world_tiny, name: str) -> None:
    """The recipe as loaded (its model, loss, optimizer, scheduler) trains on street-world
    tiny with random weights and a tiny budget, at the descriptor size of the paper."""
    from vpr_tune.train import Trainer

    cfg = load_space(RECIPES / f"{name}.yaml").base
    cfg["model"]["pretrained"] = "none"
    cfg["data"].update(image_size=[32, 32] if name == "mixvpr" else [28, 28], augment=False,
                       eval_image_size=None if name == "mixvpr" else [42, 42])  # 322 -> 42
    cfg["budget"].update(max_epochs=1, batches_per_epoch=1, places_per_batch=4,
                         images_per_place=2, eval_batch_size=32)
    cfg["scheduler"]["warmup_epochs"] = 0
    cfg["resources"]["precision"] = "fp32"
    trainer = Trainer(cfg, street_world_tiny, device="cpu", num_threads=1, log=lambda _m: None)
    row = trainer.run_epoch()
    assert row["descriptor_dim"] == DIMS[name]
    assert row["train/loss"] >= 0 and 0 <= row["val/R@1"] <= 100


def test_searches_dry_run(tmp_path, street_world_tiny) -> None:
    """`vpr-tune run --dry-run` on each search (resources cut to this machine's CPU); a ViT
    search with an image size that is no multiple of 14 stops before anything starts."""
    from tests.helpers import run_cli

    for name in NAMES:
        space = yaml.safe_load((RECIPES / f"{name}_search.yaml").read_text())
        space["resources"] = {"cpu": 1, "gpu": 0}
        path = tmp_path / f"{name}_search.yaml"
        path.write_text(yaml.safe_dump(space))
        assert run_cli(["run", str(path), "--dry-run", "--data", str(street_world_tiny),
                        "--storage", str(tmp_path / "results")]) == 0
    space["data"]["image_size"] = {"choice": [280, 300]}
    path.write_text(yaml.safe_dump(space))
    assert run_cli(["run", str(path), "--dry-run", "--data", str(street_world_tiny),
                    "--storage", str(tmp_path / "results")]) == 2
