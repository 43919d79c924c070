"""The LLM stages' throughput (``python -m eval.bench_llm --throughput N``): profiles per second
and LLM re-rank latency, one request at a time, so nothing queues behind the server. The users
are the first ``N`` of the ablation's seeded sample (:mod:`eval.bench_llm`), profiled from their
test-time histories; each re-rank call orders that user's 20 most popular unseen items.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from agent.llm import LLM
from agent.stages.history_profiles import HistoryProfiles
from agent.stages.profiles import ProfileConfig, ProfileService
from agent.stages.rerank import LLMReranker
from eval.bench_llm_report import load_averages, percentile_ms, plain
from eval.harness import EvalConfig, make_split, sample_users
from hyrec.data import load_dataset


def throughput(
    llm: LLM, users: int, seed: int = 0, sample: int = 100, dataset: str = "ml-100k"
) -> dict[str, Any]:
    """Profiles/s and LLM re-rank latency, one request at a time (no queueing behind the server).

    Profiles: the first ``users`` of the ablation's seeded ``sample`` (test-time histories).
    Re-rank: each of those users' 20 most popular unseen items, with their last 10 titles.
    """
    from retrieval.items import Catalogue, ItemList

    ds = load_dataset(dataset)
    split = make_split(ds, EvalConfig(dataset=dataset))
    test = split.task("test")
    rows = sample_users(len(test), sample, seed)
    rows = (np.arange(len(test)) if rows is None else rows)[:users]  # None: the sample is everyone
    history = test.subset(rows).history
    load_start = load_averages()
    service = ProfileService(llm, config=ProfileConfig(concurrency=1))
    t0 = time.perf_counter()
    HistoryProfiles(service, ds).profiles(history)
    seconds = time.perf_counter() - t0
    popularity = np.bincount(split.train.item, minlength=ds.n_items).astype(np.float32)
    reranker = LLMReranker(llm)
    latencies = []
    for seq in history.sequences:
        scores = popularity.copy()
        scores[seq] = -1.0
        top = np.argsort(-scores, kind="stable")[:20]
        catalogue = Catalogue(ds.items, np.eye(ds.n_items, 16, dtype=np.float32))
        result = reranker.rerank(
            [ds.items[i].title for i in seq[-10:]],
            ItemList(top, scores[top], catalogue=catalogue),
            10,
        )
        latencies.append(result.seconds)
    return {
        "users": users,
        "profile_seconds": round(seconds, 1),
        "profiles_per_s": round(users / seconds, 4),
        "profile_stats": plain(service.stats),
        "rerank_p50_ms": percentile_ms(latencies, 50),
        "rerank_p99_ms": percentile_ms(latencies, 99),
        "rerank_stats": plain(reranker.stats),
        "load_avg_start": load_start,
        "load_avg_end": load_averages(),
    }
