"""``vpr-tune doctor``: will a search run on this machine? A checklist, one line per check.

Each check is a function ``(Context) -> list[Check]`` in :data:`CHECKS`; adding a check is
writing one function and listing it. A check that raises becomes a ✘ line of its own, so a
broken install (torch missing) still prints the whole list. Here: the install and the
machine (packages, GPU, Ray, precision, one train step, weights, tracking); the data and
disk checks are in :mod:`vpr_tune.doctor_data`, ``Check`` and ``Context`` in
:mod:`vpr_tune.doctor_context`.

>>> checks = run_checks(Context(space_path=Path("search_spaces/demo.yaml")))
>>> exit_code(checks)   # 0: everything needed is there; 2: some ✘
0
"""

from __future__ import annotations

import importlib
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from vpr_tune.doctor_context import FAIL, OK, WARN, Check, Context
from vpr_tune.doctor_data import check_data, check_disk, check_val_resolution
from vpr_tune.errors import UserError

# ---------------------------------------------------------------------------- checks
PACKAGES = {  # import name -> (pip name, what needs it)
    "torch": ("torch", "training"), "torchvision": ("torchvision", "the ResNet backbones"),
    "ray": ("ray[tune]", "the search"), "optuna": ("optuna", "TPE search"),
    "faiss": ("faiss-cpu", "Recall@N"), "pytorch_metric_learning": ("pytorch-metric-learning",
                                                                    "losses and miners"),
}
_MISMATCH = ("torchvision does not match torch: pip install --force-reinstall torchvision "
             "(let pip pick the torch it needs).")


def check_python(ctx: Context) -> list[Check]:
    from importlib.metadata import PackageNotFoundError, metadata

    version = ".".join(map(str, sys.version_info[:3]))
    try:  # pyproject.toml's requires-python, e.g. ">=3.11"
        need = str(metadata("vpr-tune")["Requires-Python"]).removeprefix(">=")
    except (PackageNotFoundError, KeyError):
        need = "3"
    if sys.version_info[:2] < tuple(int(x) for x in need.split(".")[:2]):
        return [Check(FAIL, "python", version, f"vpr-tune needs Python {need} or newer.")]
    return [Check(OK, "python", f"{version} ({sys.executable})")]


def check_packages(ctx: Context) -> list[Check]:
    out = []
    for module, (pip_name, why) in PACKAGES.items():
        try:
            mod = importlib.import_module(module)
        except Exception as exc:  # ImportError, or a broken build (torchvision::nms missing)
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            fix = f"pip install '{pip_name}' (needed for {why})."
            if module == "torchvision" and "torchvision::" in msg:
                fix = _MISMATCH
            out.append(Check(FAIL, module, f"cannot import: {msg}", fix))
            continue
        out.append(Check(OK, module, str(getattr(mod, "__version__", "installed"))))
    if all(c.status == OK for c in out if c.name in ("torch", "torchvision")):
        out.append(_torchvision_ops())
    return out


def _torchvision_ops() -> Check:
    """torchvision's compiled ops must match torch (a CPU-only torch with a CUDA
    torchvision imports but has no kernels)."""
    import torch
    import torchvision

    try:
        torchvision.ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)
    except Exception as exc:
        return Check(FAIL, "torchvision ops", f"{type(exc).__name__}: {str(exc)[:200]}",
                     _MISMATCH)
    return Check(OK, "torchvision ops", f"match torch {torch.__version__}")


def check_space(ctx: Context) -> list[Check]:
    if ctx.space_path is None:
        return [Check(WARN, "space", "none given: checks use the defaults",
                      "Pass the search-space YAML to check its model, weights and data.")]
    from vpr_tune.config import load_space
    from vpr_tune.tune.sampling import count_trials
    from vpr_tune.tune.searchers import plan_line

    try:
        ctx.space = load_space(ctx.space_path)
    except UserError as exc:
        return [Check(FAIL, "space", str(exc), "Fix the YAML key named (schema: "
                      "search_spaces/README.md).")]
    n = count_trials(ctx.space, int(ctx.space.base["search"]["num_samples"]))
    return [Check(OK, "space", f"{ctx.space_path}: {plan_line(ctx.space, n)}")]


