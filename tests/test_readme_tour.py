"""README's "A tour" run as written, in order, on what looks like a fresh clone (issue 36).

The commands are read from README.md's ``bash`` block under "## A tour" (``\\``
continuations joined, comments and blank lines dropped), so a README change that breaks the
order (a step naming an experiment or a file no earlier step made, an option that does not
exist, a step that ignores step 1's data) fails here. Each ``vpr-tune`` line runs through
``vpr_tune.cli.main`` in this process and must exit 0 and leave what it promises (a
checkpoint, retest.md, report.md, a plot, a table ...).

What differs from a user's run, for speed only:

- ``search_spaces/`` is a copy whose YAMLs are shrunk by :func:`shrink` (32 px, 2 epochs of
  2 batches of 4 x 2 images, 2 trials, ASHA grace 1, street-world ``tiny`` as the fallback);
  every key the commands rely on (names, metrics, ``search.reproducible``) is kept;
- ``--size demo`` becomes ``--size tiny`` in the command text: the one substitution.

The working directory is a temporary folder holding only that ``search_spaces/``;
``VPR_TUNE_DATA`` is unset and ``VPR_TUNE_CACHE`` points to an empty folder, so every step
after ``data synth`` must find its data the way README says (a step that falls back to the
street-world cache fails the test).

Lines that are not ``vpr-tune``: ``source .venv/bin/activate`` is skipped (this test already
runs in .venv's python), ``export NAME=VALUE`` sets the variable for the later steps,
``tensorboard --logdir X`` starts no server but X must hold TensorBoard event files; any
other line fails the test.
"""

from __future__ import annotations

import re
import shlex
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from tests.helpers import run_cli
from tests.test_crash_consistency import MACHINE  # columns that measure the machine

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"

# Sizes for speed (tests/helpers.py TINY's): only keys a YAML already has are changed.
DATA = {"image_size": [32, 32], "synth_size": "tiny"}
BUDGET = {"max_epochs": 2, "batches_per_epoch": 2, "places_per_batch": 4,
          "images_per_place": 2, "eval_batch_size": 32}
NUM_SAMPLES = 2  # a search is one round of 2 trials at a time; best --repeat: 2 x 3 runs
# `replay`'s default grace periods are 1,2,3: a FIFO pilot keeps 3 epochs
PILOT_EPOCHS = 3


# ------------------------------------------------------------------- README -> commands
def tour_lines(text: str) -> list[str]:
    """The command lines of the ``bash`` block after the "## A tour" heading: ``\\``
    continuations joined, comments and blank lines dropped."""
    match = re.search(r"^## A tour\s*$(.*?)^```bash\s*$(.*?)^```\s*$", text, re.M | re.S)
    assert match, 'README.md has no "## A tour" heading followed by a ```bash block'
    assert "\n## " not in match.group(1), 'the ```bash block is not under "## A tour"'
    joined = re.sub(r"\\\n", " ", match.group(2))
    lines = []
    for raw in joined.splitlines():
        words = shlex.split(raw, comments=True)
        if words:
            lines.append(shlex.join(words))
    return lines


def tinier(words: list[str]) -> list[str]:
    """``--size demo`` -> ``--size tiny`` (the one change to README's command text)."""
    out = list(words)
    for i, word in enumerate(out):
        if word == "--size=demo":
            out[i] = "--size=tiny"
        elif word == "demo" and i and out[i - 1] == "--size":
            out[i] = "tiny"
    return out


# ------------------------------------------------------------------- a fresh clone, shrunk
def shrink(space: Any) -> Any:
    """One search-space / train YAML (a loaded dict) with its sizes cut for speed: 32 px,
    street-world tiny as the fallback data, :data:`BUDGET` (a FIFO pilot: 3 epochs), at
    most :data:`NUM_SAMPLES` trials, ASHA grace period 1. Distributions (dict/list
    values) are left alone, and nothing is added or removed."""
    if not isinstance(space, dict):
        return space

    def cut(section: str, values: dict[str, Any]) -> None:
        block = space.get(section)
        if isinstance(block, dict):
            for key, value in values.items():
                fixed = key == "image_size" or not isinstance(block.get(key), dict | list)
                if key in block and fixed:  # [H, W] is a fixed image_size, not a choice
                    block[key] = value

    cut("data", DATA)
    cut("budget", BUDGET)
    search = space.get("search")
    if isinstance(search, dict) and isinstance(search.get("num_samples"), int):
        search["num_samples"] = min(search["num_samples"], NUM_SAMPLES)
    cut("asha", {"grace_period": 1})
    if isinstance(search, dict) and search.get("scheduler") == "fifo":
        cut("budget", {"max_epochs": PILOT_EPOCHS})
    return space


