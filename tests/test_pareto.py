"""Pareto fronts: the `pareto` column against a brute-force check, crowding, hypervolume."""

from __future__ import annotations

import doctest
import itertools

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vpr_tune.tune import pareto
from vpr_tune.tune.pareto import (
    crowding_distance,
    front_hypervolume,
    hypervolume,
    non_dominated_fronts,
    pareto_flags,
    rank_order,
)


def brute_force_flags(frame: pd.DataFrame, objectives: list[tuple[str, str]]) -> list[bool]:
    """Written from the definition, independently of the module: compare every pair."""
    def usable(row: pd.Series) -> bool:
        return row["status"] not in ("ERROR", "DIVERGED") and all(
            pd.notna(row[m]) for m, _ in objectives)

    def better_or_equal(a: pd.Series, b: pd.Series, metric: str, mode: str) -> bool:
        return a[metric] >= b[metric] if mode == "max" else a[metric] <= b[metric]

    def strictly_better(a: pd.Series, b: pd.Series, metric: str, mode: str) -> bool:
        return a[metric] > b[metric] if mode == "max" else a[metric] < b[metric]

    rows = [row for _, row in frame.iterrows()]
    flags = []
    for row in rows:
        if not usable(row):
            flags.append(False)
            continue
        beaten = any(
            usable(other)
            and all(better_or_equal(other, row, m, mode) for m, mode in objectives)
            and any(strictly_better(other, row, m, mode) for m, mode in objectives)
            for other in rows)
        flags.append(not beaten)
    return flags


R1_DIM = [("val/R@1", "max"), ("descriptor_dim", "min")]
THREE = [("val/R@1", "max"), ("descriptor_dim", "min"), ("query_ms", "min")]

HAND_MADE = pd.DataFrame({
    "trial_id": list("abcdefghij"),
    "status": ["TERMINATED", "TERMINATED", "STOPPED_EARLY", "TERMINATED", "ERROR",
               "DIVERGED", "TERMINATED", "TERMINATED", "TERMINATED", "STOPPED_EARLY"],
    # d ties a exactly; e (ERROR) and f (DIVERGED) would dominate everyone; g misses R@1
    "val/R@1": [80.0, 60.0, 79.0, 80.0, 99.0, 99.0, None, 10.0, 60.0, 85.0],
    "descriptor_dim": [512, 128, 512, 512, 64, 64, 32, 32, 128, 4096],
    "query_ms": [2.0, 1.0, 1.5, 2.0, 0.1, 0.1, 0.1, 0.5, 0.9, 9.0],
})


def test_hand_made_two_objectives() -> None:
    flags = pareto_flags(HAND_MADE, R1_DIM)
    assert flags.tolist() == brute_force_flags(HAND_MADE, R1_DIM)
    # a and d tie (both kept); b ties i (both kept); c is beaten by a; h is the smallest
    assert dict(zip(HAND_MADE["trial_id"], flags, strict=True)) == {
        "a": True, "b": True, "c": False, "d": True, "e": False, "f": False, "g": False,
        "h": True, "i": True, "j": True}


def test_hand_made_three_objectives_and_modes_flipped() -> None:
    assert pareto_flags(HAND_MADE, THREE).tolist() == brute_force_flags(HAND_MADE, THREE)
    # on query time, c is faster than a: no longer dominated; b is beaten by i (faster)
    flags = dict(zip(HAND_MADE["trial_id"], pareto_flags(HAND_MADE, THREE), strict=True))
    assert flags["c"] and not flags["b"] and flags["i"]
    flipped = [("val/R@1", "min"), ("descriptor_dim", "max")]
    assert pareto_flags(HAND_MADE, flipped).tolist() == brute_force_flags(HAND_MADE, flipped)
    assert pareto_flags(HAND_MADE, flipped).tolist() != pareto_flags(HAND_MADE, R1_DIM).tolist()


def test_flags_keep_the_frame_index_and_handle_no_finished_rows() -> None:
    frame = HAND_MADE.set_index("trial_id")
    assert pareto_flags(frame, R1_DIM).index.tolist() == list("abcdefghij")
    failed = HAND_MADE.assign(status="ERROR")
    assert not pareto_flags(failed, R1_DIM).any()
    assert not pareto_flags(HAND_MADE, [("no_such_metric", "max")]).any()
    assert pareto_flags(HAND_MADE, R1_DIM).dtype == bool


def test_bad_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="min' or 'max"):
        pareto_flags(HAND_MADE, [("val/R@1", "maximise")])


