"""``vpr-tune data synth|check``, ``vpr-tune train`` and ``vpr-tune eval``: datasets, one
training run with fixed hyperparameters, and a checkpoint's recalls."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from vpr_tune.cli.app import app, console, data_app
from vpr_tune.errors import UserError


class _Bar:
    """A rich progress bar (done/total, rate, time left) behind a ``progress(done, total)``
    callback of the library."""

    def __init__(self, what: str) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(TextColumn(what), BarColumn(), MofNCompleteColumn(),
                            TaskProgressColumn(), TextColumn("{task.fields[rate]}"),
                            TimeElapsedColumn(), TimeRemainingColumn(), console=console)
        self.console = self.bar.console
        self.task: Any = None
        self.start = 0.0

    def callback(self, done: int, total: int) -> None:
        import time

        if self.task is None:
            self.start = time.perf_counter()
            self.task = self.bar.add_task("", total=total, rate="")
        elapsed = time.perf_counter() - self.start
        rate = f"{done / elapsed:,.0f} img/s" if elapsed > 0 and done else ""
        self.bar.update(self.task, completed=done, total=total, rate=rate)


@contextlib.contextmanager
def _progress_bar(what: str) -> Iterator[_Bar]:
    bar = _Bar(what)
    with bar.bar:
        yield bar


@data_app.command("synth")
def data_synth(
    out: Annotated[Path, typer.Argument(help="Folder to write street-world into.")],
    size: Annotated[str, typer.Option(help="tiny | demo | bench | full")] = "demo",
    seed: Annotated[int, typer.Option(help="Generator seed.")] = 0,
    preview: Annotated[
        bool, typer.Option(help="Also write preview.png: queries beside their positives.")
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(min=1,
                     help="Processes (default: all cores for full, 1 otherwise); same bytes."),
    ] = None,
) -> None:
    """Write the street-world synthetic dataset in the real GSV-XS/SF-XS/Tokyo-XS format."""
    from vpr_tune.data.preview import make_preview
    from vpr_tune.data.street_world import synthesize

    with _progress_bar("street-world images") as progress:
        root = synthesize(out, size=size, seed=seed, log=progress.console.print,
                          workers=workers, progress=progress.callback)
    console.print(f"street-world ({size}, seed {seed}) is SYNTHETIC data, written to {root}")
    if preview:
        png = make_preview(root, root / "preview.png")
        console.print(f"preview (queries beside their nearest database positives): {png}")


@data_app.command("check")
def data_check(
    path: Annotated[Path, typer.Argument(help="A data root or one split folder.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    skip_bad_files: Annotated[
        bool, typer.Option(help="Warn about corrupt images and skip them instead of failing.")
    ] = False,
    decode: Annotated[
        bool, typer.Option(help="Decode every image (thorough, slow) instead of a quick scan.")
    ] = False,
) -> None:
    """Scan a data root or split: images/places (train), database/queries/positives (eval)."""
    import json

    from rich.table import Table

    from vpr_tune.data.splits import check_data

    info = check_data(path, skip_bad_files=skip_bad_files, decode=decode)
    if json_out:
        print(json.dumps(info, indent=1))
        return
    synthetic = any(v.get("synthetic") for v in info.values())
    table = Table(title=f"{path}" + (" (synthetic street-world)" if synthetic else ""))
    for col in ("split", "images", "places", "database", "queries", "no positive"):
        table.add_column(col, justify="left" if col == "split" else "right", no_wrap=True)
    for rel, v in info.items():
        row = [v.get(k, "") for k in ("images", "places", "database", "queries")]
        row.append(v.get("queries_without_positive", ""))
        table.add_row(rel, *(str(x) for x in row))
    console.print(table)
    for rel, v in info.items():
        console.print(f"{rel}: {v['path']}", highlight=False, soft_wrap=True)


# --------------------------------------------------------------------------- train / eval
@app.command("train")
def train(
    config: Annotated[Path, typer.Argument(help="YAML with fixed values (search-space schema).")],
    data: Annotated[str | None, typer.Option(help="Data root (default: street-world).")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Run folder (default results/train/<name>).")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue from OUT/last.pt.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Start over in an existing run folder.")] = False,
    threads: Annotated[
        int | None, typer.Option(min=1, help="CPU threads for torch (default: the YAML's "
                                             "resources.cpu, else all cores).")
    ] = None,
) -> None:
    """Train one model with fixed hyperparameters; writes metrics.csv, TensorBoard, checkpoints."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from vpr_tune.data.splits import is_synthetic, resolve_data_root
    from vpr_tune.metrics import RECALL_NS, best_index, ranking
    from vpr_tune.train import load_train_config, train_run, yaml_threads

    cfg = load_train_config(config)
    if threads is None and (threads := yaml_threads(config)) is not None:
        console.print(f"threads: {threads} (resources.cpu of {config.name}; --threads to "
                      "change)", highlight=False)
    if data is not None:
        cfg["data"]["root"] = data
    cfg["name"] = cfg.get("name") or config.stem
    run_dir = out or Path("results") / "train" / cfg["name"]
    if (run_dir / "last.pt").exists() and not (resume or overwrite):
        raise UserError(f"{run_dir} already holds a run; pass --resume to continue it, "
                        "--overwrite to start over, or --out for another folder")
    root = resolve_data_root(cfg["data"]["root"], cfg["data"].get("synth_size", "demo"),
                             log=console.print)
    synthetic = " (street-world synthetic data)" if is_synthetic(root) else ""
    console.print(f"data: {root}{synthetic}", highlight=False)
    console.print(f"run folder: {run_dir}", highlight=False)
    budget = cfg["budget"]
    progress = Progress(TextColumn("epoch {task.fields[epoch]}"), BarColumn(),
                        TextColumn("{task.completed}/{task.total} batches"),
                        TextColumn("loss {task.fields[loss]}"),
                        TimeRemainingColumn(), console=console, transient=True)
    task = progress.add_task("train", total=int(budget["batches_per_epoch"]), epoch=1, loss="-")

    def on_batch(batch: int, loss: float) -> None:
        progress.update(task, completed=batch + 1, loss=f"{loss:.4f}")

    def on_epoch(row: dict) -> None:
        loss = row["train/loss"]
        loss = f"{float(loss):.4f}" if loss not in ("", None) else "-"
        recalls = " ".join(f"{float(row[f'val/R@{n}']):5.1f}" for n in RECALL_NS)
        progress.console.print(
            f"epoch {int(row['epoch']):>3}  loss {loss:>7}  lr {float(row['lr']):.1e}  "
            f"val R@{'/'.join(map(str, RECALL_NS))} {recalls}  {float(row['time_s']):.0f}s",
            highlight=False, soft_wrap=True)
        progress.reset(task, total=int(budget["batches_per_epoch"]),
                       epoch=int(row["epoch"]) + 1, loss="-")

    with progress:
        rows = train_run(cfg, root, run_dir, resume=resume, num_threads=threads,
                         log=progress.console.print, on_epoch=on_epoch, on_batch=on_batch)
    metric, mode = ranking(cfg["search"])  # what best.pt follows, as the Trainer does
    best = rows[best_index([r.get(metric) for r in rows], mode) or 0]
    console.print(f"best {metric} {float(best[metric] or 'nan'):.4g} at epoch {best['epoch']}; "
                  f"wrote {run_dir}/ (metrics.csv, best.pt, last.pt, TensorBoard events)",
                  highlight=False)