def fresh_clone(where: Path) -> Path:
    """``where`` with a copy of the repo's search_spaces/, every YAML shrunk."""
    spaces = where / "search_spaces"
    shutil.copytree(REPO / "search_spaces", spaces)
    for path in spaces.rglob("*.yaml"):
        loaded = yaml.safe_load(path.read_text())
        path.write_text(yaml.safe_dump(shrink(loaded), sort_keys=False))
    return where


# ------------------------------------------------------------------- what each step leaves
@dataclass
class Tour:
    """State shared by the steps: the clone, the cache folder, what ran before."""

    root: Path
    cache: Path
    started: float = 0.0
    reproducible_runs: dict[str, str] = field(default_factory=dict)  # YAML -> first run

    def fresh(self, path: Path) -> bool:
        """``path`` exists and was written by the step that just ran."""
        return path.exists() and path.stat().st_mtime >= self.started - 1


def option(words: list[str], name: str) -> str | None:
    """The value of ``--name V`` / ``--name=V`` in ``words``, else None."""
    for i, word in enumerate(words):
        if word == name and i + 1 < len(words):
            return words[i + 1]
        if word.startswith(name + "="):
            return word.split("=", 1)[1]
    return None


def positional(words: list[str]) -> list[str]:
    """The arguments of ``words`` that are not options or option values."""
    out, skip = [], False
    flags = {"--dry-run", "--reproducible", "--retest", "--preview", "--signals", "--force",
             "--json", "--resume", "--overwrite", "--only-wrong"}
    for word in words:
        if skip:
            skip = False
        elif word.startswith("--"):
            skip = word not in flags and "=" not in word
        else:
            out.append(word)
    return out


def check_data(tour: Tour, words: list[str], out: str) -> None:
    sub, *rest = words
    folder = tour.root / positional(rest)[0]
    if sub == "synth":
        assert (folder / "STREET_WORLD.json").is_file(), f"no street-world in {folder}"
        if "--preview" in rest:
            assert (folder / "preview.png").is_file(), "data synth --preview: no preview.png"
    elif sub == "check":
        assert "positive" in out.lower(), f"data check printed no positives:\n{out}"


def train_folder(tour: Tour, words: list[str]) -> Path:
    config = tour.root / positional(words)[0]
    name = (yaml.safe_load(config.read_text()) or {}).get("name") or config.stem
    return tour.root / (option(words, "--out") or f"results/train/{name}")


def check_train(tour: Tour, words: list[str], out: str) -> None:
    folder = train_folder(tour, words)
    assert tour.fresh(folder / "best.pt"), f"train wrote no {folder}/best.pt:\n{out}"
    assert list(folder.rglob("events.out.tfevents.*")), "train wrote no TensorBoard events"


def check_eval(tour: Tour, words: list[str], out: str) -> None:
    assert "R@1" in out, f"eval printed no recall table:\n{out}"
    if int(option(words, "--save-preds") or 0):
        checkpoint = tour.root / option(words, "--checkpoint")
        preds = list(checkpoint.parent.glob("eval-*/predictions.csv"))
        assert preds and all(tour.fresh(p) for p in preds), "eval --save-preds: no predictions"


def experiments(tour: Tour) -> set[str]:
    results = tour.root / "results"
    return {p.name for p in results.iterdir() if (p / "trials.csv").exists()} \
        if results.exists() else set()


def check_run(tour: Tour, words: list[str], out: str, before: set[str]) -> None:
    space_path = positional(words)[0]
    if "--dry-run" in words:
        assert experiments(tour) == before, "run --dry-run left an experiment behind"
        return
    name = option(words, "--name")
    assert name, "every search of the tour is named (later steps refer to it)"
    exp = tour.root / "results" / name
    trials = pd.read_csv(exp / "trials.csv")
    space = yaml.safe_load((tour.root / space_path).read_text())
    assert len(trials) == space["search"]["num_samples"], trials
    assert not trials["status"].isin(["ERROR", "DIVERGED"]).any(), trials[["status", "error"]]
    assert list(exp.rglob("events.out.tfevents.*")), f"{exp}: no TensorBoard events"
    if space["search"].get("scheduler") == "fifo":  # a pilot: every trial ran to the end
        assert (trials["epochs"] == space["budget"]["max_epochs"]).all(), trials
    reproducible = "--reproducible" in words or space["search"].get("reproducible")
    if reproducible:
        first = tour.reproducible_runs.setdefault(space_path, name)
        if first != name:  # README: "same YAML -> same table"
            def table(n: str) -> pd.DataFrame:
                t = pd.read_csv(tour.root / "results" / n / "trials.csv")
                return t.drop(columns=[c for c in MACHINE if c in t])
            pd.testing.assert_frame_equal(table(first), table(name), check_exact=True)


