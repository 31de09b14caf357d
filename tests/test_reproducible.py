"""``search.reproducible``: decisions in sampling order, whatever order results arrive in.

Fast tests drive the wrappers of ``vpr_tune/tune/reproducible.py`` with fake trials and a
fake controller (what Ray's TuneController does with a decision), over many arrival orders,
concurrencies and kill points. The slow tests run real searches twice (tests marked slow).
"""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from vpr_tune.rungs import milestones
from vpr_tune.tune.moasha import MultiObjectiveASHA
from vpr_tune.tune.reproducible import SamplingOrderRungs, SamplingOrderSearcher

CONTINUE, STOP, NOOP = TrialScheduler.CONTINUE, TrialScheduler.STOP, TrialScheduler.NOOP
MAX_T, GRACE, RF = 9, 1, 3


class FakeTrial:
    def __init__(self, index: int, status: str = "PENDING") -> None:
        self.trial_id, self.experiment_tag = f"t{index}", f"{index + 1}_lr=0.1"
        self.status, self.is_saving, self.last_result = status, False, {}

    def set_status(self, status: str) -> None:
        self.status = status


class FakeController:
    """What Ray's TuneController does with the decisions (Ray's private names)."""

    def __init__(self) -> None:
        self.scheduler: Any = None
        self.trials: list[FakeTrial] = []
        self._cached_trial_decisions: dict[str, str] = {}
        self.resumed: set[str] = set()  # answered CONTINUE later: may report again

    def get_trials(self) -> list[FakeTrial]:
        return self.trials

    def _execute_action(self, trial: FakeTrial, decision: str) -> None:
        if decision == STOP:
            self.stop_trial(trial)
        else:
            self.resumed.add(trial.trial_id)

    def stop_trial(self, trial: FakeTrial) -> None:
        was, trial.status = trial.status, "TERMINATED"
        if was == "RUNNING":
            self.scheduler.on_trial_complete(self, trial, trial.last_result)
        elif was in ("PENDING", "PAUSED"):
            self.scheduler.on_trial_remove(self, trial)


