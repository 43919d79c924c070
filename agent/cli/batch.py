"""``hyrec batch profiles|embed|recommend``: batch jobs over a saved model (registered by
:mod:`agent.cli.main` as a sub-app).

Every command takes ``--model-dir DIR --out PATH [--engine local|ray] [--ray-address ADDR]
[--concurrency N] [--users FILE]``; the work is :func:`agent.batch.run_batch`. A progress bar shows
rows/s on stderr; the last line on stdout is the run's report as JSON.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Batch jobs over every user or item of a saved model (local, or Ray Data).",
)
err = Console(stderr=True, soft_wrap=True)

ModelDir = Annotated[Path, typer.Option(help="A folder written by `hyrec fit`.")]
Out = Annotated[Path, typer.Option(help="Rows: a .jsonl file, or a Parquet folder (other names).")]
Engine = Annotated[str, typer.Option(help="local (this process) or ray (Ray Data).")]
RayAddress = Annotated[
    str | None, typer.Option(help="Ray cluster to join (default: start one in this process).")
]
Concurrency = Annotated[
    int, typer.Option(help="Rows computed at once over all workers (LLM calls in flight).")
]
Users = Annotated[
    Path | None, typer.Option(help="File of user ids, one per line (default: every user).")
]
BatchSize = Annotated[int, typer.Option(help="Rows per batch (the unit of work and of resuming).")]
Actors = Annotated[
    int | None, typer.Option(help="Ray actors (default: min(concurrency, cluster CPUs)).")
]
Verbose = Annotated[bool, typer.Option("--verbose", "-v")]
FeedbackUrl = Annotated[
    str | None,
    typer.Option(
        envvar="HYREC_FEEDBACK_URL",
        help="The served model's feedback database (postgresql://...); default: the folder's.",
    ),
]


def _fail(message: str) -> None:
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code=2)


def _llm_settings(use: bool, concurrency: int):
    """The HYREC_LLM_* settings (config file, environment) with room for ``concurrency`` calls."""
    if not use:
        return None

    from agent.llm.settings import LLMSettings

    try:
        settings = LLMSettings.from_env()
    except (ValueError, OSError) as e:
        _fail(f"the LLM settings are invalid: {e}")
        raise
    return settings.for_batch(concurrency)


def _run(**fields: Any) -> None:
    from agent.batch import BatchConfig, read_users, run_batch
    from agent.llm import LLMUnavailable

    verbose = fields.pop("verbose", False)
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    users_file = fields.pop("users_file", None)
    if fields["engine"] not in ("local", "ray"):
        _fail(f"--engine must be local or ray, got {fields['engine']!r}")
    try:
        users = read_users(users_file) if users_file is not None else None
        config = BatchConfig(users=users, **fields)
    except (OSError, ValueError) as e:
        _fail(str(e))
        raise
    progress = _Bar()
    try:
        with progress:
            report = run_batch(config, progress=progress.advance, started=progress.start)
    except (FileNotFoundError, ValueError, ImportError, LLMUnavailable) as e:
        _fail(str(e))
        raise
    bad = {k: v for k, v in report.statuses.items() if k != "ok"}
    if bad:
        err.print(f"[yellow]rows not ok (see their `reason`): {bad}[/]")
    print(json.dumps(report.to_dict()))


class _Bar:
    """A rich progress bar with rows/s (stderr), fed by run_batch's callbacks."""

    def __init__(self) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=err,
            transient=False,
        )
        self._task = None
        self._done = 0
        self._skipped = 0

    def __enter__(self) -> _Bar:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def start(self, total: int, skipped: int) -> None:
        self._skipped = skipped
        note = f" ({skipped} already written)" if skipped else ""
        self._task = self._progress.add_task(f"rows{note}", total=total, completed=skipped, rate="")

    def advance(self, rows: Sequence[dict]) -> None:
        if self._task is None:
            return
        self._done += len(rows)
        self._progress.advance(self._task, len(rows))
        task = self._progress.tasks[self._task]
        elapsed = task.elapsed or 0.0
        rate = f"{self._done / elapsed:.1f} rows/s" if elapsed > 0 else ""
        self._progress.update(self._task, rate=rate)


