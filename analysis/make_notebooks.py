"""Write the analysis notebooks (without outputs) from the cell texts below.

Edit the cells here, then run ``.venv/bin/python analysis/make_notebooks.py``: notebooks stay
short, reviewable in diffs, and free of stored outputs (tests/test_notebooks.py checks that).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).parent

SETUP = '''\
%matplotlib inline
import os

import pandas as pd

from vpr_tune import analysis as va
from vpr_tune import plots as vp

# A name under results/ or a folder path; unset -> the newest experiment.
EXPERIMENT = os.environ.get("VPR_TUNE_EXPERIMENT") or None
exp = va.load_experiment(EXPERIMENT)
pd.set_option("display.precision", 4)
print(exp.label, "|", len(exp.trials), "trials |", exp.path)
if exp.synthetic:
    print("Numbers are synthetic (street-world): they show the pipeline, not real-photo accuracy.")
'''

NOTEBOOKS = {
    "search_overview.ipynb": [
        "# Search overview\n\nWhat the search did: every trial's learning curve, how fast the "
        "best result improved with the compute spent, and which hyperparameters the good "
        "trials share. Set `VPR_TUNE_EXPERIMENT` (or edit the first cell) to pick a search.",
        SETUP,
        "## The best trials\n\nFailed (ERROR) and diverged trials never rank.",
        "exp.trials['status'].value_counts()",
        "va.top_table(exp, top=10)",
        "## Learning curves\n\nOne line per trial; `x` marks trials ASHA stopped at a rung "
        "(dashed lines), red crosses are failed or diverged trials.",
        "vp.plot_curves(exp);",
        "## Best so far vs compute spent\n\nA curve that flattens early means more trials "
        "would not have helped much.",
        "vp.plot_best_so_far(exp);",
        "## Parallel coordinates\n\nEach line is a finished trial coloured by its best val "
        "R@1; bright lines bunching on an axis point at a good value.",
        "vp.plot_parallel(exp);",
        "## Pareto front (several objectives)\n\nWith `search.objectives`: the trials no "
        "finished trial beats on every objective (sorted by the first), recall against "
        "descriptor size coloured by query time, and the front's hypervolume against trials. "
        "A single-objective search shows nothing here.",
        "va.front_table(exp) if exp.multi_objective else print('one objective:', exp.metric)",
        "if exp.multi_objective:\n    vp.plot_pareto(exp)\n    vp.plot_hypervolume(exp)",
    ],
    "hyperparameter_effects.ipynb": [
        "# Hyperparameter effects\n\nWhich choices matter: R@1 per optimizer / scheduler / "
        "loss / aggregator, learning rate × weight decay, Optuna's importance estimate, and "
        "whether an early epoch already predicts the final ranking (the bet ASHA makes).",
        SETUP,
        "## R@1 by categorical hyperparameter",
        "vp.plot_by_category(exp);",
        "## Learning rate × weight decay",
        "vp.plot_lr_wd(exp);",
        "## Importance\n\nOptuna's fANOVA evaluator fed from the trials table. With few "
        "trials treat it as a hint.",
        "va.importance(exp.trials, space=exp.space).to_frame()",
        "vp.plot_importance(exp);",
        "## Does an early epoch predict the final ranking?\n\nSpearman correlation between "
        "the ranking at each epoch and the final one, over finished trials that trained past "
        "that epoch. High values mean stopping trials early (ASHA) loses little.",
        "va.rung_spearman_table(exp.finished_curves)",
        "vp.plot_rung_spearman(exp);",
    ],
    "retest.ipynb": [
        "# Retest: does val transfer to the test sets?\n\nThe top trials' best checkpoints "
        "evaluated on SF-XS test and Tokyo-XS (`vpr-tune best --retest` writes "
        "`retest.csv`).",
        SETUP,
        "if exp.retest is None:\n"
        "    print('No retest.csv yet: run `vpr-tune best', exp.name, '--retest` first.')\n"
        "exp.retest",
        "## Val vs test per configuration",
        "vp.plot_retest(exp);",
        "## How sure is each R@1?\n\nThe top trials' R@1 with its 95 % bootstrap interval "
        "over queries, on val and each test set (`vpr-tune best --retest` prints the same "
        "intervals). A hollow marker is a trial that a paired bootstrap over the same queries "
        "separates from that split's winner; filled: the winner and the trials within noise "
        "of it (`within_noise` columns). Without per-query ranks (older experiments) the "
        "points have no bars.",
        "vp.plot_intervals(exp);",
        "if exp.retest is not None:\n"
        "    display(exp.retest.filter(regex=r'^(rank|trial_id)$|R@1(_lo|_hi)?$|within_noise'))",
        "## Does the val ranking transfer?\n\nSpearman correlation of val R@1 with each "
        "test set's R@1 across the retested configurations (NaN with fewer than 3).",
        "va.rank_transfer(exp.retest) if exp.retest is not None else None",
        "vp.plot_val_vs_test(exp);",
    ],
}


def build(cells: list[str]) -> nbformat.NotebookNode:
    """A notebook from cell texts: texts starting with '#' are markdown, the rest code."""
    nb = new_notebook()
    nb.cells = [new_markdown_cell(c) if c.startswith("#") else new_code_cell(c) for c in cells]
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i:02d}"  # stable ids: regenerating gives no diff
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def main() -> None:
    for name, cells in NOTEBOOKS.items():
        nb = build(cells)
        nbformat.validate(nb)
        nbformat.write(nb, HERE / name)
        print(f"wrote {HERE / name}")


if __name__ == "__main__":
    main()
