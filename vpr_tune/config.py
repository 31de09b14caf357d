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
leaf that does not apply is absent from the trial config and the factory default is used.

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
# Autocast of a trial (vpr_tune/precision.py): auto = fp16 on CUDA, bf16 on AMX CPUs, else fp32.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
TRIAL_SCHEDULERS = ("asha", "fifo")

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
        "augment": True,  # crop/scale/colour jitter on tensors for training
    },
    "model": {
        "backbone": "resnet18",
        "pretrained": "none",  # none | imagenet | /path/to/weights.pth
        "cut": "layer4",  # layer3 | layer4
        "freeze_stages": 2,  # first N of (stem, layer1, layer2, layer3) frozen
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
        "seed": 0,
        "max_concurrent": 2,
        "scheduler": "asha",
        "max_failures": 0,  # Ray retries of a failed trial
    },
    "asha": {"grace_period": 1, "reduction_factor": 3},
    "resources": {"cpu": 1, "gpu": 0, "precision": "auto"},  # precision: see PRECISIONS
    # Where else the search is logged (TensorBoard and the Optuna study always are).
    "tracking": {"mlflow": None},  # MLflow tracking URI: sqlite:///..., http://..., a folder
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
    "search.metric": metrics.SEARCHABLE, "search.mode": metrics.MODES,
    "data.synth_size": ("tiny", "demo", "bench", "full"), "model.cut": components.CUTS,
    "resources.precision": PRECISIONS,
}
# Keys that describe the run itself, never searched over.
NOT_SEARCHABLE = ("name", "storage", "search", "resources", "asha", "data.root", "data.train",
                  "data.val", "data.test", "tracking")
NUMERIC_DISTS = ("uniform", "loguniform", "int", "randint", "quniform")


@dataclass
class Param:
    """One varying or conditional leaf: ``kind`` is a distribution name or ``value``."""

    path: str
    kind: str
    args: Any
    when: dict[str, tuple] = field(default_factory=dict)  # dotted sibling path -> values

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


def load_space(path: str | Path) -> Space:
    """Read and validate a search-space YAML; every problem is one :class:`UserError`."""
    import yaml

    from vpr_tune.errors import UserError

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: search-space file does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{path}: YAML syntax error{where}: {problem}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read ({exc})") from exc
    return space_from_dict(raw if raw is not None else {}, str(path))


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
        self.resolve_static()
        self.check_names()
        self.check_free_params()
        self.check_search()
        base = materialize(defaults(), self.fixed)
        base["search"]["mode"] = metrics.mode_of(base["search"])
        params = _ordered({p.path: p for p in self.leaves})
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
            if isinstance(default, dict) and key != "test" or dotted in FREE_SECTIONS:
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
            else:
                self.leaf(dotted, value, default, key in schema)

    def leaf(self, dotted: str, value: Any, default: Any, known: bool) -> None:
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
            sib_path = f"{parent}.{sib}" if parent else str(sib)
            if sib_path == dotted:
                self.fail(f"{dotted}.when", "a parameter cannot depend on itself")
            vals = tuple(vals) if isinstance(vals, list) else (vals,)
            if not vals:
                self.fail(f"{dotted}.when.{sib}", "empty list of values")
            out[sib_path] = vals
        return out

    # ------------------------------------------------------------------------ checking
    def check_type(self, dotted: str, value: Any, default: Any, known: bool) -> None:
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
                    "asha.reduction_factor")
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
                        self.fail(f"{p.path}.when", f"{sib.rpartition('.')[2]!r} is not a key "
                                  "of this section")
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
        """Each key of a name-dependent section is a parameter of every name it applies to."""
        allowed = components.allowed_params
        keys = {d: p for d, p in self.fixed.items()} | {p.path: p for p in self.leaves}
        for section in FREE_SECTIONS:
            node = DEFAULTS
            for part in section.split("."):
                node = node[part]
            names = self.possible(f"{section}.name") or (node["name"],)
            for dotted in keys:
                parent, _, key = dotted.rpartition(".")
                if parent != section or key == "name":
                    continue
                leaf = next((p for p in self.leaves if p.path == dotted), None)
                when_names = leaf.when.get(f"{section}.name") if leaf else None
                applies_to = [n for n in names if when_names is None or _in(n, when_names)]
                bad = [n for n in applies_to if key not in allowed(section, n)]
                if bad:
                    ok = sorted(n for n in NAMES[f"{section}.name"] if key in allowed(section, n))
                    self.fail(dotted, f"{bad[0]!r} takes no {key!r} (allowed for {bad[0]}: "
                              f"{', '.join(sorted(allowed(section, bad[0]))) or 'none'}"
                              f"; {key} applies to {', '.join(ok) or 'no ' + section}"
                              f"{' — add when: {name: [...]}' if ok else ''})")

    def check_search(self) -> None:
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


def _ordered(params: dict[str, Param]) -> dict[str, Param]:
    """Params ordered so every ``when`` sibling comes before the leaves that depend on it."""
    done: dict[str, Param] = {}
    pending = list(params.values())
    while pending:
        progress = False
        for p in list(pending):
            if all(s in done or s not in params for s in p.when):
                done[p.path] = p
                pending.remove(p)
                progress = True
        if not progress:
            from vpr_tune.errors import UserError

            raise UserError(f"circular when between {', '.join(p.path for p in pending)}")
    return done


def _is_leaf_spec(value: dict) -> bool:
    return any(k in value for k in (*DISTRIBUTIONS, "value", "when"))


def _searchable(dotted: str) -> bool:
    return not any(dotted == n or dotted.startswith(n + ".") for n in NOT_SEARCHABLE)


def _tname(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "text", bool: "true/false",
            type(None): "nothing"}.get(type(value), type(value).__name__)
