"""Benchmarks measured as ratios against their bars (``vpr-tune bench NAME``).

Each benchmark runs both sides in one process, alternating repetitions, and reports the
median ratio, so noise on a shared machine cancels. Results go to
``results/bench/NAME.json`` with ``name``, ``ratio``, ``bar``, ``passed`` and the raw numbers.

>>> from vpr_tune.bench import run_benchmark
>>> result = run_benchmark("cache", quick=True, out_dir=Path("/tmp/bench"))
>>> result["ratio"], result["bar"], result["passed"]

Public API: ``BENCHMARKS`` (name -> :class:`Benchmark`: its function, bar and figure as
``"module.attr"``), ``run_benchmark``, ``run_benchmarks``, ``resolve_names``,
``results_table``, ``bar_text``. Each bar is defined once, as a ``Bar`` in its module.
"""

from __future__ import annotations

import importlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vpr_tune.atomic import write_text
from vpr_tune.errors import UserError


@dataclass(frozen=True)
class Benchmark:
    """One benchmark, each part a ``"module.attr"`` imported when first used (listing the
    names imports no benchmark module): ``run(quick, log) -> record``, its
    :class:`~vpr_tune.bench.common.Bar` (the threshold and what the ratio is), and optionally
    ``plot(record, path) -> path``, a figure written next to the record as NAME.png."""

    run: str
    bar: str
    plot: str | None = None


_B = "vpr_tune.bench."
BENCHMARKS: dict[str, Benchmark] = {
    "loader": Benchmark(_B + "pipeline.bench_loader", _B + "pipeline.LOADER_BAR"),
    "cache": Benchmark(_B + "pipeline.bench_cache", _B + "pipeline.CACHE_BAR"),
    "eval": Benchmark(_B + "pipeline.bench_eval", _B + "pipeline.EVAL_BAR"),
    "asha": Benchmark(_B + "search.bench_asha", _B + "search.ASHA_BAR"),
    "search": Benchmark(_B + "search.bench_search", _B + "search.SEARCH_BAR"),
    "memory": Benchmark(_B + "memory.bench_memory", _B + "memory.MEMORY_BAR"),
    "pareto": Benchmark(_B + "pareto.bench_pareto", _B + "pareto.PARETO_BAR"),
    "trials": Benchmark(_B + "trials.bench_trials", _B + "trials.TRIALS_BAR"),
    "scale": Benchmark(_B + "scale.bench_scale", _B + "scale.SCALE_BAR"),
    "study": Benchmark(_B + "study.bench_study", _B + "study.STUDY_BAR", _B + "study.plot"),
}


def load(target: str) -> Any:
    """The object a ``"module.attr"`` string names (imports the module)."""
    module, _, attr = target.rpartition(".")
    return getattr(importlib.import_module(module), attr)


def bar_text(name: str) -> str:
    """What benchmark ``name``'s ratio is, with its bar: read from the module's ``Bar``."""
    try:
        return load(BENCHMARKS[name].bar).text
    except ImportError as exc:
        return f"(its module does not import: {exc})"


def resolve_names(name: str) -> list[str]:
    """``"all"`` -> every benchmark; a known name -> [name]; else UserError listing them."""
    if name == "all":
        return list(BENCHMARKS)
    if name not in BENCHMARKS:
        raise UserError(f"unknown benchmark {name!r}; one of {', '.join(BENCHMARKS)}, all")
    return [name]


def run_benchmark(name: str, quick: bool = False, out_dir: Path | str = Path("results/bench"),
                  log: Callable[[str], Any] = print, precision: str = "auto") -> dict[str, Any]:
    """Run one benchmark, write ``out_dir/NAME.json`` and return its record; ``precision``:
    the ``resources.precision`` of the searches it runs."""
    from vpr_tune.bench.common import search_precision

    if name not in BENCHMARKS:
        resolve_names(name)  # raises the UserError
    bench = BENCHMARKS[name]
    start = time.perf_counter()
    with search_precision(precision):
        result = load(bench.run)(quick, log)
    result["elapsed_s"] = round(time.perf_counter() - start, 2)
    result["when"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if bench.plot is not None:
        result["figure_png"] = str(load(bench.plot)(result, Path(out_dir) / f"{name}.png"))
    write_text(Path(out_dir) / f"{name}.json", json.dumps(result, indent=1) + "\n")
    return result


def run_benchmarks(names: list[str], quick: bool = False,
                   out_dir: Path | str = Path("results/bench"),
                   log: Callable[[str], Any] = print, precision: str = "auto"
                   ) -> list[dict[str, Any]]:
    """Run several; with more than one, a benchmark that cannot run (e.g. its module is not
    there yet) is recorded with its ``error`` instead of stopping the others."""
    results = []
    for name in names:
        log(f"bench {name}{' (quick)' if quick else ''} ...")
        if len(names) == 1:
            results.append(run_benchmark(name, quick, out_dir, log, precision))
            continue
        try:
            results.append(run_benchmark(name, quick, out_dir, log, precision))
        except Exception as exc:  # noqa: BLE001 - one broken benchmark must not stop `all`
            log(f"bench {name}: not run: {type(exc).__name__}: {exc}")
            failed = {"name": name, "ratio": None, "bar": None, "passed": False,
                      "quick": bool(quick), "error": str(exc)}
            write_text(Path(out_dir) / f"{name}.json", json.dumps(failed, indent=1) + "\n")
            results.append(failed)
    return results


def results_table(results: list[dict[str, Any]]) -> Any:
    """A rich Table: benchmark, ratio, bar, pass/FAIL, what the ratio is, seconds."""
    from rich import box
    from rich.table import Table
    from rich.text import Text  # styled cells: the CLI console prints strings literally

    table = Table(title="vpr-tune benchmarks (median ratio of alternating repetitions)",
                  box=box.SIMPLE_HEAD)
    for col, justify in (("benchmark", "left"), ("ratio", "right"), ("bar", "right"),
                         ("result", "left"), ("figure", "left"), ("s", "right")):
        table.add_column(col, justify=justify, no_wrap=col != "figure")
    for r in results:
        if r.get("error"):
            table.add_row(r["name"], "-", "-", Text("not run", style="yellow"),
                          bar_text(r["name"]) + " (see the log above)", "")
            continue
        verdict = Text("pass", style="green") if r["passed"] else Text("FAIL", style="bold red")
        table.add_row(r["name"], f"{r['ratio']:.3f}", f"{r['bar_op']} {r['bar']:g}", verdict,
                      r.get("figure", ""), f"{r.get('elapsed_s', 0):.0f}")
    return table