def check_cuda(ctx: Context) -> list[Check]:
    import torch

    want = float(ctx.resources()["gpu"])
    if not torch.cuda.is_available():
        built = torch.version.cuda or "none (CPU-only build)"
        if want > 0:
            return [Check(FAIL, "cuda", f"torch sees no GPU (CUDA in this torch: {built}) but "
                          f"resources.gpu is {want:g}",
                          "Install a CUDA build of torch that matches the driver (nvidia-smi), "
                          "or set resources: {gpu: 0} to train on CPU.")]
        return [Check(WARN, "cuda", f"no GPU visible to torch (CUDA in this torch: {built})",
                      "Trials train on the CPU: fine for street-world, slow for real data.")]
    names = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        names.append(f"{p.name} {p.total_memory / 2**30:.0f} GiB")
    return [Check(OK, "cuda", f"torch {torch.version.cuda}: " + ", ".join(names))]


def check_ray(ctx: Context) -> list[Check]:
    """Ray's own view of the machine (a short local Ray: what a search would start)."""
    import ray
    import torch

    from vpr_tune.tune.ray_session import stop_ray

    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False,
                 logging_level="ERROR")
    try:
        resources = ray.cluster_resources()
    finally:
        if started:
            stop_ray()
    gpus, cpus = float(resources.get("GPU", 0)), os.cpu_count() or 1
    res = ctx.resources()
    detail = f"Ray {ray.__version__} sees {gpus:g} GPU(s), {cpus} CPU core(s)"
    torch_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if float(res["gpu"]) > gpus:
        return [Check(FAIL, "ray", f"{detail}; a trial asks for {res['gpu']:g} GPU",
                      "Make the GPUs visible to Ray (CUDA_VISIBLE_DEVICES, or ray start "
                      "--num-gpus) or lower resources.gpu.")]
    if torch_gpus != gpus:
        return [Check(WARN, "ray", f"{detail}; torch sees {torch_gpus}",
                      "Check CUDA_VISIBLE_DEVICES: Ray and torch should see the same GPUs.")]
    if float(res["cpu"]) > cpus:
        return [Check(FAIL, "ray", f"{detail}; a trial asks for {res['cpu']:g} CPUs",
                      f"Set resources.cpu to at most {cpus}.")]
    return [Check(OK, "ray", detail)]


def check_precision(ctx: Context) -> list[Check]:
    import torch

    from vpr_tune.precision import autocast_dtype, cpu_bf16_units

    precision, device = str(ctx.resources().get("precision", "auto")), ctx.device()
    dtype = autocast_dtype(precision, device)
    name = str(dtype).removeprefix("torch.") + " autocast" if dtype else "float32"
    detail = f"resources.precision {precision} -> {name} on {device}"
    if device == "cpu":
        units = cpu_bf16_units()
        detail += f" (CPU bfloat16: {units})" if units else " (CPU bfloat16: emulated)"
        if dtype is not None and not units:
            return [Check(WARN, "precision", detail, "This CPU emulates reduced precision "
                          "(slower than float32): set resources: {precision: fp32}.")]
    elif dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        return [Check(FAIL, "precision", detail + ": this GPU has no bfloat16",
                      "Set resources: {precision: auto} (float16) or fp32.")]
    return [Check(OK, "precision", detail)]


def check_step(ctx: Context) -> list[Check]:
    """One forward + backward of the space's largest model at its precision on its device."""
    import torch

    from vpr_tune.model import build_model
    from vpr_tune.precision import autocast, autocast_dtype

    cfg = ctx.largest()
    device = ctx.device()
    dtype = autocast_dtype(str(cfg["resources"].get("precision", "auto")), device)
    size = [int(v) for v in cfg["data"]["image_size"]]
    start = time.perf_counter()
    try:
        model = build_model({**cfg["model"], "pretrained": "none"}, size).to(device)
        x = torch.randn(4, 3, *size, device=device)
        with autocast(device, dtype):
            desc = model(x)
        desc.float().pow(2).sum().backward()
        if device == "cuda":
            torch.cuda.synchronize()
    except Exception as exc:  # out of memory, a CUDA/driver mismatch, a bad kernel
        return [Check(FAIL, "train step", f"{type(exc).__name__}: {str(exc)[:200]}",
                      "Fix the device error above (drivers, memory, precision) before a search.")]
    what = f"{cfg['model']['backbone']} + {cfg['model']['aggregator']['name']}"
    return [Check(OK, "train step", f"{what} at {size[0]}x{size[1]}, batch 4, forward+backward "
                  f"on {device} in {time.perf_counter() - start:.1f}s")]


