"""One source tree's side of :mod:`eval.bench_versions`, run by path inside that tree.

``fit OUT``: build the benchmark catalogue, fit the tree's hybrid with the settings both trees
share, save it under ``OUT``. ``time OUT N``: load it, time ``N`` single-user ``recommend_batch``
calls and print their milliseconds as JSON. Only the tree on ``PYTHONPATH`` is imported: this
file may belong to the other tree, so its own folder is dropped from ``sys.path``.

The catalogue is the one the older tree's ``bench latency`` generated (users who like one or two
of eight genres, Zipf popularity, unit text vectors clustered by genre), written here so both
trees see the same items, events and vectors. The settings are the older tree's defaults, given
explicitly to a newer tree whose defaults follow the data (50 candidates per source and text
neighbours, SASRec reading 50 items), so the comparison is of the code, not of the settings.
"""

from __future__ import annotations

import sys

sys.path.pop(0)  # this file's folder: see the module docstring

import dataclasses  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

GENRES = ("Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi", "Thriller", "Animation")
SEED = 0


def catalogue(n_items: int):
    """(dataset, unit text vectors): the older tree's synthetic catalogue (module doc)."""
    from hyrec.data import Dataset, Item

    rng = np.random.default_rng(SEED)
    n_users, per_user, dim = max(500, n_items // 10), 40, 384
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
        chosen = rng.choice(pool, size=min(per_user, len(pool)), replace=False, p=p)
        events += [(f"u{u}", f"i{i}", 1_000_000 + 3600 * t, 4.0, "") for t, i in enumerate(chosen)]
    return Dataset.from_records("synthetic", items, events), vectors


def config():
    """The shared settings: the older tree's bench config (short training, its defaults)."""
    from retrieval.hybrid import HybridConfig

    fields = {f.name for f in dataclasses.fields(HybridConfig)}
    if "component_overrides" in fields:  # the older tree: its own bench config
        from eval.bench_latency import fast_config

        return fast_config()
    return HybridConfig(
        per_source=50,
        neighbours=50,
        query_neighbours=50,
        params={
            "sasrec": {"max_epochs": 3, "patience": 3, "max_len": 50, "len_from_data": False},
            "lightgcn": {"max_epochs": 3},
        },
    )


def histories(split, n: int) -> list:
    rng = np.random.default_rng(SEED)
    task = split.task("test")
    return [task.history[np.array([r])] for r in rng.integers(0, len(task), n)]


def main() -> None:
    from encoders.base import FitData
    from hyrec.data import leave_one_out
    from retrieval.hybrid import HybridRecommender

    mode, out, n_items = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    ds, vectors = catalogue(n_items)
    split = leave_one_out(ds)
    with threadpool_limits(1):
        if mode == "fit":
            t0 = time.perf_counter()
            model = HybridRecommender(config()).fit(
                FitData(ds, split.train, split.task("valid"), vectors)
            )
            model.save(out)
            print(json.dumps({"fit_seconds": round(time.perf_counter() - t0, 1)}))
            return
        model = HybridRecommender.load(out)
        hs = histories(split, int(sys.argv[4]))
        for h in hs[:20]:  # warm-up: first calls pay for lazy initialisation
            model.recommend_batch(h, k=10)
        ms = []
        for h in hs:
            t = time.perf_counter()
            model.recommend_batch(h, k=10)
            ms.append((time.perf_counter() - t) * 1000)
        candidates = float(np.mean([len(model.recommend_batch(h, k=n_items)[0]) for h in hs[:50]]))
        print(json.dumps({"ms": [round(x, 3) for x in ms], "candidates": candidates}))


if __name__ == "__main__":
    main()
