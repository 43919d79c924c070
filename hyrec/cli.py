"""The ``hyrec`` command line: the only place flags are parsed."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from hyrec.data import DataError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="hyrec: a hybrid recommender.")
console = Console()


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code=2)


def _parse_models(models: str) -> tuple[str, ...]:
    return tuple(m.strip() for m in models.split(",") if m.strip())


@app.command("eval")
def eval_command(
    dataset: Annotated[str, typer.Option(help="Dataset name, e.g. ml-100k.")] = "ml-100k",
    models: Annotated[
        str, typer.Option(help="Comma-separated model names.")
    ] = "pop,itemknn,als,bpr",
    out: Annotated[
        Path, typer.Option(help="Folder for <dataset>/metrics.json and report.md.")
    ] = Path("runs/eval"),
    data_dir: Annotated[
        Path | None, typer.Option(help="The dataset's own folder (e.g. the one holding u.data).")
    ] = None,
    split: Annotated[str, typer.Option(help="loo (leave-one-out by time) or temporal.")] = "loo",
    min_rating: Annotated[
        float | None, typer.Option(help="Keep only ratings >= this as interactions (default: all).")
    ] = None,
    users: Annotated[int | None, typer.Option(help="Evaluate a seeded sample of N users.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for user sampling.")] = 0,
    text_model: Annotated[
        str,
        typer.Option(
            help="Item text encoder: 'minilm' (packaged), a sentence-transformers name or "
            "path, or 'none' (ILD then uses item attributes)."
        ),
    ] = "minilm",
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Fit and evaluate models with full-catalogue ranking; write metrics.json and report.md."""
    from eval.harness import EvalConfig, run_eval

    _setup_logging(verbose)
    if users is not None and users <= 0:
        _fail("--users must be a positive number of users")
    config = EvalConfig(
        dataset=dataset,
        models=_parse_models(models),
        data_dir=str(data_dir) if data_dir else None,
        split=split,
        min_rating=min_rating,
        users=users,
        seed=seed,
        text_model=None if text_model.lower() == "none" else text_model,
    )
    try:
        report = run_eval(config, out)
    except (DataError, ValueError) as e:
        _fail(str(e))
    table = Table(title=f"{dataset} — {report['protocol']['split']}, full ranking")
    cols = (
        "ndcg@10",
        "hr@10",
        "mrr@10",
        "coverage@10",
        "ild@10",
        "novelty@10",
        "fit_seconds",
        "eval_seconds",
    )
    table.add_column("model")
    for c in cols:
        table.add_column(c, justify="right")
    for name, m in report["models"].items():
        table.add_row(name, *(f"{m[c]:.4f}" if c in m else "–" for c in cols))
    console.print(table)
    console.print(f"wrote {out / dataset / 'metrics.json'} and report.md")


@app.command()
def demo(
    data_dir: Annotated[
        Path | None, typer.Option(help="Folder holding MovieLens-100K's u.data.")
    ] = None,
    users: Annotated[str, typer.Option(help="Comma-separated user ids to show.")] = "1,196,405",
    k: Annotated[int, typer.Option("-k", help="List length.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Fit the baselines on MovieLens-100K and show top-k recommendations for a few users."""
    from encoders.base import FitData
    from eval.harness import MODELS
    from hyrec.data import History, load_dataset
    from hyrec.metrics import top_k

    _setup_logging(False)
    try:
        ds = load_dataset("ml-100k", data_dir)
    except DataError as e:
        _fail(str(e))
    data = FitData(ds, ds.interactions)
    ids = [u.strip() for u in users.split(",") if u.strip()]
    missing = [u for u in ids if u not in ds.user_index]
    if missing:
        _fail(f"unknown user id(s) {missing} in ml-100k (ids run from 1 to {ds.n_users})")
    rows = np.array([ds.user_index[u] for u in ids])
    history = History.from_interactions(ds.interactions, rows, ds.n_items, n_users=ds.n_users)
    result: dict[str, dict[str, list[str]]] = {u: {} for u in ids}
    with console.status("fitting baselines on ml-100k…"):
        for name, make in MODELS.items():
            model = make().fit(data)
            recs = top_k(model.score(history), k, exclude=history.matrix)
            for u, r in zip(ids, recs, strict=True):
                result[u][name] = [ds.items[i].title for i in r]
    if as_json:
        print(json.dumps(result, indent=2))
        return
    for u, seq in zip(ids, history.sequences, strict=True):
        recent = [ds.items[i].title for i in seq[-3:]]
        table = Table(title=f"user {u} — recently: {'; '.join(recent)}")
        table.add_column("#", justify="right")
        for name in result[u]:
            table.add_column(name)
        for rank in range(k):
            table.add_row(str(rank + 1), *(result[u][name][rank] for name in result[u]))
        console.print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
