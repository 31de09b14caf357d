"""What a search needs from a loaded space, besides a valid YAML (``space_rules.py``): one
small function per rule in ``SEARCH_RULES``, each refusing with one ``UserError`` line
naming the file, the key and what is allowed. ``vpr-tune run`` and ``--dry-run`` check them
before anything starts (``check_search``): something searched,
``search.points_to_evaluate``, ``pbt.mutate``. The machine (Ray's nodes) is checked in
``tune/ray_session.py``.

Plain Python on a :class:`~vpr_tune.space.Space`: the YAML reader imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vpr_tune.errors import UserError
from vpr_tune.schema import MUTABLE, POPULATION_SCHEDULERS, did_you_mean
from vpr_tune.space import Param, Space, uses_points


def something_searched(space: Space) -> None:
    """A search of one fixed config would run the same trial again and again."""
    if not space.params:
        raise UserError(f"{space.source}: no searched parameter, so every trial would be the "
                        f"same run; use `vpr-tune train {space.source}` for one run, or "
                        "search the seed for repeats: seed: {choice: [0, 1, 2]}")


def check_points(space: Space, points: Any, key: str = "search.points_to_evaluate"
                 ) -> list[dict[str, Any]]:
    """Partial configs checked against the space: searched keys only, values the
    distribution can take, conditional keys only with the value that makes them apply."""
    if not isinstance(points, list):
        raise UserError(f"{space.source}: {key}: expected a list of {{dotted.key: value}}")
    out = []
    for i, point in enumerate(points):
        where = f"{space.source}: {key}[{i}]"
        if not isinstance(point, dict) or not point:
            raise UserError(f"{where}: expected a mapping such as {{optimizer.lr: 0.0025}}")
        for name, value in point.items():
            p = space.params.get(name)
            if p is None or p.dist.fixed:
                raise UserError(f"{where}: {name} is not searched in this space"
                                f"{did_you_mean(name, space.params)}; "
                                f"searched: {', '.join(space.params)}")
            if not p.dist.contains(value):
                raise UserError(f"{where}: {name}: {value!r} is outside {p.kind} {p.args}")
            missing = [s for s in p.when if s not in point]
            if missing or not p.applies(point):
                cond = ", ".join(f"{s} in {list(v)}" for s, v in p.when.items())
                got = ("; give that too" if missing else " (got "
                       + ", ".join(f"{s} {point[s]!r}" for s in p.when) + ")")
                raise UserError(f"{where}: {name} applies only when {cond}{got}")
        out.append(dict(point))
    return out


def points(space: Space) -> None:
    """``search.points_to_evaluate``: valid partial configs, for a sampler (not a grid)."""
    if check_points(space, space.base["search"]["points_to_evaluate"]) and uses_points(space):
        raise UserError(f"{space.source}: search.points_to_evaluate: grid tries every "
                        "combination already; use search.algorithm random or optuna")


def mutated_params(space: Space) -> list[Param]:
    """The Params ``pbt.mutate`` names, checked for ``search.scheduler`` pbt or pb2."""
    conf, kind = space.base["pbt"], space.base["search"]["scheduler"]
    where = f"{space.source}: pbt"
    mutate = conf["mutate"]
    if not isinstance(mutate, list) or not mutate or not all(isinstance(k, str) for k in mutate):
        raise UserError(f"{where}.mutate: expected a list of searched keys, e.g. "
                        "[optimizer.lr, optimizer.weight_decay]")
    params = []
    for key in mutate:
        p = space.params.get(key)
        if p is None or p.dist.fixed:
            raise UserError(f"{where}.mutate: {key} is not searched in this space (searched: "
                            f"{', '.join(space.params) or 'nothing'})")
        if not key.startswith(MUTABLE) or key.endswith(".name"):
            raise UserError(f"{where}.mutate: {key} cannot change during training; allowed: "
                            "optimizer, loss and miner parameters (not their names)")
        if p.when:
            raise UserError(f"{where}.mutate: {key} applies only to some trials (when: "
                            f"{', '.join(p.when)}); mutate keys every trial has")
        if kind == "pb2" and p.kind not in ("uniform", "loguniform"):
            raise UserError(f"{where}.mutate: {key} is {p.kind}; pb2 takes continuous "
                            "parameters only (uniform, loguniform)")
        params.append(p)
    if not 0 < float(conf["quantile_fraction"]) <= 0.5:
        raise UserError(f"{where}.quantile_fraction: must be in (0, 0.5], got "
                        f"{conf['quantile_fraction']}")
    if not 0 <= float(conf["resample_probability"]) <= 1:
        raise UserError(f"{where}.resample_probability: must be in [0, 1], got "
                        f"{conf['resample_probability']}")
    return params


def population(space: Space) -> None:
    """``pbt.*`` when search.scheduler is pbt or pb2."""
    if space.base["search"]["scheduler"] in POPULATION_SCHEDULERS:
        mutated_params(space)


SEARCH_RULES: list[Callable[[Space], None]] = [something_searched, points, population]


def check_search(space: Space) -> None:
    """Every rule of ``SEARCH_RULES`` (UserError at the first refusal)."""
    for rule in SEARCH_RULES:
        rule(space)

