"""Experiments on an object store: ``--storage s3://bucket/prefix`` (AWS S3, MinIO, Ceph, ...).

Ray writes the experiment (trial folders, checkpoints, its state) to ``<storage>/<name>``;
vpr-tune keeps its tables in ``results/<name>`` as for a local search and copies them next
to Ray's files (``trials.csv``, ``metrics.csv``, ``space.yaml``, ``optuna.db``, later
``retest.*`` and ``report/``), so another machine reads the experiment back from the bucket::

    vpr-tune best NAME --storage s3://bucket/prefix --retest   # checkpoints downloaded
    vpr-tune report NAME --storage s3://bucket/prefix
    vpr-tune compare NAME OTHER --storage s3://bucket/prefix

An S3-compatible server is reached through the standard ``AWS_ENDPOINT_URL`` variable or the
URI's own parameter (``s3://bucket/prefix?endpoint_override=http://host:9000``); credentials
come from the usual AWS variables or files. Filesystems are pyarrow's (what Ray uses).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vpr_tune.errors import UserError

# What vpr-tune writes next to Ray's files (read back by best/report on another machine).
TABLES = ("trials.csv", "metrics.csv", "space.yaml", "optuna.db", "retest.csv", "retest.md",
          "ranks")
CHECKPOINTS = ".checkpoints"  # downloaded checkpoints, inside the local experiment folder
_SECRETS = ("access_key", "secret_key", "session_token")


def is_remote(storage: str | None) -> bool:
    """True for a URI Ray reaches through pyarrow (``s3://``, ``gs://``), not ``file://``."""
    return bool(storage) and "://" in str(storage) and not str(storage).startswith("file://")


def join(uri: str, *parts: str) -> str:
    """``s3://b/p?x=1`` + ``name`` -> ``s3://b/p/name?x=1`` (parameters stay at the end)."""
    base, sep, query = uri.partition("?")
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)]) + sep + query


def split(uri: str) -> tuple[str, str]:
    """(parent URI, last name) of an experiment path or URI, parameters kept on the parent."""
    base, sep, query = str(uri).partition("?")
    parent, _, name = base.rstrip("/").rpartition("/")
    return parent + sep + query, name


def public(uri: str) -> str:
    """The URI without credentials in its parameters (safe to write into space.yaml)."""
    base, sep, query = uri.partition("?")
    kept = [p for p in query.split("&") if p and p.partition("=")[0] not in _SECRETS]
    return base + (sep + "&".join(kept) if kept else "")


def filesystem(uri: str) -> tuple[Any, str]:
    """(pyarrow filesystem, path inside it) of ``uri``; a UserError when it cannot open."""
    import pyarrow.fs

    try:
        return pyarrow.fs.FileSystem.from_uri(uri)
    except Exception as exc:  # unknown scheme, bad parameter, no credentials
        raise UserError(f"storage {public(uri)}: cannot open ({exc})") from exc


@contextmanager
def _store_errors(uri: str) -> Iterator[None]:
    """Network and permission errors of the store -> one line naming the URI."""
    try:
        yield
    except OSError as exc:  # pyarrow's: unreachable endpoint, access denied, no bucket
        raise UserError(f"storage {public(uri)}: {str(exc).splitlines()[0]}") from exc


def with_params(uri: str, like: str | None) -> str:
    """``uri`` with the parameters (endpoint) of ``like``: a checkpoint URI recorded in
    trials.csv carries no endpoint; the storage URI the user passes does."""
    if not like or "?" in uri or "?" not in like:
        return uri
    return uri + "?" + like.partition("?")[2]


def push(local_dir: Path, remote: str, names: tuple[str, ...] = TABLES) -> None:
    """Copy the files ``names`` (and folders among them) of ``local_dir`` to ``remote``."""
    import pyarrow.fs

    fs, root = filesystem(remote)
    for name in names:
        src = Path(local_dir) / name
        with _store_errors(remote):
            if src.is_dir():
                pyarrow.fs.copy_files(str(src), f"{root}/{name}", destination_filesystem=fs,
                                      source_filesystem=pyarrow.fs.LocalFileSystem())
            elif src.is_file():
                with fs.open_output_stream(f"{root}/{name}") as out:
                    out.write(src.read_bytes())


