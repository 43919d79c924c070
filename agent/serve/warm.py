"""Warming a server up before it answers: each request path's one-time costs are paid at start,
not by the first burst of requests.

Measured on the chaos bench's server (ML-100K, 200 clients sending at once; see
docs/hardening.md), each of these was a first-use cost that a cold process paid while the
burst waited:

- **the text encoder**: importing torch and transformers and building the model held the GIL
  for seconds (the first upsert or query text);
- **the item store**: chromadb's first read of a vector, which opens its segment (~120 ms, the
  first upsert, under the model's write lock);
- **the deterministic scoring** of a user known only by a history (the collaborative fold-in's
  solver, the head's first call: ~30 ms);
- **the OpenAI SDK's request building**: its first call resolves the SDK's type annotations
  and imports modules lazily, with the GIL held (35 ms against 2 ms for the next call, alone;
  every recommendation of the first burst makes its first LLM call at once).

After the steps, :func:`freeze_heap` moves everything loaded so far out of the cyclic garbage
collector's reach (``gc.freeze``): the model, torch, transformers and chromadb's client are
about 640,000 tracked objects, and every full collection walked them all, stopping every thread
for 365-539 ms, every 20-30 s under load, at the start and right after a restart too. In the
chaos bench those pauses were the stalls that had been put down to bursts and to the machine
(docs/hardening.md, 2026-12-02): frozen, a full collection walks ~40,000 objects (28-63 ms).

None of the steps sends anything anywhere or writes anything: the LLM step runs the SDK
against an in-memory transport, the scoring step recommends for an anonymous history without
the LLM stages. A step that fails is logged, and its cost is paid on first use as before.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.api import Recommender

log = logging.getLogger(__name__)


def warm_up(recommender: Recommender) -> dict[str, float | None]:
    """Run every warm-up step on ``recommender`` (module doc); never raises.

    Returns:
        Seconds each step took, by step; None for a step that failed (it is logged) or had
        nothing to warm (no item store, no LLM reached through the OpenAI SDK).
    """
    steps = {
        "text encoder": warm_encoder,
        "item store": warm_item_store,
        "scoring": warm_scoring,
        "LLM client": warm_llm_client,
    }
    took = {name: _step(name, run, recommender) for name, run in steps.items()}
    log.info("warmed up: %s", ", ".join(f"{k} {_fmt(v)}" for k, v in took.items()))
    return took


def _step(what: str, run: Callable[[Recommender], bool], recommender: Recommender) -> float | None:
    t0 = time.perf_counter()
    try:
        ran = run(recommender)
    except Exception as e:  # e.g. an offline machine without the encoder's model
        log.warning("the %s could not be warmed up at start (%s); retried on first use", what, e)
        return None
    return time.perf_counter() - t0 if ran else None


def _fmt(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.2f} s"


def warm_encoder(recommender: Recommender) -> bool:
    recommender.encoder.encode_queries(["warm-up"])
    return True


def warm_item_store(recommender: Recommender) -> bool:
    store = recommender.hybrid.store
    if store is None:
        return False
    store.dimension()
    return True


def warm_scoring(recommender: Recommender) -> bool:
    from agent import pipeline

    first = recommender.catalogue.items[0].item_id
    parts = dataclasses.replace(recommender.parts, llm=None, profiles=None, reranker=None)
    pipeline.recommend(parts, pipeline.Request(history=(first,), k=5, explain=False))
    return True


def warm_llm_client(recommender: Recommender) -> bool:
    """One schema-constrained completion through a throwaway OpenAI-compatible client whose
    transport answers in memory: the SDK's module-level caches are the ones the real client
    uses. Nothing to do without an LLM, or with one that is not reached through the SDK."""
    import httpx

    from agent.llm import Message
    from agent.llm.openai_backend import OpenAICompatibleLLM

    inner = getattr(recommender.llm, "inner", recommender.llm)
    if not isinstance(inner, OpenAICompatibleLLM):
        return False
    answer = {
        "id": "warm-up",
        "object": "chat.completion",
        "created": 0,
        "model": inner.name,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": json.dumps({"ok": True})},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=answer))
    local = OpenAICompatibleLLM(inner.settings, transport=transport)
    try:
        schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}}
        local.complete([Message("user", "warm-up")], max_tokens=4, json_schema=schema)
    finally:
        local.close()
    return True


def freeze_heap() -> int:
    """Collect once, then move every object alive now into the collector's permanent
    generation (module doc): they are still freed when unreferenced, but no collection walks
    them again. For a server, after its model is loaded and warmed. Returns how many objects
    were frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
