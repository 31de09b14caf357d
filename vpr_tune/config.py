"""YAML search space -> validated config.

A config is a plain nested dict of plain values (nanoGPT style). ``DEFAULTS`` below is the
whole schema: every key a YAML may set, with its default. A YAML file overrides any part
of it; each leaf is either a fixed value or a *distribution*::

    optimizer:
      name: {choice: [sgd, adam, adamw, asgd]}
      lr: {loguniform: [1.0e-4, 1.0e-1]}
      momentum: {uniform: [0.8, 0.99], when: {name: [sgd, asgd]}}   # conditional

Distributions: ``choice``, ``uniform``, ``loguniform``, ``int``/``randint``, ``quniform``
([low, high, q]), ``grid``. ``when: {sibling: value-or-list}`` makes any leaf (fixed or
distribution) apply only when a sibling key in the same section has one of the values; a
dotted key starting with a top-level section names a key of another section
(``miner: {name: {choice: [...], when: {loss.name: [contrastive, triplet]}}}``). A leaf that
does not apply is absent from the trial config and the factory default is used.
A key whose range depends on another key is a list of conditional alternatives (the first
that applies is used)::

    margin:
      - {uniform: [20.0, 40.0], when: {name: arcface}}   # degrees
      - {uniform: [0.2, 0.5], when: {name: cosface}}     # cosine units

Public API (implemented below):

- ``load_space(path) -> Space``: parse + validate; raises ``UserError`` naming file & key.
- ``Space.base`` (nested dict: DEFAULTS overlaid with every fixed value that applies
  unconditionally), ``Space.params`` (the varying/conditional leaves, by dotted path).
- ``materialize(base, sampled) -> dict``: the nested config of one trial, given the sampled
  values keyed by dotted path (``{"optimizer.lr": 0.01}``); drops leaves whose ``when``
  does not hold.
"""

from __future__ import annotations

import copy
from typing import Any

from vpr_tune import components, metrics

SEARCH_ALGORITHMS = ("random", "grid", "optuna")
# Optuna samplers of search.algorithm optuna (registry: vpr_tune/tune/samplers.py).
SAMPLERS = ("tpe", "random", "qmc", "cmaes", "gp", "nsga2")
# Autocast of a trial (vpr_tune/precision.py): auto = fp16 on CUDA, bf16 on native-bf16 CPUs,
# else fp32.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
TRIAL_SCHEDULERS = ("asha", "fifo", "pbt", "pb2")
# What can run a search with several objectives (search.objectives): asha then ranks by
# Pareto fronts; PBT/PB2 exploit one metric, Optuna's CMA-ES is single-objective.
MULTI_OBJECTIVE_SCHEDULERS = ("asha", "fifo")
MULTI_OBJECTIVE_SAMPLERS = ("tpe", "random", "qmc", "gp", "nsga2")

