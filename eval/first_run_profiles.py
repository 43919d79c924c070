"""``python -m eval.first_run profiles``: the fit profiles against every component alone, on
ML-100K's *validation* split (the harness's leave-one-out split; test is never read), which is the
bar the quick profile must clear. Each component is fitted on the whole training split.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from eval.first_run_env import load_average, machine


def profiles(args: argparse.Namespace) -> dict[str, Any]:
    """Validation NDCG@10 of every component alone (fitted on all training data) and of each fit
    profile's hybrid, on the harness's leave-one-out split. Test is never read."""
    from agent.config import fit_profile
    from encoders.base import FitData, with_seed
    from encoders.registry import make_scorer
    from encoders.text import TextEncoder, TextEncoderConfig
    from hyrec.data import leave_one_out, load_dataset
    from hyrec.metrics import evaluate
    from retrieval.hybrid import HybridRecommender

    if args.data_dir:  # the folder holding ml-100k/, as HYREC_DATA_DIR
        os.environ["HYREC_DATA_DIR"] = args.data_dir
    ds = load_dataset("ml-100k")
    split = leave_one_out(ds)
    vectors = TextEncoder(TextEncoderConfig(show_progress=False)).encode_items(ds.items)
    data = FitData(ds, split.train, split.task("valid"), vectors)
    components: dict[str, Any] = {}
    for name in [c for c in args.components.split(",") if c]:
        t0 = time.perf_counter()
        scorer = with_seed(make_scorer(name), args.seed).fit(data)
        valid = evaluate(scorer.score, data.valid, ks=(10,))["ndcg@10"]
        components[name] = {
            "valid_ndcg@10": round(valid, 4),
            "fit_s": round(time.perf_counter() - t0, 1),
        }
        print(name, components[name], flush=True)
    hybrids: dict[str, Any] = {}
    for name in [p for p in args.profiles.split(",") if p]:
        config = fit_profile(name).hybrid
        t0 = time.perf_counter()
        model = HybridRecommender(replace_seed(config, args.seed)).fit(data)
        report = model.fit_report
        hybrids[name] = {
            "valid_ndcg@10": report["ranker_valid_ndcg@10"][report["ranker"]],
            "fit_s": round(time.perf_counter() - t0, 1),
            "fit_report": report,
        }
        print(name, hybrids[name], flush=True)
    return {
        "protocol": "ML-100K leave-one-out by time; validation = each user's second-to-last "
        "event; full-catalogue ranking; components fitted on the whole training split",
        "seed": args.seed,
        "machine": machine(),
        "load_average_end": load_average(),
        "components": components,
        "profiles": hybrids,
    }


def replace_seed(config: Any, seed: int) -> Any:
    from dataclasses import replace

    return replace(config, seed=seed)
