"""The report's figures, drawn from the report dict (metrics.json) alone, headless (Agg).

One function per figure, each taking the report dict and writing one PNG:

- :func:`plot_ndcg` (``ndcg.png``): test NDCG@10 per model, mean ± sd over seeds, each seed a dot;
- :func:`plot_tradeoff` (``tradeoff.png``): NDCG@10 against ILD@10 of MMR's λ sweep over the
  hybrid's top 20, the head's own top 10 and, when the report folder had ``llm_ablation.json``, the
  LLM re-ranker (``report["tradeoff"]``, see :mod:`eval.tradeoff`);
- :func:`plot_activity` (``activity.png``): NDCG@10 per model by user-activity bucket
  (``report["activity"]``).

The harness calls :func:`draw_all` and :func:`markdown` when it writes report.md. To re-draw from an
existing report folder (nothing else is written)::

    python -m eval.plots --report eval/results/ml-100k [--out DIR]

A metrics.json written before the trade-off and activity numbers existed gives only ``ndcg.png``;
the command says which figure needs a re-run of ``hyrec eval``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: no display on the machines that run the harness

import matplotlib.pyplot as plt  # noqa: E402

from eval.tradeoff import add_llm_point  # noqa: E402

DPI = 120
HIGHLIGHT = "hybrid"


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _seeds_text(report: dict[str, Any]) -> str:
    """The seeds a row is over: "mean ± sd over seeds 0–2", or "seed 0" (one fit each)."""
    seeds = report.get("model_seeds") or [0]
    return f"seed {seeds[0]}" if len(seeds) == 1 else f"mean ± sd over seeds {seeds[0]}–{seeds[-1]}"


def plot_ndcg(report: dict[str, Any], path: Path) -> Path:
    """Bars of test NDCG@10 per model (the mean over seeds), ± its sd between seeds as error bars
    and each seed's own value as a dot; models fitted once have neither."""
    models = report["models"]
    names = list(models)
    means = [models[n]["ndcg@10"] for n in names]
    sds = [models[n].get("ndcg@10_sd", 0.0) for n in names]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.75 * len(names) + 2.5), 4.6))
    colors = ["tab:orange" if n == HIGHLIGHT else "tab:blue" for n in names]
    ax.bar(names, means, color=colors)
    seeded = [x for x, n in enumerate(names) if "ndcg@10_sd" in models[n]]
    ax.errorbar(
        seeded, [means[x] for x in seeded], [sds[x] for x in seeded], fmt="none", ecolor="k",
        capsize=4, elinewidth=1.2,
    )  # fmt: skip
    for x, name in enumerate(names):
        per_seed = [f["ndcg@10"] for f in models[name].get("per_seed", [])]
        ax.plot([x] * len(per_seed), per_seed, "k.", markersize=5, zorder=3)
        ax.annotate(
            f"{means[x]:.3f}",
            (x, means[x] + sds[x]),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            fontsize=8,
        )
    fp = report.get("dataset", {})
    users = next(iter(models.values()), {}).get("users", "?")
    ax.set_title(
        f"{fp.get('name', '')}: test NDCG@10 per model, {users} users\n"
        f"seeded models: {_seeds_text(report)}, dots: each seed",
        fontsize=10,
    )
    ax.set_ylabel("NDCG@10")
    ax.set_ylim(0, max(m + s for m, s in zip(means, sds, strict=True)) * 1.15 or 1.0)
    ax.tick_params(axis="x", labelrotation=30)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_tradeoff(report: dict[str, Any], path: Path) -> Path:
    """NDCG@10 against ILD@10: MMR's λ curve, the head and (when present) the LLM re-ranker."""
    t = report["tradeoff"]
    curve = t["mmr"]
    fig, ax = plt.subplots(figsize=(7.0, 5.0))
    xs, ys = [p["ild@10"] for p in curve], [p["ndcg@10"] for p in curve]
    ax.plot(xs, ys, "-o", color="tab:blue", markersize=5, label="MMR over the head's top 20")
    head, llm = t["head"], t.get("llm")
    every = [*curve, head, *([llm, llm.get("head")] if llm else [])]  # what sets the axes
    every = [p for p in every if p]
    for n, ((lam_first, lam_last), (x, y)) in enumerate(_lambda_labels(curve, every)):
        ax.annotate(
            f"λ={lam_first:g}" if lam_first == lam_last else f"λ={lam_first:g}–{lam_last:g}",
            (x, y),
            xytext=(6, 4 if n % 2 == 0 else -11),  # alternate above / below: neighbours crowd
            textcoords="offset points",
            fontsize=7,
            color="tab:blue",
        )
    ax.plot(
        head["ild@10"],
        head["ndcg@10"],
        "*",
        color="tab:orange",
        markersize=16,
        markeredgecolor="k",
        label="head alone: the hybrid's top 10 (= MMR λ=1)",
        zorder=4,
    )
    if llm:
        n = llm.get("users") or "?"
        ax.plot(
            llm["ild@10"], llm["ndcg@10"], "D", color="tab:red", markersize=8, zorder=4,
            label=f"LLM re-ranker ({llm.get('llm') or 'LLM'}; {n}-user ablation)",
        )  # fmt: skip
        if llm.get("head"):
            h = llm["head"]
            ax.plot(
                h["ild@10"], h["ndcg@10"], "D", markerfacecolor="none", markeredgecolor="tab:red",
                markersize=8, label=f"its head on the same {n} users",
            )  # fmt: skip
            ax.annotate(
                "",
                (llm["ild@10"], llm["ndcg@10"]),
                (h["ild@10"], h["ndcg@10"]),
                arrowprops={"arrowstyle": "->", "color": "tab:red", "linestyle": "--"},
            )
    vectors = report.get("protocol", {}).get("ild_vectors", "item vectors")
    ax.set_xlabel(f"ILD@10 (1 − mean pairwise cosine, {vectors})")
    ax.set_ylabel("NDCG@10")
    seed = t.get("seed", 0)
    ax.set_title(
        f"Accuracy–diversity trade-off: {t.get('model', 'hybrid')} (seed {seed}), "
        f"{t['users']} test users",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _save(fig, path)


def _lambda_labels(
    curve: list[dict[str, Any]], every: list[dict[str, Any]], near: float = 0.03
) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    """One label per run of consecutive λ whose points lie within ``near`` (a share of the plotted
    range) of the run's first point: ((first λ, last λ), where to put the label)."""
    span = [
        (max(p[k] for p in every) - min(p[k] for p in every)) or 1.0 for k in ("ild@10", "ndcg@10")
    ]
    runs: list[list[dict[str, Any]]] = []
    for p in curve:
        first = runs[-1][0] if runs else None
        if first is not None and all(
            abs(p[k] - first[k]) <= near * s
            for k, s in zip(("ild@10", "ndcg@10"), span, strict=True)
        ):
            runs[-1].append(p)
        else:
            runs.append([p])
    return [((r[0]["lambda"], r[-1]["lambda"]), (r[0]["ild@10"], r[0]["ndcg@10"])) for r in runs]


def plot_activity(report: dict[str, Any], path: Path) -> Path:
    """Grouped bars: NDCG@10 per activity bucket, one bar per model (± sd between seeds)."""
    a = report["activity"]
    buckets = list(a["buckets"])
    models = list(a["ndcg@10"])
    width = 0.8 / max(len(models), 1)
    fig, ax = plt.subplots(figsize=(max(7.0, 1.0 + 0.3 * len(models) * len(buckets)), 4.8))
    cmap = plt.get_cmap("tab10" if len(models) <= 10 else "tab20")
    for j, model in enumerate(models):
        vals = [a["ndcg@10"][model].get(b) for b in buckets]
        sd = a["ndcg@10_sd"].get(model)
        xs = [i - 0.4 + width * (j + 0.5) for i in range(len(buckets))]
        heights = [v if v is not None else 0.0 for v in vals]
        ax.bar(
            xs,
            heights,
            width,
            color=cmap(j % cmap.N),
            edgecolor="k" if model == HIGHLIGHT else "none",
            linewidth=1.2,
            label=model,
        )
        if sd:  # seeded models only
            yerr = [sd.get(b) or 0.0 for b in buckets]
            ax.errorbar(xs, heights, yerr, fmt="none", ecolor="k", capsize=2, elinewidth=0.8)
    labels = [f"{b}\n{a['buckets'][b]['range']}\n{a['buckets'][b]['users']} users" for b in buckets]
    ax.set_xticks(range(len(buckets)), labels)
    ax.set_ylabel("NDCG@10")
    ax.set_title(
        f"Test NDCG@10 by user activity (terciles of history length; {_seeds_text(report)})",
        fontsize=10,
    )
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=1, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _save(fig, path)


#: name → (file, what report.md says about it, report key it needs, drawing function)
FIGURES: dict[str, tuple[str, str, str, Callable[[dict[str, Any], Path], Path]]] = {
    "ndcg": ("ndcg.png", "Test NDCG@10 per model, mean ± sd over seeds", "models", plot_ndcg),
    "tradeoff": (
        "tradeoff.png",
        "NDCG@10 against ILD@10: MMR λ sweep over the hybrid's top 20",
        "tradeoff",
        plot_tradeoff,
    ),
    "activity": ("activity.png", "NDCG@10 by user activity", "activity", plot_activity),
}

_MISSING = {
    "models": "no models in metrics.json",
    "tradeoff": "metrics.json has no `tradeoff`: re-run `hyrec eval` with hybrid among --models",
    "activity": "metrics.json has no `activity`: re-run `hyrec eval` (this version) to get it",
}


def draw_all(report: dict[str, Any], folder: Path) -> dict[str, Path | str]:
    """Every figure the report has the numbers for, written into ``folder``: name → the PNG's
    path, or why it was not drawn."""
    out: dict[str, Path | str] = {}
    for name, (file, _, key, draw) in FIGURES.items():
        out[name] = draw(report, Path(folder) / file) if report.get(key) else _MISSING[key]
    return out


def markdown(report: dict[str, Any], drawn: dict[str, Path | str]) -> list[str]:
    """report.md's "Plots" section: each drawn figure linked, with the numbers behind the
    trade-off and activity figures as tables."""
    lines = ["", "## Plots"]
    for name, (file, alt, _, _) in FIGURES.items():
        result = drawn.get(name)
        if isinstance(result, Path):
            lines += ["", f"![{alt}]({file})"]
            lines += _TABLES.get(name, lambda _r: [])(report)
        elif result:
            lines += ["", f"`{file}` not drawn: {result}."]
    return lines


def _tradeoff_table(report: dict[str, Any]) -> list[str]:
    t = report["tradeoff"]
    lines = ["", f"{t['rule']}; {t['users']} test users.", "", "| list | ndcg@10 | ild@10 |"]
    lines.append("|---|---|---|")
    rows = [("head alone", t["head"]), *((f"MMR λ={p['lambda']:g}", p) for p in t["mmr"])]
    if t.get("llm"):
        llm = t["llm"]
        rows.append((f"LLM re-ranker ({llm.get('users')}-user ablation, {llm['source']})", llm))
        if llm.get("head"):
            rows.append(("its head on the same users", llm["head"]))
    lines += [f"| {name} | {p['ndcg@10']:.4f} | {p['ild@10']:.4f} |" for name, p in rows]
    return lines


def _activity_table(report: dict[str, Any]) -> list[str]:
    """Buckets as rows, models as columns (model rows would read as rows of the main table)."""
    a = report["activity"]
    models = list(a["ndcg@10"])
    lines = ["", f"Buckets: {a['rule']}.", "", "| bucket | users | " + " | ".join(models) + " |"]
    lines.append("|---|---|" + "---|" * len(models))
    for b, info in a["buckets"].items():
        vals = [a["ndcg@10"][m].get(b) for m in models]
        cells = ["–" if v is None else f"{v:.4f}" for v in vals]
        lines.append(f"| {b} ({info['range']}) | {info['users']} | " + " | ".join(cells) + " |")
    return lines


_TABLES: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "tradeoff": _tradeoff_table,
    "activity": _activity_table,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m eval.plots", description="Re-draw a report's PNGs from its metrics.json."
    )
    parser.add_argument("--report", type=Path, required=True, help="Folder holding metrics.json.")
    parser.add_argument("--out", type=Path, help="Where to write the PNGs (default: --report).")
    args = parser.parse_args(argv)
    source = args.report / "metrics.json"
    if not source.exists():
        print(f"error: {source} does not exist", file=sys.stderr)
        return 2
    report = json.loads(source.read_text())
    add_llm_point(report, args.report)  # in memory only: metrics.json is left as it is
    for name, result in draw_all(report, args.out or args.report).items():
        print(f"wrote {result}" if isinstance(result, Path) else f"{name}: not drawn: {result}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
