"""Ablation of the LLM stages on ML-100K: profile feature off/on, re-rank off / MMR / LLM.

Uses the harness's leave-one-out split, seeded user sample and full-catalogue metrics
(:func:`hyrec.metrics.evaluate`). Two hybrids with the same cheaper component set are fitted (a full
hybrid with SASRec and LightGCN costs ~12 min here): one without and one with the
``profile_cosine`` feature (``HybridRecommender.fit(profiles=...)``). The head is trained on the
inner split's histories, so its profiles never see the head's target; training users get the
deterministic fallback profiles (an LLM call per training user and split would take hours on this
machine), and only the evaluated sample gets LLM profiles — so the head meets LLM profiles only at
test time, which the report states. Rows:

Every row is measured through the one request path, :func:`agent.pipeline.recommend`, with each
test user's state taken from the split (their training history, as the harness scores them):

* ``head`` — the hybrid's own order; ``mmr`` — MMR over item text embeddings; ``llm`` — the LLM
  re-ranker (verbalizer logprobs, else listwise JSON), blended with the head inside MMR;
* ``profile:fallback`` / ``profile:llm`` — the profile-feature hybrid with deterministic or LLM
  profiles for the evaluated users; ``profile:llm+llm`` — plus the LLM re-ranker.

The deterministic rows are also measured on every test user (``--all`` rows), where the sample is
too small to separate them. The report files are :mod:`eval.bench_llm_report`; ``--throughput``
measures :mod:`eval.bench_llm_throughput` instead.

Usage::

    HYREC_DATA_DIR=... python -m eval.bench_llm --users 100 --seed 0 \\
        --components als,itemknn,semantic,pop --out eval/results/ml-100k
    HYREC_DATA_DIR=... python -m eval.bench_llm --users 60 --throughput 20 --timeout 180
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from agent import pipeline
from agent.config import RecommenderConfig
from agent.llm import LLM
from agent.llm.guard import GuardedLLM
from agent.stages.history_profiles import HistoryProfiles
from agent.stages.profiles import ProfileConfig, ProfileService
from agent.stages.rerank import LLMReranker, RerankConfig
from agent.state import UserState
from encoders.base import FitData
from encoders.text import TextEncoder
from eval.bench_llm_report import COLUMNS, load_averages, percentile_ms, plain, write
from eval.bench_llm_throughput import throughput
from eval.harness import EvalConfig, make_split, sample_users
from hyrec.data import EvalTask, load_dataset
from hyrec.metrics import evaluate
from retrieval.hybrid import HybridConfig, HybridRecommender

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchConfig:
    dataset: str = "ml-100k"
    users: int = 100  # seeded sample for the LLM rows (SmolLM2 on llama.cpp: ~1–3 s per call)
    seed: int = 0
    components: tuple[str, ...] = ("als", "itemknn", "semantic", "pop")  # cheaper than the full set
    k: int = 10
    window: int = 20  # the head's top-K the re-ranker sees
    llm: bool = True  # False: deterministic rows only
    all_users: bool = True  # also measure the deterministic rows on every test user


class Bench:
    """Fits the two hybrids once and measures every row on the same users."""

    def __init__(self, config: BenchConfig, llm: LLM | None, out: Path | None = None) -> None:
        self.config = config
        self.llm = llm
        self.out = out  # the report is rewritten after every row, so a cut-short run keeps them
        ds = load_dataset(config.dataset)
        split = make_split(ds, EvalConfig(dataset=config.dataset))
        self.dataset = ds
        self.encoder = TextEncoder()
        self.embeddings = self.encoder.encode_items(ds.items)
        self.data = FitData(ds, split.train, split.task("valid"), self.embeddings)
        self.test_all = split.task("test")
        rows = sample_users(len(self.test_all), config.users, config.seed)
        self.test = self.test_all if rows is None else self.test_all.subset(rows)
        self.sample_users = set(self.test.history.users.tolist())
        self.rerank_config = RerankConfig(window=config.window)
        self.results: dict[str, dict[str, Any]] = {}
        self.profile_stats: dict[str, Any] = {}

    def hybrid_config(self) -> HybridConfig:
        c = self.config.components
        sources = tuple(s for s in c if s != "semantic")  # semantic: chromadb neighbours instead
        return HybridConfig(components=c, sources=sources)

    def fit(self, profiles: Callable | None) -> HybridRecommender:
        model = HybridRecommender(self.hybrid_config())
        t0 = time.perf_counter()
        model.fit(self.data, profiles=profiles)
        log.info("fitted in %.1f s: %s", time.perf_counter() - t0, model.fit_report)
        return model

    def parts(
        self,
        model: HybridRecommender,
        task: EvalTask,
        reranker: LLMReranker | None,
        profiles: ProfileService | None,
    ) -> pipeline.Parts:
        """The request path over ``model``, each user's state read from ``task``'s histories."""
        events = HistoryProfiles(ProfileService(None), self.dataset)
        states = {
            str(int(u)): UserState(
                int(u), seq, (), tuple(events.events(int(u), seq)), np.asarray(seq, np.int64)
            )
            for u, seq in zip(task.history.users, task.history.sequences, strict=True)
        }
        return pipeline.Parts(
            hybrid=model,
            encoder=self.encoder,
            config=RecommenderConfig(hybrid=model.config, rerank=self.rerank_config),
            users=lambda user, _history: states[user],
            user_key=str,
            llm=None if self.llm is None else GuardedLLM(self.llm),
            profiles=profiles,
            reranker=reranker,
        )

    def measure(
        self,
        name: str,
        parts: pipeline.Parts,
        task: EvalTask,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        k = self.config.k

        def score(history) -> np.ndarray:  # top-k from the pipeline, -inf elsewhere
            out = np.full((len(history), self.dataset.n_items), -np.inf, dtype=np.float32)
            for row, user in enumerate(history.users.tolist()):
                request = pipeline.Request(user=str(int(user)), k=k, explain=False)
                ids = [r.item_id for r in pipeline.recommend(parts, request).items]
                top = [self.dataset.item_index[i] for i in ids]
                out[row, top] = np.arange(len(top), 0, -1, dtype=np.float32)
            return out

        load_before = load_averages()
        t0 = time.perf_counter()
        metrics = evaluate(
            score,
            task,
            (k,),
            item_vectors=self.embeddings,
            item_popularity=self.data.item_popularity,
            n_train_users=self.dataset.n_users,
        )
        seconds = time.perf_counter() - t0
        row: dict[str, Any] = {c: round(metrics[c], 4) for c in COLUMNS}
        row.update(users=len(task), eval_seconds=round(seconds, 1), load_avg=load_before)
        r = parts.reranker
        if r is not None:
            lat = r.stats["seconds"]
            row.update(
                rerank_p50_ms=percentile_ms(lat, 50),
                rerank_p99_ms=percentile_ms(lat, 99),
                rerank_methods=dict(r.stats["methods"]),
                llm_validity_error_rate=None
                if r.validity_error_rate is None
                else round(r.validity_error_rate, 3),
                rerank_stats=plain({k: v for k, v in r.stats.items() if k != "seconds"}),
            )
        row.update(extra or {})
        self.results[name] = row
        log.info("%s: %s", name, {c: row[c] for c in COLUMNS})
        if self.out is not None:
            write(self.report(), self.out)
        return row

    def reranker(self, llm: LLM | None) -> LLMReranker:
        return LLMReranker(None if llm is None else GuardedLLM(llm), self.rerank_config)

    def run(self) -> dict[str, Any]:
        cfg = self.config
        # ---- profile feature off
        base = self.fit(None)
        self.measure("head", self.parts(base, self.test, None, None), self.test)
        self.measure("mmr", self.parts(base, self.test, self.reranker(None), None), self.test)
        if cfg.all_users:
            every = self.test_all
            self.measure("head (all users)", self.parts(base, every, None, None), every)
            mmr = self.parts(base, every, self.reranker(None), None)
            self.measure("mmr (all users)", mmr, every)
        if cfg.llm:
            llm_rows = self.parts(base, self.test, self.reranker(self.llm), None)
            self.measure("llm", llm_rows, self.test)
        # ---- profile feature on: deterministic profiles for training (inner histories)
        fallback = ProfileService(None, self.encoder, config=ProfileConfig(show_progress=False))
        with_profile = self.fit(HistoryProfiles(fallback, self.dataset))
        self.measure(
            "profile:fallback", self.parts(with_profile, self.test, None, fallback), self.test
        )
        if cfg.all_users:
            every = self.test_all
            rows = self.parts(with_profile, every, None, fallback)
            self.measure("profile:fallback (all users)", rows, every)
        if cfg.llm:
            service = ProfileService(GuardedLLM(self.llm), self.encoder, config=ProfileConfig())
            fn = HistoryProfiles(service, self.dataset, llm_users=self.sample_users)
            fn.profiles(self.test.history)  # profile the sample once (cached): throughput
            self.profile_stats = {
                "profiles_per_s": service.stats["last_batch"]["profiles_per_s"],
                "profile_seconds": service.stats["last_batch"]["seconds"],
                "profile_llm_ok": service.stats["llm_ok"],
                "profile_fallbacks": service.stats["fallbacks"],
                "profile_invalid_answers": service.stats["invalid"],
                "profile_retries": service.stats["retries"],
                "profile_llm_calls": service.stats["llm_calls"],
                "profile_errors": dict(service.stats["errors"]),
            }
            rows = self.parts(with_profile, self.test, None, service)
            self.measure("profile:llm", rows, self.test, self.profile_stats)
            rows = self.parts(with_profile, self.test, self.reranker(self.llm), service)
            self.measure("profile:llm+llm", rows, self.test)
        return self.report()

    def report(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "config": {**asdict(self.config), "hybrid": asdict(self.hybrid_config())},
            "rerank_config": asdict(self.rerank_config),
            "dataset": self.dataset.fingerprint(),
            "protocol": {
                "split": "leave-one-out by time",
                "ranking": "full catalogue, observed items excluded",
                "sample": f"seeded sample of {len(self.test)} test users (seed {cfg.seed})",
                "profiles": "head trained with deterministic fallback profiles of the inner-split "
                "histories; the evaluated sample gets LLM profiles of its test-time histories",
            },
            "machine": {
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "load_avg_end": load_averages(),
            },
            "llm": getattr(self.llm, "name", None),
            "rows": self.results,
            "profile_stats": self.profile_stats,
            "command": "python -m eval.bench_llm " + " ".join(sys.argv[1:]),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--components", default="als,itemknn,semantic,pop")
    parser.add_argument("--no-llm", action="store_true", help="deterministic rows only")
    parser.add_argument("--no-all-users", action="store_true", help="skip the all-user rows")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--throughput",
        type=int,
        default=0,
        metavar="N",
        help="instead: profiles/s and re-rank latency over N users, one request at a time",
    )
    parser.add_argument("--timeout", type=float, default=None, help="LLM seconds per call")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("httpx", "agent.stages.profiles", "agent.stages.rerank", "chromadb"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    import torch

    torch.set_num_threads(1)
    config = BenchConfig(
        users=args.users,
        seed=args.seed,
        components=tuple(c.strip() for c in args.components.split(",") if c.strip()),
        llm=not args.no_llm,
        all_users=not args.no_all_users,
    )
    handle = None
    if config.llm or args.throughput:
        from agent.llm.connect import connect
        from agent.llm.settings import LLMSettings

        settings = LLMSettings.from_env()
        if args.timeout is not None:
            settings = replace(settings, timeout=args.timeout)
        handle = connect(settings)
    if args.throughput:
        try:
            report = throughput(handle.llm, args.throughput, args.seed, args.users, config.dataset)
            print(json.dumps(report, indent=2))
        finally:
            handle.close()
        return
    try:
        report = Bench(config, handle.llm if handle else None, args.out).run()
    finally:
        if handle is not None:
            handle.close()
    print(json.dumps(report["rows"], indent=2))
    if args.out is not None:
        write(report, args.out)


if __name__ == "__main__":
    main()