def can_reach(host: str = "download.pytorch.org", port: int = 443, timeout: float = 3) -> bool:
    """True when a TCP connection to ``host`` opens (nothing is downloaded)."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def check_weights(ctx: Context) -> list[Check]:
    from vpr_tune.model.backbones import check_weights_file, imagenet_weights_file

    out = []
    for backbone in ctx.model_values("model.backbone"):
        for choice in ctx.model_values("model.pretrained"):
            name = f"weights {backbone}"
            if str(choice).lower() == "none":
                out.append(Check(OK, name, "pretrained: none (random init, nothing to load)"))
            elif str(choice).lower() == "imagenet":
                path = imagenet_weights_file(backbone)
                if path.is_file():
                    out.append(Check(OK, name, f"ImageNet weights in the torch cache: {path}"))
                elif can_reach():
                    out.append(Check(WARN, name, f"ImageNet weights not in cache ({path}); "
                                     "will download on first use",
                                     "Nothing to do online; offline nodes need the file there."))
                else:
                    out.append(Check(FAIL, name, f"ImageNet weights not in cache ({path}) "
                                     "and download.pytorch.org is unreachable",
                                     f"Copy the file to {path}, or set pretrained: PATH to a "
                                     "local .pth."))
            else:
                try:
                    check_weights_file(choice, backbone)
                    out.append(Check(OK, name, f"{choice} loads"))
                except UserError as exc:
                    out.append(Check(FAIL, name, str(exc), "Point model.pretrained at a "
                                     "torchvision ResNet state_dict or a vpr-tune best.pt."))
    return out


def check_tracking(ctx: Context) -> list[Check]:
    """The MLflow URI (``--mlflow`` or the space's ``tracking.mlflow``), as ``run`` checks it."""
    from vpr_tune.tune.tracking import tracking_uri_problem

    uri = ctx.mlflow or (ctx.space.base["tracking"]["mlflow"] if ctx.space else None)
    if not uri:
        return [Check(OK, "tracking", "TensorBoard and the Optuna study (no MLflow URI given)")]
    problem = tracking_uri_problem(uri)
    if problem:
        return [Check(FAIL, "tracking", f"MLflow {uri}: {problem}",
                      "Pass a URI MLflow can open: sqlite:///ABS/PATH.db, http://HOST:PORT or "
                      "a folder.")]
    return [Check(OK, "tracking", f"MLflow {uri}")]


CHECKS: list[Callable[[Context], list[Check]]] = [
    check_python, check_packages, check_space, check_cuda, check_ray, check_precision,
    check_step, check_weights, check_data, check_val_resolution, check_tracking, check_disk,
]


def run_checks(ctx: Context, checks: list[Callable[[Context], list[Check]]] | None = None,
               on_check: Callable[[Check], Any] | None = None) -> list[Check]:
    """Run every check in order; a check that raises is a ✘ line naming the error."""
    out: list[Check] = []
    for fn in CHECKS if checks is None else checks:
        name = fn.__name__.removeprefix("check_")
        try:
            got = fn(ctx)
        except Exception as exc:  # a broken install must not hide the other lines
            msg = str(exc).splitlines()[0] if str(exc) else ""
            got = [Check(FAIL, name, f"{type(exc).__name__}: {msg}"[:300],
                         "Fix this first: later checks may depend on it.")]
        for check in got:
            out.append(check)
            if on_check is not None:
                on_check(check)
    return out


def exit_code(checks: list[Check]) -> int:
    """0 when nothing is ✘, else 2."""
    return 2 if any(c.status == FAIL for c in checks) else 0


def as_json(checks: list[Check]) -> dict[str, Any]:
    """``{"ok": bool, "checks": [{"status", "name", "detail", "fix"}, ...]}``."""
    return {"ok": exit_code(checks) == 0, "checks": [asdict(c) for c in checks]}
