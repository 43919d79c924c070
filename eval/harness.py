"""The offline evaluation harness: fit named models on a split, rank the full catalogue, write a
report.

``run_eval`` is what ``hyrec eval`` and ``python -m eval`` call. It writes
``<out>/<dataset>/metrics.json`` (protocol, dataset fingerprint, seed, per-model metrics with
fit/eval seconds, the plots' ``activity`` and ``tradeoff`` numbers from :mod:`eval.tradeoff`), the
PNGs of :mod:`eval.plots` and ``report.md``, which links them (written by :mod:`eval.report`).

Seeds: a model whose fit depends on a seed (``config.seed``: ALS, BPR, LightGCN, SASRec, the
hybrid) can be fitted ``seeds`` times, from seeds 0, 1, …; its row is then the mean over those fits,
with the spread (sd) of NDCG@10 and every fit's own numbers in ``per_seed``. On ML-100K two SASRec
fits that differ only in their seed differ by up to 0.019 test NDCG@10, more than many gaps between
models, so a single-seed comparison of trained models can point either way. Models without a seed
(pop, ItemKNN, semantic) are fitted once. ``jobs`` > 1 runs fits in that many worker processes.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import platform
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from encoders.base import FitData, Scorer, is_seeded, with_seed
from encoders.registry import SCORERS, TEXT_SCORERS
from encoders.text import TextEncoder, TextEncoderConfig
from eval import tradeoff
from eval.report import write_report
from hyrec.data import Dataset, Split, leave_one_out, load_dataset, temporal_split, to_implicit
from hyrec.metrics import evaluate
from hyrec.threads import limit_blas
from retrieval.hybrid import HybridRecommender

log = logging.getLogger(__name__)

#: Model name → constructor with the defaults chosen on validation: every scorer plus the hybrid.
MODELS: dict[str, Callable[[], Scorer]] = {**SCORERS, "hybrid": HybridRecommender}
#: Models that read item text embeddings (FitData.item_embeddings).
TEXT_MODELS = TEXT_SCORERS | {"hybrid"}

#: Listed per seed, not averaged, when a model is fitted from several seeds.
_LISTED_KEYS = frozenset({"seed", "epochs", "best_epoch", "users"})


@dataclass(frozen=True)
class EvalConfig:
    dataset: str = "ml-100k"
    models: tuple[str, ...] = ("pop", "itemknn", "als", "bpr")
    data_dir: str | None = None
    split: str = "loo"  # "loo" (leave-one-out by time) or "temporal" (global time cut)
    min_rating: float | None = None  # None: every rating is an interaction
    users: int | None = None  # evaluate a seeded sample of this many users (None: all)
    seed: int = 0  # the user sample's seed (model seeds are 0 .. seeds - 1)
    seeds: int = 1  # fit each seeded model this many times, from seeds 0, 1, ...; report the mean
    jobs: int = 1  # worker processes for the fits (1: all in this process)
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
    if config.seeds < 1 or config.jobs < 1:
        raise ValueError(f"seeds and jobs must be at least 1, got {config.seeds} and {config.jobs}")
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
    activity = tradeoff.activity_buckets(test.history)  # from history lengths, before any fit
    models = list(dict.fromkeys(config.models))  # a model named twice is fitted once
    runs = [
        (name, seed)
        for name in models
        for seed in (range(config.seeds) if is_seeded(MODELS[name]()) else [0])
    ]
    job = _Job(data, test, vectors, config.ks, ds.n_users, activity.bucket)
    fits: dict[tuple[str, int], dict[str, Any]] = {}
    if config.jobs <= 1:
        _init_worker(job, blas_threads=False)
        try:
            for name, seed in tqdm(runs, desc="fits", unit="fit"):
                fits[name, seed] = _fit_one(name, seed)
        finally:
            _init_worker(None, blas_threads=False)  # let the data go
    else:
        # spawn, not fork: torch and BLAS thread pools do not survive a fork
        pool = ProcessPoolExecutor(
            config.jobs,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(job, True, logging.getLogger().getEffectiveLevel()),
        )
        with pool:
            futures = {pool.submit(_fit_one, name, seed): (name, seed) for name, seed in runs}
            try:
                for future in tqdm(as_completed(futures), total=len(runs), desc="fits", unit="fit"):
                    fits[futures[future]] = future.result()
            except BaseException:
                # fits not started yet are dropped; the ones running finish before the error shows
                pool.shutdown(wait=False, cancel_futures=True)
                raise
    sweep = fits.get((tradeoff.SWEEP_MODEL, 0), {}).pop("tradeoff", None)
    results = {name: _combine([fits[run] for run in runs if run[0] == name]) for name in models}
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
        "model_seeds": list(range(config.seeds)),
        "jobs": config.jobs,
        "machine": {
            "python": platform.python_version(),
            "processor": platform.machine(),
            "cpus": os.cpu_count(),
        },
        "text_encoder": encoder_info,
        "models": results,
        "activity": tradeoff.activity_summary(activity, results),
        **({"tradeoff": sweep} if sweep else {}),
    }
    if out is not None:
        write_report(report, Path(out) / config.dataset)
    return report


@dataclass(frozen=True)
class _Job:
    """What every fit of a run shares (sent once to each worker process)."""

    data: FitData
    test: Any  # EvalTask
    vectors: np.ndarray
    ks: tuple[int, ...]
    n_users: int
    buckets: np.ndarray  # each test user's activity bucket (eval.tradeoff.BUCKETS)


_JOB: _Job | None = None


def _init_worker(job: _Job | None, blas_threads: bool = True, log_level: int | None = None) -> None:
    global _JOB
    _JOB = job
    if log_level is not None:  # a spawned worker starts with no logging set up
        logging.basicConfig(level=log_level, format="%(levelname)s %(name)s: %(message)s")
    if blas_threads:
        limit_blas()  # one BLAS thread per worker: the workers share the cores


def _fit_one(name: str, seed: int) -> dict[str, Any]:
    """Fit model ``name`` from ``seed`` and evaluate it on the job's test task."""
    job = _JOB
    assert job is not None, "_init_worker first"
    model = with_seed(MODELS[name](), seed)
    t0 = time.perf_counter()
    model.fit(job.data)
    fit_s = time.perf_counter() - t0
    capture = tradeoff.capture(name, seed, model.score)  # the seed-0 hybrid's top 20, kept
    t0 = time.perf_counter()
    metrics, per_user = evaluate(
        capture or model.score,
        job.test,
        job.ks,
        item_vectors=job.vectors,
        item_popularity=job.data.item_popularity,
        n_train_users=job.n_users,
        per_user=True,
    )
    eval_s = time.perf_counter() - t0
    log.info(
        "%s: ndcg@10 %.4f (fit %.1fs, eval %.2fs)",
        f"{name} (seed {seed})" if is_seeded(model) else name,
        metrics["ndcg@10"],
        fit_s,
        eval_s,
    )
    row = {
        **({"seed": seed} if is_seeded(model) else {}),
        **training_summary(model, fit_s),
        **_rounded(metrics),
        "fit_seconds": round(fit_s, 3),
        "eval_seconds": round(eval_s, 3),
    }
    row.update(tradeoff.bucket_ndcg(per_user, job.buckets))
    if capture is not None:  # the trade-off sweep, on the fit evaluated anyway
        window = (*capture.window(), job.test.targets, job.data.item_embeddings, job.vectors)
        row["tradeoff"] = {"model": name, "seed": seed, **tradeoff.mmr_sweep(*window)}
    return row


