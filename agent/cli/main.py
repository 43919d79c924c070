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
from hyrec.threads import limit_blas

app = typer.Typer(add_completion=False, no_args_is_help=True, help="hyrec: a hybrid recommender.")
console = Console()


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


def _recent_titles(ds, user: str, n: int) -> list[str]:
    from hyrec.data import History

    row = np.array([ds.user_index[user]])
    seq = History.from_interactions(ds.interactions, row, ds.n_items).sequences[0]
    return [ds.items[i].title for i in seq[-n:]]


def _default_demo_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("hyrec")) / "models" / "demo-ml-100k"


@app.command()
def demo(
    data_dir: Annotated[
        Path | None, typer.Option(help="Folder holding MovieLens-100K's u.data.")
    ] = None,
    model_dir: Annotated[
        Path | None,
        typer.Option(help="Where the fitted model lives (default: the user cache); reused."),
    ] = None,
    user: Annotated[str, typer.Option(help="User id to recommend for.")] = "196",
    message: Annotated[
        str, typer.Option(help="The chat request to answer.")
    ] = "something like Alien but funnier, for tonight",
    k: Annotated[int, typer.Option("-k", help="List length.")] = 10,
    refit: Annotated[bool, typer.Option(help="Fit again even if a saved model exists.")] = False,
    llm: Annotated[
        bool, typer.Option("--llm/--no-llm", help="Use the LLM stages (embedded by default).")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Fit the full hybrid on MovieLens-100K (once), then show a user's top-k with reasons and one
    chat exchange, on the embedded defaults (chromadb on disk, packaged MiniLM, packaged LLM)."""
    from agent.api import Recommender
    from agent.chat.agent import ChatAgent
    from agent.llm import Message

    _setup_logging(False)
    if k <= 0:
        _fail("-k must be a positive list length")
    folder = model_dir or _default_demo_dir()
    if refit or not (folder / "hybrid.json").is_file():
        try:
            _fit_recommender("ml-100k", data_dir, "minilm", folder).close()
        except (DataError, ValueError) as e:
            _fail(str(e))
        if not as_json:
            console.print(f"fitted and saved to {folder}")
    elif not as_json:
        console.print(f"reusing the model in {folder} (--refit fits again)")
    handle, why = _connect_llm(llm)
    try:
        with Recommender.load(folder, llm=handle.llm if handle else None) as model:
            if user not in model.catalogue.user_index:
                _fail(f"unknown user id {user!r} in ml-100k")
            recs = model.recommend(user, k=k)
            agent = ChatAgent.configured(model, base_url=handle.base_url if handle else None, k=5)
            reply = agent.reply([Message("user", message)])
            recent = _recent_titles(model.catalogue, user, 3)
    finally:
        if handle is not None:
            handle.close()
    fallbacks = ([why] if why else []) + list(recs.fallbacks) + list(reply.fallbacks)
    if as_json:
        body = {
            "user_id": user,
            "items": [
                {"item_id": it.item_id, "title": it.title, "reason": it.reason} for it in recs.items
            ],
            "chat": {"user": message, "assistant": reply.text},
            "fallbacks": fallbacks,
        }
        print(json.dumps(body, ensure_ascii=False))
        return
    table = Table(title=f"user {user} — recently: {'; '.join(recent)}")
    for col in ("#", "title", "sources", "why"):
        table.add_column(col)
    for r, it in enumerate(recs.items, 1):
        table.add_row(str(r), it.title, ", ".join(it.sources), it.reason or "")
    console.print(table)
    console.print(f"[bold]you>[/] {message}")
    console.print(f"[bold]hyrec>[/] {reply.text}")
    for line in fallbacks:
        console.print(f"[yellow]fallback:[/] {line}")


@app.command()
def fit(
    out: Annotated[Path, typer.Option(help="Model folder to write.")],
    dataset: Annotated[str, typer.Option(help="Dataset name, e.g. ml-100k.")] = "ml-100k",
    data_dir: Annotated[Path | None, typer.Option(help="The dataset's own folder.")] = None,
    text_model: Annotated[
        str, typer.Option(help="Item text encoder (default: packaged MiniLM).")
    ] = "minilm",
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Fit the hybrid recommender (components, chromadb store, ranking head) and save it."""
    _setup_logging(verbose)
    try:
        model = _fit_recommender(dataset, data_dir, text_model, out)
    except (DataError, ValueError) as e:
        _fail(str(e))
    model.close()
    console.print(f"saved to {out}: {json.dumps(model.hybrid.fit_report)}")


def _fit_recommender(dataset: str, data_dir: Path | None, text_model: str, out: Path):
    """Fit on every user's history (the last event early-stops) and save the model folder."""
    from agent.api import Recommender, RecommenderConfig
    from encoders.text import TextEncoder, TextEncoderConfig
    from hyrec.data import load_dataset

    ds = load_dataset(dataset, data_dir)
    encoder = TextEncoder(TextEncoderConfig(model=text_model))
    with console.status(
        f"fitting the hybrid on {ds.name} ({ds.n_users} users, {ds.n_items} items)…"
    ):
        model = Recommender.fit(ds, RecommenderConfig(text_model=text_model), encoder=encoder)
        model.save(out)
    return model


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


def _connect_llm(use_llm: bool) -> tuple[object | None, str | None]:
    """(LLMHandle or None, why not): the configured LLM, else the embedded server on loopback."""
    if not use_llm:
        return None, "LLM stages off (--no-llm)"
    from agent.llm import LLMUnavailable
    from agent.llm.connect import connect

    try:
        with console.status("starting the LLM…"):
            return connect(), None
    except LLMUnavailable as e:
        return None, f"no LLM reachable ({e}); used the non-LLM ranking"


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
    handle, why = _connect_llm(llm)
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
    fallbacks = ([why] if why else []) + list(recs.fallbacks)
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
        body = {"user_id": user, "cold_start": cold, "items": items, "fallbacks": fallbacks}
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
    import subprocess
    import sys

    return subprocess.call([sys.executable, *argv])


def _register_agent_commands() -> None:
    """The agent doors live in their own modules; they import their heavy parts lazily."""
    from agent.cli import chat as cli_chat
    from agent.cli import llm as cli_llm
    from agent.cli import profile as cli_profile
    from agent.cli import serve as cli_serve

    app.add_typer(cli_llm.app, name="llm")
    app.command("profile")(cli_profile.profile)
    app.command("serve")(cli_serve.serve)
    app.command("chat")(cli_chat.chat)


_register_agent_commands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
