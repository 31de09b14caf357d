"""Multi-objective ASHA: promotion decisions on hand-made rung results."""

from __future__ import annotations

import doctest

import pytest
from ray.tune.schedulers import TrialScheduler

from vpr_tune.tune import moasha
from vpr_tune.tune.moasha import MultiObjectiveASHA

CONTINUE, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP
OBJECTIVES = [("val/R@1", "max"), ("descriptor_dim", "min")]


class FakeTrial:
    def __init__(self, trial_id: str) -> None:
        self.trial_id = trial_id


def scheduler(rf: float = 2, **kwargs) -> MultiObjectiveASHA:
    kwargs.setdefault("objectives", OBJECTIVES)
    return MultiObjectiveASHA(max_t=8, grace_period=1, reduction_factor=rf, **kwargs)


def report(s: MultiObjectiveASHA, name: str, epoch: int, r1: float, dim: int) -> str:
    trial = FakeTrial(name)
    if name not in s._trials:
        s.on_trial_add(None, trial)
    return s.on_trial_result(None, trial, {"epoch": epoch, "val/R@1": r1, "descriptor_dim": dim})


def test_rungs_follow_grace_period_and_reduction_factor() -> None:
    assert scheduler(rf=2).milestones == [1, 2, 4, 8]
    assert MultiObjectiveASHA(OBJECTIVES, max_t=10, grace_period=2, reduction_factor=3
                              ).milestones == [2, 6]


def test_cheap_low_recall_trial_on_the_front_is_kept() -> None:
    s = scheduler(rf=4)
    for name, r1 in [("a", 80.0), ("b", 78.0), ("c", 75.0), ("d", 70.0)]:
        report(s, name, 1, r1, 2048)
    # single-objective ASHA would stop it (lowest recall of five); it is the smallest
    assert report(s, "cheap", 1, 20.0, 64) == CONTINUE


def test_dominated_trial_is_stopped() -> None:
    s = scheduler(rf=4)
    for name, r1, dim in [("a", 80.0, 2048), ("cheap", 20.0, 64), ("mid", 60.0, 512)]:
        report(s, name, 1, r1, dim)
    # 4 results, keep 1: 'worse' is dominated by 'mid' (lower recall, larger descriptor)
    assert report(s, "worse", 1, 50.0, 1024) == STOP


FRONT = [("best", 80.0, 2048), ("small", 20.0, 64), ("mid1", 60.0, 512), ("mid2", 61.0, 600),
         ("mid3", 62.0, 700)]


def test_on_the_front_crowding_decides() -> None:
    # 6 results all on the front, keep 3: the two ends always continue
    s = scheduler(rf=2)
    for name, r1, dim in FRONT:
        report(s, name, 1, r1, dim)
    assert report(s, "crowded", 1, 61.5, 650) == STOP  # squeezed between mid2 and mid3
    s = scheduler(rf=2)
    for name, r1, dim in FRONT:
        report(s, name, 1, r1, dim)
    assert report(s, "gap", 1, 70.0, 1200) == CONTINUE  # fills the empty stretch of front


def test_decisions_are_per_rung_and_max_t_stops() -> None:
    s = scheduler(rf=2)
    assert report(s, "a", 1, 80.0, 512) == CONTINUE
    assert report(s, "b", 1, 70.0, 512) == STOP  # dominated at rung 1
    assert report(s, "a", 2, 85.0, 512) == CONTINUE  # first at rung 2
    assert report(s, "a", 3, 86.0, 512) == CONTINUE  # between rungs: no decision
    assert report(s, "c", 2, 84.0, 1024) == STOP  # rung 2 compares with a's rung-2 result
    assert report(s, "a", 8, 90.0, 512) == STOP  # max_t


def test_minimise_and_maximise_are_handled_by_sign() -> None:
    s = scheduler(rf=2, objectives=[("loss", "min"), ("val/R@1", "max")])
    trial = FakeTrial("a")
    s.on_trial_add(None, trial)
    assert s.on_trial_result(None, trial, {"epoch": 1, "loss": 1.0, "val/R@1": 50.0}) == CONTINUE
    other = FakeTrial("b")
    s.on_trial_add(None, other)
    assert s.on_trial_result(None, other, {"epoch": 1, "loss": 2.0, "val/R@1": 40.0}) == STOP


def test_missing_objective_defers_the_decision() -> None:
    s = scheduler(rf=2)
    report(s, "a", 1, 80.0, 64)
    trial = FakeTrial("b")
    s.on_trial_add(None, trial)
    assert s.on_trial_result(None, trial, {"epoch": 1, "val/R@1": 1.0}) == CONTINUE
    assert s.on_trial_result(None, trial, {"epoch": 1, "val/R@1": 1.0,
                                           "descriptor_dim": 128}) == STOP


def test_search_properties_from_ray() -> None:
    s = MultiObjectiveASHA(max_t=4)
    with pytest.raises(ValueError, match="needs objectives"):
        s.on_trial_add(None, FakeTrial("a"))
    assert s.set_search_properties(["val/R@1", "query_ms"], ["max", "min"])
    assert s.objectives == [("val/R@1", "max"), ("query_ms", "min")]
    assert s.metric == "val/R@1"
    assert not s.set_search_properties("val/R@1", "max")  # given twice: Ray refuses
    assert s.set_search_properties(None, None)
    with pytest.raises(ValueError, match="min' or 'max"):
        MultiObjectiveASHA([("a", "up")])


def test_save_and_restore_keep_the_rungs(tmp_path) -> None:
    s = scheduler(rf=2)
    report(s, "a", 1, 80.0, 512)
    s.save(str(tmp_path / "s.pkl"))
    fresh = scheduler(rf=2)
    fresh.restore(str(tmp_path / "s.pkl"))
    assert report(fresh, "b", 1, 70.0, 512) == STOP


def test_docstring_examples() -> None:
    assert doctest.testmod(moasha).failed == 0


def test_infinite_values_of_a_diverged_trial_are_not_ranked() -> None:
    s = scheduler(rf=2)
    report(s, "a", 1, 80.0, 64)
    assert report(s, "b", 1, float("-inf"), 64) == CONTINUE  # no decision; it stops itself
    assert report(s, "c", 1, 10.0, 64) == STOP  # b left no result at the rung to rank
