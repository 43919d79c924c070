"""Latency of the two local LLM backends on the same profile-style prompts.

Backends, both running the packaged SmolLM2-135M-Instruct through :class:`agent.llm.LLM`:

* ``llama.cpp``: the embedded llama.cpp server (Q4_1 GGUF) over the OpenAI-compatible HTTP API;
* ``transformers``: the in-process transformers backend (the GGUF converted once to fp32
  safetensors, loaded from the cache).

Each gets ``--prompts`` (default 10) deterministic interest-profile prompts of about 200 tokens (a
watch history of 7 rated movies) and generates up to ``--max-tokens`` (64) greedily; the set is
run ``--repeats`` times after one warm-up call. Reported per backend: start-up seconds (server
ready / model loaded), the cold first call, p50/p99 call latency, mean prompt and completion tokens
and tokens/s (completion tokens over call seconds, prefill included). The load average is recorded
before and after each backend, since other processes may share the CPU.

Usage: ``python -m eval.bench_llm_backends [--out eval/results] [--threads 2]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from agent.backends import OpenAICompatibleLLM
from agent.embedded import EmbeddedServer, EmbeddedServerConfig
from agent.llm import LLM, Message
from agent.settings import LLMSettings

MOVIES = (
    ("Toy Story", 1995, "Animation, Children's, Comedy"),
    ("GoldenEye", 1995, "Action, Adventure, Thriller"),
    ("Get Shorty", 1995, "Action, Comedy, Drama"),
    ("Twelve Monkeys", 1995, "Drama, Sci-Fi"),
    ("Babe", 1995, "Children's, Comedy, Drama"),
    ("Braveheart", 1995, "Action, Drama, War"),
    ("Taxi Driver", 1976, "Drama, Thriller"),
    ("Apollo 13", 1995, "Action, Drama, Thriller"),
    ("Batman Forever", 1995, "Action, Adventure, Comedy, Crime"),
    ("Belle de jour", 1967, "Drama"),
    ("Crimson Tide", 1995, "Drama, Thriller, War"),
    ("Desperado", 1995, "Action, Romance, Thriller"),
    ("Heavenly Creatures", 1994, "Drama, Fantasy, Romance, Thriller"),
    ("Pulp Fiction", 1994, "Crime, Drama"),
    ("Stargate", 1994, "Action, Adventure, Sci-Fi"),
    ("Star Wars", 1977, "Action, Adventure, Romance, Sci-Fi, War"),
    ("The Shawshank Redemption", 1994, "Drama"),
    ("Forrest Gump", 1994, "Comedy, Romance, War"),
    ("The Lion King", 1994, "Animation, Children's, Musical"),
    ("The Mask", 1994, "Comedy, Crime, Fantasy"),
    ("Fargo", 1996, "Crime, Drama, Thriller"),
    ("Jurassic Park", 1993, "Action, Adventure, Sci-Fi"),
    ("Blade Runner", 1982, "Film-Noir, Sci-Fi"),
    ("Aladdin", 1992, "Animation, Children's, Comedy, Musical"),
    ("The Terminator", 1984, "Action, Sci-Fi, Thriller"),
    ("Alien", 1979, "Action, Horror, Sci-Fi, Thriller"),
    ("Psycho", 1960, "Horror, Romance, Thriller"),
    ("Casablanca", 1942, "Drama, Romance, War"),
    ("The Godfather", 1972, "Action, Crime, Drama"),
    ("When Harry Met Sally", 1989, "Comedy, Romance"),
    ("Groundhog Day", 1993, "Comedy, Romance"),
    ("The Silence of the Lambs", 1991, "Drama, Thriller"),
    ("Scream", 1996, "Horror, Thriller"),
    ("Mary Poppins", 1964, "Children's, Comedy, Musical"),
    ("Die Hard", 1988, "Action, Thriller"),
    ("Amadeus", 1984, "Drama, Mystery"),
)
SYSTEM = (
    "You summarise a movie watcher's interests for a recommender system. Be concise and only use "
    "what the history shows."
)


def profile_prompts(n: int, seed: int = 0, history: int = 7) -> list[list[Message]]:
    """``n`` deterministic prompts, each a rated history of ``history`` movies (~200 tokens)."""
    rng = np.random.default_rng(seed)
    prompts = []
    for _ in range(n):
        picks = rng.choice(len(MOVIES), size=history, replace=False)
        lines = [
            f"- {MOVIES[i][0]} ({MOVIES[i][1]}), {MOVIES[i][2]}: rated {int(r)}/5"
            for i, r in zip(picks, rng.integers(1, 6, size=history), strict=True)
        ]
        user = (
            "Watch history, oldest first:\n" + "\n".join(lines) + "\n\nIn two sentences, what does "
            "this user like and dislike, and has their taste shifted recently?"
        )
        prompts.append([Message("system", SYSTEM), Message("user", user)])
    return prompts


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def measure(llm: LLM, prompts: list[list[Message]], max_tokens: int, repeats: int) -> dict:
    """Warm-up call, then every prompt ``repeats`` times; latency and token statistics."""
    cold = llm.complete(prompts[0], max_tokens=max_tokens)
    seconds, prompt_tokens, completion_tokens = [], [], []
    for _ in range(repeats):
        for messages in prompts:
            out = llm.complete(messages, max_tokens=max_tokens, timeout=120)
            seconds.append(out.seconds)
            prompt_tokens.append(out.usage.get("prompt_tokens", 0))
            completion_tokens.append(out.usage.get("completion_tokens", 0))
    return {
        "calls": len(seconds),
        "cold_first_call_s": round(cold.seconds, 3),
        "p50_s": round(float(np.percentile(seconds, 50)), 3),
        "p99_s": round(float(np.percentile(seconds, 99)), 3),
        "mean_s": round(statistics.fmean(seconds), 3),
        "mean_prompt_tokens": round(statistics.fmean(prompt_tokens), 1),
        "mean_completion_tokens": round(statistics.fmean(completion_tokens), 1),
        "tokens_per_s": round(sum(completion_tokens) / sum(seconds), 1),
    }


def bench_llama_cpp(prompts: list[list[Message]], args: argparse.Namespace) -> dict:
    load_before = load_average()
    server = EmbeddedServer(EmbeddedServerConfig(n_threads=args.threads))
    with server:
        llm = OpenAICompatibleLLM(LLMSettings(base_url=server.base_url, timeout=120))
        result = measure(llm, prompts, args.max_tokens, args.repeats)
        llm.close()
    return {
        "backend": "llama.cpp",
        "how": f"embedded llama-cpp-python server, Q4_1 GGUF, n_threads={server.config.threads()}",
        "startup_s": round(server.startup_seconds or 0.0, 2),
        **result,
        "load_avg_before": load_before,
        "load_avg_after": load_average(),
    }


def bench_transformers(prompts: list[list[Message]], args: argparse.Namespace) -> dict:
    import torch

    from agent.transformers_llm import TransformersConfig, TransformersLLM, resolve_model

    load_before = load_average()
    start = time.perf_counter()
    resolve_model("smollm2")  # converts on the first run only; timed separately from loading
    conversion = time.perf_counter() - start
    llm = TransformersLLM(TransformersConfig(device="cpu", num_threads=args.threads))
    result = measure(llm, prompts, args.max_tokens, args.repeats)
    return {
        "backend": "transformers",
        "how": f"in-process, fp32 safetensors from the cached GGUF conversion, "
        f"torch threads={torch.get_num_threads()}",
        "startup_s": round(llm.load_seconds, 2),
        "conversion_or_cache_check_s": round(conversion, 2),
        **result,
        "load_avg_before": load_before,
        "load_avg_after": load_average(),
    }


def markdown_table(report: dict[str, Any]) -> str:
    head = (
        "| backend | start-up s | cold 1st call s | p50 s | p99 s | tok/s | prompt tok "
        "| completion tok | load avg |\n|---|---|---|---|---|---|---|---|---|"
    )
    rows = [
        f"| {r['backend']} | {r['startup_s']} | {r['cold_first_call_s']} | {r['p50_s']} "
        f"| {r['p99_s']} | {r['tokens_per_s']} | {r['mean_prompt_tokens']} "
        f"| {r['mean_completion_tokens']} | {r['load_avg_before']} → {r['load_avg_after']} |"
        for r in report["results"]
    ]
    notes = "\n".join(f"- {r['backend']}: {r['how']}" for r in report["results"])
    return (
        f"# LLM backends: SmolLM2-135M-Instruct, {report['calls_per_backend']} calls each\n\n"
        f"{report['prompts']} profile prompts, up to {report['max_tokens']} new tokens, greedy; "
        f"{report['machine']}.\n\n{head}\n" + "\n".join(rows) + f"\n\n{notes}\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("eval/results"))
    parser.add_argument("--prompts", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp and torch threads")
    parser.add_argument("--backends", default="llama.cpp,transformers")
    args = parser.parse_args()
    prompts = profile_prompts(args.prompts)
    runners = {"llama.cpp": bench_llama_cpp, "transformers": bench_transformers}
    results = [runners[name.strip()](prompts, args) for name in args.backends.split(",")]
    report = {
        "model": "SmolLM2-135M-Instruct",
        "prompts": args.prompts,
        "repeats": args.repeats,
        "calls_per_backend": args.prompts * args.repeats,
        "max_tokens": args.max_tokens,
        "threads": args.threads,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "results": results,
    }
    markdown = markdown_table(report)
    print(markdown)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "llm_backends.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "llm_backends.md").write_text(markdown + "\n")


if __name__ == "__main__":
    main()
