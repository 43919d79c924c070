"""``hyrec profile``: print the interest profiles of some users of a saved model.

Registered by :mod:`agent.cli.main` (``app.command("profile")(profile)``). The model folder is one
written by ``hyrec fit``; its saved dataset snapshot gives each user's history. The LLM is whatever
:func:`agent.llm.connect.connect` finds (a configured server, else the embedded llama.cpp
server); when none can be reached the profiles are the deterministic ones, and the command says so.
"""

from __future__ import annotations

import json as jsonlib
import logging
from pathlib import Path
from typing import Annotated

import numpy as np
import platformdirs
import typer
from rich.console import Console
from rich.table import Table

err = Console(stderr=True, soft_wrap=True)  # no hard line breaks in messages


def _fail(message: str) -> None:
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code=2)


def profile(
    model_dir: Annotated[Path, typer.Option(help="A folder written by `hyrec fit`.")],
    users: Annotated[str, typer.Option(help="Comma-separated user ids, e.g. 1,2,3.")],
    json: Annotated[bool, typer.Option("--json", help="Print a JSON list of profiles.")] = False,
    no_llm: Annotated[
        bool, typer.Option("--no-llm", help="Deterministic profiles only; do not start an LLM.")
    ] = False,
) -> None:
    """Interest profiles (likes, dislikes, recent shift, constraints, summary) of some users."""
    from agent.llm import LLMUnavailable
    from agent.stages.history_profiles import HistoryProfiles
    from agent.stages.profiles import ProfileConfig, ProfileService
    from hyrec.data import History
    from hyrec.data.snapshot import load_snapshot

    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    if not (model_dir / "hybrid.json").is_file() or not (model_dir / "data").is_dir():
        _fail(f"{model_dir} is not a saved model folder (run `hyrec fit --out {model_dir}`)")
    wanted = [u.strip() for u in users.split(",") if u.strip()]
    if not wanted:
        _fail("--users needs at least one user id, e.g. --users 1,2,3")
    ds = load_snapshot(model_dir / "data")
    unknown = [u for u in wanted if u not in ds.user_index]
    if unknown:
        _fail(f"unknown user id(s) {unknown[:5]} in {ds.name} ({ds.n_users} users)")

    handle, llm = None, None
    if not no_llm:
        from agent.llm.connect import connect

        try:
            with err.status("connecting to the LLM…"):
                handle = connect()
            llm = handle.llm
        except LLMUnavailable as e:
            err.print(f"[yellow]no LLM reachable ({e}); printing deterministic profiles[/]")
    try:
        cache = Path(platformdirs.user_cache_dir("hyrec")) / "profiles"
        service = ProfileService(llm, cache_dir=cache, config=ProfileConfig(show_progress=False))
        rows = np.array([ds.user_index[u] for u in wanted], dtype=np.int64)
        history = History.from_interactions(ds.interactions, rows, ds.n_items, n_users=ds.n_users)
        found = HistoryProfiles(service, ds).profiles(history)
    finally:
        if handle is not None:
            handle.close()
    out = [
        {"user_id": u, **(p.model_dump() if p is not None else {"summary": "no history"})}
        for u, p in zip(wanted, found, strict=True)
    ]
    fallbacks = {p.fallback_reason for p in found if p is not None and p.fallback_reason}
    for reason in sorted(fallbacks):
        err.print(f"[yellow]fallback profile used: {reason}[/]")
    if json:
        print(jsonlib.dumps(out, ensure_ascii=False))
        return
    table = Table(title=f"interest profiles ({ds.name})", show_lines=True)
    for col in ("user", "source", "likes", "dislikes", "recent shift", "constraints", "summary"):
        table.add_column(col)
    for row in out:
        table.add_row(
            row["user_id"],
            row.get("source", "–"),
            ", ".join(row.get("likes", [])),
            ", ".join(row.get("dislikes", [])),
            row.get("recent_shift", ""),
            ", ".join(row.get("constraints", [])),
            row.get("summary", ""),
        )
    Console().print(table)