@app.command()
def profiles(
    model_dir: ModelDir,
    out: Out,
    engine: Engine = "local",
    ray_address: RayAddress = None,
    concurrency: Concurrency = 1,
    users: Users = None,
    batch_size: BatchSize = 16,
    actors: Actors = None,
    llm: Annotated[
        bool,
        typer.Option(
            "--llm/--no-llm",
            help="Profile with the LLM (HYREC_LLM_* settings; the embedded server when no base "
            "URL) or deterministically from item attributes.",
        ),
    ] = True,
    vllm_model: Annotated[
        str | None,
        typer.Option(help="--engine ray on a GPU host: generate with this model in vLLM."),
    ] = None,
    vllm_engines: Annotated[int, typer.Option(help="vLLM engine replicas (GPUs).")] = 1,
    feedback_url: FeedbackUrl = None,
    verbose: Verbose = False,
) -> None:
    """An interest profile per user, also written into the model folder's profile cache."""
    from agent.batch import VLLMConfig

    vllm = VLLMConfig(vllm_model, engines=vllm_engines) if vllm_model else None
    _run(
        job="profiles",
        model_dir=model_dir,
        out=out,
        engine=engine,
        ray_address=ray_address,
        concurrency=concurrency,
        users_file=users,
        batch_size=batch_size,
        actors=actors,
        llm=_llm_settings(llm and vllm is None, concurrency),
        vllm=vllm,
        feedback_url=feedback_url,
        verbose=verbose,
    )


@app.command()
def embed(
    model_dir: ModelDir,
    out: Out,
    engine: Engine = "local",
    ray_address: RayAddress = None,
    concurrency: Concurrency = 1,
    users: Users = None,
    batch_size: BatchSize = 64,
    actors: Actors = None,
    kind: Annotated[str, typer.Option(help="items (the catalogue) or profiles (per user).")] = (
        "items"
    ),
    items: Annotated[
        Path | None,
        typer.Option(help="A new catalogue to embed (JSON lines: item_id, title, ...)."),
    ] = None,
    llm: Annotated[
        bool, typer.Option("--llm/--no-llm", help="kind=profiles: profile with the LLM.")
    ] = False,
    feedback_url: FeedbackUrl = None,
    verbose: Verbose = False,
) -> None:
    """Text vectors of the catalogue's items (or of each user's profile)."""
    if kind not in ("items", "profiles"):
        _fail(f"--kind must be items or profiles, got {kind!r}")
    _run(
        job="embed",
        model_dir=model_dir,
        out=out,
        engine=engine,
        ray_address=ray_address,
        concurrency=concurrency,
        users_file=users,
        batch_size=batch_size,
        actors=actors,
        embed=kind,
        items_file=items,
        llm=_llm_settings(llm and kind == "profiles", concurrency),
        feedback_url=feedback_url,
        verbose=verbose,
    )


@app.command()
def recommend(
    model_dir: ModelDir,
    out: Out,
    engine: Engine = "local",
    ray_address: RayAddress = None,
    concurrency: Concurrency = 1,
    users: Users = None,
    batch_size: BatchSize = 64,
    actors: Actors = None,
    k: Annotated[int, typer.Option("-k", help="List length.")] = 10,
    reasons: Annotated[bool, typer.Option("--reasons", help="Attach a reason per item.")] = False,
    llm: Annotated[
        bool, typer.Option("--llm/--no-llm", help="Run the LLM stages (re-rank, reasons).")
    ] = False,
    feedback_url: FeedbackUrl = None,
    verbose: Verbose = False,
) -> None:
    """Top-k for every user: the rows ``Recommender.recommend`` returns, precomputed."""
    _run(
        job="recommend",
        model_dir=model_dir,
        out=out,
        engine=engine,
        ray_address=ray_address,
        concurrency=concurrency,
        users_file=users,
        batch_size=batch_size,
        actors=actors,
        k=k,
        reasons=reasons,
        llm=_llm_settings(llm, concurrency),
        feedback_url=feedback_url,
        verbose=verbose,
    )
