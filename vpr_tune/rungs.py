"""ASHA's rung ladder and its defaults, in one place: the scheduler (``tune/moasha.py``),
the cost estimate (``tune/estimate_model.py``) and the figures (``analysis.Experiment.rungs``)
all place rungs with :func:`milestones`.

>>> milestones(1, 3, 9)
[1, 3, 9]
>>> rung_epochs(2, 3, 20)
[2, 6, 18]

Plain Python: the config schema may take its ``asha`` defaults from here.
"""

from __future__ import annotations

import math

# The defaults of the ``asha`` section (what config.DEFAULTS says and every YAML uses).
GRACE_PERIOD = 1
REDUCTION_FACTOR = 3


def milestones(grace_period: float, reduction_factor: float, max_t: float) -> list[float]:
    """ASHA's milestones, ascending: ``grace_period * reduction_factor**k`` up to ``max_t``
    (included), one bracket as in Ray's ``AsyncHyperBandScheduler``; a milestone equal to
    ``max_t`` is kept though the logarithms round just below it. Empty when the ladder
    has no rung (``max_t`` below the grace period, a factor not above 1)."""
    if grace_period <= 0 or max_t < grace_period or reduction_factor <= 1:
        return []
    count = int(math.log(max_t / grace_period) / math.log(reduction_factor) + 1e-9) + 1
    return [grace_period * reduction_factor**k for k in range(max(count, 0))]


def rung_epochs(grace_period: float, reduction_factor: float, max_t: float) -> list[int]:
    """The epochs at which ASHA cuts trials, below ``max_t``: a trial reports whole epochs,
    so it is judged at the first epoch at or past each milestone."""
    epochs = (math.ceil(m) for m in milestones(grace_period, reduction_factor, max_t)
              if m < max_t)
    return sorted(set(epochs))
