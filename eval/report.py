"""The harness's report files: ``metrics.json``, the PNGs of :mod:`eval.plots` and ``report.md``
(:func:`write_report`), a markdown table of the models' metrics (:data:`REPORT_COLUMNS`), with a
"Per seed" table (:data:`PER_SEED_COLUMNS`) when a model was fitted from several seeds, and the
plots linked.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eval import plots, tradeoff

#: The columns of report.md's model table.
REPORT_COLUMNS = (
    "valid_ndcg@10",
    "ndcg@10",
    "hr@10",
    "mrr@10",
    "ndcg@20",
    "hr@20",
    "coverage@10",
    "ild@10",
    "novelty@10",
    "gini@10",
    "fit_seconds",
    "seconds_per_epoch",
    "eval_seconds",
)
#: The "Per seed" table of report.md.
PER_SEED_COLUMNS = (
    "seed",
    "valid_ndcg@10",
    "ndcg@10",
    "hr@10",
    "fit_seconds",
    "epochs",
    "best_epoch",
    "seconds_per_epoch",
)


def write_report(
    report: dict[str, Any], folder: Path, columns: Sequence[str] = REPORT_COLUMNS
) -> None:
    """metrics.json, the PNGs of :mod:`eval.plots` and report.md: a markdown table of ``columns``
    (missing values shown as –) and the plots, linked."""
    folder.mkdir(parents=True, exist_ok=True)
    tradeoff.add_llm_point(report, folder)  # the folder's LLM ablation, if any, joins the trade-off
    (folder / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    fp, proto = report["dataset"], report["protocol"]
    seeded = {n: m for n, m in report["models"].items() if "per_seed" in m}
    if seeded:  # the spread next to the mean it qualifies
        at = list(columns).index("ndcg@10") + 1 if "ndcg@10" in columns else len(columns)
        columns = (*columns[:at], "ndcg@10_sd", *columns[at:], "seeds")
    lines = [
        f"# {fp['name']}: {fp['n_users']} users, {fp['n_items']} items, "
        f"{fp['n_interactions']} interactions",
        "",
        "Protocol: "
        + "; ".join(f"{k}: {v}" for k, v in proto.items())
        + f"; user-sample seed {report['seed']}.",
        "",
    ]
    if report.get("text_encoder"):
        enc = report["text_encoder"]
        lines += [
            f"Item text: {enc['model']}, {enc['embedded']} items embedded and "
            f"{enc['from_cache']} read from the cache in {enc['seconds']} s.",
            "",
        ]
    machine = report.get("machine", {})
    if seeded:
        seeds = report.get("model_seeds", [])
        lines += [
            f"Seeded models are fitted from seeds {', '.join(map(str, seeds))}; a row is the mean "
            "over those fits (`ndcg@10_sd`: the spread between seeds), per-seed rows below. "
            f"{report.get('jobs', 1)} fit(s) ran at a time on {machine.get('cpus', '?')} CPUs.",
            "",
        ]
    lines += [
        "| model | " + " | ".join(columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for name, m in report["models"].items():
        cells = [_cell(m.get(c)) for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if seeded:
        lines += [
            "",
            "## Per seed",
            "",
            "| model | " + " | ".join(PER_SEED_COLUMNS) + " |",
            "|---|" + "---|" * len(PER_SEED_COLUMNS),
        ]
        for name, m in seeded.items():
            for f in m["per_seed"]:
                cells = [_cell(f.get(c)) for c in PER_SEED_COLUMNS]
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += plots.markdown(report, plots.draw_all(report, folder))
    (folder / "report.md").write_text("\n".join(lines) + "\n")


def _cell(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, list):
        return ", ".join(map(str, v))
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)
