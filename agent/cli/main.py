"""The ``hyrec`` command line: the only place flags are parsed."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

# No library progress bars on the command line: transformers' and huggingface_hub's "Loading
# weights" bars would land inside the chat prompt. Read when huggingface_hub is first imported, so
# set before anything imports it; a user's own setting wins.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# An idle OpenMP thread (LightGBM's, torch's) sleeps instead of spinning: with the default
# spin-wait a small LightGBM fit ran 10-20x slower on shared cores (33 s instead of 1.6 s at load
# 10, measured in the test suite). Read when the OpenMP runtime loads, so set before any import
# loads one; results are the same, and a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import typer
from rich.console import Console
from rich.table import Table

from agent.cli.session import Say, connect_llm, quiet_logging
from hyrec.data import DataError
from hyrec.threads import limit_blas

app = typer.Typer(add_completion=False, no_args_is_help=True, help="hyrec: a hybrid recommender.")
console = Console()
log = logging.getLogger("agent.cli")


@app.callback()
def _every_command() -> None:
    limit_blas()  # one BLAS thread per process unless the user set a thread count


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code=2)


def _profile(name: str):
    from agent.config import fit_profile

    try:
        return fit_profile(name)
    except ValueError as e:
        _fail(str(e))
        raise  # unreachable: _fail exits


@app.command()
def fit(
    out: Annotated[Path, typer.Option(help="Model folder to write.")],
    dataset: Annotated[str, typer.Option(help="Dataset name, e.g. ml-100k.")] = "ml-100k",
    data_dir: Annotated[Path | None, typer.Option(help="The dataset's own folder.")] = None,
    profile: Annotated[
        str,
        typer.Option(help="Fit profile: full (every component to early stopping) or quick."),
    ] = "full",
    text_model: Annotated[
        str, typer.Option(help="Item text encoder (default: packaged MiniLM).")
    ] = "minilm",
    tune: Annotated[
        str | None,
        typer.Option(help="First tune on the validation split for this wall time (30m, 1h)."),
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="Fit a tuned.json written by `hyrec tune`.")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Fit the hybrid recommender (components, chromadb store, ranking head) and save it; shows
    each stage as it runs and ends with every part's validation NDCG@10."""
    from agent.cli.progress import FitProgress, fit_summary
    from agent.cli.tune import tuned_hybrid

    _setup_logging(verbose)
    chosen = _profile(profile)
    hybrid = tuned_hybrid(dataset, data_dir, text_model, out, chosen.hybrid, tune, config)
    start = time.perf_counter()
    try:
        with FitProgress(console):
            model = _fit_recommender(dataset, data_dir, text_model, out, hybrid)
    except (DataError, ValueError) as e:
        _fail(str(e))
    model.close()
    seconds = time.perf_counter() - start
    name = chosen.name if hybrid is chosen.hybrid else "tuned"
    console.print(fit_summary(model.hybrid.fit_report, profile=name, seconds=seconds))
    console.print(f"saved to {out}")


def _fit_recommender(
    dataset: str,
    data_dir: Path | None,
    text_model: str,
    out: Path,
    hybrid=None,
    after_text=None,
):
    """Fit on every user's history (the last event early-stops) and save the model folder.

    Each step logs progress records (:mod:`agent.cli.progress`), shown by the caller's
    ``FitProgress``; ``after_text()``, if given, runs once the item text is embedded."""
    from agent.api import Recommender, RecommenderConfig
    from encoders.text import TextEncoder, TextEncoderConfig
    from hyrec.data import load_dataset
    from retrieval.hybrid import HybridConfig

    ds = _stage("data", f"loading {dataset}", lambda: load_dataset(dataset, data_dir))
    encoder = TextEncoder(TextEncoderConfig(model=text_model, show_progress=False))
    # embedded (or read from the disk cache) once here, so it is a stage of its own;
    # Recommender.fit reads the vectors back from that cache
    _stage(
        "text",
        f"item text: {ds.n_items} items through {text_model} (cached for later fits)",
        lambda: encoder.encode_items(ds.items),
    )
    if after_text is not None:
        after_text()
    config = RecommenderConfig(hybrid=hybrid or HybridConfig(), text_model=text_model)
    log.info(
        "fitting the hybrid on %s",
        ds.name,
        extra={
            "progress": {
                "stage": "hybrid",
                "label": (
                    f"hybrid on {ds.name}: {ds.n_users} users, {ds.n_items} items, "
                    f"components {', '.join(config.hybrid.components)}"
                ),
            }
        },
    )
    t0 = time.perf_counter()
    model = Recommender.fit(ds, config, encoder=encoder)
    log.info(
        "hybrid fitted",
        extra={"progress": {"stage": "hybrid", "done": True, "seconds": time.perf_counter() - t0}},
    )
    _stage("save", f"saving the model to {out}", lambda: model.save(out))
    return model


def _stage(key: str, label: str, work):
    """Run ``work()`` as one progress stage (start and end records)."""
    start = time.perf_counter()
    log.info(label, extra={"progress": {"stage": key, "label": label}})
    result = work()
    seconds = time.perf_counter() - start
    log.info("%s: done", key, extra={"progress": {"stage": key, "done": True, "seconds": seconds}})
    return result


