"""What a search space must satisfy: one small function per rule, in lists (as
``doctor.CHECKS``). Each refuses with one ``UserError`` line naming the file, the key and
what is allowed.

- ``check_value``, ``check_distribution``, ``check_objectives``: one value as the YAML walk
  (``config.py``) reads it: its type, range or distribution shape.
- ``SPACE_RULES``: the whole space once read (a :class:`Draft`: fixed values and leaves),
  run by ``config.space_from_dict`` on every YAML: ``when`` keys and values, parameters of
  the chosen names, replay, augmentation, objectives, Optuna's limits, batch shape.

What a search needs from a loaded space besides (``SEARCH_RULES``, ``check_points``,
``mutated_params``) is in :mod:`vpr_tune.search_rules`.

Plain Python: the YAML reader imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from vpr_tune import components, metrics
from vpr_tune.distributions import distribution, is_one_of
from vpr_tune.errors import UserError
from vpr_tune.schema import (
    AUGMENT_RANGES,
    DEFAULTS,
    FREE_SECTIONS,
    MULTI_OBJECTIVE_SAMPLERS,
    MULTI_OBJECTIVE_SCHEDULERS,
    NAMES,
    REPLAY_SECTIONS,
    SIZE_KEYS,
    TRACKING_URI_HELP,
    default_of,
    did_you_mean,
    is_tracking_uri,
    parse_duration,
    type_name,
)
from vpr_tune.space import Param


@dataclass
class Draft:
    """A space as the YAML walk read it: unconditional ``fixed`` values by dotted path and
    the ``leaves`` (distributions, conditional values); ``declared``: the leaves before the
    conditions on fixed keys were decided."""

    source: str
    fixed: dict[str, Any] = field(default_factory=dict)
    leaves: list[Param] = field(default_factory=list)
    declared: list[Param] = field(default_factory=list)

    def fail(self, key: str, msg: str) -> NoReturn:
        raise UserError(f"{self.source}: {key}: {msg}" if key else f"{self.source}: {msg}")

    def given(self, dotted: str) -> Any:
        """The fixed value of ``dotted``, else its default."""
        return self.fixed.get(dotted, default_of(dotted))

    def possible(self, dotted: str) -> tuple:
        """Every value ``dotted`` can take (fixed value, choice/grid values)."""
        if dotted in self.fixed:
            return (self.fixed[dotted],)
        vals: list = []
        for p in self.leaves:
            if p.path == dotted:
                vals += p.args if p.dist.categorical else [p.args]
        return tuple(vals)

    def values(self) -> list[tuple[str, Param | None, list[Any]]]:
        """(dotted, leaf or None when fixed, the values a range check must see) of every key."""
        return ([(d, None, [v]) for d, v in self.fixed.items()]
                + [(p.path, p, p.dist.ends()) for p in self.leaves])


# ------------------------------------------------------------------------- one value
_POSITIVE = ("budget.", "search.num_samples", "search.max_concurrent", "asha.reduction_factor",
             "search.keep_checkpoints",
             "pbt.perturbation_interval")


def check_value(draft: Draft, dotted: str, value: Any, default: Any, known: bool) -> None:
    """A fixed value (or one choice) of ``dotted``: a duration, a known name, text, or the
    type of its default, not negative (``known``: the schema has the key)."""
    if dotted == "search.time_budget":
        try:
            parse_duration(value)
        except ValueError as exc:
            draft.fail(dotted, str(exc))
        return
    if dotted in SIZE_KEYS:
        _check_image_size(draft, dotted, value)
        return
    if dotted in NAMES and value not in NAMES[dotted] and not (value is None and default is None):
        draft.fail(dotted, f"{value!r} is not one of {', '.join(NAMES[dotted])}"
                   f"{did_you_mean(value, NAMES[dotted])}")
    if default is None and known and value is not None and not isinstance(value, str):
        draft.fail(dotted, f"expected text (a name or path), got {type_name(value)}")
    if not known or default is None:
        if isinstance(value, dict):
            draft.fail(dotted, "expected a plain value, got a mapping")
        return
    want = float if dotted in ("resources.cpu", "resources.gpu") else type(default)  # fractions
    if not _is_a(value, want):
        draft.fail(dotted, f"expected {want.__name__}, got {type_name(value)} {value!r}")
    if want in (int, float) and value < 0:
        draft.fail(dotted, f"must not be negative, got {value!r}")
    if want is int and dotted.startswith(_POSITIVE) and value < 1:
        draft.fail(dotted, f"must be at least 1, got {value!r}")
    if dotted == "resources.cpu" and value <= 0:
        draft.fail(dotted, f"must be positive, got {value!r}")


def _is_a(value: Any, want: type) -> bool:
    if want is bool:
        return isinstance(value, bool)
    if isinstance(value, bool) and want in (int, float):
        return False
    return isinstance(value, (int, float) if want is float else want)


def _check_image_size(draft: Draft, dotted: str, value: Any) -> None:
    """One of ``SIZE_KEYS``: a positive int or ``[H, W]`` (``data.eval_image_size`` may also
    be null: the same as ``data.image_size``)."""
    def side(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v > 0

    if value is None and dotted == "data.eval_image_size":
        return
    if not (side(value) or isinstance(value, list) and len(value) == 2
            and all(side(v) for v in value)):
        unset = " or null (= data.image_size)" if dotted == "data.eval_image_size" else ""
        draft.fail(dotted, f"expected a positive int or [H, W]{unset}, got {value!r}")


def check_distribution(draft: Draft, dotted: str, kind: str, args: Any, default: Any,
                       known: bool) -> list[Any]:
    """The arguments of a distribution ``kind`` (as written) on ``dotted``."""
    if not isinstance(args, list):
        draft.fail(dotted, f"{kind} takes a list, got {type_name(args)}")
    dist = distribution(kind, args)
    problem = dist.problem(args, kind)
    if problem:
        draft.fail(dotted, problem)
    if dist.categorical:
        for v in args:
            check_value(draft, dotted, v, default, known)
        return list(args)
    if dotted in SIZE_KEYS:
        draft.fail(dotted, f"{kind} gives numbers; an image size is searched with choice or "
                   "grid (of ints or [H, W])")
    if known and isinstance(default, (bool, str, list)):
        draft.fail(dotted, f"{kind} gives numbers but this key takes {type_name(default)}")
    if known and isinstance(default, (int, float)) and args[0] < 0:
        draft.fail(dotted, f"must not be negative, got low {args[0]}")
    return list(args)


def check_objectives(draft: Draft, value: Any) -> list[dict[str, str]] | None:
    """``search.objectives``: 2 to 3 ``{metric, mode}`` mappings, each metric once, at
    least one a searchable metric; ``mode`` may be left out (the metric's direction)."""
    key = "search.objectives"
    if value is None:
        return None
    if not isinstance(value, list) or not 2 <= len(value) <= metrics.MAX_OBJECTIVES:
        draft.fail(key, f"expected a list of 2 to {metrics.MAX_OBJECTIVES} {{metric, mode}} "
                   f"mappings, got {type_name(value)}"
                   f"{f' of {len(value)}' if isinstance(value, list) else ''} (one "
                   "objective: use search.metric and search.mode)")
    out: list[dict[str, str]] = []
    for i, item in enumerate(value):
        where = f"{key}[{i}]"
        if not isinstance(item, dict) or "metric" not in item:
            draft.fail(where, f"expected {{metric: ..., mode: min|max}}, got {item!r}")
        extra = [k for k in item if k not in ("metric", "mode")]
        if extra:
            draft.fail(f"{where}.{extra[0]}", "unknown key; allowed: metric, mode")
        metric, mode = item["metric"], item.get("mode")
        if metric not in metrics.OBJECTIVES:
            draft.fail(f"{where}.metric", f"{metric!r} is not one of "
                       f"{', '.join(metrics.OBJECTIVES)}{did_you_mean(metric, metrics.OBJECTIVES)}")
        if any(o["metric"] == metric for o in out):
            draft.fail(f"{where}.metric", f"{metric} is listed twice; each objective once")
        if mode is not None and mode not in metrics.MODES:
            draft.fail(f"{where}.mode", f"{mode!r} is not one of {', '.join(metrics.MODES)}")
        if mode is not None and mode != metrics.direction(metric):
            draft.fail(f"{where}.mode", f"{mode!r} contradicts {metric} (better when "
                       f"{metrics.direction(metric)}); set {metrics.direction(metric)} or "
                       "leave mode out")
        out.append({"metric": metric, "mode": mode or metrics.direction(metric)})
    if not any(o["metric"] in metrics.SEARCHABLE for o in out):
        draft.fail(key, f"needs one of {', '.join(metrics.SEARCHABLE)} besides the costs "
                   f"({', '.join(metrics.COSTS)}): something the training improves")
    return out


# ------------------------------------------------------------------------- the space
def when_values(draft: Draft) -> None:
    """Each ``when`` value is one its key can take: a name from the registry, or one of
    the key's choices (a typo would otherwise silently drop the parameter)."""
    for p in draft.declared:
        for sib, vals in p.when.items():
            allowed = tuple(NAMES.get(sib, ())) or tuple(
                v for q in draft.declared if q.path == sib and q.dist.categorical
                for v in q.args)
            bad = [v for v in vals if allowed and not is_one_of(v, allowed)]
            if bad:
                draft.fail(f"{p.path}.when.{sib.rpartition('.')[2]}",
                           f"{bad[0]!r} is not a value of {sib}{did_you_mean(bad[0], allowed)}"
                           f"; allowed: {', '.join(map(str, allowed))}")


def when_keys(draft: Draft) -> None:
    """Each ``when`` key is a key of the schema or of this space."""
    paths = {q.path for q in draft.declared}
    for p in draft.declared:
        for sib in p.when:
            if sib not in paths and sib not in draft.fixed and default_of(sib) == {}:
                parent, _, key = sib.rpartition(".")
                where = ("this section" if parent == p.path.rpartition(".")[0]
                         else parent or "the top level")
                draft.fail(f"{p.path}.when", f"{key!r} is not a key of {where}")


def when_reachable(draft: Draft) -> None:
    """A ``when`` on a searched key names values that key can take."""
    for p in draft.leaves:
        for sib, vals in p.when.items():
            possible = draft.possible(sib)
            if possible and not any(is_one_of(v, possible) for v in vals):
                draft.fail(f"{p.path}.when", f"{sib} never takes {list(vals)} "
                           f"(possible: {list(possible)})")


def free_params(draft: Draft) -> None:
    """Each key of a name-dependent section is a parameter of every name it applies to,
    and a loss parameter's values are plausible in that loss's unit."""
    allowed = components.allowed_params
    for section in FREE_SECTIONS:
        names = draft.possible(f"{section}.name") or (default_of(section)["name"],)
        for dotted, leaf, values in draft.values():
            parent, _, key = dotted.rpartition(".")
            if parent != section or key == "name":
                continue
            when_names = leaf.when.get(f"{section}.name") if leaf else None
            applies_to = [n for n in names if when_names is None or is_one_of(n, when_names)]
            bad = [n for n in applies_to if key not in allowed(section, n)]
            if bad:
                ok = sorted(n for n in NAMES[f"{section}.name"] if key in allowed(section, n))
                draft.fail(dotted, f"{bad[0]!r} takes no {key!r} (allowed for {bad[0]}: "
                           f"{', '.join(sorted(allowed(section, bad[0]))) or 'none'}"
                           f"; {key} applies to {', '.join(ok) or 'no ' + section}"
                           f"{' — add when: {name: [...]}' if ok else ''})")
            problems = (components.unit_problem(n, key, v) for n in applies_to for v in values)
            problem = next(filter(None, problems), None) if section == "loss" else None
            if problem:
                draft.fail(dotted, problem)


def replay(draft: Draft) -> None:
    """``replay``: epochs rising from 1 to max_epochs, each with numbers for keys this
    config fixes in its optimizer, loss or miner section."""
    entries = draft.fixed.get("replay") or []
    fixed_keys = sorted(d for d in draft.fixed if d.startswith(
        tuple(f"{s}." for s in REPLAY_SECTIONS)) and not d.endswith(".name"))
    last = 0
    for i, entry in enumerate(entries):
        where = f"replay[{i}]"
        if not isinstance(entry, dict):
            draft.fail(where, f"expected a mapping {{epoch: N, optimizer.lr: x, ...}}, "
                       f"got {type_name(entry)}")
        epoch = entry.get("epoch")
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch <= last:
            draft.fail(f"{where}.epoch", f"expected an epoch number above {last} (epochs "
                       f"rise from 1), got {epoch!r}")
        last = epoch
        values = {k: v for k, v in entry.items() if k != "epoch"}
        if not values:
            draft.fail(where, "names no value to change (e.g. optimizer.lr: 0.001)")
        for key, value in values.items():
            if key not in fixed_keys:
                draft.fail(f"{where}.{key}", "not a fixed key of this config's optimizer, "
                           f"loss or miner section (allowed: {', '.join(fixed_keys)})")
            if not isinstance(value, int | float) or isinstance(value, bool):
                draft.fail(f"{where}.{key}", f"expected a number, got {type_name(value)}")
    max_epochs = draft.given("budget.max_epochs")
    if isinstance(max_epochs, int) and last > max_epochs:
        draft.fail(f"replay[{len(entries) - 1}].epoch",
                   f"{last} is past budget.max_epochs {max_epochs}")


def augment(draft: Draft) -> None:
    """Augmentation strengths stay where the image survives them."""
    for dotted, _, values in draft.values():
        key = dotted.removeprefix("data.augment.")
        if key in AUGMENT_RANGES and dotted != key:
            low, high = AUGMENT_RANGES[key]
            bad = [v for v in values if not low <= v <= high]
            if bad:
                draft.fail(dotted, f"{bad[0]!r} is outside {low:g}-{high:g}")


def objectives(draft: Draft) -> None:
    """Several objectives: not besides search.metric/mode, and a sampler and a scheduler
    that can rank them."""
    if not draft.fixed.get("search.objectives"):
        return
    for single in ("search.metric", "search.mode"):
        if single in draft.fixed:
            draft.fail(single, "give either search.objectives (several) or search.metric "
                       "and search.mode (one objective), not both")
    for dotted, able in (("search.sampler", MULTI_OBJECTIVE_SAMPLERS),
                         ("search.scheduler", MULTI_OBJECTIVE_SCHEDULERS)):
        if dotted == "search.sampler" and draft.given("search.algorithm") != "optuna":
            continue  # the sampler is used by search.algorithm optuna only
        if draft.given(dotted) not in able:
            draft.fail(dotted, f"{draft.given(dotted)} cannot rank several objectives "
                       f"(search.objectives); use one of {', '.join(able)}")


def mode(draft: Draft) -> None:
    """``search.mode``, when given, is the direction of ``search.metric``."""
    metric, mode = draft.given("search.metric"), draft.fixed.get("search.mode")
    if mode is not None and mode != metrics.direction(metric):
        draft.fail("search.mode", f"{mode!r} contradicts search.metric {metric} (better when "
                   f"{metrics.direction(metric)}); set {metrics.direction(metric)} or leave "
                   "search.mode out")


def optuna_leaves(draft: Draft) -> None:
    """search.algorithm optuna suggests each parameter: no grid, single-value choices."""
    if draft.given("search.algorithm") != "optuna":
        return
    for p in draft.leaves:
        if p.kind == "grid":
            draft.fail(p.path, "grid cannot be used with search.algorithm optuna; "
                       "use choice (or search.algorithm: grid)")
        if p.kind == "choice" and any(isinstance(v, (list, dict)) for v in p.args):
            draft.fail(p.path, "optuna choices must be single values (numbers, text, "
                       "true/false), not lists")


def storage(draft: Draft) -> None:
    """``storage``: an absolute folder or a URI."""
    where = draft.fixed.get("storage")
    if where and "://" not in where and not Path(where).expanduser().is_absolute():
        draft.fail("storage", f"must be an absolute path or a URI (s3://...), got {where!r}")


def mlflow(draft: Draft) -> None:
    """``tracking.mlflow``: a tracking URI."""
    uri = draft.fixed.get("tracking.mlflow")
    if uri is not None and not is_tracking_uri(uri):
        draft.fail("tracking.mlflow", f"{TRACKING_URI_HELP}, got {uri!r}")


def batch(draft: Draft) -> None:
    """A pair-based loss needs positives (K >= 2 images per place) and negatives (P >= 2
    places) in every batch; classifier losses (arcface, cosface) only need labels."""
    losses = draft.possible("loss.name") or (DEFAULTS["loss"]["name"],)
    pair = [n for n in losses if n not in components.CLASSIFIER_LOSSES]
    if not pair:
        return
    for key, what in (("images_per_place", "positives"), ("places_per_batch", "negatives")):
        dotted = f"budget.{key}"
        values = draft.possible(dotted) or (DEFAULTS["budget"][key],)
        lows = [v[0] if isinstance(v, list) else v for v in values]  # int: [low, high]
        low = [v for v in lows if isinstance(v, (int, float)) and v < 2]
        if low:
            draft.fail(dotted, f"{low[0]} cannot form {what} for loss {pair[0]!r}: at "
                       "least 2 (or a classifier loss: "
                       f"{', '.join(components.CLASSIFIER_LOSSES)})")


SPACE_RULES: list[Callable[[Draft], None]] = [
    when_values, when_keys, when_reachable, free_params, replay, augment, objectives, mode,
    optuna_leaves, storage, mlflow, batch]
