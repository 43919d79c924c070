"""``hyrec tune``: search the hybrid's settings on a dataset's validation split under a budget, and
write the winner into a model folder (``tuned.json``, ``tuning_history.json`` and its plot
``tuning_history.png``). ``hyrec fit --tune BUDGET`` runs the same search before fitting; ``hyrec
fit --config tuned.json`` reuses a saved result. The search itself is :mod:`retrieval.tuning`."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Annotated, Any

import typer

from hyrec.data import DataError

log = logging.getLogger(__name__)

_UNITS = {"s": 1, "m": 60, "h": 3600}


def parse_budget(text: str) -> float:
    """Seconds of a wall-time budget written ``90s``, ``30m``, ``1.5h`` or ``1h30m``.

    Raises:
        ValueError: anything else (the message shows the accepted forms).
    """
    parts = re.fullmatch(r"\s*((?:\d+(?:\.\d+)?\s*[smh]\s*)+)", text.lower())
    if not parts:
        raise ValueError(f"budget {text!r}: write it as 90s, 30m, 1.5h or 1h30m")
    seconds = sum(
        float(n) * _UNITS[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)\s*([smh])", parts[1])
    )
    if seconds <= 0:
        raise ValueError(f"budget {text!r} is no time at all")
    return seconds


def run_tune(
    dataset: str,
    data_dir: Path | None,
    text_model: str,
    out: Path,
    base: Any,
    budget: str | None,
    trials: int | None,
) -> tuple[Any, dict[str, Path]]:
    """Tune ``base`` (a HybridConfig) on ``dataset``'s leave-one-out validation split and write
    the results into ``out``. The split's test task is never built: tuning cannot read it.

    Returns:
        (TuneResult, the written files by name: tuned, history, plot).
    """
    from encoders.text import TextEncoder, TextEncoderConfig
    from hyrec.data import load_dataset
    from retrieval.tuned import save_tuned
    from retrieval.tuning import TuneConfig, tune, tuning_data

    config = TuneConfig(
        budget_seconds=None if budget is None else parse_budget(budget), trials=trials
    )
    ds = load_dataset(dataset, data_dir)
    encoder = TextEncoder(TextEncoderConfig(model=text_model, show_progress=False))
    result = tune(tuning_data(ds, encoder.encode_items(ds.items)), base, config)
    search = {
        "dataset": ds.fingerprint(),
        "split": "leave-one-out: train + validation (the second-last event); test never read",
        "budget": budget,
        "budget_seconds": config.budget_seconds,
        "trials_per_stage": trials,
        "sampler": f"TPE (seed {config.seed}, {config.startup_trials} random trials first)",
        "pruner": f"median (after {config.prune_after} trials, {config.warmup_epochs} epochs)",
        "shares": dict(config.shares),
        "text_model": text_model,
    }
    paths = save_tuned(result, out, search)
    paths["plot"] = plot_history(result.history, result.best, out / "tuning_history.png")
    return result, paths


def plot_history(history: list[dict], best: dict, path: Path) -> Path:
    """One panel per stage: each trial's validation NDCG@10 against the time it ended (pruned
    trials as crosses at their last reported epoch), the best so far as a step line; the final
    check's panel has its hybrid fits, the untuned and the tuned hybrid as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = list(dict.fromkeys(r["stage"] for r in history)) or ["(no trials)"]
    fig, axes = plt.subplots(1, len(stages), figsize=(3.6 * len(stages) + 1, 3.6), squeeze=False)
    for ax, stage in zip(axes[0], stages, strict=True):
        rows = [r for r in history if r["stage"] == stage]
        done = [r for r in rows if r["state"] == "COMPLETE"]
        pruned = [r for r in rows if r["state"] == "PRUNED" and r["curve"]]
        ax.plot([r["ended_at"] / 60 for r in done], [r["value"] for r in done], "o", ms=4)
        ax.plot(
            [r["ended_at"] / 60 for r in pruned],
            [list(r["curve"].values())[-1] for r in pruned],
            "x",
            color="tab:red",
            ms=5,
            label="pruned (last epoch)" if pruned else None,
        )
        running, xs, ys = -1.0, [], []
        for r in done:
            running = max(running, r["value"])
            xs.append(r["ended_at"] / 60)
            ys.append(running)
        ax.step(xs, ys, where="post", color="tab:orange", label="best so far")
        info = best.get(stage, {})
        default = info.get("default_valid_ndcg@10")
        if default is not None:
            ax.axhline(default, color="grey", ls=":", lw=1, label="defaults")
        tuned = info.get("tuned_valid_ndcg@10")  # the check: the tuned hybrid, not refitted
        if tuned is not None:
            ax.axhline(tuned, color="tab:green", ls="--", lw=1, label="tuned hybrid")
        ax.set_title(f"{stage} ({len(rows)} trials)", fontsize=10)
        ax.set_xlabel("minutes into the search")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("validation NDCG@10")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def tune_command(
    out: Annotated[Path, typer.Option(help="Model folder to write tuned.json and the history.")],
    dataset: Annotated[str, typer.Option(help="Dataset name, e.g. ml-100k.")] = "ml-100k",
    data_dir: Annotated[Path | None, typer.Option(help="The dataset's own folder.")] = None,
    budget: Annotated[
        str | None, typer.Option(help="Wall time for the whole search: 30m, 1h, 90s.")
    ] = None,
    trials: Annotated[
        int | None, typer.Option(help="At most this many trials per stage (components, head).")
    ] = None,
    profile: Annotated[
        str, typer.Option(help="Fit profile to start from: full or quick.")
    ] = "full",
    text_model: Annotated[
        str, typer.Option(help="Item text encoder (default: packaged MiniLM).")
    ] = "minilm",
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Search each component's and the head's settings on the validation split (Optuna TPE,
    median pruning of epoch curves) within --budget and/or --trials; write tuned.json, the trial
    history and its plot to --out. Then: hyrec fit --config OUT/tuned.json."""
    from agent.cli.main import _fail, _profile, _setup_logging, console

    _setup_logging(verbose)
    logging.getLogger("retrieval.tuning").setLevel(logging.INFO)  # one line per trial
    if budget is None and trials is None:
        _fail("give a budget: --budget 30m (wall time) and/or --trials N (per stage)")
    if trials is not None and trials < 1:
        _fail(f"--trials must be at least 1, got {trials}")
    base = _profile(profile).hybrid
    try:
        result, paths = run_tune(dataset, data_dir, text_model, out, base, budget, trials)
    except (DataError, ValueError) as e:
        _fail(str(e))
        raise  # unreachable: _fail exits
    show_result(result)
    console.print(f"wrote {', '.join(str(p) for p in paths.values())}")


def tuned_hybrid(
    dataset: str,
    data_dir: Path | None,
    text_model: str,
    out: Path,
    base: Any,
    tune: str | None,
    config: Path | None,
) -> Any:
    """The HybridConfig ``hyrec fit`` fits: ``base``, or a saved tuned config (``--config``),
    or the result of a search run now (``--tune BUDGET``, saved into ``out`` beside the model)."""
    from agent.cli.main import _fail, console
    from retrieval.tuned import load_tuned

    if tune is not None and config is not None:
        _fail("--tune searches anew and --config reuses a saved search: give one of them")
    try:
        if config is not None:
            return load_tuned(config)
        if tune is None:
            return base
        logging.getLogger("retrieval.tuning").setLevel(logging.INFO)
        result, paths = run_tune(dataset, data_dir, text_model, out, base, tune, None)
    except (DataError, ValueError, FileNotFoundError) as e:
        _fail(str(e))
        raise  # unreachable: _fail exits
    show_result(result)
    console.print(f"wrote {', '.join(str(p) for p in paths.values())}; fitting the tuned config")
    return result.config


def show_result(result: Any) -> None:
    """The per-stage table: default vs best validation NDCG@10, trials, and what was chosen; the
    last row is the final check (its defaults: the untuned hybrid; its best: the one kept)."""
    from rich.table import Table

    from agent.cli.main import console

    table = Table(title=f"hyrec tune: {result.seconds / 60:.1f} min, validation NDCG@10")
    for col in ("stage", "trials", "defaults", "best", "chosen"):
        table.add_column(col)
    chosen = {**{k: dict(v) for k, v in result.config.params.items()}}
    for stage, info in result.best.items():
        if stage == "check":  # the final check: the hybrid kept, and what it reverted
            reverted = info["reverted"]
            picked = f"{info['winner']} (tuned hybrid {_num(info['tuned_valid_ndcg@10'])}" + (
                f"; defaults kept for {', '.join(reverted)})" if reverted else ")"
            )
        else:
            fields = chosen.get(stage) if stage != "head" else _head_fields(result.config)
            picked = ", ".join(f"{k}={_short(v)}" for k, v in (fields or {}).items())
        table.add_row(
            stage,
            str(info["trials"]),
            _num(info["default_valid_ndcg@10"]),
            _num(info["best_valid_ndcg@10"]),
            picked,
        )
    console.print(table)


def _head_fields(config: Any) -> dict[str, Any]:
    from retrieval.hybrid import HEAD_SEARCH_SPACE

    return {k: getattr(config, k) for k in HEAD_SEARCH_SPACE}


def _num(v: float | None) -> str:
    return "–" if v is None else f"{v:.4f}"


def _short(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)
