"""Benchmarks measured as ratios against their bars (``vpr-tune bench NAME``).

Each benchmark runs both sides in one process, alternating repetitions, and reports the
median ratio, so noise on a shared machine cancels. Results go to
``results/bench/NAME.json`` with ``name``, ``ratio``, ``bar``, ``passed`` and the raw numbers.

>>> from vpr_tune.bench import run_benchmark
>>> result = run_benchmark("cache", quick=True, out_dir=Path("/tmp/bench"))
>>> result["ratio"], result["bar"], result["passed"]

Public API: ``BENCHMARKS`` (name -> function(quick, log) -> dict), ``run_benchmark``,
``run_benchmarks``, ``resolve_names``, ``results_table``, ``BAR_TEXT``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vpr_tune.atomic import write_text
from vpr_tune.errors import UserError


def _loader(quick: bool, log: Callable[[str], Any]) -> dict[str, Any]:
    from vpr_tune.bench.pipeline import bench_loader

    return bench_loader(quick, log)


def _cache(quick: bool, log: Callable[[str], Any]) -> dict[str, Any]:
    from vpr_tune.bench.pipeline import bench_cache

    return bench_cache(quick, log)


def _eval(quick: bool, log: Callable[[str], Any]) -> dict[str, Any]:
    from vpr_tune.bench.pipeline import bench_eval

    return bench_eval(quick, log)


def _asha(quick: bool, log: Callable[[str], Any]) -> dict[str, Any]:
    from vpr_tune.bench.search import bench_asha

    return bench_asha(quick, log)


def _search(quick: bool, log: Callable[[str], Any]) -> dict[str, Any]:
    from vpr_tune.bench.search import bench_search

    return bench_search(quick, log)


def _pareto(quick: bool, log: Callable[[str], Any]) -> dict[str, Any]:
    from vpr_tune.bench.pareto import bench_pareto

    return bench_pareto(quick, log)


def _memory(quick: bool, log: Callable[[str], Any]) -> dict[str, Any]:
    from vpr_tune.bench.memory import bench_memory

    return bench_memory(quick, log)


def _trials(quick: bool, log: Callable[[str], Any]) -> dict[str, Any]:
    from vpr_tune.bench.trials import bench_trials

    return bench_trials(quick, log)


def _scale(quick: bool, log: Callable[[str], Any]) -> dict[str, Any]:
    from vpr_tune.bench.scale import bench_scale

    return bench_scale(quick, log)


def _study(quick: bool, log: Callable[[str], Any]) -> dict[str, Any]:
    from vpr_tune.bench.study import bench_study

    return bench_study(quick, log)


def _study_figure(result: dict[str, Any], path: Path) -> Path:
    from vpr_tune.bench.study import plot

    return plot(result, path)


BENCHMARKS: dict[str, Callable[[bool, Callable[[str], Any]], dict[str, Any]]] = {
    "loader": _loader,
    "cache": _cache,
    "eval": _eval,
    "asha": _asha,
    "search": _search,
    "memory": _memory,
    "pareto": _pareto,
    "trials": _trials,
    "scale": _scale,
    "study": _study,
}
# Benchmarks that also draw a figure: written next to the record as NAME.png.
FIGURES: dict[str, Callable[[dict[str, Any], Path], Path]] = {"study": _study_figure}

# What each ratio means, for tables and docs.
BAR_TEXT = {
    "loader": "train img/s, real loader / batch in memory (>= 0.90)",
    "cache": "loader img/s, decode-once cache / PIL every step (>= 5)",
    "eval": "eval wall / bare forward (<= 1.15)",
    "asha": "trial-epochs ASHA / FIFO, best R@1 within 1 point (<= 0.35)",
    "search": "sum trial busy / (wall x cores) (>= 0.93)",
    "memory": "per-trial USS growth / cache growth (<= 0.10)",
    "pareto": "trial-epochs MO-ASHA / FIFO, hypervolume >= 0.98 of FIFO's (<= 0.5)",
    "trials": "driver s per trial, 100 short trials (<= 0.5; RSS growth <= 0.5 MB/trial)",
    "scale": "exponent of eval wall vs database size, 1k..27k (<= 1.1)",
    "study": "trial-epochs TPE+ASHA needs to reach the manual study's best / manual's (<= 0.5)",
}


def resolve_names(name: str) -> list[str]:
    """``"all"`` -> every benchmark; a known name -> [name]; else UserError listing them."""
    if name == "all":
        return list(BENCHMARKS)
    if name not in BENCHMARKS:
        raise UserError(f"unknown benchmark {name!r}; one of {', '.join(BENCHMARKS)}, all")
    return [name]


def run_benchmark(name: str, quick: bool = False, out_dir: Path | str = Path("results/bench"),
                  log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Run one benchmark, write ``out_dir/NAME.json`` and return its record."""
    if name not in BENCHMARKS:
        resolve_names(name)  # raises the UserError
    start = time.perf_counter()
    result = BENCHMARKS[name](quick, log)
    result["elapsed_s"] = round(time.perf_counter() - start, 2)
    result["when"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if name in FIGURES:
        result["figure_png"] = str(FIGURES[name](result, Path(out_dir) / f"{name}.png"))
    write_text(Path(out_dir) / f"{name}.json", json.dumps(result, indent=1) + "\n")
    return result


def run_benchmarks(names: list[str], quick: bool = False,
                   out_dir: Path | str = Path("results/bench"),
                   log: Callable[[str], Any] = print) -> list[dict[str, Any]]:
    """Run several; with more than one, a benchmark that cannot run (e.g. its module is not
    there yet) is recorded with its ``error`` instead of stopping the others."""
    results = []
    for name in names:
        log(f"bench {name}{' (quick)' if quick else ''} ...")
        if len(names) == 1:
            results.append(run_benchmark(name, quick, out_dir, log))
            continue
        try:
            results.append(run_benchmark(name, quick, out_dir, log))
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
                          BAR_TEXT[r["name"]] + " (see the log above)", "")
            continue
        verdict = Text("pass", style="green") if r["passed"] else Text("FAIL", style="bold red")
        table.add_row(r["name"], f"{r['ratio']:.3f}", f"{r['bar_op']} {r['bar']:g}", verdict,
                      r.get("figure", ""), f"{r.get('elapsed_s', 0):.0f}")
    return table
