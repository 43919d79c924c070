"""``python -m eval``: the offline harness's own command line (``hyrec eval`` and ``hyrec bench``
run it). The benchmark scripts under eval/ that run alone (``python -m eval.bench_*``,
``python -m eval.plots``) parse their own few flags with argparse."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from agent.cli.main import _fail, _setup_logging  # one error and logging style for both CLIs
from hyrec.data import DataError
from hyrec.threads import limit_blas

app = typer.Typer(add_completion=False, no_args_is_help=True, help="hyrec's offline harness.")
console = Console()


@app.callback()
def _every_command() -> None:
    limit_blas()  # one BLAS thread per process unless the user set a thread count


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
    seeds: Annotated[
        int,
        typer.Option(
            help="Fit each seeded model (als, bpr, lightgcn, sasrec*, hybrid) from seeds "
            "0..N-1 and report the mean and spread."
        ),
    ] = 1,
    jobs: Annotated[int, typer.Option(help="Fits to run at once, in worker processes.")] = 1,
    config: Annotated[
        Path | None,
        typer.Option(
            help="A tuned.json from `hyrec tune`: adds model 'hybrid-tuned' (the hybrid with "
            "that config) to --models."
        ),
    ] = None,
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
    if seeds < 1:
        _fail(f"--seeds must be at least 1, got {seeds}")
    if jobs < 1:
        _fail(f"--jobs must be at least 1, got {jobs}")
    names = _parse_models(models)
    if config is not None:
        names = _add_tuned(config, names, jobs)
    settings = EvalConfig(
        dataset=dataset,
        models=names,
        data_dir=str(data_dir) if data_dir else None,
        split=split,
        min_rating=min_rating,
        users=users,
        seed=seed,
        seeds=seeds,
        jobs=jobs,
        text_model=None if text_model.lower() == "none" else text_model,
    )
    try:
        report = run_eval(settings, out)
    except (DataError, ValueError) as e:
        _fail(str(e))
    table = Table(title=f"{dataset} — {report['protocol']['split']}, full ranking")
    cols = (
        "ndcg@10",
        *(("ndcg@10_sd",) if seeds > 1 else ()),
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


TUNED = "hybrid-tuned"


def _add_tuned(path: Path, names: tuple[str, ...], jobs: int) -> tuple[str, ...]:
    """Register the tuned hybrid of ``path`` with the harness as model ``hybrid-tuned`` and add it
    to ``names``. The harness's worker processes rebuild its model table from scratch, so a tuned
    model is fitted in this process: ``--jobs 1``."""
    from functools import partial

    from eval import harness
    from retrieval.hybrid import HybridRecommender
    from retrieval.tuned import load_tuned

    if jobs != 1:
        _fail(
            "--config fits the tuned hybrid in this process; use --jobs 1 (or run one "
            "`hyrec eval` per model side by side)"
        )
    try:
        tuned = load_tuned(path)
    except (FileNotFoundError, ValueError) as e:
        _fail(str(e))
    harness.MODELS[TUNED] = partial(HybridRecommender, tuned)
    harness.TEXT_MODELS = harness.TEXT_MODELS | {TUNED}
    return names if TUNED in names else (*names, TUNED)


bench_app = typer.Typer(help="Benchmarks.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@bench_app.command("latency")
def bench_latency(
    catalog_size: Annotated[int, typer.Option(help="Synthetic catalogue size.")] = 10_000,
    requests: Annotated[int, typer.Option(help="Single-user requests to time.")] = 1_000,
    dataset: Annotated[
        str | None, typer.Option(help="Use a real dataset instead (e.g. ml-100k).")
    ] = None,
    data_dir: Annotated[Path | None, typer.Option(help="The dataset's own folder.")] = None,
    out: Annotated[Path | None, typer.Option(help="Also write the JSON here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
) -> None:
    """recommend() latency for single users, no LLM stage: p50/p99 in ms."""
    from eval.bench_latency import run

    _setup_logging(False)
    if catalog_size < 100 or requests <= 0:
        _fail("--catalog-size must be at least 100 and --requests positive")
    result = run(catalog_size, requests, dataset, str(data_dir) if data_dir else None)
    text = json.dumps(result, indent=2)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    if as_json:
        print(text)
    else:
        console.print(
            f"p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms over {requests} requests"
        )
