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
    config = EvalConfig(
        dataset=dataset,
        models=_parse_models(models),
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
        report = run_eval(config, out)
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
    from agent.chat import ChatAgent
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
    from retrieval.store import Filter

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
    from agent.backends import connect
    from agent.llm import LLMUnavailable

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


def _register_agent_commands() -> None:
    """The agent doors live in their own modules; they import their heavy parts lazily."""
    from hyrec import cli_chat, cli_llm, cli_profile, cli_serve

    app.add_typer(cli_llm.app, name="llm")
    app.command("profile")(cli_profile.profile)
    app.command("serve")(cli_serve.serve)
    app.command("chat")(cli_chat.chat)


_register_agent_commands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
