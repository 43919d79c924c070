"""``hyrec demo``: the main job on the embedded defaults (registered by :mod:`agent.cli.main`).

Fits the hybrid on MovieLens-100K once (the quick fit profile unless told otherwise), then
shows each part's validation NDCG@10, one user's top-k with reasons and one chat exchange.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from agent.cli.session import Say, Step, connect_llm, prepare_llm_in_background, quiet_logging, stop
from hyrec.data import DataError

console = Console()


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
        typer.Option(help="Fit profile: quick (~1.2 min on 2 cores) or full (~5 min)."),
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
    from agent.cli.main import _fail, _fit_recommender, _profile, _setup_logging
    from agent.cli.progress import FitProgress, fit_summary
    from agent.config import profile_of
    from agent.llm import Message

    _setup_logging(False)
    if k <= 0:
        _fail("-k must be a positive list length")
    chosen = _profile(profile)
    folder = model_dir or _default_demo_dir(chosen.name)
    say = Say(as_json)
    prepare: list[subprocess.Popen | None] = [None]
    fit_seconds = None
    if refit or not (folder / "hybrid.json").is_file():
        say(f"fitting the hybrid on MovieLens-100K with the {chosen.name} profile: {chosen.about}")
        start = time.perf_counter()

        def convert_beside_the_fit() -> None:
            # the in-process LLM's one-time GGUF conversion (~30 s, one core) runs beside the
            # single-threaded SASRec and head fits, after the text encoding (which uses both cores)
            prepare[0] = prepare_llm_in_background(llm)

        try:
            with FitProgress(console, live=None if not as_json else False):
                model = _fit_recommender(
                    "ml-100k", data_dir, "minilm", folder, chosen.hybrid, convert_beside_the_fit
                )
                model.close()
        except (DataError, ValueError) as e:
            stop(prepare[0])
            _fail(str(e))
        fit_seconds = time.perf_counter() - start
        say(f"fitted and saved to {folder} in {fit_seconds:.0f} s")
    else:
        say(f"reusing the model in {folder} (--refit fits again)")
    report, config = _saved_fit(folder)
    used = profile_of(config) or "custom"
    if not as_json:
        console.print(fit_summary(report, profile=used, seconds=fit_seconds))
    quiet_logging()  # each stage that falls back is listed below the answers; no warnings too
    handle, why = connect_llm(llm, prepare=prepare[0], say=say)
    try:
        with Recommender.load(folder, llm=handle.llm if handle else None) as model:
            if user not in model.catalogue.user_index:
                _fail(f"unknown user id {user!r} in ml-100k")
            with Step(say, f"answering: user {user}'s top-{k}"):
                recs = model.recommend(user, k=k)
            if not as_json:  # the list as soon as it exists; the chat answer follows
                recent = _recent_titles(model.catalogue, user, 3)
                table = Table(title=f"user {user} — recently: {'; '.join(recent)}")
                for col in ("#", "title", "sources", "why"):
                    table.add_column(col)
                for r, it in enumerate(recs.items, 1):
                    table.add_row(str(r), it.title, ", ".join(it.sources), it.reason or "")
                console.print(table)
            with Step(say, "answering: one chat request"):
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
