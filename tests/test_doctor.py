"""``vpr-tune doctor``: every check with its failure faked gives its ✘ line and exit 2."""

from __future__ import annotations

import importlib
import json
import shutil
from collections import namedtuple
from pathlib import Path

import pytest

from vpr_tune import doctor, doctor_data
from vpr_tune.doctor import FAIL, OK, WARN, Context, exit_code, run_checks

SPACE = """
data: {image_size: [32, 32], augment: false}
model: {cut: layer3, aggregator: {name: gem}}
optimizer: {name: adam, lr: {loguniform: [1.0e-4, 1.0e-2]}}
budget: {max_epochs: 2, batches_per_epoch: 2, places_per_batch: 4, images_per_place: 2}
search: {algorithm: random, num_samples: 2, max_concurrent: 1}
resources: {cpu: 1, gpu: 0}
"""


def _ctx(tmp_path: Path, text: str = SPACE, **kw) -> Context:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    ctx = Context(space_path=path, **kw)
    assert [c.status for c in doctor.check_space(ctx)] == [OK]
    return ctx


def _only(checks: list, status: str, name: str):
    hits = [c for c in checks if c.status == status and c.name.startswith(name)]
    assert hits, checks
    if status == FAIL:
        assert exit_code(checks) == 2
    return hits[0]


def test_missing_module_is_a_fail(monkeypatch) -> None:
    real = importlib.import_module

    def fake(name: str, *a):
        if name == "faiss":
            raise ImportError("No module named 'faiss'")
        if name == "torchvision":
            raise RuntimeError("operator torchvision::nms does not exist")
        return real(name, *a)

    monkeypatch.setattr(doctor.importlib, "import_module", fake)
    checks = doctor.check_packages(Context())
    assert exit_code(checks) == 2
    assert "faiss-cpu" in _only(checks, FAIL, "faiss").fix
    assert "force-reinstall torchvision" in _only(checks, FAIL, "torchvision").fix
    assert _only(checks, OK, "torch").detail  # the others still report their version


def test_bad_space_is_a_fail(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("optimizer: {name: nosuch}\n")
    checks = doctor.check_space(Context(space_path=path))
    assert "nosuch" in _only(checks, FAIL, "space").detail


def test_no_cuda_when_the_space_asks_for_a_gpu(tmp_path, monkeypatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    ctx = _ctx(tmp_path, SPACE.replace("gpu: 0", "gpu: 1"))
    check = _only(doctor.check_cuda(ctx), FAIL, "cuda")
    assert "resources.gpu" in check.detail and "gpu: 0" in check.fix
    # without a GPU request it is only a warning
    assert exit_code(doctor.check_cuda(_ctx(tmp_path))) == 0


def test_ray_without_gpus_when_the_space_asks_for_one(tmp_path, monkeypatch) -> None:
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: True)  # use "our" Ray: no start
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    ctx = _ctx(tmp_path, SPACE.replace("gpu: 0", "gpu: 1"))
    check = _only(doctor.check_ray(ctx), FAIL, "ray")
    assert "0 GPU" in check.detail


def test_train_step_failure_is_a_fail(tmp_path, monkeypatch) -> None:
    import vpr_tune.model as model

    def boom(*_a, **_k):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(model, "build_model", boom)
    check = _only(doctor.check_step(_ctx(tmp_path)), FAIL, "train step")
    assert "out of memory" in check.detail


def test_train_step_runs_the_space_model(tmp_path) -> None:
    (check,) = doctor.check_step(_ctx(tmp_path))
    assert check.status == OK and "32x32" in check.detail


def test_unreadable_weights_file_is_a_fail(tmp_path) -> None:
    bad = tmp_path / "weights.pth"
    bad.write_bytes(b"not torch weights")
    ctx = _ctx(tmp_path, SPACE.replace("cut: layer3", f"cut: layer3, pretrained: {bad}"))
    check = _only(doctor.check_weights(ctx), FAIL, "weights")
    assert str(bad) in check.detail


def test_local_weights_file_that_loads(tmp_path) -> None:
    import torch
    import torchvision

    good = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), good)
    ctx = _ctx(tmp_path, SPACE.replace("cut: layer3", f"cut: layer3, pretrained: {good}"))
    assert [c.status for c in doctor.check_weights(ctx)] == [OK]