def pull(remote: str, local_dir: Path, names: tuple[str, ...] = TABLES) -> Path:
    """Copy the files ``names`` that exist under ``remote`` into ``local_dir``."""
    import pyarrow.fs

    fs, root = filesystem(remote)
    with _store_errors(remote):
        infos = fs.get_file_info([f"{root}/{n}" for n in names])
    if not any(i.type == pyarrow.fs.FileType.File for i in infos):
        raise UserError(f"{public(remote)}: no vpr-tune experiment there (no trials.csv)")
    local_dir.mkdir(parents=True, exist_ok=True)
    for name, info in zip(names, infos, strict=True):
        if info.type == pyarrow.fs.FileType.Directory:  # ranks/: one small file a trial
            with _store_errors(remote):
                inside = fs.get_file_info(pyarrow.fs.FileSelector(info.path, recursive=True))
            for item in inside:
                if item.type == pyarrow.fs.FileType.File:
                    with _store_errors(remote), fs.open_input_stream(item.path) as src:
                        data = src.read()
                    rel = item.path[len(info.path):].lstrip("/")
                    _write(local_dir / name / rel, data)  # makes the folders it needs
        elif info.type == pyarrow.fs.FileType.File:
            with _store_errors(remote), fs.open_input_stream(info.path) as src:
                data = src.read()
            _write(local_dir / name, data)
    return local_dir


def newest(storage: str) -> str:
    """The name of the experiment under ``storage`` whose trials.csv was written last."""
    import pyarrow.fs

    fs, root = filesystem(storage)
    found = []
    with _store_errors(storage):
        for info in fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True)):
            if info.type == pyarrow.fs.FileType.Directory:
                table = fs.get_file_info(f"{info.path}/trials.csv")
                if table.type == pyarrow.fs.FileType.File:
                    found.append((table.mtime, info.base_name))
    if not found:
        raise UserError(f"no experiment in {public(storage)}: run `vpr-tune run SPACE.yaml "
                        f"--storage {public(storage)}` first")
    return max(found)[1]


def fetch_checkpoint(uri: str, exp_dir: Path, trial_id: str, like: str | None) -> Path:
    """Download a trial's checkpoint once into ``<exp_dir>/.checkpoints/<trial_id>/``."""
    fs, path = filesystem(with_params(uri, like))
    dest = Path(exp_dir) / CHECKPOINTS / trial_id / Path(path).name
    with _store_errors(uri):
        info = fs.get_file_info(path)
    if dest.exists() and dest.stat().st_size == info.size:
        return dest
    if info.size is None:
        raise UserError(f"trial {trial_id}: checkpoint {uri} does not exist in the bucket")
    with _store_errors(uri), fs.open_input_stream(path) as src:
        data = src.read()
    _write(dest, data)
    return dest


def _write(path: Path, data: bytes) -> None:
    from vpr_tune.atomic import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:  # a kill never leaves half a checkpoint
        tmp.write_bytes(data)


def _remote_fs(trial: Any) -> Any:
    """The pyarrow filesystem Ray stores ``trial`` on, None when that is the local disk."""
    fs = getattr(getattr(trial, "storage", None), "storage_filesystem", None)
    return None if fs is None or fs.type_name == "local" else fs


def remote_trial_file(trial: Any, name: str) -> str | None:
    """The text of a file in a remotely stored trial's folder (None: local trial or none):
    a resumed driver has only the trials it ran itself in its staging folder."""
    fs = _remote_fs(trial)
    if fs is None or not trial.path:
        return None
    try:
        with fs.open_input_stream(f"{trial.path}/{name}") as src:
            return src.read().decode()
    except (FileNotFoundError, OSError):
        return None


def remote_checkpoint(trial: Any, rows: list[dict[str, Any]]) -> str | None:
    """``s3://.../checkpoint_N/best.pt`` of a trial Ray stores remotely (None if local):
    the newest checkpoint folder, which always carries the best model so far."""
    from vpr_tune.tune.trainable import BEST_FILE

    fs = _remote_fs(trial)
    if fs is None:
        return None
    kind = fs.type_name
    kept = [r["checkpoint_dir_name"] for r in rows if r.get("checkpoint_dir_name")]
    return f"{kind}://{trial.path}/{kept[-1]}/{BEST_FILE}" if kept else ""


def sync_callback(exp_dir: Path, remote: str) -> Any:
    """A Ray Tune callback (after the progress one, which writes the tables): copies the
    tables to the bucket whenever a trial ends and when the search stops."""
    from ray.tune import Callback

    class TableSync(Callback):
        def _push(self, *_args: Any, **_info: Any) -> None:
            push(exp_dir, remote)

        on_trial_complete = on_trial_error = on_experiment_end = _push

    return TableSync()
