"""A resumed ASHA keeps its rungs and decisions (Ray restores a fresh scheduler): fed the
killed search's rows, a trial restored from an older checkpoint is not judged at a
non-rung epoch, and a trial stopped before stays stopped."""

from __future__ import annotations

from types import SimpleNamespace

from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from vpr_tune.tune.resumed_rungs import ResumedRungs

STOP, CONTINUE = TrialScheduler.STOP, TrialScheduler.CONTINUE


def _asha():
    # rungs at epochs 1 and 3 (grace 1, factor 3) below max_t 9
    return ASHAScheduler(time_attr="epoch", metric="val/R@1", mode="max", max_t=9,
                         grace_period=1, reduction_factor=3)


def _row(trial_id, epoch, value):
    return {"trial_id": trial_id, "epoch": epoch, "val/R@1": value}


# before the kill: b, a, c reported rung 1 in that order (b first: alone at the rung, it
# continued; c, worst of three, stopped), then a epoch 2
ROWS = [_row("b", 1, 20.0), _row("a", 1, 30.0), _row("c", 1, 10.0), _row("a", 2, 31.0)]


def test_a_fresh_asha_judges_a_restored_trial_at_a_non_rung_epoch():
    """The fault: Ray's restored ASHA has empty rungs, so b — restored at epoch 1, now
    reporting epoch 2 — is judged at epoch 2 against whatever arrives first."""
    fresh = _asha()
    for t in ("a", "b", "c", "d"):
        fresh.on_trial_add(None, SimpleNamespace(trial_id=t))
    fresh.on_trial_result(None, SimpleNamespace(trial_id="d"), _row("d", 1, 40.0))
    assert fresh.on_trial_result(None, SimpleNamespace(trial_id="b"), _row("b", 2, 21.0)) == STOP


def test_resumed_rungs_keep_the_decisions_made_before_the_kill():
    resumed = ResumedRungs(_asha(), ROWS)
    assert resumed.stopped == {"c": 1}
    for t in ("a", "b", "c", "d"):
        resumed.on_trial_add(None, SimpleNamespace(trial_id=t))
    resumed.on_trial_result(None, SimpleNamespace(trial_id="d"), _row("d", 1, 40.0))
    # b passed rung 1 before the kill: epoch 2 is no rung, it continues
    assert resumed.on_trial_result(None, SimpleNamespace(trial_id="b"),
                                   _row("b", 2, 21.0)) == CONTINUE
    # c was stopped before the kill: restored from its checkpoint, it stops again
    assert resumed.on_trial_result(None, SimpleNamespace(trial_id="c"),
                                   _row("c", 2, 99.0)) == STOP
    # a re-reports epoch 1 (restored from an older checkpoint): rung 1 already decided
    assert resumed.on_trial_result(None, SimpleNamespace(trial_id="a"),
                                   _row("a", 1, 30.0)) == CONTINUE
