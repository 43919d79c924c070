"""Prompt-processing threads of the embedded llama.cpp server, side by side in one run.

For 0, 1 and 2 busy processes beside it (busy loops: hyrec's own work, or anyone's), the packaged
SmolLM2 server is started with ``--n_threads_batch`` 1 and then the machine's cores (the order
alternates between loads), generation threads left at their default. Each server answers the
interest-profile prompt serving sends (``prompts/profile.yaml``, five history items), each time
with a new first token so nothing comes from llama.cpp's prefix cache: ``max_tokens=1`` times
the prompt's processing, then 48 tokens after the cached prompt time generation. Medians per
setting.

    python -m eval.bench_llm_threads [--calls 4] [--out eval/results/llm_threads.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import time
from pathlib import Path
from typing import Any

from agent.llm import Message
from agent.llm.embedded import EmbeddedServer, EmbeddedServerConfig
from agent.llm.openai_backend import OpenAICompatibleLLM
from agent.llm.settings import LLMSettings
from agent.stages.profile_types import ProfileEvent
from agent.stages.profiles import ProfileConfig, ProfileService


def profile_prompt() -> list[Message]:
    events = [
        ProfileEvent(title, {"genres": genres, "year": year}, rating, t)
        for t, (title, genres, year, rating) in enumerate(
            [
                ("Toy Story (1995)", ["Animation", "Comedy"], 1995, 5.0),
                ("Scream (1996)", ["Horror"], 1996, 1.0),
                ("Heat (1995)", ["Action", "Crime"], 1995, 4.0),
                ("Clueless (1995)", ["Comedy"], 1995, 4.0),
                ("Alien (1979)", ["Horror", "Sci-Fi"], 1979, 5.0),
            ]
        )
    ]
    return ProfileService(None, config=ProfileConfig(show_progress=False)).messages(events)


def _busy() -> None:
    while True:
        pass


def measure(batch_threads: int, calls: int, prompt: list[Message]) -> dict[str, Any]:
    server = EmbeddedServer(EmbeddedServerConfig(n_threads_batch=batch_threads))
    url = server.start()
    llm = OpenAICompatibleLLM(LLMSettings(base_url=url, model="smollm2", timeout=300))
    try:
        prompt_s, tokens, gen_s = [], 0, []
        for i in range(calls):
            first = Message(prompt[0].role, f"[{batch_threads}.{i}] " + prompt[0].content)
            messages = [first, *prompt[1:]]
            t0 = time.perf_counter()
            done = llm.complete(messages, max_tokens=1)
            prompt_s.append(time.perf_counter() - t0)
            tokens = (done.usage or {}).get("prompt_tokens", tokens)
            t0 = time.perf_counter()  # the same prompt again: cached, so this is generation
            done = llm.complete(messages, max_tokens=48, temperature=0.0)
            n = (done.usage or {}).get("completion_tokens", 48)
            gen_s.append(n / (time.perf_counter() - t0))
    finally:
        llm.close()
        server.stop()
    return {
        "n_threads_batch": batch_threads,
        "n_threads": server.config.threads(),
        "prompt_tokens": tokens,
        "prompt_s": [round(x, 3) for x in prompt_s],
        "prompt_median_s": round(statistics.median(prompt_s), 3),
        "generation_tok_s_median": round(statistics.median(gen_s), 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=4, help="prompts per server")
    p.add_argument("--out", type=Path, default=Path("eval/results/llm_threads.json"))
    a = p.parse_args()
    cores = max(1, min(8, os.cpu_count() or 2))
    prompt = profile_prompt()
    rows = []
    for level, busy in enumerate((0, 1, 2)):
        hogs = [mp.Process(target=_busy, daemon=True) for _ in range(busy)]
        for h in hogs:
            h.start()
        try:
            order = (1, cores) if level % 2 == 0 else (cores, 1)
            for threads in order:
                rows.append({"busy_processes": busy, **measure(threads, a.calls, prompt)})
        finally:
            for h in hogs:
                h.terminate()
                h.join()
    print("| busy processes | n_threads_batch | prompt tokens | prompt s (median) | gen tok/s |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['busy_processes']} | {r['n_threads_batch']} | {r['prompt_tokens']} | "
            f"{r['prompt_median_s']:.2f} | {r['generation_tok_s_median']:.1f} |"
        )
    ratios = {}
    for busy in (0, 1, 2):
        one, many = (
            next(r for r in rows if r["busy_processes"] == busy and r["n_threads_batch"] == t)
            for t in (1, cores)
        )
        ratios[busy] = round(many["prompt_median_s"] / one["prompt_median_s"], 2)
    print(f"prompt time, {cores} threads / 1 thread, by busy processes: {ratios}")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(
        json.dumps(
            {"command": "python -m eval.bench_llm_threads", "cores": cores, "rows": rows,
             "prompt_ratio_by_busy": ratios, "calls": a.calls},
            indent=2,
        )
        + "\n"
    )  # fmt: skip


if __name__ == "__main__":
    main()
