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

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

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


def _recent_titles(ds, user: str, n: int) -> list[str]:
    from hyrec.data import History

    row = np.array([ds.user_index[user]])
    seq = History.from_interactions(ds.interactions, row, ds.n_items).sequences[0]
    return [ds.items[i].title for i in seq[-n:]]


def _default_demo_dir(profile: str = "quick") -> Path:
    from platformdirs import user_cache_dir

    name = "demo-ml-100k" if profile == "full" else f"demo-ml-100k-{profile}"
    return Path(user_cache_dir("hyrec")) / "models" / name


def _saved_fit(folder: Path):
    """(fit report, HybridConfig) of a saved model folder, read without loading the model."""
    from dataclasses import fields

    from retrieval.hybrid import HybridConfig

    body = json.loads((folder / "hybrid.json").read_text())
    known = {f.name for f in fields(HybridConfig)}
    values = {
        k: tuple(v) if isinstance(v, list) else v for k, v in body["config"].items() if k in known
    }
    return body.get("fit_report", {}), HybridConfig(**values)


def _quiet_logging() -> None:
    """Errors only: the commands that list every fallback themselves need no warnings too."""
    logging.getLogger().setLevel(logging.ERROR)


def _profile(name: str):
    from agent.config import fit_profile

    try:
        return fit_profile(name)
    except ValueError as e:
        _fail(str(e))
        raise  # unreachable: _fail exits


