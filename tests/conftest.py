"""Shared fixtures. Engineers: ADD fixtures below; do not rewrite this file."""

from __future__ import annotations

import os

# Ray and torch must not grab every core of the 2-core test machine per process.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
os.environ.setdefault("MPLBACKEND", "Agg")