DEFAULTS: dict[str, Any] = {
    "name": None,  # experiment name; CLI --name wins
    "seed": 0,  # seeds init, sampling and augmentation of every trial
    "storage": None,  # None -> <repo>/results; or an absolute path / URI (s3://...)
    "data": {
        "root": None,  # None -> $VPR_TUNE_DATA, else street-world in the user cache
        "synth_size": "demo",  # street-world size used when root is None
        "train": "gsv_xs/train",
        "val": "sf_xs/val",
        "test": {"sf_test": "sf_xs/test", "tokyo": "tokyo_xs/test"},
        "image_size": [224, 224],  # [H, W]; train and eval resize to this
        "min_images_per_place": 4,
        "cache": True,  # decode-once memory-mapped cache; False -> PIL every step
        "skip_bad_files": False,  # corrupt JPEGs: error (False) or warn and skip (True)
        # Training augmentation on the cached tensors (vpr_tune/data/augment.py); the YAML
        # may also say `augment: true/false` (= enabled).
        "augment": {
            "enabled": True,
            "crop_min": 0.8,  # crop side / image side, uniform(crop_min, crop_max)
            "crop_max": 1.0,
            "aspect": 0.05,  # crop aspect ratio 1 +- aspect
            "jitter": 0.25,  # brightness and contrast factors 1 +- jitter
            "white_balance": 0.07,  # per-channel gain 1 +- white_balance
            "perspective": 0.0,  # corners move up to this fraction of the side; 0 = off
        },
    },
    "model": {
        "backbone": "resnet18",
        "pretrained": "none",  # none | imagenet | /path/to/weights.pth
        "cut": "layer4",  # layer3 | layer4
        "freeze_stages": 2,  # first N of (stem, layer1, layer2, layer3) frozen
        "train_blocks": 4,  # ViT backbones (dinov2_*): the last N blocks train, the rest frozen
        "aggregator": {"name": "gem"},  # + per-aggregator params (p, dim, clusters, ...)
    },
    "loss": {"name": "contrastive"},  # + per-loss params (margins, scale, lr for arcface/cosface)
    "miner": {"name": "none"},  # + per-miner params (epsilon, margin, ...)
    # Registry-backed sections hold only their name here: each parameter's default lives in
    # its registry entry (vpr_tune/components.py), so `adam` without an lr gets Adam's 1e-3.
    "optimizer": {"name": "sgd"},  # + lr, weight_decay, momentum, ... (sgd: the course's)
    "scheduler": {"name": "none"},  # + warmup_epochs and per-scheduler params
    "budget": {
        "max_epochs": 10,
        "batches_per_epoch": 100,
        "places_per_batch": 64,  # P
        "images_per_place": 4,  # K
        "eval_batch_size": 64,
    },
    "search": {
        "algorithm": "optuna",
        "num_samples": 16,
        "metric": metrics.DEFAULT_METRIC,
        "mode": None,  # None -> the metric's direction (max for recalls, min for train/loss)
        # several objectives instead of metric/mode: [{metric, mode}, ...] (Pareto front)
        "objectives": None,
        "seed": 0,
        "max_concurrent": 2,
        "scheduler": "asha",
        "max_failures": 0,  # Ray retries of a failed trial
        "sampler": "tpe",  # one of SAMPLERS (search.algorithm optuna)
        "points_to_evaluate": [],  # partial configs {dotted key: value} tried first
        "time_budget": None,  # e.g. 90m, 6h, 3600 (seconds): then running trials end
    },
    "asha": {"grace_period": 1, "reduction_factor": 3},
    # search.scheduler pbt / pb2: population-based training (vpr_tune/tune/pbt.py)
    "pbt": {"perturbation_interval": 2, "quantile_fraction": 0.25,
            "resample_probability": 0.25, "mutate": ["optimizer.lr"]},
    "resources": {"cpu": 1, "gpu": 0, "precision": "auto"},  # precision: see PRECISIONS
    # Where else the search is logged (TensorBoard and the Optuna study always are).
    "tracking": {"mlflow": None},  # MLflow tracking URI: sqlite:///..., http://..., a folder
    # A schedule to train with (`vpr-tune best --export` of a PBT/PB2 trial writes its
    # lineage here): [{epoch: N, optimizer.lr: x, ...}, ...], the values from epoch N on.
    "replay": [],
}


def defaults() -> dict[str, Any]:
    """A fresh deep copy of ``DEFAULTS`` (callers may mutate it)."""
    return copy.deepcopy(DEFAULTS)


# ----------------------------------------------------------------------------- loading
import difflib  # noqa: E402
import math  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

DISTRIBUTIONS = ("choice", "uniform", "loguniform", "int", "randint", "quniform", "grid")
# Sections whose keys depend on the chosen ``name``: the registries say which keys each
# name takes (vpr_tune.components).
FREE_SECTIONS = tuple(components.SECTIONS)
# Fixed-name leaves and what they may be.
NAMES = {
    **{f"{section}.name": tuple(registry) for section, registry in components.SECTIONS.items()},
    "model.backbone": tuple(components.BACKBONES),
    "search.algorithm": SEARCH_ALGORITHMS, "search.scheduler": TRIAL_SCHEDULERS,
    "search.sampler": SAMPLERS,
    "search.metric": metrics.SEARCHABLE, "search.mode": metrics.MODES,
    "data.synth_size": ("tiny", "demo", "bench", "full"), "model.cut": components.CUTS,
    "resources.precision": PRECISIONS,
}
# Keys that describe the run itself, never searched over.
NOT_SEARCHABLE = ("name", "storage", "search", "resources", "asha", "pbt", "data.root",
                  "data.train", "data.val", "data.test", "tracking", "replay")
# Sections a replayed schedule may change during training (what PBT may mutate).
REPLAY_SECTIONS = ("optimizer", "loss", "miner")
# What each data.augment strength may be (fractions of the side, or of the brightness).
AUGMENT_RANGES = {"crop_min": (0.1, 1.0), "crop_max": (0.1, 1.0), "aspect": (0.0, 0.5),
                  "jitter": (0.0, 0.9), "white_balance": (0.0, 0.5), "perspective": (0.0, 0.4)}
# Marks an alternative's search name: ``loss.margin#arcface`` (see Param.alias).
ALIAS_MARK = "#"
NUMERIC_DISTS = ("uniform", "loguniform", "int", "randint", "quniform")


@dataclass
class Param:
    """One varying or conditional leaf: ``kind`` is a distribution name or ``value``."""

    path: str
    kind: str
    args: Any
    when: dict[str, tuple] = field(default_factory=dict)  # dotted sibling path -> values
    # Set on one of several alternatives for the same path: the name it is searched under
    # (``loss.margin#arcface``), unique in the space.
    alias: str = ""

    @property
    def id(self) -> str:
        """The key of this leaf in ``Space.params`` and the name Optuna suggests it under."""
        return self.alias or self.path

    def applies(self, sampled: dict[str, Any]) -> bool:
        """True when every ``when`` sibling was sampled and has one of its values."""
        return all(k in sampled and _in(sampled[k], v) for k, v in self.when.items())