def curves(n: int, seed: int, objectives: int = 1) -> list[list[tuple[float, ...]]]:
    """n trials x MAX_T epochs of (R@1, [descriptor_dim]); coarse values, so ties happen."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        r1, dim, curve = rng.randint(0, 6) * 5.0, float(rng.choice([64, 256, 2048])), []
        for _ in range(MAX_T):
            r1 += rng.randint(0, 2) * 2.5
            curve.append((r1,) if objectives == 1 else (r1, dim))
        out.append(curve)
    return out


def inner(objectives: int) -> Any:
    if objectives == 1:
        return ASHAScheduler(time_attr="epoch", metric="val/R@1", mode="max", max_t=MAX_T,
                             grace_period=GRACE, reduction_factor=RF)
    return MultiObjectiveASHA([("val/R@1", "max"), ("descriptor_dim", "min")],
                              max_t=MAX_T, grace_period=GRACE, reduction_factor=RF)


def wrapped(objectives: int, history: dict | None = None) -> SamplingOrderRungs:
    return SamplingOrderRungs(inner(objectives), milestones(GRACE, RF, MAX_T), MAX_T,
                              history=history)


def result(values: tuple[float, ...], epoch: int) -> dict[str, Any]:
    row: dict[str, Any] = {"epoch": epoch, "val/R@1": values[0]}
    if len(values) > 1:
        row["descriptor_dim"] = values[1]
    return row


def simulate(table: list, scheduler: Any, concurrent: int, rng: random.Random,
             kill_after: int | None = None, restored: dict | None = None
             ) -> tuple[dict[str, int], list[dict[str, Any]], dict[str, str]]:
    """Run the trials of ``table`` through ``scheduler`` with at most ``concurrent`` at once,
    each report delivered in an order ``rng`` picks. Returns (epochs per trial, the rows
    reported, status per trial); ``kill_after``: stop after that many reports (a SIGKILL);
    ``restored``: continue a killed run (epoch each trial resumes from, its status)."""
    ctl = FakeController()
    ctl.scheduler = scheduler
    epochs: dict[str, int] = {}
    rows: list[dict[str, Any]] = []
    ready: set[str] = set()
    next_new = 0
    if restored:  # Ray re-adds restored trials by last result time: any order
        items = list(restored.items())
        rng.shuffle(items)
        for tid, (epoch, status) in sorted(items, key=lambda kv: rng.random()):
            t = FakeTrial(int(tid[1:]), status)
            ctl.trials.append(t)
            scheduler.on_trial_add(ctl, t)
            epochs[tid] = epoch
        next_new = max(int(t[1:]) for t in restored) + 1

    def running() -> list[FakeTrial]:
        return [t for t in ctl.trials if t.status == "RUNNING"]

    def start() -> None:
        nonlocal next_new
        while len(running()) < concurrent:
            pending = [t for t in ctl.trials if t.status == "PENDING"]  # Ray starts these
            chosen = pending[0] if pending else scheduler.choose_trial_to_run(ctl)
            if chosen is None and next_new < len(table):
                chosen = FakeTrial(next_new)
                next_new += 1
                ctl.trials.append(chosen)
                scheduler.on_trial_add(ctl, chosen)
                epochs[chosen.trial_id] = 0
                if chosen.status != "PENDING":
                    continue
            if chosen is None:
                return
            chosen.status = "RUNNING"
            ready.add(chosen.trial_id)

    start()
    reports = 0
    while running():
        ready |= ctl.resumed
        ctl.resumed.clear()
        can = [t for t in running() if t.trial_id in ready]
        assert can, "every running trial waits: deadlock"
        trial = rng.choice(can)
        ready.discard(trial.trial_id)
        index, epoch = int(trial.trial_id[1:]), epochs[trial.trial_id]
        if epoch == MAX_T:  # its last report was answered CONTINUE: it returns
            trial.status = "TERMINATED"
            scheduler.on_trial_complete(ctl, trial, trial.last_result)
            start()
            continue
        epoch += 1
        epochs[trial.trial_id] = epoch
        trial.last_result = row = result(table[index][epoch - 1], epoch)
        rows.append({**row, "trial_id": trial.trial_id, "timestamp": reports})
        decision = scheduler.on_trial_result(ctl, trial, row)
        if decision == STOP:
            ctl.stop_trial(trial)
        elif decision == CONTINUE:
            ready.add(trial.trial_id)
        reports += 1
        if kill_after is not None and reports >= kill_after:
            break
        start()
    return epochs, rows, {t.trial_id: t.status for t in ctl.trials}


def in_order(table: list, objectives: int) -> dict[str, int]:
    """The plain scheduler with one trial at a time: each rung decision sees exactly the
    earlier-sampled trials' results (the reference)."""
    scheduler = inner(objectives)
    out = {}
    for i, curve in enumerate(table):
        trial = FakeTrial(i, "RUNNING")
        scheduler.on_trial_add(None, trial)
        for epoch in range(1, MAX_T + 1):
            out[trial.trial_id] = epoch
            if scheduler.on_trial_result(None, trial, result(curve[epoch - 1], epoch)) == STOP:
                break
    return out


@pytest.mark.parametrize("objectives", [1, 2])
def test_same_decisions_whatever_order_results_arrive_in(objectives: int) -> None:
    for seed in range(4):
        table = curves(12, seed, objectives)
        want = in_order(table, objectives)
        assert min(want.values()) < MAX_T, "the example should stop a trial early"
        for concurrent in (1, 2, 3, 5):
            for order in range(6):
                got, _, _ = simulate(table, wrapped(objectives), concurrent,
                                     random.Random(order))
                assert got == want, (seed, concurrent, order)


def test_plain_asha_depends_on_the_arrival_order() -> None:
    """Why the wrapper exists: the same results in another order, other stops."""
    table = curves(12, 0)
    outcomes = {tuple(sorted(simulate(table, inner(1), 3, random.Random(order))[0].items()))
                for order in range(20)}
    assert len(outcomes) > 1


