"""The LLM-stage ablation's report (:mod:`eval.bench_llm`): ``llm_ablation.json`` and the markdown
table ``llm_ablation.md`` (:func:`write`, columns :data:`COLUMNS` and the re-ranker's latency and
validity), and the small conversions its rows are made with: a latency percentile in milliseconds
(:func:`percentile_ms`), the load averages as text (:func:`load_averages`) and stats with their
counters as plain dicts (:func:`plain`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

COLUMNS = ("ndcg@10", "hr@10", "ild@10", "coverage@10")


def percentile_ms(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile of ``values`` (seconds) in milliseconds; ``None`` for none."""
    return round(float(np.percentile(values, q)) * 1000, 1) if values else None


def load_averages() -> str:
    """The 1-, 5- and 15-minute load averages, or ``"unknown"``."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def plain(stats: dict[str, Any]) -> dict[str, Any]:
    """``stats`` with its counters (dict subclasses) as plain dicts, for JSON."""
    return {k: dict(v) if isinstance(v, dict) else v for k, v in stats.items()}


def write(report: dict[str, Any], folder: Path) -> None:
    """``llm_ablation.json`` and a markdown table ``llm_ablation.md``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "llm_ablation.json").write_text(json.dumps(report, indent=2) + "\n")
    cols = [*COLUMNS, "users", "llm_validity_error_rate", "rerank_p50_ms", "rerank_p99_ms"]
    lines = [
        f"# LLM-stage ablation on {report['dataset']['name']} (LLM: {report['llm']})",
        "",
        "; ".join(f"{k}: {v}" for k, v in report["protocol"].items()) + ".",
        f"Hybrid components: {', '.join(report['config']['components'])}.",
        "",
        "| row | " + " | ".join(cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for name, row in report["rows"].items():
        cells = ["–" if row.get(c) is None else str(row.get(c)) for c in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if report["profile_stats"]:
        lines += ["", "Profiles: " + json.dumps(report["profile_stats"])]
    (folder / "llm_ablation.md").write_text("\n".join(lines) + "\n")
