"""The package's import graph: no cycles, arrows point down only.

Every ``vpr_tune`` module is parsed with ``ast`` (no import runs), counting imports inside
functions too, since a lazy import closes a cycle just as well at run time. Run it as a test
or on its own::

    python -m tests.test_imports      # prints the graph's problems, exit 1 if any
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "vpr_tune"

# Modules on top of the library: they may import tune/; nothing below tune/ may import them.
ABOVE_TUNE = ("vpr_tune.cli", "vpr_tune.__main__", "vpr_tune.doctor", "vpr_tune.doctor_context",
              "vpr_tune.doctor_data", "vpr_tune.bench",
              "vpr_tune.analysis", "vpr_tune.experiment", "vpr_tune.plots", "vpr_tune.plots_search",
              "vpr_tune.report", "vpr_tune.retest",
              "vpr_tune.tune", "vpr_tune.export", "vpr_tune.repeats", "vpr_tune.compare",
              "vpr_tune.preds", "vpr_tune.replay", "vpr_tune.noise")
# The YAML validator stays importable without training code.
CONFIG_MUST_NOT_IMPORT = ("vpr_tune.train", "vpr_tune.train_setup", "vpr_tune.pbt_replay",
                          "vpr_tune.evaluate", "vpr_tune.model",
                          "vpr_tune.data", "vpr_tune.tune", "vpr_tune.bench", "vpr_tune.cli",
                          "vpr_tune.analysis", "vpr_tune.experiment", "vpr_tune.plots",
                          "vpr_tune.plots_search", "vpr_tune.report")
TUNE_MUST_NOT_IMPORT = ("vpr_tune.analysis", "vpr_tune.experiment", "vpr_tune.plots",
                        "vpr_tune.plots_search", "vpr_tune.report",
                        "vpr_tune.retest", "vpr_tune.cli", "vpr_tune.bench", "vpr_tune.replay",
                        "vpr_tune.noise")


def _under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def modules() -> dict[str, Path]:
    """Dotted name -> file of every module in the package (a package is its __init__)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The ``vpr_tune`` modules that module ``name`` imports, anywhere in its body."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                pkg = name.split(".") if is_package else name.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([base] if base else []))
            # `from vpr_tune import analysis` imports the submodule vpr_tune.analysis
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import vpr_tune.data.x.y` -> longest known
                target = target.rpartition(".")[0]
            if target.startswith("vpr_tune") and target != name:
                out.add(target)
    return out


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports_of(name, path, set(found)) for name, path in found.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """One concrete cycle (a -> b -> ... -> a) per strongly connected component."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(comp)

    for v in sorted(g):
        if v not in index:
            visit(v)
    return [_path_in(g, set(comp)) for comp in components]


def _path_in(g: dict[str, set[str]], comp: set[str]) -> list[str]:
    """A shortest cycle through the smallest-named module of a component."""
    start = min(comp)
    prev = {start: None}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(g[v] & comp):
                if w == start:
                    path = [v]
                    while prev[path[-1]] is not None:
                        path.append(prev[path[-1]])
                    return [*reversed(path), start]
                if w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    return sorted(comp)


def layer_violations(g: dict[str, set[str]]) -> list[str]:
    bad = []
    for src, targets in sorted(g.items()):
        for dst in sorted(targets):
            if (_under(dst, ("vpr_tune.cli",)) and not _under(src, ("vpr_tune.cli",))
                    and not src.endswith("__main__")):
                bad.append(f"{src} imports the CLI (only `python -m` entry points may)")
            if src == "vpr_tune.config" and _under(dst, CONFIG_MUST_NOT_IMPORT):
                bad.append(f"vpr_tune.config imports {dst} (config imports no training, "
                           "model, data or tune module)")
            if not _under(src, ABOVE_TUNE) and _under(dst, ABOVE_TUNE):
                bad.append(f"{src} is below tune/ but imports {dst}")
            if _under(src, ("vpr_tune.tune",)) and _under(dst, TUNE_MUST_NOT_IMPORT):
                bad.append(f"{src} imports {dst} (tune/ sits below analysis, report and CLI)")
            if _under(dst, ("vpr_tune.bench",)) and not _under(src, ("vpr_tune.bench",
                                                                     "vpr_tune.cli")):
                bad.append(f"{src} imports the benchmarks {dst}")
    return bad


def unknown_names(found: dict[str, object]) -> list[str]:
    """Names in the rules above that are no module of the package (a rule about a module
    that does not exist checks nothing)."""
    listed = {*ABOVE_TUNE, *CONFIG_MUST_NOT_IMPORT, *TUNE_MUST_NOT_IMPORT}
    return [f"{name} is named in tests/test_imports.py but is no module of vpr_tune"
            for name in sorted(listed) if name not in found]


def problems() -> list[str]:
    g = graph()
    return ([" -> ".join(c) + "  (import cycle)" for c in cycles(g)] + layer_violations(g)
            + unknown_names(g))


def test_graph_sees_lazy_and_relative_imports(tmp_path):
    """The parser finds imports inside functions and resolves `from vpr_tune import x`."""
    mod = tmp_path / "m.py"
    mod.write_text("def f():\n    from vpr_tune import analysis as va\n"
                   "    import vpr_tune.data.cache\n")
    known = {"vpr_tune", "vpr_tune.analysis", "vpr_tune.data", "vpr_tune.data.cache", "m"}
    assert imports_of("m", mod, known) == {"vpr_tune.analysis", "vpr_tune.data.cache"}


def test_cycle_finder_reports_a_cycle():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(g) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    found = cycles(graph())
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_the_rules_name_only_existing_modules():
    assert not unknown_names(modules()), "\n".join(unknown_names(modules()))
    assert unknown_names({"vpr_tune.train": None}), "a missing module must be reported"


def test_layers_point_down():
    bad = layer_violations(graph())
    assert not bad, "\n".join(bad)


if __name__ == "__main__":
    issues = problems()
    print("\n".join(issues) or f"import graph of {PACKAGE}: no cycles, layers point down")
    sys.exit(1 if issues else 0)
