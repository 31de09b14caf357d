"""The analysis notebooks: stored without outputs, and they run headless (nbclient) against a
small experiment with a real retest, each producing non-empty figures."""

from __future__ import annotations

import base64
import runpy
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from vpr_tune.analysis import read_table

ANALYSIS = Path(__file__).resolve().parents[1] / "analysis"
NOTEBOOKS = ["search_overview.ipynb", "hyperparameter_effects.ipynb", "retest.ipynb"]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_stored_without_outputs(name: str) -> None:
    nb = nbformat.read(ANALYSIS / name, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)
    assert "VPR_TUNE_EXPERIMENT" in code[0].source  # the parameter is in the first code cell


def test_generator_matches_stored_notebooks() -> None:
    """analysis/make_notebooks.py is the source of the notebooks: they must not drift."""
    generator = runpy.run_path(str(ANALYSIS / "make_notebooks.py"))  # not run as a script
    for name, cells in generator["NOTEBOOKS"].items():
        built = nbformat.writes(generator["build"](cells))
        stored = (ANALYSIS / name).read_text()
        assert built.strip() == stored.strip(), f"{name}: run analysis/make_notebooks.py"


@pytest.fixture(scope="module")
def retested_experiment(tmp_path_factory, tiny_checkpoints):
    """The hand-made experiment with real checkpoints, retested for real (top 3)."""
    import shutil

    import yaml

    from tests.helpers import write_hand_experiment
    from vpr_tune.analysis import load_experiment
    from vpr_tune.retest import retest

    root, checkpoints = tiny_checkpoints
    folder = write_hand_experiment(tmp_path_factory.mktemp("nb") / "results" / "hand")
    space = yaml.safe_load((folder / "space.yaml").read_text())
    space["data"] = {"root": str(root)}
    (folder / "space.yaml").write_text(yaml.safe_dump(space))
    trials = read_table(folder / "trials.csv").set_index("trial_id")
    for tid, src in zip(("t0", "t4", "t5"), checkpoints, strict=True):
        shutil.copy2(src, trials.loc[tid, "checkpoint"])
    retest(load_experiment(folder), top=3, log=lambda _m: None)
    return folder


def _kernel_python() -> str:
    """The python the 'python3' kernel will run (jupyter_client swaps 'python' for ours)."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    spec = KernelSpecManager().get_kernel_spec("python3")
    km = KernelManager(kernel_name="python3")
    km.kernel_spec  # noqa: B018 - load the spec
    cmd = km.format_kernel_cmd()
    return cmd[0] if cmd else spec.argv[0]


def test_kernel_is_this_venv() -> None:
    exe = _kernel_python()
    probe = subprocess.run([exe, "-c", "import sys, vpr_tune; print(sys.prefix)"],
                           capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == sys.prefix


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_and_draws(name: str, retested_experiment, monkeypatch) -> None:
    from nbclient import NotebookClient

    monkeypatch.setenv("VPR_TUNE_EXPERIMENT", str(retested_experiment))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the notebook selects inline itself
    nb = nbformat.read(ANALYSIS / name, as_version=4)
    NotebookClient(nb, kernel_name="python3", timeout=180,
                   resources={"metadata": {"path": str(ANALYSIS)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "hand" in text and "synthetic" in text  # the parameter reached the kernel
    pngs = [base64.b64decode(o.data["image/png"]) for o in outputs if "image/png" in o.get(
        "data", {})]
    expected = {"search_overview.ipynb": 3, "hyperparameter_effects.ipynb": 4,
                "retest.ipynb": 3}[name]
    assert len(pngs) == expected
    for png in pngs:  # a real picture with content (an empty axes PNG is a few kB)
        assert png.startswith(b"\x89PNG") and len(png) > 12_000
    if name == "retest.ipynb":
        html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
        assert "sf_test_R@1" in html and "tokyo_R@10" in html
        assert "sf_test_R@1_lo" in html and "tokyo_within_noise" in html  # the intervals


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_on_a_real_search(name: str, searched_experiment, monkeypatch) -> None:
    from nbclient import NotebookClient

    monkeypatch.setenv("VPR_TUNE_EXPERIMENT", str(searched_experiment))
    monkeypatch.delenv("MPLBACKEND", raising=False)
    nb = nbformat.read(ANALYSIS / name, as_version=4)
    NotebookClient(nb, kernel_name="python3", timeout=180,
                   resources={"metadata": {"path": str(ANALYSIS)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)
