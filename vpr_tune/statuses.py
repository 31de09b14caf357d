"""A trial's status in ``trials.csv``, and which statuses mean what, in one place.

Plain Python: every layer (the tables, the Pareto front, analysis, the CLI) reads it::

    from vpr_tune import statuses

    statuses.FAILED         # ('ERROR', 'DIVERGED'): never rank, never on a front
    statuses.UNRANKED       # FAILED + NOT_STARTED: what a best table leaves out
"""

from __future__ import annotations

# Ended normally: trained to max_epochs, cut at an ASHA rung, or cut by search.time_budget.
FINISHED = ("TERMINATED", "STOPPED_EARLY", "STOPPED_BUDGET")
# The trial crashed, or its loss became NaN/inf: it never ranks.
FAILED = ("ERROR", "DIVERGED")
# It never reported an epoch.
NOT_STARTED = ("PENDING",)
# Interrupted (Ctrl-C): continues from its checkpoint on --resume.
RUNNING = ("RUNNING",)
# Every status trials.csv may hold.
STATUSES = (*FINISHED, *FAILED, *RUNNING, *NOT_STARTED)
# Ended one way or the other (a search's progress line counts these as done).
ENDED = (*FINISHED, *FAILED)
# What never ranks: failed, diverged or unstarted.
UNRANKED = (*FAILED, *NOT_STARTED)
# Ray's own statuses after which a trial's row never changes.
RAY_FINAL = ("TERMINATED", "ERROR")
