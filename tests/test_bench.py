"""Benchmarks: quick runs keep every benchmark working (structure, finite numbers).

No timing asserts here: whether a bar passes depends on the machine; ``vpr-tune bench``
on the real sizes is what docs/performance.md reports.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from vpr_tune.bench import BENCHMARKS, resolve_names
from vpr_tune.bench.common import Bar, alternate, median_ratio
from vpr_tune.cli import main
from vpr_tune.errors import UserError

BARS = {"loader": (0.90, ">="), "cache": (5.0, ">="), "eval": (1.15, "<="),
        "asha": (0.35, "<="), "search": (0.80, ">="), "memory": (0.10, "<=")}
# The raw numbers behind each ratio: lists of per-repetition measurements.
RAW = {"loader": ("real_img_s", "in_memory_img_s"), "cache": ("cache_img_s", "pil_img_s"),
       "eval": ("full_s", "forward_s"), "memory": ("uss_1x", "uss_4x")}


def _run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    rc = main(args)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_alternate_interleaves_and_warms_up() -> None:
    calls: list[str] = []

    def side(tag: str) -> float:
        calls.append(tag)
        return float(len(calls))

    a, b = alternate(lambda: side("a"), lambda: side("b"), reps=3)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-up, then AB BA AB
    assert len(a) == len(b) == 3


def test_median_ratio_ignores_one_disturbed_repetition() -> None:
    assert median_ratio([2.0, 2.0, 50.0], [1.0, 1.0, 1.0]) == 2.0
    assert Bar(0.9, higher=True).passed(0.95) and not Bar(0.9, higher=True).passed(0.5)
    assert Bar(1.15, higher=False).passed(1.0) and not Bar(1.15, higher=False).passed(1.2)
    assert not Bar(1.0, higher=False).passed(math.nan)


def test_unknown_benchmark_lists_the_names(capsys) -> None:
    rc, _out, err = _run_cli(["bench", "speed"], capsys)
    assert rc == 2
    assert "unknown benchmark 'speed'" in err
    for name in BENCHMARKS:
        assert name in err
    with pytest.raises(UserError):
        resolve_names("Loader")
    assert resolve_names("all") == list(BENCHMARKS)


def test_python_m_vpr_tune_bench_is_the_cli() -> None:
    proc = subprocess.run([sys.executable, "-m", "vpr_tune.bench", "nope"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "unknown benchmark 'nope'" in proc.stderr


@pytest.mark.parametrize("name", ["loader", "cache", "eval", "memory"])
def test_quick_benchmark_writes_its_record(name: str, tmp_path: Path, capsys) -> None:
    rc, out, _err = _run_cli(["bench", name, "--quick", "--json", "--out", str(tmp_path)],
                             capsys)
    assert rc == 0
    printed = json.loads(out)
    written = json.loads((tmp_path / f"{name}.json").read_text())
    assert printed == written
    bar, op = BARS[name]
    assert written["name"] == name and written["quick"] is True
    assert written["bar"] == bar and written["bar_op"] == op
    ratio = written["ratio"]
    assert isinstance(ratio, float) and math.isfinite(ratio)
    if name != "memory":  # a USS difference on tiny quick sizes may be negative noise
        assert ratio > 0
    assert written["passed"] is (ratio >= bar if op == ">=" else ratio <= bar)
    for key in RAW[name]:
        values = written[key]
        assert len(values) >= 1
        assert all(math.isfinite(v) and v > 0 for v in values), (key, values)
