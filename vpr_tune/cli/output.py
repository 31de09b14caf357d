"""What the commands print besides their own lines: DataFrames as rich tables at their
natural width, JSON records, the one-line ``error:``/``warning:`` forms."""

from __future__ import annotations

import contextlib

from rich.console import Console

from vpr_tune.cli.app import console, err_console


def click_usage_errors() -> tuple[type[Exception], ...]:
    """Click's UsageError: typer >= 0.20 vendors click as ``typer._click``."""
    errors: list[type[Exception]] = []
    for module in ("typer._click.exceptions", "click.exceptions"):
        with contextlib.suppress(ImportError):
            errors.append(__import__(module, fromlist=["UsageError"]).UsageError)
    return tuple(errors)


def print_error(message: str) -> None:
    """``error: MESSAGE`` on stderr, the message printed literally (never read as markup)."""
    from rich.text import Text

    err_console.print(Text.assemble(("error:", "bold red"), " ", message), highlight=False,
                      soft_wrap=True)


@contextlib.contextmanager
def one_line_warnings():
    """Our own warnings (a skipped corrupt image) as one ``warning: ...`` line each, not
    Python's file:line + source-code format; other libraries' warnings are left alone."""
    import warnings

    default = warnings.formatwarning

    def short(message, category, filename, lineno, line=None) -> str:
        if "vpr_tune" in str(filename):
            return f"warning: {message}\n"
        return default(message, category, filename, lineno, line)

    warnings.formatwarning = short
    try:
        yield
    finally:
        warnings.formatwarning = default



def print_wide(renderable) -> None:
    """Print a table at its natural width when stdout is a file or pipe (no 80-column cut)."""
    if console.is_terminal:
        console.print(renderable)
        return
    wide = console.options.update(max_width=1000)
    width = max(console.width, console.measure(renderable, options=wide).maximum)
    Console(width=width).print(renderable)


def records(frame) -> list[dict]:
    """DataFrame rows as JSON-ready dicts (NaN -> null)."""
    import json

    return json.loads(frame.to_json(orient="records"))


def rich_table(frame, title: str, caption: str):
    """A rich Table of a DataFrame; floats shown with 3 significant digits (R@N: 2 decimals)."""
    from rich import box
    from rich.table import Table

    table = Table(title=title, caption=caption, box=box.SIMPLE_HEAD)
    leaves = [str(c).split(".")[-1] for c in frame.columns]
    for col, leaf in zip(frame.columns, leaves, strict=True):
        # short headers so 80 columns fit: optimizer.name -> optimizer, optimizer.lr -> lr
        head = str(col)
        if "." in head:
            head = head.split(".")[-2] if leaf == "name" or leaves.count(leaf) > 1 else leaf
        table.add_column(head.replace("_R@", " R@"), justify="left" if col == "trial_id"
                         else "right", no_wrap=col == "trial_id", min_width=len(head))
    for row in frame.itertuples(index=False):
        cells = []
        for col, v in zip(frame.columns, row, strict=True):
            if isinstance(v, float):
                cells.append("" if v != v else f"{v:.2f}" if "R@" in col else f"{v:.3g}")
            else:
                cells.append(str(v))
        table.add_row(*cells)
    return table

