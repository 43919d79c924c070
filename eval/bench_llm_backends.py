"""Latency of the two local LLM backends on the same profile-style prompts.

Backends, both running the packaged SmolLM2-135M-Instruct through :class:`agent.llm.LLM`:

* ``llama.cpp``: the embedded llama.cpp server (Q4_1 GGUF) over the OpenAI-compatible HTTP API;
* ``transformers``: the in-process transformers backend (the GGUF converted once to fp32
  safetensors, loaded from the cache).

Each gets ``--prompts`` (default 10) deterministic interest-profile prompts of about 200 tokens (a
watch history of 7 rated movies) and generates up to ``--max-tokens`` (64) greedily; the set is
run ``--repeats`` times after one warm-up call. Reported per backend: start-up seconds (until the
server answers / the model is loaded, imports included), the cold first call, p50/p99 latency, mean
prompt and completion tokens and tokens/s (completion tokens over call seconds, prefill included).
The load average is recorded before and after each backend, since other processes may share the CPU.

``--threads 1,2`` repeats everything per thread count (llama.cpp ``n_threads`` = torch threads).

Usage: ``python -m eval.bench_llm_backends [--out eval/results] [--threads 1,2]``
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from agent.llm import LLM, LLMError, Message
from agent.llm.embedded import EmbeddedServer, EmbeddedServerConfig
from agent.llm.openai_backend import OpenAICompatibleLLM
from agent.llm.settings import LLMSettings

log = logging.getLogger("eval.bench_llm_backends")

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


def measure(llm: LLM, prompts: list[list[Message]], args: argparse.Namespace) -> dict:
    """Warm-up call, then every prompt ``repeats`` times; latency and token statistics.

    A call that fails (e.g. :class:`LLMTimeout` after ``--call-timeout``) is counted, not timed; no
    new call starts once the timed calls have used ``--budget`` seconds (a busy shared machine).
    """
    cold = llm.complete(prompts[0], max_tokens=args.max_tokens, timeout=args.call_timeout)
    start = time.perf_counter()
    seconds, prompt_tokens, completion_tokens, failed = [], [], [], 0
    for messages in [p for _ in range(args.repeats) for p in prompts]:
        if time.perf_counter() - start > args.budget:
            break
        try:
            out = llm.complete(messages, max_tokens=args.max_tokens, timeout=args.call_timeout)
        except LLMError as e:
            log.warning("call failed: %s", e)
            failed += 1
            continue
        seconds.append(out.seconds)
        prompt_tokens.append(out.usage.get("prompt_tokens", 0))
        completion_tokens.append(out.usage.get("completion_tokens", 0))
    if not seconds:
        raise LLMError(f"no call succeeded within {args.budget:.0f}s ({failed} failed)")
    return {
        "calls": len(seconds),
        "failed_calls": failed,
        "cold_first_call_s": round(cold.seconds, 3),
        "p50_s": round(float(np.percentile(seconds, 50)), 3),
        "p99_s": round(float(np.percentile(seconds, 99)), 3),
        "mean_s": round(statistics.fmean(seconds), 3),
        "mean_prompt_tokens": round(statistics.fmean(prompt_tokens), 1),
        "mean_completion_tokens": round(statistics.fmean(completion_tokens), 1),
        "tokens_per_s": round(sum(completion_tokens) / sum(seconds), 1),
    }


def bench_llama_cpp(prompts: list[list[Message]], args: argparse.Namespace, threads: int) -> dict:
    load_before = load_average()
    server = EmbeddedServer(EmbeddedServerConfig(n_threads=threads))
    with server:
        llm = OpenAICompatibleLLM(LLMSettings(base_url=server.base_url, timeout=120))
        result = measure(llm, prompts, args)
        llm.close()
    return {
        "backend": "llama.cpp",
        "threads": threads,
        "how": "embedded llama-cpp-python server (OMP_WAIT_POLICY=PASSIVE), Q4_1 GGUF",
        "startup_s": round(server.startup_seconds or 0.0, 2),
        **result,
        "load_avg_before": load_before,
        "load_avg_after": load_average(),
    }


def bench_transformers(
    prompts: list[list[Message]], args: argparse.Namespace, threads: int
) -> dict:
    from agent.llm.transformers_backend import TransformersConfig, TransformersLLM, resolve_model

    load_before = load_average()
    start = time.perf_counter()
    resolve_model("smollm2")  # converts on the first run only; timed separately from loading
    conversion = time.perf_counter() - start
    start = time.perf_counter()
    llm = TransformersLLM(TransformersConfig(device="cpu", num_threads=threads))
    startup = time.perf_counter() - start  # with importing transformers, like the server's start
    result = measure(llm, prompts, args)
    return {
        "backend": "transformers",
        "threads": threads,
        "how": "in-process, fp32 safetensors from the cached GGUF conversion",
        "startup_s": round(startup, 2),
        "model_load_s": round(llm.load_seconds, 2),
        "conversion_or_cache_check_s": round(conversion, 2),
        **result,
        "load_avg_before": load_before,
        "load_avg_after": load_average(),
    }


def markdown_table(report: dict[str, Any]) -> str:
    head = (
        "| backend | threads | start-up s | cold 1st call s | p50 s | p99 s | tok/s | prompt tok "
        "| completion tok | calls | load avg |\n|---|---|---|---|---|---|---|---|---|---|---|"
    )
    rows = [
        f"| {r['backend']} | {r['threads']} | {r['startup_s']} | {r['cold_first_call_s']} "
        f"| {r['p50_s']} | {r['p99_s']} | {r['tokens_per_s']} | {r['mean_prompt_tokens']} "
        f"| {r['mean_completion_tokens']} | {r['calls']} ({r['failed_calls']} failed) "
        f"| {r['load_avg_before']} → {r['load_avg_after']} |"
        for r in report["results"]
    ]
    notes = "\n".join(sorted({f"- {r['backend']}: {r['how']}" for r in report["results"]}))
    return (
        f"# LLM backends: SmolLM2-135M-Instruct, up to {report['calls_per_backend']} calls each "
        f"(budget {report['budget_s']:.0f} s per row)\n\n"
        f"{report['prompts']} profile prompts, up to {report['max_tokens']} new tokens, greedy; "
        f"{report['machine']}, {report['date']}.\n\n{head}\n" + "\n".join(rows) + f"\n\n{notes}\n"
        f"\nCommand: `{report['command']}`. Load average = 1-minute load before → after "
        "(2 cores: above ~2 means other work shared the CPU). The transformers start-up includes "
        "importing torch and transformers only on its first row.\n"
        + (f"\n{report['note']}\n" if report.get("note") else "")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("eval/results"))
    parser.add_argument("--prompts", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", default="1,2", help="llama.cpp = torch threads, a list")
    parser.add_argument("--backends", default="llama.cpp,transformers")
    parser.add_argument("--call-timeout", type=float, default=120.0, help="seconds per call")
    parser.add_argument("--budget", type=float, default=300.0, help="seconds per backend run")
    parser.add_argument("--note", default="", help="free text for the report (machine state)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    prompts = profile_prompts(args.prompts)
    runners = {"llama.cpp": bench_llama_cpp, "transformers": bench_transformers}
    thread_counts = [int(t) for t in args.threads.split(",")]
    results = []
    for threads in thread_counts:
        for name in args.backends.split(","):
            try:
                results.append(runners[name.strip()](prompts, args, threads))
            except LLMError as e:  # keep the other rows
                log.error("%s with %d threads failed: %s", name, threads, e)
    report = {
        "model": "SmolLM2-135M-Instruct",
        "prompts": args.prompts,
        "repeats": args.repeats,
        "calls_per_backend": args.prompts * args.repeats,
        "budget_s": args.budget,
        "max_tokens": args.max_tokens,
        "threads": thread_counts,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "command": "python -m eval.bench_llm_backends " + " ".join(sys.argv[1:]),
        "note": args.note,
        "results": results,
    }
    markdown = markdown_table(report)
    print(markdown)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "llm_backends.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "llm_backends.md").write_text(markdown + "\n")


if __name__ == "__main__":
    main()
