"""Safe files: atomic writes (a temporary file in the same folder, then ``os.replace``) and
an inter-process lock.

A kill at any moment leaves either the old file or the new one, never a half-written
``trials.csv``, ``retest.csv`` or checkpoint that would crash the next read. The new file
gets the mode a plain ``open(path, "w")`` would give it: the existing file's mode, else
0666 minus the umask, so teammates on shared storage can read a search's results.

>>> from vpr_tune.atomic import atomic_path, file_lock, write_text
>>> write_text(Path("results/x/space.yaml"), "seed: 0\\n")
>>> with atomic_path(Path("last.pt")) as tmp:
...     torch.save(state, tmp)
>>> with file_lock(Path("cache/.build.lock")):   # one builder at a time
...     build()
>>> check_output_file(Path("plots/cmp.png"), "--plot", "cmp.png")  # before any work
"""

from __future__ import annotations

import fcntl
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any


def check_output_file(path: Path, option: str, example: str) -> None:
    """UserError unless ``path``, given by the user with ``option``, can be written as a file:
    not a directory (``example``: a file name to suggest in it), in a folder that exists.
    None is created: a typo in the path must not leave folders behind."""
    from vpr_tune.errors import UserError

    if path.is_dir():
        raise UserError(f"{option} {path}: is a directory; give a file name such as "
                        f"{path / example}")
    if not path.parent.is_dir():
        what = "is not a directory" if path.parent.exists() else "does not exist"
        raise UserError(f"{option} {path}: folder {path.parent} {what}; create it first or "
                        "pick another path")


def _create_temp(path: Path) -> Path:
    """A new empty file next to ``path``, created as a plain write creates files."""
    while True:
        tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
        try:
            # O_EXCL: never someone else's file; mode 0o666 is reduced by the umask by the
            # kernel itself (unlike mkstemp's 0600), with no process-wide umask juggling.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``.

    The writer may reopen the temporary path by name (``torch.save``, ``savefig``,
    ``np.lib.format.open_memmap``); it must not append a suffix to it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temp(path)
    try:
        yield tmp
        with suppress(FileNotFoundError):  # overwriting keeps the old file's mode, as
            os.chmod(tmp, os.stat(path).st_mode & 0o7777)  # a plain write would
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_csv(frame: Any, path: Path) -> None:
    """Write a pandas ``frame`` to ``path`` atomically (no index column)."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


class LockHeld(Exception):
    """``file_lock(..., wait=False)`` found the lock taken; ``holder`` is the holder's pid."""

    def __init__(self, holder: str) -> None:
        super().__init__(f"held by pid {holder}")
        self.holder = holder


@contextmanager
def file_lock(path: Path, wait: bool = True) -> Iterator[None]:
    """Hold an exclusive ``fcntl`` lock on ``path`` (created if missing) for the block.

    Processes on one machine that take the same lock run the block one at a time (the
    others wait; with ``wait=False`` they get :class:`LockHeld` at once); the lock goes with
    the process, so a killed holder never blocks anyone. The file holds the holder's pid.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            fh.seek(0)
            raise LockHeld(fh.read().strip() or "unknown") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        yield


def lock_holder(path: Path) -> str | None:
    """The pid holding :func:`file_lock` on ``path`` right now, or None (only reads)."""
    try:
        fh = open(path)  # noqa: SIM115
    except OSError:
        return None
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return fh.read().strip() or "unknown"
        fcntl.flock(fh, fcntl.LOCK_UN)
    return None
