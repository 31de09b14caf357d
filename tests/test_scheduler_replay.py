"""``vpr-tune replay``: ASHA / MO-ASHA settings simulated on a FIFO pilot's curves. The
real schedulers replaying a real ASHA run's arrival order make that run's decisions; the
sweep's cost and chance of keeping the best behave as the settings say."""

from __future__ import annotations

import json

import pytest

from tests.helpers import run_cli, write_hand_experiment
from vpr_tune.analysis import load_experiment
from vpr_tune.errors import UserError
from vpr_tune.replay import arrivals_of, make_scheduler, pilot_of, replay_arrivals, sweep


def _pilot(tmp_path, curves=None):
    import yaml

    # quality in no particular order of sampling (else no later trial is ever worse)
    quality = [4, 7, 1, 8, 2, 6, 0, 5, 3]
    curves = curves or {f"t{i}": [10.0 * q + e for e in range(1, 10)]
                        for i, q in enumerate(quality)}
    rows = [(tid, "TERMINATED", "sgd", 0.01, 1e-3, "none", r1s) for tid, r1s in curves.items()]
    folder = write_hand_experiment(tmp_path / "pilot", rows)
    space = yaml.safe_load((folder / "space.yaml").read_text())
    space["search"].update(scheduler="fifo", max_concurrent=2)
    space["budget"]["max_epochs"] = 9
    (folder / "space.yaml").write_text(yaml.safe_dump(space))
    return folder


def test_a_real_asha_runs_arrivals_replay_to_its_own_decisions(searched_experiment):
    exp = load_experiment(searched_experiment)
    pilot = pilot_of(exp, complete=False)
    asha = exp.space["asha"]
    stopped = replay_arrivals(pilot, make_scheduler("asha", pilot, int(asha["grace_period"]),
                                                    float(asha["reduction_factor"])),
                              arrivals_of(searched_experiment))
    reached = dict(zip(exp.trials["trial_id"], exp.trials["epochs"], strict=True))
    assert stopped == reached  # each trial stopped exactly where the real run stopped it
    assert min(reached.values()) < pilot.max_epochs  # the run did stop one early


def test_sweep_cost_and_best_kept(tmp_path):
    exp = load_experiment(_pilot(tmp_path))
    table = sweep(exp, grace_periods=[9, 1], reduction_factors=[3], orders=30)
    everything, early = table.iloc[0], table.iloc[1]
    assert everything["ratio_median"] == 1.0 and everything["p_best_kept"] == 1.0
    assert early["ratio_p10"] <= early["ratio_median"] <= early["ratio_p90"] < 1.0
    # the best trial leads from its first epoch: ASHA never stops it
    assert early["p_best_kept"] == 1.0
    assert sweep(exp, grace_periods=[1], reduction_factors=[3], orders=30).equals(
        table.iloc[[1]].reset_index(drop=True))  # seeded: the same table twice


def test_replay_cli_json_and_refusals(tmp_path, capsys):
    folder = _pilot(tmp_path)
    assert run_cli(["replay", str(folder), "--grace-period", "1,3", "--reduction-factor", "3",
                    "--orders", "20", "--signals", "--json",
                    "--plot", str(tmp_path / "r.png")]) == 0
    out = capsys.readouterr().out
    data = json.loads(out[: out.rindex("}") + 1])
    assert [s["grace_period"] for s in data["settings"]] == [1, 3]
    assert {s["signal"] for s in data["signals"]} >= {"val/R@1", "val/R@5"}
    assert (tmp_path / "r.png").stat().st_size > 0
    assert run_cli(["replay", str(folder), "--grace-period", "x"]) == 2
    assert "--grace-period x" in capsys.readouterr().err
    asha = write_hand_experiment(tmp_path / "asha")  # trials stopped early: not a pilot
    with pytest.raises(UserError, match="replay needs a pilot"):
        pilot_of(load_experiment(asha))