@dataclass
class Space:
    """A validated search space: fixed ``base`` config + varying ``params`` (ordered)."""

    base: dict[str, Any]
    params: dict[str, Param]
    source: str = "<dict>"
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def algorithm(self) -> str:
        return self.base["search"]["algorithm"]


def _in(value: Any, allowed: tuple) -> bool:
    return any(value == a and type(value) is type(a) or value == a for a in allowed)


def materialize(base: dict[str, Any], sampled: dict[str, Any]) -> dict[str, Any]:
    """Nested trial config: ``base`` with each dotted ``sampled`` value set (deep copy)."""
    cfg = copy.deepcopy(base)
    for path, value in sampled.items():
        if ALIAS_MARK in path:  # an alternative's search name; its value is also under path
            continue
        node = cfg
        *parents, leaf = path.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = copy.deepcopy(value)
    return normalize_config(cfg)


def normalize_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Put ``cfg`` in the one shape every reader expects (in place; returns it): one int
    ``data.image_size`` becomes ``[H, W]``. Applied to every loaded, trial and read-back config.

    >>> normalize_config({"data": {"image_size": 224}})["data"]["image_size"]
    [224, 224]
    """
    data = cfg.get("data")
    size = data.get("image_size") if isinstance(data, dict) else None
    if isinstance(size, int) and not isinstance(size, bool):
        data["image_size"] = [size, size]
    return cfg


def parse_duration(value: Any) -> float | None:
    """Seconds in ``90m``, ``6h``, ``45s`` or a plain number of seconds (None stays None).

    >>> parse_duration("1.5h")
    5400.0
    """
    if value is None:
        return None
    units = {"s": 1, "m": 60, "h": 3600}
    text = str(value).strip().lower()
    number = text[:-1] if text[-1:] in units else text
    try:
        seconds = float(number) * units.get(text[-1:], 1)
    except ValueError:
        raise ValueError(f"{value!r} is not a duration (a number with s, m or h: 90m, 6h, "
                         "3600s)") from None
    if isinstance(value, bool) or not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{value!r}: a duration must be a positive number of s, m or h")
    return seconds


def load_space(path: str | Path) -> Space:
    """Read and validate a search-space YAML; every problem is one :class:`UserError`."""
    import yaml

    from vpr_tune.errors import UserError

    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a directory; expected a search-space YAML file")
    if not path.is_file():
        raise UserError(f"{path}: search-space file does not exist")
    try:
        raw = read_yaml(path.read_text(), str(path))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{path}: YAML syntax error{where}: {problem}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read ({exc})") from exc
    if raw is None:  # empty or only comments: 16 trials of the defaults is never meant
        raise UserError(f"{path}: has no content (empty or only comments); see "
                        "search_spaces/README.md for the schema")
    return space_from_dict(raw, str(path))


def read_yaml(text: str, source: str = "<yaml>") -> Any:
    """Parse YAML as the search spaces need it: a key given twice in one mapping is an error
    naming both lines (PyYAML keeps the last silently), and ``1e-4`` is the number it means
    (YAML 1.1 reads a float without a dot as text).

    >>> read_yaml("lr: 1e-4")
    {'lr': 0.0001}
    """
    loader = _loader()(text)
    loader.source = source
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


_LOADER: Any = None


def _loader() -> Any:
    global _LOADER
    if _LOADER is not None:
        return _LOADER
    import re

    import yaml

    from vpr_tune.errors import UserError

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> dict:
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                if isinstance(key, (str, int, float, bool)) and key in seen:
                    raise UserError(f"{self.source}: key {key!r} is given twice, "
                                    f"at lines {seen[key]} and {line}; keep one")
                if isinstance(key, (str, int, float, bool)):
                    seen[key] = line
            return super().construct_mapping(node, deep=deep)

    # YAML 1.1 floats need a dot: also read 1e-4, -3E+2 as numbers (copying PyYAML's list).
    Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                                 re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"),
                                 list("-+0123456789"))
    _LOADER = Loader
    return Loader


def space_from_dict(raw: Any, source: str = "<dict>") -> Space:
    """Validate an already-parsed YAML document (see :func:`load_space`)."""
    return _Builder(source).build(raw)


class _Builder:
    def __init__(self, source: str) -> None:
        self.source = source
        self.fixed: dict[str, Any] = {}  # dotted -> value (unconditional)
        self.leaves: list[Param] = []  # distributions and conditional values

    def fail(self, key: str, msg: str) -> None:
        from vpr_tune.errors import UserError

        raise UserError(f"{self.source}: {key}: {msg}" if key else f"{self.source}: {msg}")

    # ------------------------------------------------------------------ walking the YAML
    def build(self, raw: Any) -> Space:
        if not isinstance(raw, dict):
            self.fail("", f"expected a mapping of sections at the top, got {_tname(raw)}")
        self.walk(raw, DEFAULTS, "")
        self.check_when_values()
        self.resolve_static()
        paths = [p.path for p in self.leaves]
        for p in self.leaves:  # one alternative left: searched under its plain path
            if paths.count(p.path) == 1:
                p.alias = ""
        self.check_names()
        self.check_free_params()
        self.check_replay()
        self.check_augment()
        self.check_search()
        self.check_batch()
        base = materialize(defaults(), self.fixed)
        base["search"]["mode"] = metrics.mode_of(base["search"])
        params = _ordered({p.id: p for p in self.leaves})
        return Space(base=base, params=params, source=self.source, raw=copy.deepcopy(raw))

    def walk(self, node: dict, schema: dict, prefix: str) -> None:
        free = prefix.rstrip(".") in FREE_SECTIONS or prefix == "data.test."
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            if not isinstance(key, str):
                self.fail(dotted, f"keys must be text, got {_tname(key)}")
            if key not in schema and not free:
                close = difflib.get_close_matches(key, list(schema), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                self.fail(dotted, f"unknown key{hint}; allowed: {', '.join(schema)}")
            default = schema.get(key)
            if dotted == "data.augment" and (isinstance(value, bool) or isinstance(
                    value, dict) and _is_leaf_spec(value)):  # augment: true/false
                self.leaf("data.augment.enabled", value, True, True)
            elif isinstance(default, dict) and key != "test" or dotted in FREE_SECTIONS:
                if not isinstance(value, dict) or _is_leaf_spec(value):
                    self.fail(dotted, f"expected a section (mapping), got {_tname(value)}")
                self.walk(value, default or {}, dotted + ".")
            elif dotted == "data.test":
                if not isinstance(value, dict):
                    self.fail(dotted, "expected a mapping of name: split folder")
                for k, v in value.items():
                    if not isinstance(v, str):
                        self.fail(f"{dotted}.{k}", f"expected a split path, got {_tname(v)}")
                self.fixed[dotted] = value
            elif _is_alternatives(value):
                self.alternatives(dotted, value, default, key in schema)
            else:
                self.leaf(dotted, value, default, key in schema)

    def alternatives(self, dotted: str, value: list, default: Any, known: bool) -> None:
        """Several conditional specs for one key: each becomes a Param with its own alias."""
        for i, spec in enumerate(value):
            if "when" not in spec:
                self.fail(f"{dotted}[{i}]", "each alternative of a list needs a when:")
            before = len(self.leaves)
            self.leaf(dotted, spec, default, known)
            for p in self.leaves[before:]:
                tag = "+".join(str(v) for vals in p.when.values() for v in vals)
                taken = {q.id for q in self.leaves}
                p.alias = f"{dotted}{ALIAS_MARK}{tag}"
                if p.alias in taken:
                    p.alias = f"{dotted}{ALIAS_MARK}{i}"

    def leaf(self, dotted: str, value: Any, default: Any, known: bool) -> None:
        if dotted == "search.objectives":
            self.fixed[dotted] = self.check_objectives(value)
            return
        if isinstance(value, dict) and _is_leaf_spec(value):
            when = self.parse_when(dotted, value.get("when"))
            kinds = [k for k in value if k != "when"]
            unknown = [k for k in kinds if k not in DISTRIBUTIONS and k != "value"]
            if unknown or len(kinds) != 1:
                self.fail(dotted, f"a parameter is one of {', '.join(DISTRIBUTIONS)} or value "
                          f"(+ optional when), got keys {', '.join(map(str, value))}")
            kind = kinds[0]
            if kind != "value" and _searchable(dotted) is False:
                self.fail(dotted, "cannot be searched over; give a fixed value")
            args = value[kind]
            if kind == "value":
                self.check_type(dotted, args, default, known)
            else:
                args = self.check_dist(dotted, kind, args, default, known)
            if kind == "value" and not when:
                self.fixed[dotted] = args
            else:
                self.leaves.append(Param(dotted, kind, args, when))
        elif isinstance(value, dict):
            self.fail(dotted, "expected a value or a distribution such as {choice: [...]}; "
                      f"got a mapping with keys {', '.join(map(str, value))} "
                      f"(distributions: {', '.join(DISTRIBUTIONS)}; conditions: when)")
        else:
            self.check_type(dotted, value, default, known)
            self.fixed[dotted] = value

    def parse_when(self, dotted: str, when: Any) -> dict[str, tuple]:
        if when is None:
            return {}
        if not isinstance(when, dict) or not when:
            self.fail(f"{dotted}.when", "expected a mapping {sibling: value or [values]}")
        parent = dotted.rpartition(".")[0]
        out = {}
        for sib, vals in when.items():
            sib_path = when_path(parent, str(sib))
            if sib_path == dotted:
                self.fail(f"{dotted}.when", "a parameter cannot depend on itself")
            vals = tuple(vals) if isinstance(vals, list) else (vals,)
            if not vals:
                self.fail(f"{dotted}.when.{sib}", "empty list of values")
            out[sib_path] = vals
        return out

    # ------------------------------------------------------------------------ checking
    def check_type(self, dotted: str, value: Any, default: Any, known: bool) -> None:
        if dotted == "search.time_budget":
            try:
                parse_duration(value)
            except ValueError as exc:
                self.fail(dotted, str(exc))
            return
        if dotted in NAMES and value not in NAMES[dotted]:
            close = difflib.get_close_matches(str(value), NAMES[dotted], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            self.fail(dotted, f"{value!r} is not one of {', '.join(NAMES[dotted])}{hint}")
        if default is None and known and value is not None and not isinstance(value, str):
            self.fail(dotted, f"expected text (a name or path), got {_tname(value)}")
        if not known or default is None:
            if isinstance(value, dict):
                self.fail(dotted, "expected a plain value, got a mapping")
            return
        if dotted == "data.image_size":
            ok = (isinstance(value, int) and not isinstance(value, bool) and value > 0) or (
                isinstance(value, list) and len(value) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value))
            if not ok:
                self.fail(dotted, f"expected a positive int or [H, W], got {value!r}")
            return
        # GPU/CPU fractions are fine
        want = float if dotted in ("resources.cpu", "resources.gpu") else type(default)
        ok = (isinstance(value, bool) if want is bool
              else isinstance(value, (int, float)) and not isinstance(value, bool)
              if want is float
              else isinstance(value, int) and not isinstance(value, bool) if want is int
              else isinstance(value, want))
        if not ok:
            self.fail(dotted, f"expected {want.__name__}, got {_tname(value)} {value!r}")
        if want in (int, float) and value < 0:
            self.fail(dotted, f"must not be negative, got {value!r}")
        positive = ("budget.", "search.num_samples", "search.max_concurrent",
                    "asha.reduction_factor", "pbt.perturbation_interval")
        if want is int and dotted.startswith(positive) and value < 1:
            self.fail(dotted, f"must be at least 1, got {value!r}")
        if dotted == "resources.cpu" and value <= 0:
            self.fail(dotted, f"must be positive, got {value!r}")

    def check_dist(self, dotted: str, kind: str, args: Any, default: Any, known: bool) -> Any:
        if not isinstance(args, list):
            self.fail(dotted, f"{kind} takes a list, got {_tname(args)}")
        if kind in ("choice", "grid"):
            if not args:
                self.fail(dotted, f"{kind} needs at least one value")
            for v in args:
                self.check_type(dotted, v, default, known)
            return list(args)
        n = 3 if kind == "quniform" else 2
        shape = "[low, high, q]" if n == 3 else "[low, high]"
        if len(args) != n or not all(isinstance(a, (int, float)) and not isinstance(a, bool)
                                     and math.isfinite(a) for a in args):
            self.fail(dotted, f"{kind} takes {shape} numbers, got {args!r}")
        if kind in ("int", "randint") and not all(isinstance(a, int) for a in args):
            self.fail(dotted, f"{kind} takes integer bounds, got {args!r}")
        if known and isinstance(default, (bool, str, list)):
            self.fail(dotted, f"{kind} gives numbers but this key takes {_tname(default)}")
        low, high = args[0], args[1]
        if low > high:
            self.fail(dotted, f"{kind}: low {low} > high {high}")
        if kind == "loguniform" and low <= 0:
            self.fail(dotted, f"loguniform range must be > 0, got [{low}, {high}]")
        if kind == "quniform" and args[2] <= 0:
            self.fail(dotted, f"quniform step q must be > 0, got {args[2]}")
        if known and isinstance(default, (int, float)) and low < 0:
            self.fail(dotted, f"must not be negative, got low {low}")
        return list(args)

    def check_when_values(self) -> None:
        """Each ``when`` value is one its key can take: a name from the registry, or one of
        the key's choices (a typo would otherwise silently drop the parameter)."""
        for p in self.leaves:
            for sib, vals in p.when.items():
                searched = [q for q in self.leaves if q.path == sib
                            and q.kind in ("choice", "grid")]
                allowed = tuple(NAMES.get(sib, ())) or tuple(
                    v for q in searched for v in q.args)
                if not allowed:
                    continue
                for v in vals:
                    if not _in(v, allowed):
                        close = difflib.get_close_matches(str(v), [str(a) for a in allowed],
                                                          n=1)
                        hint = f" (did you mean {close[0]!r}?)" if close else ""
                        self.fail(f"{p.path}.when.{sib.rpartition('.')[2]}",
                                  f"{v!r} is not a value of {sib}{hint}; "
                                  f"allowed: {', '.join(map(str, allowed))}")

    def check_batch(self) -> None:
        """A pair-based loss needs positives (K >= 2 images per place) and negatives (P >= 2
        places) in every batch; classifier losses (arcface, cosface) only need labels."""
        losses = self.possible("loss.name") or (DEFAULTS["loss"]["name"],)
        pair = [n for n in losses if n not in components.CLASSIFIER_LOSSES]
        if not pair:
            return
        for key, what in (("images_per_place", "positives"), ("places_per_batch", "negatives")):
            dotted = f"budget.{key}"
            values = self.possible(dotted) or (DEFAULTS["budget"][key],)
            lows = [v[0] if isinstance(v, list) else v for v in values]  # int: [low, high]
            low = [v for v in lows if isinstance(v, (int, float)) and v < 2]
            if low:
                self.fail(dotted, f"{low[0]} cannot form {what} for loss {pair[0]!r}: at "
                          "least 2 (or a classifier loss: "
                          f"{', '.join(components.CLASSIFIER_LOSSES)})")

    def resolve_static(self) -> None:
        """``when`` on a fixed sibling is decided now: the leaf becomes plain or is dropped."""
        kept = []
        for p in self.leaves:
            for sib in list(p.when):
                if sib not in {q.path for q in self.leaves} and sib not in self.fixed:
                    node = DEFAULTS
                    for k in sib.split("."):
                        node = node.get(k, {}) if isinstance(node, dict) else {}
                    if node == {}:
                        parent, _, key = sib.rpartition(".")
                        where = ("this section" if parent == p.path.rpartition(".")[0]
                                 else parent or "the top level")
                        self.fail(f"{p.path}.when", f"{key!r} is not a key of {where}")
                    self.fixed.setdefault(sib, node)
            static = {s: v for s, v in p.when.items() if s in self.fixed}
            if not all(_in(self.fixed[s], v) for s, v in static.items()):
                continue
            p.when = {s: v for s, v in p.when.items() if s not in static}
            if p.kind == "value" and not p.when:
                self.fixed[p.path] = p.args
            else:
                kept.append(p)
        self.leaves = kept

    def possible(self, dotted: str) -> tuple:
        """Every value ``dotted`` can take (fixed value, choice/grid values)."""
        if dotted in self.fixed:
            return (self.fixed[dotted],)
        vals: list = []
        for p in self.leaves:
            if p.path == dotted:
                vals += p.args if p.kind in ("choice", "grid") else [p.args]
        return tuple(vals)

    def check_names(self) -> None:
        for p in self.leaves:
            if p.path in NAMES and p.kind in NUMERIC_DISTS:
                self.fail(p.path, f"{p.kind} gives numbers; use choice over "
                          f"{', '.join(NAMES[p.path])}")
            for sib, vals in p.when.items():
                possible = self.possible(sib)
                if possible and not any(_in(v, possible) for v in vals):
                    self.fail(f"{p.path}.when", f"{sib} never takes {list(vals)} "
                              f"(possible: {list(possible)})")

    def check_free_params(self) -> None:
        """Each key of a name-dependent section is a parameter of every name it applies to,
        and a loss parameter's values are plausible in that loss's unit."""
        allowed = components.allowed_params
        keys = [(d, None) for d in self.fixed] + [(p.path, p) for p in self.leaves]
        for section in FREE_SECTIONS:
            node = DEFAULTS
            for part in section.split("."):
                node = node[part]
            names = self.possible(f"{section}.name") or (node["name"],)
            for dotted, leaf in keys:
                parent, _, key = dotted.rpartition(".")
                if parent != section or key == "name":
                    continue
                when_names = leaf.when.get(f"{section}.name") if leaf else None
                applies_to = [n for n in names if when_names is None or _in(n, when_names)]
                bad = [n for n in applies_to if key not in allowed(section, n)]
                if bad:
                    ok = sorted(n for n in NAMES[f"{section}.name"] if key in allowed(section, n))
                    self.fail(dotted, f"{bad[0]!r} takes no {key!r} (allowed for {bad[0]}: "
                              f"{', '.join(sorted(allowed(section, bad[0]))) or 'none'}"
                              f"; {key} applies to {', '.join(ok) or 'no ' + section}"
                              f"{' — add when: {name: [...]}' if ok else ''})")
                if section == "loss":
                    values = [self.fixed[dotted]] if leaf is None else _values(leaf)
                    for n in applies_to:
                        problem = next(filter(None, (components.unit_problem(n, key, v)
                                                     for v in values)), None)
                        if problem:
                            self.fail(dotted, problem)

    def check_replay(self) -> None:
        """``replay``: epochs rising from 1 to max_epochs, each with numbers for keys this
        config fixes in its optimizer, loss or miner section."""
        entries = self.fixed.get("replay") or []
        fixed_keys = sorted(d for d in self.fixed if d.startswith(
            tuple(f"{s}." for s in REPLAY_SECTIONS)) and not d.endswith(".name"))
        last = 0
        for i, entry in enumerate(entries):
            where = f"replay[{i}]"
            if not isinstance(entry, dict):
                self.fail(where, f"expected a mapping {{epoch: N, optimizer.lr: x, ...}}, "
                          f"got {_tname(entry)}")
            epoch = entry.get("epoch")
            if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch <= last:
                self.fail(f"{where}.epoch", f"expected an epoch number above {last} (epochs "
                          f"rise from 1), got {epoch!r}")
            last = epoch
            values = {k: v for k, v in entry.items() if k != "epoch"}
            if not values:
                self.fail(where, "names no value to change (e.g. optimizer.lr: 0.001)")
            for key, value in values.items():
                if key not in fixed_keys:
                    self.fail(f"{where}.{key}", "not a fixed key of this config's optimizer, "
                              f"loss or miner section (allowed: {', '.join(fixed_keys)})")
                if not isinstance(value, int | float) or isinstance(value, bool):
                    self.fail(f"{where}.{key}", f"expected a number, got {_tname(value)}")
        max_epochs = self.fixed.get("budget.max_epochs", DEFAULTS["budget"]["max_epochs"])
        if isinstance(max_epochs, int) and last > max_epochs:
            self.fail(f"replay[{len(entries) - 1}].epoch",
                      f"{last} is past budget.max_epochs {max_epochs}")

    def check_augment(self) -> None:
        """Augmentation strengths stay where the image survives them."""
        keys = [(d, [v]) for d, v in self.fixed.items()] + [(p.path, _values(p))
                                                              for p in self.leaves]
        for dotted, values in keys:
            key = dotted.removeprefix("data.augment.")
            if key in AUGMENT_RANGES and dotted != key:
                low, high = AUGMENT_RANGES[key]
                bad = [v for v in values if not low <= v <= high]
                if bad:
                    self.fail(dotted, f"{bad[0]!r} is outside {low:g}-{high:g}")

    def check_objectives(self, value: Any) -> list[dict[str, str]] | None:
        """``search.objectives``: 2 to 3 ``{metric, mode}`` mappings, each metric once, at
        least one a searchable metric; ``mode`` may be left out (the metric's direction)."""
        key = "search.objectives"
        if value is None:
            return None
        allowed = ", ".join(metrics.OBJECTIVES)
        if not isinstance(value, list) or not 2 <= len(value) <= metrics.MAX_OBJECTIVES:
            self.fail(key, f"expected a list of 2 to {metrics.MAX_OBJECTIVES} {{metric, mode}} "
                      f"mappings, got {_tname(value)}"
                      f"{f' of {len(value)}' if isinstance(value, list) else ''} (one "
                      "objective: use search.metric and search.mode)")
        out: list[dict[str, str]] = []
        for i, item in enumerate(value):
            where = f"{key}[{i}]"
            if not isinstance(item, dict) or "metric" not in item:
                self.fail(where, f"expected {{metric: ..., mode: min|max}}, got {item!r}")
            extra = [k for k in item if k not in ("metric", "mode")]
            if extra:
                self.fail(f"{where}.{extra[0]}", "unknown key; allowed: metric, mode")
            metric, mode = item["metric"], item.get("mode")
            if metric not in metrics.OBJECTIVES:
                close = difflib.get_close_matches(str(metric), metrics.OBJECTIVES, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                self.fail(f"{where}.metric", f"{metric!r} is not one of {allowed}{hint}")
            if any(o["metric"] == metric for o in out):
                self.fail(f"{where}.metric", f"{metric} is listed twice; each objective once")
            if mode is not None and mode not in metrics.MODES:
                self.fail(f"{where}.mode", f"{mode!r} is not one of {', '.join(metrics.MODES)}")
            if mode is not None and mode != metrics.direction(metric):
                self.fail(f"{where}.mode", f"{mode!r} contradicts {metric} (better when "
                          f"{metrics.direction(metric)}); set {metrics.direction(metric)} or "
                          "leave mode out")
            out.append({"metric": metric, "mode": mode or metrics.direction(metric)})
        if not any(o["metric"] in metrics.SEARCHABLE for o in out):
            self.fail(key, f"needs one of {', '.join(metrics.SEARCHABLE)} besides the costs "
                      f"({', '.join(metrics.COSTS)}): something the training improves")
        return out

    def check_search(self) -> None:
        objectives = self.fixed.get("search.objectives")
        for single in ("search.metric", "search.mode"):
            if objectives and single in self.fixed:
                self.fail(single, "give either search.objectives (several) or search.metric "
                          "and search.mode (one objective), not both")
        for dotted, able in (("search.sampler", MULTI_OBJECTIVE_SAMPLERS),
                             ("search.scheduler", MULTI_OBJECTIVE_SCHEDULERS)):
            chosen = self.fixed.get(dotted, DEFAULTS["search"][dotted.split(".")[1]])
            algorithm = self.fixed.get("search.algorithm", DEFAULTS["search"]["algorithm"])
            if dotted == "search.sampler" and algorithm != "optuna":
                continue  # the sampler is used by search.algorithm optuna only
            if objectives and chosen not in able:
                self.fail(dotted, f"{chosen} cannot rank several objectives "
                          f"(search.objectives); use one of {', '.join(able)}")
        if objectives:  # best.pt, ranking tables and curves follow the first searchable one
            first = next(o for o in objectives if o["metric"] in metrics.SEARCHABLE)
            self.fixed["search.metric"], self.fixed["search.mode"] = first["metric"], first["mode"]
        metric = self.fixed.get("search.metric", DEFAULTS["search"]["metric"])
        mode = self.fixed.get("search.mode")
        if mode is not None and mode != metrics.direction(metric):
            self.fail("search.mode", f"{mode!r} contradicts search.metric {metric} (better when "
                      f"{metrics.direction(metric)}); set {metrics.direction(metric)} or leave "
                      "search.mode out")
        algo = self.fixed.get("search.algorithm", DEFAULTS["search"]["algorithm"])
        if algo == "optuna":
            for p in self.leaves:
                if p.kind == "grid":
                    self.fail(p.path, "grid cannot be used with search.algorithm optuna; "
                              "use choice (or search.algorithm: grid)")
                if p.kind == "choice" and any(isinstance(v, (list, dict)) for v in p.args):
                    self.fail(p.path, "optuna choices must be single values (numbers, text, "
                              "true/false), not lists")
        if self.fixed.get("resources.gpu", 0) < 0:
            self.fail("resources.gpu", "must not be negative")
        storage = self.fixed.get("storage")
        if storage and "://" not in storage and not Path(storage).expanduser().is_absolute():
            self.fail("storage", f"must be an absolute path or a URI (s3://...), got {storage!r}")
        mlflow = self.fixed.get("tracking.mlflow")
        if mlflow is not None and not is_tracking_uri(mlflow):
            self.fail("tracking.mlflow", f"{TRACKING_URI_HELP}, got {mlflow!r}")


TRACKING_URI_HELP = ("must be a URI (sqlite:///FILE, http://HOST:PORT, file:///DIR) or an "
                     "absolute folder")


def is_tracking_uri(uri: str) -> bool:
    """An MLflow tracking URI vpr-tune accepts: ``scheme:...`` or an absolute folder."""
    import re

    return bool(re.match(r"^[a-z][a-z0-9+.-]*:", uri)) or Path(uri).expanduser().is_absolute()


def when_path(parent: str, key: str) -> str:
    """The dotted path a ``when`` key names: a key whose first part is a top-level section
    (``loss.name``) is absolute, any other is a sibling in ``parent``.

    >>> when_path("miner", "loss.name"), when_path("miner", "name")
    ('loss.name', 'miner.name')
    >>> when_path("model", "aggregator.name")
    'model.aggregator.name'
    """
    head = key.split(".")[0]
    if "." in key and isinstance(DEFAULTS.get(head), dict):
        return key
    return f"{parent}.{key}" if parent else key


def _ordered(params: dict[str, Param]) -> dict[str, Param]:
    """Params ordered so every ``when`` sibling comes before the leaves that depend on it."""
    done: dict[str, Param] = {}
    pending = list(params.values())
    while pending:
        progress = False
        for p in list(pending):
            waiting = {q.path for q in pending if q is not p}
            if not any(s in waiting for s in p.when):
                done[p.id] = p
                pending.remove(p)
                progress = True
        if not progress:
            from vpr_tune.errors import UserError

            raise UserError(f"circular when between {', '.join(p.path for p in pending)}")
    return done


def _values(p: Param) -> list[Any]:
    """The values a leaf can take that a range check must see: a fixed value, every choice,
    both ends of a numeric distribution."""
    if p.kind == "value":
        return [p.args]
    return list(p.args) if p.kind in ("choice", "grid") else list(p.args[:2])


def _is_alternatives(value: Any) -> bool:
    """A list of conditional specs (``[{uniform: ..., when: ...}, ...]``), not a list value."""
    return (isinstance(value, list) and bool(value)
            and all(isinstance(v, dict) and _is_leaf_spec(v) for v in value))


def _is_leaf_spec(value: dict) -> bool:
    return any(k in value for k in (*DISTRIBUTIONS, "value", "when"))


def _searchable(dotted: str) -> bool:
    return not any(dotted == n or dotted.startswith(n + ".") for n in NOT_SEARCHABLE)


def _tname(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "text", bool: "true/false",
            type(None): "nothing"}.get(type(value), type(value).__name__)
