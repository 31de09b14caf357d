"""User-facing errors.

Anything the user can fix (a bad YAML key, a missing data folder, an unknown experiment)
raises :class:`UserError`. The CLI prints its message as one line and exits with status 2;
``--debug`` shows the traceback instead.

>>> raise UserError("search_spaces/x.yaml: optimizer.name: 'sgdd' is not one of adam, sgd")
"""

from __future__ import annotations


class UserError(Exception):
    """An error caused by input the user can fix; its message is the whole story."""

    exit_code = 2


class DivergedError(RuntimeError):
    """Training loss became NaN or infinite; the trial stops with status ``DIVERGED``."""


class SearchFailed(UserError):
    """A search ended without one finished trial (or was stopped): the tables are written,
    and scripts and CI see a non-zero exit status (1, or 143 for SIGTERM)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code
