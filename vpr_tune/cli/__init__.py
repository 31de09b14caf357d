"""The ``vpr-tune`` command line.

Each command is a thin shell: it parses options, calls the module that does the work, and
prints with rich. Heavy imports (torch, ray) happen inside the commands so ``--help`` is fast.
A :class:`~vpr_tune.errors.UserError` anywhere becomes one line on stderr and exit status 2.
"""

from __future__ import annotations

import sys

import typer

# Each command module adds its commands to the app when imported (in --help's order).
from vpr_tune.cli import data_train, replay, search, search_results  # noqa: F401
from vpr_tune.cli.app import app, err_console
from vpr_tune.cli.output import click_usage_errors, one_line_warnings, print_error
from vpr_tune.errors import UserError

_CLICK_ERRORS = click_usage_errors()


def main(argv: list[str] | None = None) -> int:
    """Console-script entry: user errors -> one line and exit 2 (``--debug`` for traceback)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    command = typer.main.get_command(app)
    try:
        with one_line_warnings():
            rc = command.main(args=args, prog_name="vpr-tune", standalone_mode=False)
    except UserError as exc:
        if debug:
            raise
        print_error(str(exc))
        return exc.exit_code
    except _CLICK_ERRORS as exc:  # bad command line: unknown command/option, bad value
        if debug:
            raise
        print_error(exc.format_message())
        return 2
    except typer.Exit as exc:  # a command's own exit status (doctor: 2 when a check fails)
        return int(exc.exit_code or 0)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("interrupted")
        return 130
    return rc if isinstance(rc, int) else 0

