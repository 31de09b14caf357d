"""``space.yaml``: the space a search was started with, as ``--resume`` reads it back.

A search writes it when it starts (:func:`record_space`: the YAML as given plus what it
resolved to: data root and fingerprint, trial count, folder, storage, reproducibility).
``--resume`` continues exactly that search: :func:`recorded_inputs` refuses a changed YAML
or another ``--data``, showing the change; :func:`recorded_space` reads the space back
(``--warm-start``, PBT lineages); :func:`recorded_reproducible` keeps the search
reproducible or not, as it was started.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vpr_tune.errors import UserError


def record_space(exp_dir: Path, space: Any, data_root: Path, trials: int,
                 remote: str | None) -> None:
    """space.yaml: the YAML as given plus what it resolved to (data, trials, places); also
    pushed to the object store when Ray writes there (``remote``)."""
    import yaml

    from vpr_tune.atomic import write_text
    from vpr_tune.data.fingerprint import data_fingerprint
    from vpr_tune.tune import storage as storage_mod

    resolved = {**space.raw, "resolved": {
        "data_root": str(data_root), "trials": trials, "experiment": str(exp_dir),
        "data_fingerprint": data_fingerprint(data_root),
        "reproducible": bool(space.base["search"].get("reproducible"))}}
    if remote:
        resolved["resolved"]["storage"] = storage_mod.public(remote)
    write_text(exp_dir / "space.yaml", yaml.safe_dump(resolved, sort_keys=False))
    if remote:
        storage_mod.push(exp_dir, remote, ("space.yaml",))


def _read(exp_dir: Path) -> tuple[dict[str, Any], dict[str, Any], Path]:
    """``exp_dir/space.yaml`` split into the YAML as given and its ``resolved`` part."""
    from vpr_tune.config import read_yaml

    path = exp_dir / "space.yaml"
    recorded = read_yaml(path.read_text(), str(path)) or {}
    resolved = recorded.pop("resolved", {}) or {}
    return recorded, resolved, path


def recorded_reproducible(exp_dir: Path) -> bool:
    """Whether the search recorded in ``exp_dir/space.yaml`` is reproducible (the YAML's
    ``search.reproducible`` or ``--reproducible``: ``resolved.reproducible``)."""
    recorded, resolved, _ = _read(exp_dir)
    return bool(resolved.get("reproducible",
                             (recorded.get("search") or {}).get("reproducible")))


def recorded_space(exp_dir: Path) -> Any:
    """The Space a search was started with (``exp_dir/space.yaml`` without its
    ``resolved`` part)."""
    from vpr_tune.config import space_from_dict

    recorded, _, path = _read(exp_dir)
    return space_from_dict(recorded, str(path))


def recorded_inputs(exp_dir: Path, space: Any, data: str | None) -> tuple[Any, str]:
    """``--resume`` continues the search as it was recorded in ``space.yaml``: its space and
    data root. A changed YAML or a different ``--data`` is a UserError showing the change."""
    from vpr_tune.config import space_from_dict

    recorded, resolved, path = _read(exp_dir)
    diff = _diff(recorded, space.raw)
    if diff:
        raise UserError(f"--resume: {space.source} differs from the space the search was "
                        f"started with ({path}): {'; '.join(diff[:5])}; resume without "
                        "editing it, or start a new --name")
    root = resolved.get("data_root")
    if data is not None and root and Path(data).expanduser().resolve() != Path(root):
        raise UserError(f"--resume: --data {data} differs from the data the search used "
                        f"({root}, recorded in {path}); drop --data to resume on it")
    return space_from_dict(recorded, str(path)), root or data


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    """``key: was X, now Y`` for every leaf that differs between two parsed YAML trees."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in [*old, *(k for k in new if k not in old)]:
            out += _diff(old.get(key, "(absent)"), new.get(key, "(absent)"), f"{prefix}{key}.")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')}: was {old!r}, now {new!r}"]