def test_imagenet_weights_cached_missing_or_unreachable(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    ctx = _ctx(tmp_path, SPACE.replace("cut: layer3", "cut: layer3, pretrained: imagenet"))
    monkeypatch.setattr(doctor, "can_reach", lambda *a, **k: True)
    check = _only(doctor.check_weights(ctx), WARN, "weights")
    assert "will download on first use" in check.detail
    monkeypatch.setattr(doctor, "can_reach", lambda *a, **k: False)
    check = _only(doctor.check_weights(ctx), FAIL, "weights")
    assert "unreachable" in check.detail and "pretrained: PATH" in check.fix
    from vpr_tune.model.backbones import imagenet_weights_file

    cached = imagenet_weights_file("resnet18")
    assert cached.is_relative_to(tmp_path / "torch")
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    assert [c.status for c in doctor.check_weights(ctx)] == [OK]


def test_missing_split_is_a_fail(tmp_path, street_world_tiny) -> None:
    root = tmp_path / "data"
    shutil.copytree(street_world_tiny, root)
    shutil.rmtree(root / "sf_xs" / "val")
    checks = doctor.check_data(_ctx(tmp_path, data=str(root)))
    check = _only(checks, FAIL, "data val")
    assert "sf_xs/val" in check.fix


def test_data_summary_and_missing_test_split_is_a_warning(tmp_path, street_world_tiny) -> None:
    root = tmp_path / "data"
    shutil.copytree(street_world_tiny, root)
    shutil.rmtree(root / "tokyo_xs")
    checks = doctor.check_data(_ctx(tmp_path, data=str(root)))
    assert exit_code(checks) == 0
    assert "retest" in _only(checks, WARN, "data tokyo").fix
    assert "places" in _only(checks, OK, "data gsv_xs/train").detail


def test_val_resolution_warns_when_coarse(tmp_path, street_world_tiny) -> None:
    ctx = _ctx(tmp_path, data=str(street_world_tiny))
    doctor.check_data(ctx)
    assert ctx.notes["val_queries"] == 20  # tiny: one query moves R@N by 5 points
    check = _only(doctor.check_val_resolution(ctx), WARN, "val resolution")
    assert "20 val queries" in check.detail and "5.00 points" in check.detail
    assert "±17.5" in check.detail  # 1.96 * sqrt(0.2 * 0.8 / 20)
    assert "more val queries" in check.fix and "val/MRR" in check.fix
    ctx.notes["val_queries"] = 8000  # SF-XS val: ±0.9 points
    assert [c.status for c in doctor.check_val_resolution(ctx)] == [OK]
    assert doctor.check_val_resolution(Context()) == []  # no data checked: nothing to say


def test_unreadable_image_is_a_fail(tmp_path, street_world_tiny) -> None:
    root = tmp_path / "data"
    shutil.copytree(street_world_tiny, root)
    victim = next((root / "sf_xs" / "val" / "queries").glob("*.jpg"))
    victim.write_bytes(victim.read_bytes()[:100])
    checks = doctor.check_data(_ctx(tmp_path, data=str(root), decode=True))
    assert victim.name in _only(checks, FAIL, "data").detail


def test_no_disk_space_is_a_fail(tmp_path, monkeypatch) -> None:
    usage = namedtuple("usage", "total used free")
    monkeypatch.setenv("VPR_TUNE_RESULTS", str(tmp_path / "results"))
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage(10, 10, 0))
    ctx = _ctx(tmp_path)
    check = _only(doctor.check_disk(ctx), FAIL, "disk")
    assert "0.0 GiB free" in check.detail
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage(2**40, 0, 2**40))
    assert exit_code(doctor.check_disk(ctx)) == 0


def test_checkpoint_volume_is_bounded_by_running_and_kept_trials(tmp_path) -> None:
    """(running x 2 newest + kept finished) folders, not one per trial (checkpoints.py)."""
    few = doctor_data.checkpoint_bytes(_ctx(tmp_path))  # 2 trials: both running, both kept
    many = doctor_data.checkpoint_bytes(_ctx(tmp_path, SPACE.replace("num_samples: 2",
                                                                     "num_samples: 20")))
    folder = few // (1 * 2 + 2)  # max_concurrent 1: one running trial, 2 finished kept
    assert folder > 0 and few == 4 * folder
    assert many == (1 * 2 + 5) * folder  # keep_checkpoints 5 of the 20


def test_a_check_that_raises_is_its_own_fail_line() -> None:
    def check_broken(ctx: Context) -> list:
        raise ValueError("kaput")

    checks = run_checks(Context(), [doctor.check_python, check_broken])
    assert [c.status for c in checks] == [OK, FAIL]
    assert checks[1].name == "broken" and "kaput" in checks[1].detail


@pytest.fixture
def fast_checks(monkeypatch):
    """The registry without the slow ones (Ray start, a training step)."""
    fast = [c for c in doctor.CHECKS if c not in (doctor.check_ray, doctor.check_step)]
    monkeypatch.setattr(doctor, "CHECKS", fast)
    return fast


def test_cli_json_shape_and_exit_status(tmp_path, monkeypatch, capsys, street_world_tiny,
                                        fast_checks) -> None:
    from vpr_tune.cli import main

    monkeypatch.setenv("VPR_TUNE_RESULTS", str(tmp_path / "results"))
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    rc = main(["doctor", str(space), "--data", str(street_world_tiny), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["ok"] is True
    assert {tuple(sorted(c)) for c in out["checks"]} == {("detail", "fix", "name", "status")}
    names = [c["name"] for c in out["checks"]]
    for name in ("python", "torch", "ray", "space", "cuda", "precision", "weights resnet18",
                 "data gsv_xs/train", "data sf_xs/val", "disk"):
        assert name in names
    assert {c["status"] for c in out["checks"]} <= {OK, FAIL, WARN}

    rc = main(["doctor", str(space), "--data", str(tmp_path / "nowhere")])
    text = capsys.readouterr().out
    assert rc == 2
    assert f"{FAIL} data" in text and "does not exist" in text


@pytest.mark.slow
def test_doctor_on_the_demo_space_passes_here() -> None:
    """Everything, Ray start and a training step included, on this machine."""
    checks = run_checks(Context(space_path=Path("search_spaces/demo.yaml")))
    assert exit_code(checks) == 0, [c for c in checks if c.status == FAIL]


def test_torchvision_ops_that_do_not_match_torch(monkeypatch) -> None:
    import torchvision

    def nms(*_a, **_k):
        raise RuntimeError("Could not run 'torchvision::nms' with arguments from the 'CPU' "
                           "backend")

    monkeypatch.setattr(torchvision.ops, "nms", nms)
    checks = doctor.check_packages(Context())
    assert "force-reinstall" in _only(checks, FAIL, "torchvision ops").fix