def _parse_filter(
    genres: str | None, no_genres: str | None, year_min: int | None, year_max: int | None
):
    from retrieval.filters import Filter

    if not any(v is not None for v in (genres, no_genres, year_min, year_max)):
        return None
    split = lambda v: tuple(g.strip() for g in (v or "").split(",") if g.strip())  # noqa: E731
    return Filter(
        genres_any=split(genres), genres_none=split(no_genres), year_min=year_min, year_max=year_max
    )


@app.command()
def recommend(
    model_dir: Annotated[Path, typer.Option(help="A folder written by `hyrec fit`.")],
    user: Annotated[str, typer.Option(help="User id; an unknown id gets the cold-start path.")],
    k: Annotated[int, typer.Option("-k", help="List length.")] = 10,
    context: Annotated[
        str | None, typer.Option(help='The situation, e.g. "for tonight with the kids".')
    ] = None,
    genres: Annotated[str | None, typer.Option(help="Only these genres (comma-separated).")] = None,
    no_genres: Annotated[
        str | None, typer.Option(help="Never these genres (comma-separated).")
    ] = None,
    year_min: Annotated[int | None, typer.Option(help="Earliest release year.")] = None,
    year_max: Annotated[int | None, typer.Option(help="Latest release year.")] = None,
    llm: Annotated[
        bool,
        typer.Option(
            "--llm/--no-llm",
            help="Use the LLM stages (profile, re-rank, reasons): the configured server, "
            "else the embedded one.",
        ),
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Recommend for one user from a saved model, with reasons; says when an LLM stage fell back."""
    from agent.api import Recommender

    _setup_logging(False)
    if k <= 0:
        _fail("-k must be a positive list length")
    flt = _parse_filter(genres, no_genres, year_min, year_max)
    quiet_logging()  # every fallback is listed with the answer
    handle, why = connect_llm(llm, say=Say(as_json))
    try:
        try:
            model = Recommender.load(model_dir, llm=handle.llm if handle else None)
        except FileNotFoundError as e:
            _fail(str(e))
        with model:
            cold = user not in model.catalogue.user_index
            recs = model.recommend(user, k=k, context=context, filters=flt)
    finally:
        if handle is not None:
            handle.close()
    notes = list(handle.notes) if handle is not None else []
    fallbacks = ([why] if why else []) + notes + list(recs.fallbacks)
    items = [
        {
            "item_id": it.item_id,
            "title": it.title,
            "score": round(float(it.score), 4),
            "sources": list(it.sources),
            "reason": it.reason,
        }
        for it in recs.items
    ]
    if as_json:
        body = {
            "user_id": user,
            "cold_start": cold,
            "llm": handle.description if handle is not None else None,
            "items": items,
            "fallbacks": fallbacks,
        }
        print(json.dumps(body, ensure_ascii=False))
        return
    table = Table(title=f"user {user}" + (" (new user: cold start)" if cold else ""))
    for col in ("#", "title", "score", "sources", "why"):
        table.add_column(col)
    for r, it in enumerate(items, 1):
        table.add_row(
            str(r), it["title"], f"{it['score']:.3f}", ", ".join(it["sources"]), it["reason"] or ""
        )
    console.print(table)
    for line in fallbacks:
        console.print(f"[yellow]fallback:[/] {line}")


_FORWARD = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


@app.command("eval", context_settings=_FORWARD, add_help_option=False)
def eval_command(ctx: typer.Context) -> None:
    """Fit and evaluate models with full-catalogue ranking (runs ``python -m eval``)."""
    raise typer.Exit(_forward(["-m", "eval", *ctx.args]))


@app.command("bench", context_settings=_FORWARD, add_help_option=False)
def bench_command(ctx: typer.Context) -> None:
    """Benchmarks, e.g. ``hyrec bench latency`` (runs ``python -m eval bench``; --help there)."""
    raise typer.Exit(_forward(["-m", "eval", "bench", *ctx.args]))


def _forward(argv: list[str]) -> int:
    """The offline harness is the floor above every package (nothing imports ``eval``), so the
    CLI runs it as its own process instead of importing it."""

    return subprocess.call([sys.executable, *argv])


def _register_agent_commands() -> None:
    """The agent doors live in their own modules; they import their heavy parts lazily."""
    from agent.cli import batch as cli_batch
    from agent.cli import chat as cli_chat
    from agent.cli import demo as cli_demo
    from agent.cli import llm as cli_llm
    from agent.cli import profile as cli_profile
    from agent.cli import serve as cli_serve
    from agent.cli import tune as cli_tune

    app.command("demo")(cli_demo.demo)
    app.add_typer(cli_llm.app, name="llm")
    app.add_typer(cli_batch.app, name="batch")
    app.command("profile")(cli_profile.profile)
    app.command("serve")(cli_serve.serve)
    app.command("chat")(cli_chat.chat)
    app.command("tune")(cli_tune.tune_command)


_register_agent_commands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
