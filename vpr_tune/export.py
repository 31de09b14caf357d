"""A trial of a search as a ``vpr-tune train`` YAML (``vpr-tune best NAME --export FILE``).

The config written is the one the trial trained with, read from its best checkpoint (exact
values, not the rounded trials.csv columns), so ``vpr-tune train FILE.yaml`` repeats the
trial's val curve on the same machine and precision. A PBT/PB2 trial's schedule (its
lineage's lr, weight decay... per epoch) comes along as a ``replay`` list::

    from vpr_tune.analysis import load_experiment
    from vpr_tune.export import export_trial

    path, cfg = export_trial(load_experiment("demo"), "best.yaml")           # the best trial
    path, cfg = export_trial(load_experiment("demo"), "t.yaml", "d405f859")  # a given trial
"""

from __future__ import annotations

import copy
import json
from itertools import pairwise
from pathlib import Path
from typing import Any

import pandas as pd

from vpr_tune.analysis import Experiment, data_root_of, ranked
from vpr_tune.config import materialize
from vpr_tune.errors import UserError


def pick_trial(exp: Experiment, trial_id: str | None = None,
               metric: str | None = None) -> pd.Series:
    """The trials.csv row of ``trial_id`` (a unique prefix is enough), else the best trial."""
    if trial_id is None:
        frame = ranked(exp, metric)
        if frame.empty:
            raise UserError(f"experiment {exp.name}: no finished trial "
                            f"({exp.path / 'trials.csv'})")
        return frame.iloc[0]
    ids = exp.trials["trial_id"].astype(str)
    hit = exp.trials[ids == trial_id]
    if hit.empty:
        hit = exp.trials[ids.str.startswith(trial_id)]
    if len(hit) != 1:
        what = "matches several trials" if len(hit) > 1 else "is not a trial"
        raise UserError(f"--trial {trial_id!r} {what} of {exp.name} "
                        f"(trials: {', '.join(ids[:8])}{' ...' if len(ids) > 8 else ''})")
    return hit.iloc[0]


def trial_config(exp: Experiment, row: pd.Series) -> dict[str, Any]:
    """The full resolved config the trial trained with: from its checkpoint, else (a
    checkpoint of another trainer) the experiment's space.yaml with the trial's sampled
    values from Ray's ``params.json``."""
    from vpr_tune.checkpoint import read_checkpoint
    from vpr_tune.retest import checkpoint_of

    ckpt = checkpoint_of(exp, row)
    try:
        return copy.deepcopy(read_checkpoint(ckpt)["config"])
    except UserError:
        params = next((d / "params.json" for d in ckpt.parents
                       if (d / "params.json").is_file()), None)
        if params is None:
            raise
    return space_config(exp, json.loads(params.read_text()))


def space_config(exp: Experiment, sampled: dict[str, Any]) -> dict[str, Any]:
    """The experiment's space.yaml resolved with ``sampled`` dotted values (what the search's
    trainable trained)."""
    from vpr_tune.config import space_from_dict

    raw = {k: v for k, v in exp.space.items() if k != "resolved"}
    return materialize(space_from_dict(raw, str(exp.path / "space.yaml")).base, sampled)


def train_yaml(exp: Experiment, row: pd.Series) -> dict[str, Any]:
    """``trial_config`` made a train YAML: named ``<experiment>-<trial>``, with the data root
    the experiment ran on (``--data`` of ``run``; ``train --data`` still overrides it)."""
    cfg = trial_config(exp, row)
    first, replay = pbt_replay(exp, str(row["trial_id"]))
    if replay is not None:
        cfg = materialize(cfg, first)
        cfg["replay"] = replay
    cfg["name"] = f"{exp.name}-{row['trial_id']}"
    cfg["storage"] = None
    root = data_root_of(exp.space)
    if cfg["data"].get("root") is None and root:
        cfg["data"]["root"] = root
    return cfg


def pbt_replay(exp: Experiment, trial_id: str) -> tuple[dict[str, Any], list | None]:
    """The schedule a PBT/PB2 trial's lineage trained with: (its first epoch's dotted
    values, the ``replay`` entries of each later change; ``vpr-tune train`` applies them
    as the exploits did). Other searches: ({}, None)."""
    from vpr_tune.tune.lineage import lineage, read_perturbations

    moves = read_perturbations(exp.path)
    if moves is None or moves.empty:
        return {}, None
    params = sorted(moves["param"].unique())
    epochs = [(int(r["epoch"]), {p: _plain(r[p]) for p in params})
              for r in lineage(exp.path, trial_id).to_dict("records")]
    replay = [{"epoch": epoch, **{k: v for k, v in values.items() if before[k] != v}}
              for (_, before), (epoch, values) in pairwise(epochs) if values != before]
    return epochs[0][1], replay


def _plain(value: Any) -> Any:
    """A numpy/pandas scalar as a plain Python number (YAML writes it as such)."""
    return value.item() if hasattr(value, "item") else value


def check_export_path(path: Path) -> None:
    """UserError unless ``path`` can be the exported YAML: a ``.yaml``/``.yml`` file name, not
    a directory, in a folder that exists (:func:`vpr_tune.atomic.check_output_file`)."""
    from vpr_tune.atomic import check_output_file

    check_output_file(path, "--export", "best.yaml")
    if path.suffix not in (".yaml", ".yml"):
        raise UserError(f"--export {path}: expected a .yaml file name")


def export_trial(exp: Experiment, path: str | Path, trial_id: str | None = None,
                 metric: str | None = None) -> tuple[Path, dict[str, Any]]:
    """Write the trial's train YAML to ``path`` (atomically); returns ``(path, config)``."""
    import yaml

    from vpr_tune.atomic import write_text

    path = Path(path)
    check_export_path(path)
    row = pick_trial(exp, trial_id, metric)
    cfg = train_yaml(exp, row)
    header = (f"# Trial {row['trial_id']} of experiment {exp.name} ({exp.path}), exported by "
              "vpr-tune best --export.\n#   vpr-tune train "
              f"{path.name}    # repeats the trial's val curve (same machine and precision)\n")
    if cfg.get("replay"):
        header += ("# replay: the schedule its PBT lineage trained with (these values from "
                   "each epoch on).\n")
    write_text(path, header + yaml.safe_dump(cfg, sort_keys=False))
    return path, cfg