@app.command("eval")
def evaluate(
    checkpoint: Annotated[Path, typer.Option(help="A checkpoint written by train or run.")],
    data: Annotated[str, typer.Option(help="An eval split folder or a data root.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    save_preds: Annotated[
        int, typer.Option(min=0, help="Write predictions.csv with the top N and pictures.")
    ] = 0,
    only_wrong: Annotated[bool, typer.Option(help="Pictures only for wrong queries.")] = False,
    split: Annotated[
        str, typer.Option(help="Split under a data root: sf_xs/val, sf_xs/test, tokyo_xs/test.")
    ] = "sf_xs/val",
    preds_dir: Annotated[
        Path | None,
        typer.Option(help="Where predictions.csv goes (default: next to the checkpoint)."),
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="Images per forward pass.")] = None,
) -> None:
    """Recall@1/5/10/25 of a checkpoint on an eval split (25 m rule), at its config's
    data.eval_image_size (else data.image_size)."""
    import json

    from rich.table import Table

    from vpr_tune.checkpoint import load_model_from_checkpoint
    from vpr_tune.config import eval_image_size, normalize_config
    from vpr_tune.data.splits import is_synthetic, load_eval_split
    from vpr_tune.device import pick_device
    from vpr_tune.evaluate import evaluate_split, save_predictions
    from vpr_tune.metrics import RECALL_NS, RECALLS

    device = pick_device()
    model, cfg = load_model_from_checkpoint(checkpoint, device)
    cfg = normalize_config(cfg)
    path = Path(data).expanduser()
    if not path.exists():
        raise UserError(f"--data {path} does not exist")
    eval_split = load_eval_split(path, rel=split)
    image_size = eval_image_size(cfg)  # data.eval_image_size, else data.image_size
    metrics, preds = evaluate_split(
        model, eval_split, image_size, int(batch_size or cfg["budget"]["eval_batch_size"]),
        device, cache=bool(cfg["data"].get("cache", True)))
    from vpr_tune.cli.output import print_wide
    from vpr_tune.uncertainty import first_hit_ranks, recall_interval

    ranks = first_hit_ranks(preds, eval_split.positives)  # per query: intervals from these
    for n, r in zip(RECALL_NS, RECALLS, strict=True):
        metrics[f"{r}_lo"], metrics[f"{r}_hi"] = (round(v, 4) for v in recall_interval(ranks, n))
    metrics["synthetic"] = is_synthetic(eval_split.root)
    if save_preds > 0:
        slug = f"{eval_split.root.parent.name}-{eval_split.root.name}".lower()
        where = preds_dir or checkpoint.parent / f"eval-{slug}"
        metrics["predictions"] = str(save_predictions(eval_split, preds, where, save_preds,
                                                      only_wrong=only_wrong))
    if json_out:
        print(json.dumps(metrics))
        return
    table = Table(title=f"{eval_split.root}" + (" (synthetic)" if metrics["synthetic"] else ""),
                  caption="R@N % (lo–hi): 95 % bootstrap interval over the queries")
    for r in RECALLS:
        table.add_column(r, justify="right", no_wrap=True)
    table.add_column("queries", justify="right")
    table.add_column("database", justify="right")
    table.add_column("no positive", justify="right")
    table.add_row(*[f"{metrics[r]:.1f} ({metrics[f'{r}_lo']:.1f}–{metrics[f'{r}_hi']:.1f})"
                    for r in RECALLS],
                  str(metrics["queries"]), str(metrics["database"]),
                  str(metrics["queries_without_positive"]))
    print_wide(table)  # a file or pipe gets the whole row, not an 80-column cut
    if "predictions" in metrics:
        console.print(f"predictions: {metrics['predictions']} (pictures in preds/)",
                      highlight=False)