@app.command()
def demo(
    data_dir: Annotated[
        Path | None, typer.Option(help="Folder holding MovieLens-100K's u.data.")
    ] = None,
    model_dir: Annotated[
        Path | None,
        typer.Option(help="Where the fitted model lives (default: the user cache); reused."),
    ] = None,
    profile: Annotated[
        str,
        typer.Option(help="Fit profile: quick (~1.7 min on 2 cores) or full (~5 min)."),
    ] = "quick",
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
    """Fit the hybrid on MovieLens-100K (once; the quick profile unless --profile full), then show
    each part's validation NDCG@10, a user's top-k with reasons and one chat exchange, on the
    embedded defaults (chromadb on disk, packaged MiniLM, packaged LLM)."""
    from agent.api import Recommender
    from agent.chat.agent import ChatAgent
    from agent.cli.progress import FitProgress, fit_summary
    from agent.config import profile_of
    from agent.llm import Message

    _setup_logging(False)
    if k <= 0:
        _fail("-k must be a positive list length")
    chosen = _profile(profile)
    folder = model_dir or _default_demo_dir(chosen.name)
    say = _Say(as_json)
    prepare: list[subprocess.Popen | None] = [None]
    fit_seconds = None
    if refit or not (folder / "hybrid.json").is_file():
        say(f"fitting the hybrid on MovieLens-100K with the {chosen.name} profile: {chosen.about}")
        start = time.perf_counter()

        def convert_beside_the_fit() -> None:
            # the in-process LLM's one-time GGUF conversion (~30 s, one core) runs beside the
            # single-threaded SASRec and head fits, after the text encoding (which uses both cores)
            prepare[0] = _prepare_llm_in_background(llm)

        try:
            with FitProgress(console, live=None if not as_json else False):
                model = _fit_recommender(
                    "ml-100k", data_dir, "minilm", folder, chosen.hybrid, convert_beside_the_fit
                )
                model.close()
        except (DataError, ValueError) as e:
            _stop(prepare[0])
            _fail(str(e))
        fit_seconds = time.perf_counter() - start
        say(f"fitted and saved to {folder} in {fit_seconds:.0f} s")
    else:
        say(f"reusing the model in {folder} (--refit fits again)")
    report, config = _saved_fit(folder)
    used = profile_of(config) or "custom"
    if not as_json:
        console.print(fit_summary(report, profile=used, seconds=fit_seconds))
    _quiet_logging()  # each stage that falls back is listed below the answers; no warnings too
    handle, why = _connect_llm(llm, prepare=prepare[0], say=say)
    try:
        with Recommender.load(folder, llm=handle.llm if handle else None) as model:
            if user not in model.catalogue.user_index:
                _fail(f"unknown user id {user!r} in ml-100k")
            with _Step(say, f"answering: user {user}'s top-{k}"):
                recs = model.recommend(user, k=k)
            if not as_json:  # the list as soon as it exists; the chat answer follows
                recent = _recent_titles(model.catalogue, user, 3)
                table = Table(title=f"user {user} — recently: {'; '.join(recent)}")
                for col in ("#", "title", "sources", "why"):
                    table.add_column(col)
                for r, it in enumerate(recs.items, 1):
                    table.add_row(str(r), it.title, ", ".join(it.sources), it.reason or "")
                console.print(table)
            with _Step(say, "answering: one chat request"):
                agent = ChatAgent.configured(
                    model, base_url=handle.base_url if handle else None, k=5
                )
                reply = agent.reply([Message("user", message)])
    finally:
        if handle is not None:
            handle.close()
    notes = list(handle.notes) if handle is not None else []
    fallbacks = ([why] if why else []) + notes + list(recs.fallbacks) + list(reply.fallbacks)
    valid = dict(report.get("component_valid_ndcg@10", {}))
    head = report.get("ranker_valid_ndcg@10", {}).get(report.get("ranker"))
    if as_json:
        body = {
            "user_id": user,
            "profile": used,
            "valid_ndcg@10": {**valid, "hybrid": head},
            "llm": handle.description if handle is not None else None,
            "items": [
                {"item_id": it.item_id, "title": it.title, "reason": it.reason} for it in recs.items
            ],
            "chat": {"user": message, "assistant": reply.text},
            "fallbacks": fallbacks,
        }
        print(json.dumps(body, ensure_ascii=False))
        return
    console.print(f"[bold]you>[/] {escape(message)}")
    console.print(f"[bold]hyrec>[/] {escape(reply.text)}")
    for line in fallbacks:
        console.print(f"[yellow]fallback:[/] {escape(line)}")
    if used != "full":
        console.print(
            f"[dim]profile {used}: fitted for a first run. The full profile (~5 min on 2 cores): "
            "hyrec demo --profile full (or hyrec fit --profile full --out DIR)[/]"
        )


class _Say:
    """A line for the person running the command: stdout normally, stderr under --json."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def __call__(self, text: str) -> None:
        if self.as_json:
            print(text, file=sys.stderr, flush=True)
        else:
            console.print(text, highlight=False, markup=False)  # "[llamacpp]" is not a style


class _Step:
    """A slow step: a spinner in a terminal, a start and an end line elsewhere."""

    def __init__(self, say: _Say, label: str) -> None:
        self.say, self.label = say, label
        self.live = console.is_terminal and not say.as_json
        self._status = None

    def __enter__(self) -> _Step:
        self.start = time.perf_counter()
        if self.live:
            self._status = console.status(self.label + "…")
            self._status.__enter__()
        else:
            self.say(self.label + "…")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._status is not None:
            self._status.__exit__(*exc)
        if exc[0] is None:
            self.say(f"{self.label}: done in {time.perf_counter() - self.start:.1f} s")


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
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Fit the hybrid recommender (components, chromadb store, ranking head) and save it; shows
    each stage as it runs and ends with every part's validation NDCG@10."""
    from agent.cli.progress import FitProgress, fit_summary

    _setup_logging(verbose)
    chosen = _profile(profile)
    start = time.perf_counter()
    try:
        with FitProgress(console):
            model = _fit_recommender(dataset, data_dir, text_model, out, chosen.hybrid)
    except (DataError, ValueError) as e:
        _fail(str(e))
    model.close()
    seconds = time.perf_counter() - start
    console.print(fit_summary(model.hybrid.fit_report, profile=chosen.name, seconds=seconds))
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


def _connect_llm(
    use_llm: bool, *, prepare: subprocess.Popen | None = None, say=None
) -> tuple[object | None, str | None]:
    """(LLMHandle or None, why not): the configured LLM, else an embedded one (the llama.cpp
    server if installed, else the in-process transformers model; see
    :func:`agent.llm.connect.choose_backend`)."""
    if not use_llm:
        _stop(prepare)
        return None, "LLM stages off (--no-llm)"
    from agent.llm import LLMUnavailable
    from agent.llm.connect import BACKEND_LABELS, choose_backend, connect
    from agent.llm.settings import LLMSettings

    say = say or _Say(False)
    try:
        settings = LLMSettings.from_env()
    except (ValueError, OSError) as e:
        _stop(prepare)
        return None, f"no LLM: the LLM settings are invalid ({e}); used the non-LLM ranking"
    choice = choose_backend(settings)
    if choice.kind is None:
        _stop(prepare)
        return None, f"no LLM ({choice.reason}); used the non-LLM ranking"
    if prepare is not None and prepare.poll() is None:
        with _Step(say, "LLM: finishing the one-time conversion of the packaged SmolLM2"):
            prepare.wait()
    say(f"LLM: {BACKEND_LABELS[choice.kind]} — {choice.reason}")
    try:
        if choice.kind == "transformers":
            from agent.llm.transformers_backend import needs_conversion, resolve_model

            if needs_conversion(settings.model):
                with _Step(say, "LLM: converting the packaged SmolLM2 for transformers (once)"):
                    resolve_model(settings.model)
        with _Step(say, f"LLM: starting {BACKEND_LABELS[choice.kind]}"):
            handle = connect(settings)
    except LLMUnavailable as e:
        return None, f"no LLM reachable ({e}); used the non-LLM ranking"
    say(f"LLM: {handle.description}")
    return handle, None


def _prepare_llm_in_background(use_llm: bool) -> subprocess.Popen | None:
    """Start the transformers backend's one-time GGUF conversion in a child process when
    :func:`agent.llm.connect.connect` will need it; ``None`` when nothing is to do."""
    if not use_llm:
        return None
    from agent.llm.connect import choose_backend
    from agent.llm.settings import LLMSettings

    try:
        settings = LLMSettings.from_env()
        if choose_backend(settings).kind != "transformers":
            return None
        from agent.llm.transformers_backend import needs_conversion

        if not needs_conversion(settings.model):
            return None
    except (ValueError, OSError):
        return None  # connect() reports it
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one core: the fit keeps the other
    return subprocess.Popen(
        [sys.executable, "-m", "agent.llm.transformers_backend", settings.model],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )


def _stop(process: subprocess.Popen | None) -> None:
    if process is not None and process.poll() is None:
        process.terminate()
        process.wait(10)


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
    _quiet_logging()  # every fallback is listed with the answer
    handle, why = _connect_llm(llm, say=_Say(as_json))
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
