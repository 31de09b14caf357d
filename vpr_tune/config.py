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
- ``eval_image_size(cfg) -> [H, W]``: the size every evaluation of a config resizes to.

Here: reading the YAML and walking it into fixed values and leaves (each value's shape
checked as it is read). Elsewhere: the schema (``DEFAULTS``, the names) in ``schema.py``,
re-exported here; the rules a read space must satisfy in ``space_rules.py``; the
distributions in ``distributions.py``; ``Param`` and ``Space`` in ``space.py``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from vpr_tune import metrics
from vpr_tune.distributions import ALIASES, DISTRIBUTIONS, is_one_of
from vpr_tune.errors import UserError
from vpr_tune.schema import (  # noqa: F401 - the schema, re-exported: config.DEFAULTS, ...
    ALIAS_MARK,
    AUGMENT_RANGES,
    DEFAULTS,
    FREE_SECTIONS,
    MULTI_OBJECTIVE_SAMPLERS,
    MULTI_OBJECTIVE_SCHEDULERS,
    NAMES,
    NOT_SEARCHABLE,
    POPULATION_SCHEDULERS,
    PRECISIONS,
    REPLAY_SECTIONS,
    SAMPLERS,
    SEARCH_ALGORITHMS,
    TRACKING_URI_HELP,
    TRIAL_SCHEDULERS,
    default_of,
    defaults,
    did_you_mean,
    is_tracking_uri,
    parse_duration,
    searchable,
    type_name,
    when_path,
)
from vpr_tune.space import Param, Space, uses_points  # noqa: F401 - re-exported
from vpr_tune.space_rules import (
    SPACE_RULES,
    Draft,
    check_distribution,
    check_objectives,
    check_value,
)


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
    ``data.image_size`` or ``data.eval_image_size`` becomes ``[H, W]``. Applied to every
    loaded, trial and read-back config.

    >>> normalize_config({"data": {"image_size": 224, "eval_image_size": 322}})["data"]
    {'image_size': [224, 224], 'eval_image_size': [322, 322]}
    """
    data = cfg.get("data")
    for key in ("image_size", "eval_image_size"):
        size = data.get(key) if isinstance(data, dict) else None
        if isinstance(size, int) and not isinstance(size, bool):
            data[key] = [size, size]
    return cfg


def eval_image_size(cfg: dict[str, Any]) -> list[int]:
    """The ``[H, W]`` every evaluation of ``cfg`` resizes to: val after each epoch (and
    query_ms), ``eval``, ``best --retest``, ``--save-preds`` and ``--repeat``. That is
    ``data.eval_image_size``, or ``data.image_size`` (what training resizes to) when it is
    null; keys a read-back config lacks take their defaults.

    >>> eval_image_size({"data": {"image_size": [280, 280], "eval_image_size": 322}})
    [322, 322]
    >>> eval_image_size({"data": {"image_size": 224, "eval_image_size": None}})
    [224, 224]
    """
    data = cfg.get("data") or {}
    size = data.get("eval_image_size")
    if size is None:
        size = data.get("image_size", DEFAULTS["data"]["image_size"])
    if isinstance(size, int) and not isinstance(size, bool):
        return [size, size]
    return [int(size[0]), int(size[1])]


def load_space(path: str | Path) -> Space:
    """Read and validate a search-space YAML; every problem is one :class:`UserError`."""
    import yaml

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
    """Validate an already-parsed YAML document (see :func:`load_space`): walk it into fixed
    values and leaves, decide the conditions on fixed keys, then apply ``SPACE_RULES``."""
    draft = Draft(source)
    if not isinstance(raw, dict):
        draft.fail("", f"expected a mapping of sections at the top, got {type_name(raw)}")
    _walk(draft, raw, DEFAULTS, "")
    draft.declared = [copy.copy(p) for p in draft.leaves]
    _resolve_when(draft)
    paths = [p.path for p in draft.leaves]
    for p in draft.leaves:  # one alternative left: searched under its plain path
        if paths.count(p.path) == 1:
            p.alias = ""
    for rule in SPACE_RULES:
        rule(draft)
    objectives = draft.fixed.get("search.objectives")
    if objectives:  # best.pt, ranking tables and curves follow the first searchable one
        first = next(o for o in objectives if o["metric"] in metrics.SEARCHABLE)
        draft.fixed["search.metric"], draft.fixed["search.mode"] = first["metric"], first["mode"]
    base = materialize(defaults(), draft.fixed)
    base["search"]["mode"] = metrics.mode_of(base["search"])
    params = _ordered({p.id: p for p in draft.leaves})
    return Space(base=base, params=params, source=source, raw=copy.deepcopy(raw))


# --------------------------------------------------------------------- walking the YAML
def _walk(draft: Draft, node: dict, schema: dict, prefix: str) -> None:
    free = prefix.rstrip(".") in FREE_SECTIONS or prefix == "data.test."
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        if not isinstance(key, str):
            draft.fail(dotted, f"keys must be text, got {type_name(key)}")
        if key not in schema and not free:
            draft.fail(dotted, f"unknown key{did_you_mean(key, schema)}; "
                       f"allowed: {', '.join(schema)}")
        default = schema.get(key)
        if dotted == "data.augment" and (isinstance(value, bool) or isinstance(
                value, dict) and _is_leaf_spec(value)):  # augment: true/false
            _leaf(draft, "data.augment.enabled", value, True, True)
        elif isinstance(default, dict) and key != "test" or dotted in FREE_SECTIONS:
            if not isinstance(value, dict) or _is_leaf_spec(value):
                draft.fail(dotted, f"expected a section (mapping), got {type_name(value)}")
            _walk(draft, value, default or {}, dotted + ".")
        elif dotted == "data.test":
            if not isinstance(value, dict):
                draft.fail(dotted, "expected a mapping of name: split folder")
            for k, v in value.items():
                if not isinstance(v, str):
                    draft.fail(f"{dotted}.{k}", f"expected a split path, got {type_name(v)}")
            draft.fixed[dotted] = value
        elif _is_alternatives(value):
            _alternatives(draft, dotted, value, default, key in schema)
        else:
            _leaf(draft, dotted, value, default, key in schema)


def _alternatives(draft: Draft, dotted: str, value: list, default: Any, known: bool) -> None:
    """Several conditional specs for one key: each becomes a Param with its own alias."""
    for i, spec in enumerate(value):
        if "when" not in spec:
            draft.fail(f"{dotted}[{i}]", "each alternative of a list needs a when:")
        before = len(draft.leaves)
        _leaf(draft, dotted, spec, default, known)
        for p in draft.leaves[before:]:
            tag = "+".join(str(v) for vals in p.when.values() for v in vals)
            taken = {q.id for q in draft.leaves}
            p.alias = f"{dotted}{ALIAS_MARK}{tag}"
            if p.alias in taken:
                p.alias = f"{dotted}{ALIAS_MARK}{i}"


def _leaf(draft: Draft, dotted: str, value: Any, default: Any, known: bool) -> None:
    if dotted == "search.objectives":
        draft.fixed[dotted] = check_objectives(draft, value)
        return
    if isinstance(value, dict) and _is_leaf_spec(value):
        when = _parse_when(draft, dotted, value.get("when"))
        kinds = [k for k in value if k != "when"]
        unknown = [k for k in kinds if k not in DISTRIBUTIONS and k != "value"]
        if unknown or len(kinds) != 1:
            draft.fail(dotted, f"a parameter is one of {', '.join(DISTRIBUTIONS)} or value "
                       f"(+ optional when), got keys {', '.join(map(str, value))}")
        kind = kinds[0]
        if kind != "value" and not searchable(dotted):
            draft.fail(dotted, "cannot be searched over; give a fixed value")
        args = value[kind]
        if kind == "value":
            check_value(draft, dotted, args, default, known)
        else:
            args = check_distribution(draft, dotted, kind, args, default, known)
        if kind == "value" and not when:
            draft.fixed[dotted] = args
        else:  # randint is stored as int
            draft.leaves.append(Param(dotted, ALIASES.get(kind, kind), args, when))
    elif isinstance(value, dict):
        draft.fail(dotted, "expected a value or a distribution such as {choice: [...]}; "
                   f"got a mapping with keys {', '.join(map(str, value))} "
                   f"(distributions: {', '.join(DISTRIBUTIONS)}; conditions: when)")
    else:
        check_value(draft, dotted, value, default, known)
        draft.fixed[dotted] = value


def _parse_when(draft: Draft, dotted: str, when: Any) -> dict[str, tuple]:
    if when is None:
        return {}
    if not isinstance(when, dict) or not when:
        draft.fail(f"{dotted}.when", "expected a mapping {sibling: value or [values]}")
    parent = dotted.rpartition(".")[0]
    out = {}
    for sib, vals in when.items():
        sib_path = when_path(parent, str(sib))
        if sib_path == dotted:
            draft.fail(f"{dotted}.when", "a parameter cannot depend on itself")
        vals = tuple(vals) if isinstance(vals, list) else (vals,)
        if not vals:
            draft.fail(f"{dotted}.when.{sib}", "empty list of values")
        out[sib_path] = vals
    return out


def _resolve_when(draft: Draft) -> None:
    """``when`` on a fixed key is decided now: the leaf becomes plain or is dropped. (A
    ``when`` key the schema lacks stays; the rule ``when_keys`` names it.)"""
    paths = {q.path for q in draft.leaves}
    kept = []
    for p in draft.leaves:
        for sib in p.when:
            if sib not in paths and sib not in draft.fixed and default_of(sib) != {}:
                draft.fixed[sib] = default_of(sib)
        static = {s: v for s, v in p.when.items() if s in draft.fixed}
        if not all(is_one_of(draft.fixed[s], v) for s, v in static.items()):
            continue
        p.when = {s: v for s, v in p.when.items() if s not in static}
        if p.dist.fixed and not p.when:
            draft.fixed[p.path] = p.args
        else:
            kept.append(p)
    draft.leaves = kept



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
            raise UserError(f"circular when between {', '.join(p.path for p in pending)}")
    return done


def _is_alternatives(value: Any) -> bool:
    """A list of conditional specs (``[{uniform: ..., when: ...}, ...]``), not a list value."""
    return (isinstance(value, list) and bool(value)
            and all(isinstance(v, dict) and _is_leaf_spec(v) for v in value))


def _is_leaf_spec(value: dict) -> bool:
    return any(k in value for k in (*DISTRIBUTIONS, "value", "when"))