@pytest.mark.parametrize("objectives", [1, 2])
def test_a_killed_run_resumed_from_its_epochs_log_decides_the_same(objectives: int) -> None:
    table = curves(10, 7, objectives)
    want = in_order(table, objectives)
    for kill in (3, 8, 15, 25, 40):
        for order in range(3):
            rng = random.Random(order)
            epochs, rows, statuses = simulate(table, wrapped(objectives), 3, rng,
                                              kill_after=kill)
            history: dict[str, list] = {}
            for row in rows:
                history.setdefault(row["trial_id"], []).append(row)
            # Ray's saved state can lag the last reports: a trial may resume one epoch back
            restored = {tid: (max(0, e - rng.randint(0, 1)) if statuses[tid] != "TERMINATED"
                              else e, "TERMINATED" if statuses[tid] == "TERMINATED"
                              else "PENDING")
                        for tid, e in epochs.items()}
            _, more, _ = simulate(table, wrapped(objectives, history), 3, rng,
                                  restored=restored)
            reached: dict[str, int] = {}  # what trials.csv says: the epochs reported
            for row in rows + more:
                reached[row["trial_id"]] = max(reached.get(row["trial_id"], 0), row["epoch"])
            assert reached == want, (kill, order)


class FakeSearcher:
    """Records what it was told before each proposal."""

    metric, mode = "val/R@1", "max"

    def __init__(self) -> None:
        self.told: list[str] = []
        self.seen: dict[str, list[str]] = {}

    def suggest(self, trial_id: str) -> dict:
        self.seen[trial_id] = list(self.told)
        return {"x": len(self.seen)}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        pass

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        self.told.append(trial_id)


@pytest.mark.parametrize("free", [0, 4, math.inf])
def test_the_sampler_sees_trials_in_sampling_order_up_to_k_minus_c(free: float) -> None:
    from ray.tune.search import ConcurrencyLimiter

    total, c = 12, 3
    histories = set()
    for order in range(8):
        rng = random.Random(order)
        inner_searcher = FakeSearcher()
        limiter = ConcurrencyLimiter(SamplingOrderSearcher(inner_searcher, c, total, free),
                                     max_concurrent=c)
        live: list[str] = []
        made = 0
        while made < total or live:
            while made < total:
                tid = f"id{made}-{order}"  # Ray's ids are random: only the order counts
                if limiter.suggest(tid) is None:
                    break
                live.append(tid)
                made += 1
            assert live, "nothing runs and nothing can be proposed: deadlock"
            done = live.pop(rng.randrange(len(live)))
            limiter.on_trial_complete(done, {"val/R@1": 1.0})
        rank = {tid: int(tid[2:].split("-")[0]) for tid in inner_searcher.seen}
        assert [rank[t] for t in inner_searcher.told] == list(range(total))
        seen = tuple(tuple(rank[t] for t in inner_searcher.seen[tid])
                     for tid in sorted(inner_searcher.seen, key=rank.__getitem__))
        for k, history in enumerate(seen):
            if k >= free:
                assert history == tuple(range(max(0, k - c + 1))), (k, history)
        histories.add(tuple(h for k, h in enumerate(seen) if k >= free))
    assert len(histories) == 1


def test_history_free_counts_the_random_start() -> None:
    import optuna

    from vpr_tune.tune.reproducible import history_free

    assert history_free(optuna.samplers.TPESampler(seed=0)) == 10
    assert history_free(optuna.samplers.TPESampler(seed=0), warm=4) == 6
    assert history_free(optuna.samplers.RandomSampler(seed=0)) == math.inf
    assert history_free(optuna.samplers.NSGAIISampler(seed=0)) == 0


def test_run_reproducible_flag_shows_in_the_plan(tmp_path, capsys, street_world_tiny):
    from tests.helpers import write_space
    from vpr_tune.cli import main

    space = write_space(tmp_path / "s.yaml", search={"algorithm": "optuna",
                                                     "scheduler": "asha"})
    assert main(["run", str(space), "--dry-run", "--data", str(street_world_tiny)]) == 0
    assert ", reproducible" not in capsys.readouterr().out
    assert main(["run", str(space), "--dry-run", "--reproducible",
                 "--data", str(street_world_tiny)]) == 0
    assert "1 CPU / 0 GPU per trial, reproducible" in capsys.readouterr().out


def test_resume_keeps_what_space_yaml_recorded(tmp_path):
    from vpr_tune.tune.space_record import recorded_reproducible

    (tmp_path / "space.yaml").write_text("search: {seed: 0}\nresolved: {reproducible: true}\n")
    assert recorded_reproducible(tmp_path)
    (tmp_path / "space.yaml").write_text("search: {reproducible: true}\n")  # older space.yaml
    assert recorded_reproducible(tmp_path)
    (tmp_path / "space.yaml").write_text("search: {seed: 0}\nresolved: {trials: 3}\n")
    assert not recorded_reproducible(tmp_path)
