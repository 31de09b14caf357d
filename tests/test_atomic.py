"""Atomic writes: a writer that dies half-way leaves the previous file whole and no litter."""

from __future__ import annotations

import fcntl
import os
import stat

import pandas as pd
import pytest

from vpr_tune.atomic import atomic_path, file_lock, write_csv, write_text


def test_failed_write_keeps_the_old_file(tmp_path) -> None:
    path = tmp_path / "trials.csv"
    write_csv(pd.DataFrame({"trial_id": ["a", "b"], "R@1": [1.0, 2.0]}), path)
    with pytest.raises(KeyboardInterrupt), atomic_path(path) as tmp:
        tmp.write_text("trial_id,R@1\nc,")  # half a row, then the kill
        raise KeyboardInterrupt
    assert pd.read_csv(path)["trial_id"].tolist() == ["a", "b"]
    assert [p.name for p in tmp_path.iterdir()] == ["trials.csv"]


def test_write_text_creates_folders_and_replaces(tmp_path) -> None:
    path = tmp_path / "a" / "b" / "retest.md"
    write_text(path, "one")
    write_text(path, "two")
    assert path.read_text() == "two"
    assert [p.name for p in path.parent.iterdir()] == ["retest.md"]


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_written_files_get_the_mode_of_a_plain_write(tmp_path, umask) -> None:
    """Not mkstemp's 0600: a teammate can read trials.csv when the umask lets them."""
    old = os.umask(umask)
    try:
        plain = tmp_path / "plain.csv"
        with open(plain, "w") as fh:
            fh.write("x\n")
        write_csv(pd.DataFrame({"trial_id": ["a"]}), tmp_path / "trials.csv")
        with atomic_path(tmp_path / "last.pt") as tmp:
            tmp.write_bytes(b"state")
    finally:
        os.umask(old)
    want = stat.S_IMODE(plain.stat().st_mode)
    assert want == 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "trials.csv").stat().st_mode) == want
    assert stat.S_IMODE((tmp_path / "last.pt").stat().st_mode) == want


def test_overwrite_keeps_the_existing_mode(tmp_path) -> None:
    path = tmp_path / "metrics.csv"
    write_text(path, "a\n")
    path.chmod(0o640)
    write_text(path, "b\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640 and path.read_text() == "b\n"


def test_file_lock_excludes_a_second_holder(tmp_path) -> None:
    lock = tmp_path / "sub" / ".build.lock"
    with file_lock(lock), open(lock) as other, pytest.raises(BlockingIOError):
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another open file: refused
    with open(lock) as other:  # released at the end of the block
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