def _combine(fits: list[dict[str, Any]]) -> dict[str, Any]:
    """One model's row: its only fit as is, or the mean of several seeds' fits and their spread."""
    if len(fits) == 1:
        return fits[0]
    row: dict[str, Any] = {
        key: round(statistics.fmean(f[key] for f in fits), 5)
        for key in fits[0]
        if key not in _LISTED_KEYS and all(isinstance(f.get(key), int | float) for f in fits)
    }
    row["users"] = fits[0]["users"]
    for key in ("ndcg@10", "hr@10"):
        row[f"{key}_sd"] = round(statistics.stdev(f[key] for f in fits), 5)
    row["seeds"] = [f["seed"] for f in fits]
    for key in ("epochs", "best_epoch"):
        if key in fits[0]:
            row[key] = [f.get(key) for f in fits]
    row["per_seed"] = fits
    return row


def training_summary(model: Scorer, fit_seconds: float) -> dict[str, Any]:
    """Epoch counts and seconds per epoch of iterative models; the hybrid's own fit report."""
    out: dict[str, Any] = {}
    epochs = getattr(model, "epochs_run", None)
    if epochs:
        out["epochs"] = epochs
        out["best_epoch"] = getattr(model, "best_epoch", None)
        out["seconds_per_epoch"] = round(fit_seconds / epochs, 3)
    valid = getattr(model, "best_valid_ndcg", None)
    report = getattr(model, "fit_report", None)
    if report:
        out["fit_report"] = report
        valid = report.get("ranker_valid_ndcg@10", {}).get(report.get("ranker"))
    if valid is not None:  # what early stopping / head selection saw: validation, never test
        out["valid_ndcg@10"] = round(valid, 5)
    return out


def _rounded(metrics: dict[str, float]) -> dict[str, float]:
    return {k: (int(v) if k == "users" else round(v, 5)) for k, v in metrics.items()}
