"""What every ``vpr-tune doctor`` check takes and gives: a :class:`Context` (the space, the
data, what earlier checks found) in, :class:`Check` lines (✔, ✘ or !) out. The checks are
in :mod:`vpr_tune.doctor` (the list) and :mod:`vpr_tune.doctor_data` (data and disk).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vpr_tune.device import pick_device
from vpr_tune.leaf_values import possible_values

OK, FAIL, WARN = "✔", "✘", "!"


@dataclass
class Check:
    """One line of the checklist: ``status`` is ✔ (fine), ✘ (the search cannot run) or
    ! (it runs, but read the fix); ``fix`` is one sentence, empty when fine."""

    status: str
    name: str
    detail: str
    fix: str = ""


@dataclass
class Context:
    """What the checks look at; ``space`` and ``data_root`` are filled in by earlier checks."""

    space_path: Path | None = None
    data: str | None = None
    decode: bool = False
    mlflow: str | None = None  # --mlflow; else the space's tracking.mlflow
    space: Any = None
    data_root: Path | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    def resources(self) -> dict[str, Any]:
        from vpr_tune.config import DEFAULTS

        return (self.space.base if self.space else DEFAULTS)["resources"]

    def model_values(self, dotted: str) -> list[Any]:
        """Every value ``dotted`` (e.g. ``model.pretrained``) can take in the space."""
        from vpr_tune.config import DEFAULTS, materialize

        if self.space is None:
            node: Any = DEFAULTS
        else:
            p = self.space.params.get(dotted)
            if p is not None:
                return possible_values(p)
            node = materialize(self.space.base, {})
        for key in dotted.split("."):
            node = node[key]
        return [node]

    def device(self) -> str:
        """Where a trial of the space runs here: the GPU when it asks for one and torch sees
        it."""
        return pick_device(float(self.resources()["gpu"]) > 0)

    def largest(self) -> dict[str, Any]:
        """The trial config with the space's largest model (the defaults without a space)."""
        from vpr_tune.config import defaults
        from vpr_tune.tune.estimate_timing import extreme_config

        return extreme_config(self.space, largest=True)[0] if self.space else defaults()