def check_best(tour: Tour, words: list[str], out: str) -> None:
    name = positional(words)[0]
    exp = tour.root / "results" / name
    export = option(words, "--export")
    if export:
        cfg = yaml.safe_load((tour.root / export).read_text())
        assert tour.fresh(tour.root / export) and cfg["name"].startswith(name), cfg
        return
    if int(option(words, "--save-preds") or 0):
        preds = list((exp / "preds").rglob("predictions.csv"))
        assert preds and all(tour.fresh(p) for p in preds), f"no {exp}/preds/**/predictions.csv"
        return
    if int(option(words, "--repeat") or 0):
        assert tour.fresh(exp / "repeats.md"), f"best --repeat wrote no repeats.md:\n{out}"
        return
    extra = option(words, "--test-set")  # NAME=PATH: implies --retest, adds NAME_R@N
    if "--retest" in words or extra:
        assert tour.fresh(exp / "retest.md"), f"best --retest wrote no retest.md:\n{out}"
        if extra:
            name = extra.split("=", 1)[0]
            assert f"{name}_R@1" in pd.read_csv(exp / "retest.csv"), out
        if option(words, "--top") == "all":  # every ranked trial retested
            trials = pd.read_csv(exp / "trials.csv")
            retested = pd.read_csv(exp / "retest.csv")
            assert len(retested) == int(trials["status"].isin(
                ["TERMINATED", "STOPPED_EARLY"]).sum()), retested
    assert "within_noise" in out or "within noise" in out, out


def check_report(tour: Tour, words: list[str], out: str) -> None:
    report = tour.root / "results" / positional(words)[0] / "report" / "report.md"
    assert tour.fresh(report), f"report wrote no {report}:\n{out}"


def check_compare(tour: Tour, words: list[str], out: str) -> None:
    for name in positional(words):
        assert name in out, f"compare did not print {name}:\n{out}"
    plot = option(words, "--plot")
    if plot:
        assert tour.fresh(tour.root / plot), f"compare --plot wrote no {plot}"


def check_replay(tour: Tour, words: list[str], out: str) -> None:
    assert "ASHA" in out or "asha" in out, f"replay printed no ASHA table:\n{out}"
    if "--signals" in words:
        assert "Early signals" in out, f"replay --signals printed no signals table:\n{out}"


CHECKS: dict[str, Callable[..., None]] = {
    "train": check_train, "eval": check_eval, "best": check_best, "report": check_report,
    "compare": check_compare, "replay": check_replay,
}


# ------------------------------------------------------------------- the steps
def run_vpr_tune(tour: Tour, words: list[str], capsys) -> None:
    args = tinier(words)
    before = experiments(tour)
    tour.started = time.time()
    capsys.readouterr()
    rc = run_cli(args)
    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert rc == 0, f"vpr-tune {shlex.join(args)} exited {rc}:\n{out[-6000:]}"
    generated = sorted(p.name for p in tour.cache.glob("street-world-*"))
    assert not generated, (f"vpr-tune {shlex.join(args)} generated its own street-world "
                           f"({generated}) instead of using the data step 1 wrote")
    command = args[0]
    if command == "data":
        check_data(tour, args[1:], out)
    elif command == "run":
        check_run(tour, args[1:], out, before)
    elif command in CHECKS:
        CHECKS[command](tour, args[1:], out)
    with capsys.disabled():  # the time each step took, under -s
        print(f"ok: vpr-tune {shlex.join(args)} ({time.time() - tour.started:.0f} s)")


def check_tensorboard(tour: Tour, words: list[str]) -> None:
    """``tensorboard --logdir X``: no server is started; X must hold event files."""
    logdir = option(words, "--logdir")
    assert logdir, f"tensorboard without --logdir: {words}"
    events = list((tour.root / logdir).rglob("events.out.tfevents.*"))
    assert events, f"tensorboard --logdir {logdir}: no TensorBoard event files there"


def test_readme_tour_parses_into_known_commands():
    lines = tour_lines(README.read_text())
    programs = {shlex.split(line)[0] for line in lines}
    assert programs <= {"source", "vpr-tune", "tensorboard", "export"}, programs
    assert sum(line.startswith("vpr-tune ") for line in lines) >= 10, lines


def test_readme_tour_runs_in_order(tmp_path, monkeypatch, capsys):
    lines = tour_lines(README.read_text())
    root = fresh_clone(tmp_path / "clone")
    cache = tmp_path / "cache"
    monkeypatch.chdir(root)
    monkeypatch.delenv("VPR_TUNE_DATA", raising=False)
    monkeypatch.setenv("VPR_TUNE_CACHE", str(cache))
    tour = Tour(root=root, cache=cache)
    for line in lines:
        words = shlex.split(line)
        program, args = words[0], words[1:]
        if program == "source" and args == [".venv/bin/activate"]:
            continue  # it puts .venv's vpr-tune on PATH; this test runs in .venv's python
        if program == "export":  # a variable the later steps read
            name, _, value = args[0].partition("=")
            monkeypatch.setenv(name, value)
        elif program == "tensorboard":
            check_tensorboard(tour, args)
        elif program == "vpr-tune":
            run_vpr_tune(tour, args, capsys)
        else:
            pytest.fail(f"README tour line this test does not know how to run: {line}")
