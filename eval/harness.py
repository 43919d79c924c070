"""The offline evaluation harness: fit named models on a split, rank the full catalogue, write a
report.

``run_eval`` is what ``hyrec eval`` and ``python -m eval`` call. It writes
``<out>/<dataset>/metrics.json``
(protocol, dataset fingerprint, seed, per-model metrics with fit/eval seconds) and ``report.md``.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from encoders.base import FitData, Scorer
from encoders.registry import SCORERS, TEXT_SCORERS
from encoders.text import TextEncoder, TextEncoderConfig
from hyrec.data import Dataset, Split, leave_one_out, load_dataset, temporal_split, to_implicit
from hyrec.metrics import evaluate
from retrieval.hybrid import HybridRecommender

log = logging.getLogger(__name__)

#: Model name → constructor with the defaults chosen on validation: every scorer plus the hybrid.
MODELS: dict[str, Callable[[], Scorer]] = {**SCORERS, "hybrid": HybridRecommender}
#: Models that read item text embeddings (FitData.item_embeddings).
TEXT_MODELS = TEXT_SCORERS | {"hybrid"}

REPORT_COLUMNS = (
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
    "eval_seconds",
)


@dataclass(frozen=True)
class EvalConfig:
    dataset: str = "ml-100k"
    models: tuple[str, ...] = ("pop", "itemknn", "als", "bpr")
    data_dir: str | None = None
    split: str = "loo"  # "loo" (leave-one-out by time) or "temporal" (global time cut)
    min_rating: float | None = None  # None: every rating is an interaction
    users: int | None = None  # evaluate a seeded sample of this many users (None: all)
    seed: int = 0
    ks: tuple[int, ...] = (10, 20)
    text_model: str | None = (
        "minilm"  # item text encoder (ILD + text models); None: attributes only
    )
    extra: dict[str, Any] = field(default_factory=dict)


def attribute_vectors(ds: Dataset) -> np.ndarray:
    """Multi-hot item vectors over attribute values (genres, tags, category, brand) for ILD."""
    vocab: dict[str, int] = {}
    rows, cols = [], []
    for i, item in enumerate(ds.items):
        for key in ("genres", "tags", "categories", "category", "brand"):
            values = item.attributes.get(key) or []
            for v in [values] if isinstance(values, str) else values:
                rows.append(i)
                cols.append(vocab.setdefault(f"{key}={v}", len(vocab)))
    out = np.zeros((ds.n_items, max(len(vocab), 1)), np.float32)
    out[rows, cols] = 1.0
    return out


def make_split(ds: Dataset, config: EvalConfig) -> Split:
    if config.min_rating is not None:
        ds = to_implicit(ds, config.min_rating)
    if config.split == "loo":
        return leave_one_out(ds)
    if config.split == "temporal":
        return temporal_split(ds)
    raise ValueError(f"unknown split {config.split!r}; use 'loo' or 'temporal'")


def sample_users(n_total: int, n: int | None, seed: int) -> np.ndarray | None:
    """Row positions of a seeded sample of ``n`` users (``None`` = everyone)."""
    if n is None or n >= n_total:
        return None
    return np.sort(np.random.default_rng(seed).choice(n_total, size=n, replace=False))


def run_eval(config: EvalConfig, out: Path | None = None) -> dict[str, Any]:
    """Fit and evaluate ``config.models``; write metrics.json and report.md under
    ``out/<dataset>/``."""
    unknown = [m for m in config.models if m not in MODELS]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; choose from {sorted(MODELS)}")
    needs_text = sorted(TEXT_MODELS.intersection(config.models))
    if needs_text and config.text_model is None:
        raise ValueError(f"model(s) {needs_text} read item text: give a text model")
    ds = load_dataset(config.dataset, config.data_dir)
    split = make_split(ds, config)
    embeddings, encoder_info = None, None
    if config.text_model is not None:
        encoder = TextEncoder(TextEncoderConfig(model=config.text_model))
        t0 = time.perf_counter()
        embeddings = encoder.encode_items(ds.items)
        encoder_info = {
            "model": encoder.model_id,
            "embedded": encoder.last_encoded,
            "from_cache": len(ds.items) - encoder.last_encoded,
            "seconds": round(time.perf_counter() - t0, 3),
        }
    data = FitData(ds, split.train, split.task("valid"), item_embeddings=embeddings)
    test = split.task("test")
    rows = sample_users(len(test), config.users, config.seed)
    if rows is not None:
        test = test.subset(rows)
    vectors = embeddings if embeddings is not None else attribute_vectors(ds)
    results: dict[str, Any] = {}
    for name in tqdm(config.models, desc="models", unit="model"):
        model = MODELS[name]()
        t0 = time.perf_counter()
        model.fit(data)
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        metrics = evaluate(
            model.score,
            test,
            config.ks,
            item_vectors=vectors,
            item_popularity=data.item_popularity,
            n_train_users=ds.n_users,
        )
        eval_s = time.perf_counter() - t0
        results[name] = {
            **training_summary(model, fit_s),
            **_rounded(metrics),
            "fit_seconds": round(fit_s, 3),
            "eval_seconds": round(eval_s, 3),
        }
        log.info(
            "%s: ndcg@10 %.4f (fit %.1fs, eval %.2fs)", name, metrics["ndcg@10"], fit_s, eval_s
        )
    report = {
        "protocol": {
            **split.protocol,
            "ranking": "full catalogue, observed items excluded",
            "interactions": "all ratings"
            if config.min_rating is None
            else f"rating >= {config.min_rating}",
            "users": "all" if rows is None else f"seeded sample of {len(rows)}",
            "ild_vectors": "item text embeddings" if embeddings is not None else "item attributes",
            "ks": list(config.ks),
        },
        "dataset": ds.fingerprint(),
        "seed": config.seed,
        "machine": {"python": platform.python_version(), "processor": platform.machine()},
        "text_encoder": encoder_info,
        "models": results,
    }
    if out is not None:
        write_report(report, Path(out) / config.dataset)
    return report


def training_summary(model: Scorer, fit_seconds: float) -> dict[str, Any]:
    """Epoch counts and seconds per epoch of iterative models; the hybrid's own fit report."""
    out: dict[str, Any] = {}
    epochs = getattr(model, "epochs_run", None)
    if epochs:
        out["epochs"] = epochs
        out["best_epoch"] = getattr(model, "best_epoch", None)
        out["seconds_per_epoch"] = round(fit_seconds / epochs, 3)
    if getattr(model, "fit_report", None):
        out["fit_report"] = model.fit_report
    return out


def _rounded(metrics: dict[str, float]) -> dict[str, float]:
    return {k: (int(v) if k == "users" else round(v, 5)) for k, v in metrics.items()}


def write_report(
    report: dict[str, Any], folder: Path, columns: Sequence[str] = REPORT_COLUMNS
) -> None:
    """metrics.json plus a markdown table of ``columns`` (missing values shown as –)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    fp, proto = report["dataset"], report["protocol"]
    lines = [
        f"# {fp['name']}: {fp['n_users']} users, {fp['n_items']} items, "
        f"{fp['n_interactions']} interactions",
        "",
        "Protocol: "
        + "; ".join(f"{k}: {v}" for k, v in proto.items())
        + f"; seed {report['seed']}.",
        "",
        "| model | " + " | ".join(columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for name, m in report["models"].items():
        cells = [_cell(m.get(c)) for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    (folder / "report.md").write_text("\n".join(lines) + "\n")


def _cell(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)
