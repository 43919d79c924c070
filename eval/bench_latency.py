"""Single-user recommend() latency of the hybrid, without any LLM stage (``hyrec bench latency``).

On a synthetic catalogue (default 10,000 items with titles, genres, years and 384-d text vectors
clustered by genre; users with genre tastes and time-ordered histories) or on a real dataset, fit
the default hybrid — with few training epochs, since latency does not depend on how long the models
trained — then time ``recommend_batch`` for one user at a time, as a serving process would: plain
requests, requests with a genre filter, and requests with a query vector. Reports p50/p99 in
milliseconds and the machine's load average while it measured (the machine may be shared).
"""

from __future__ import annotations

import os
import platform
import time
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from encoders.base import FitData
from hyrec.data import Dataset, Item, leave_one_out, load_dataset
from retrieval.filters import Filter
from retrieval.hybrid import HybridConfig, HybridRecommender

GENRES = ("Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi", "Thriller", "Animation")


def synthetic_catalogue(
    n_items: int, n_users: int, events_per_user: int = 40, dim: int = 384, seed: int = 0
) -> tuple[Dataset, np.ndarray]:
    """A dataset whose users prefer one or two genres, and unit text vectors clustered by genre."""
    rng = np.random.default_rng(seed)
    genre = rng.integers(0, len(GENRES), n_items)
    items = [
        Item(
            f"i{i}",
            f"Synthetic title {i}",
            "",
            {"genres": [GENRES[genre[i]]], "year": int(1960 + i % 60)},
        )
        for i in range(n_items)
    ]
    centres = rng.normal(size=(len(GENRES), dim))
    vectors = centres[genre] + 0.8 * rng.normal(size=(n_items, dim))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    popularity = rng.zipf(1.3, n_items).astype(np.float64)
    by_genre = [np.flatnonzero(genre == g) for g in range(len(GENRES))]
    events = []
    for u in range(n_users):
        tastes = rng.choice(len(GENRES), 2, replace=False)
        pool = np.concatenate([by_genre[g] for g in tastes])
        p = popularity[pool] / popularity[pool].sum()
        chosen = rng.choice(pool, size=min(events_per_user, len(pool)), replace=False, p=p)
        events += [(f"u{u}", f"i{i}", 1_000_000 + 3600 * t, 4.0, "") for t, i in enumerate(chosen)]
    return Dataset.from_records("synthetic", items, events), vectors


def fast_config() -> HybridConfig:
    """The default hybrid with short training: inference cost is the same as a fully trained one."""
    return HybridConfig(
        params={"sasrec": {"max_epochs": 3, "patience": 3}, "lightgcn": {"max_epochs": 3}}
    )


def run(
    catalog_size: int = 10_000,
    requests: int = 1_000,
    dataset: str | None = None,
    data_dir: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    if dataset is None:
        ds, vectors = synthetic_catalogue(
            catalog_size, n_users=max(500, catalog_size // 10), seed=seed
        )
    else:
        from encoders.text import TextEncoder

        ds = load_dataset(dataset, data_dir)
        vectors = TextEncoder().encode_items(ds.items)
    split = leave_one_out(ds)
    t0 = time.perf_counter()
    model = HybridRecommender(fast_config()).fit(
        FitData(ds, split.train, split.task("valid"), vectors)
    )
    fit_s = time.perf_counter() - t0
    rng = np.random.default_rng(seed)
    users = rng.choice(ds.n_users, size=requests, replace=True)
    task = split.task("test")
    histories = [task.history[np.array([u])] for u in np.searchsorted(task.history.users, users)]
    for h in histories[:20]:  # warm-up: first calls pay for lazy initialisation
        model.recommend_batch(h, k=10)
    genre = ds.items[0].attributes.get("genres") or []
    flt = Filter(genres_any=tuple(genre[:1])) if genre else Filter(year_min=1990)
    queries = vectors[rng.integers(0, ds.n_items, size=requests)]
    load_before = os.getloadavg()[0]
    # One BLAS thread, as a serving process should run: a request's matrix-vector products are
    # too small to gain from threads, and on a busy 2-core machine threads made them ~10x slower.
    with threadpool_limits(1, "blas"):
        plain = _summary(_timed(model, histories))
        filtered = _summary(_timed(model, histories, filter=flt))
        with_query = _summary(_timed(model, histories, queries=queries))
    load_after = os.getloadavg()[0]
    return {
        "catalogue": ds.name,
        "items": ds.n_items,
        "users": ds.n_users,
        "requests": requests,
        **plain,
        "filtered": {"filter": repr(flt), **filtered},
        "with_query": with_query,
        "load_average_1min": {"before": round(load_before, 2), "after": round(load_after, 2)},
        "candidates_per_request": round(
            float(
                np.mean([len(model.recommend_batch(h, k=ds.n_items)[0]) for h in histories[:50]])
            ),
            1,
        ),
        "fit_seconds": round(fit_s, 1),
        "cpus": os.cpu_count(),
        "blas_threads": 1,
        "components": list(model.config.components),
        "ranker": model.fit_report.get("ranker"),
        "llm": False,
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
        },
    }


def _timed(
    model: HybridRecommender,
    histories: list,
    filter: Filter | None = None,
    queries: np.ndarray | None = None,
) -> np.ndarray:
    """Milliseconds of one single-user ``recommend_batch`` call per history."""
    times = []
    for row, h in enumerate(histories):
        q = None if queries is None else queries[row : row + 1]
        t = time.perf_counter()
        model.recommend_batch(h, k=10, filter=filter, query_vectors=q)
        times.append((time.perf_counter() - t) * 1000)
    return np.asarray(times)


def _summary(times: np.ndarray) -> dict[str, float]:
    return {
        "p50_ms": round(float(np.percentile(times, 50)), 2),
        "p90_ms": round(float(np.percentile(times, 90)), 2),
        "p99_ms": round(float(np.percentile(times, 99)), 2),
        "max_ms": round(float(times.max()), 2),
    }