statuses = st.sampled_from(["TERMINATED", "STOPPED_EARLY", "ERROR", "DIVERGED"])
small = st.one_of(st.none(), st.integers(0, 4).map(float))  # few values: many ties


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(statuses, small, small, small), min_size=0, max_size=12),
       st.lists(st.sampled_from(["min", "max"]), min_size=1, max_size=3))
def test_flags_equal_brute_force(rows: list, modes: list[str]) -> None:
    frame = pd.DataFrame(rows, columns=["status", "x", "y", "z"])
    objectives = list(zip(["x", "y", "z"], modes, strict=False))
    assert pareto_flags(frame, objectives).tolist() == brute_force_flags(frame, objectives)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), min_size=1, max_size=10))
def test_fronts_partition_and_order(points: list) -> None:
    array = np.array(points, dtype=float)
    fronts = non_dominated_fronts(array)
    assert sorted(itertools.chain(*fronts)) == list(range(len(points)))
    for number, front in enumerate(fronts):
        for i in front:  # nobody in the same or a later front dominates a member
            later = itertools.chain(*fronts[number:])
            assert not any(pareto.dominates(array[j], array[i]) for j in later)
            if number:  # and something in the previous front does
                assert any(pareto.dominates(array[j], array[i]) for j in fronts[number - 1])


def test_crowding_keeps_ends_and_rewards_isolation() -> None:
    points = np.array([[0.0, 10.0], [1.0, 9.0], [5.0, 5.0], [10.0, 0.0]])
    crowd = crowding_distance(points)
    assert np.isinf(crowd[0]) and np.isinf(crowd[3])
    assert crowd[2] > crowd[1]  # the isolated middle point beats the one crowding an end
    assert rank_order(points) == [0, 3, 2, 1]


def brute_force_hypervolume(points: np.ndarray, ref: np.ndarray) -> float:
    """Count unit cells of an integer grid dominated by some point (integer inputs only)."""
    axes = [range(int(lo), int(hi)) for lo, hi in zip(points.min(axis=0), ref, strict=True)]
    return float(sum(
        any(np.all(p <= np.array(cell)) for p in points)
        for cell in itertools.product(*axes)))


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6), st.integers(0, 6)),
                min_size=1, max_size=6),
       st.integers(2, 3))
def test_hypervolume_equals_grid_count(points: list, k: int) -> None:
    array = np.array(points, dtype=float)[:, :k]
    ref = np.full(k, 6.0)
    assert hypervolume(array, ref) == pytest.approx(brute_force_hypervolume(array, ref))


def test_hypervolume_in_metric_units_and_limits() -> None:
    frame = pd.DataFrame({"r": [80.0, 60.0, 50.0, 90.0], "d": [512, 128, 1024, 2048],
                          "status": ["TERMINATED"] * 3 + ["ERROR"]})
    # (80 x 512) + (60 x 384): the dominated and the ERROR trial add nothing
    assert front_hypervolume(frame, [("r", "max"), ("d", "min")], [0.0, 1024]) == 64000.0
    assert hypervolume(np.array([[5.0, 5.0]]), [3.0, 3.0]) == 0.0
    with pytest.raises(ValueError, match="1 to 3"):
        hypervolume(np.zeros((1, 4)), [1.0] * 4)


def test_docstring_examples() -> None:
    assert doctest.testmod(pareto).failed == 0


def test_reference_point_ignores_failed_trials_and_curve_never_falls() -> None:
    objectives = [("val/R@1", "max"), ("descriptor_dim", "min"), ("query_ms", "min")]
    ref = pareto.reference_point([HAND_MADE], objectives)
    finished = HAND_MADE[pareto.finished_mask(HAND_MADE, objectives)]
    assert ref[0] < finished["val/R@1"].min() and ref[1] > finished["descriptor_dim"].max()
    assert ref[2] < 99.0  # the ERROR trial's values play no part
    curve = pareto.hypervolume_curve(HAND_MADE, objectives, ref)
    assert len(curve) == len(HAND_MADE) and curve.is_monotonic_increasing
    assert curve.iloc[-1] == pytest.approx(front_hypervolume(HAND_MADE, objectives, ref))
    with pytest.raises(ValueError, match="no finished trial"):
        pareto.reference_point([HAND_MADE.assign(status="ERROR")], objectives)


def test_front_is_sorted_by_the_first_objective() -> None:
    rows = pareto.front(HAND_MADE, R1_DIM)
    assert rows["trial_id"].tolist() == ["j", "a", "d", "b", "i", "h"]
