"""``python -m eval.first_run llm-stages``: the demo's LLM stages on each local backend side by
side, the embedded llama.cpp server and the in-process transformers model. Per backend and thread
count: its start-up, then per user one recommendation (LLM profile, re-rank, reasons) and one chat
answer, from a fresh copy of a saved model folder (no cached profiles), with the fallbacks taken.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eval.first_run_env import load_average, machine


def llm_stages(args: argparse.Namespace) -> dict[str, Any]:
    """Each backend: start-up, then per user one recommendation (LLM profile, re-rank, reasons)
    and one chat answer, from a fresh copy of the model folder (no cached profiles)."""
    from agent.api import Recommender
    from agent.chat.agent import ChatAgent
    from agent.llm import Message
    from agent.llm.connect import LLMHandle, connect
    from agent.llm.embedded import EmbeddedServerConfig
    from agent.llm.settings import LLMSettings
    from agent.llm.transformers_backend import TransformersConfig, TransformersLLM

    users = [u.strip() for u in args.users.split(",") if u.strip()]
    rows = []

    def llama(threads: int) -> Any:
        settings = LLMSettings(backend="openai")
        return connect(settings, server_config=EmbeddedServerConfig(n_threads=threads))

    def local(threads: int) -> Any:
        config = TransformersConfig(num_threads=threads, device="cpu")
        return LLMHandle(TransformersLLM(config), backend="transformers")

    makers: dict[str, Callable[[int], Any]] = {"llama.cpp": llama, "transformers": local}
    for threads in [int(t) for t in args.threads.split(",")]:
        for name in args.backends.split(","):
            folder = Path(tempfile.mkdtemp(prefix="hyrec-llm-stages-")) / "model"
            shutil.copytree(args.model_dir, folder, ignore=shutil.ignore_patterns("profiles"))
            load_before = load_average()
            t0 = time.perf_counter()
            handle = makers[name](threads)
            startup = time.perf_counter() - t0
            recs_s, chat_s, fallbacks = [], [], []
            with handle, Recommender.load(folder, llm=handle.llm) as model:
                agent = ChatAgent.configured(model, base_url=handle.base_url, k=5)
                for user in users:
                    t = time.perf_counter()
                    recs = model.recommend(user, k=10)
                    recs_s.append(time.perf_counter() - t)
                    t = time.perf_counter()
                    reply = agent.reply([Message("user", args.message)])
                    chat_s.append(time.perf_counter() - t)
                    fallbacks += [f.split(":")[0] for f in (*recs.fallbacks, *reply.fallbacks)]
            shutil.rmtree(folder.parent, ignore_errors=True)
            row = {
                "backend": name,
                "threads": threads,
                "startup_s": round(startup, 2),
                "first_recommend_s": round(recs_s[0], 2),
                "recommend_p50_s": round(statistics.median(recs_s), 2),
                "first_chat_s": round(chat_s[0], 2),
                "chat_p50_s": round(statistics.median(chat_s), 2),
                "demo_llm_s": round(startup + recs_s[0] + chat_s[0], 2),
                "fallbacks": {k: fallbacks.count(k) for k in sorted(set(fallbacks))},
                "users": len(users),
                "load_avg_before": load_before,
                "load_avg_after": load_average(),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    return {"machine": machine(), "model_dir": str(args.model_dir), "rows": rows}
