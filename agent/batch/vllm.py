"""Profiles with vLLM inside the Ray job (GPU hosts): Ray Data's documented ``ray.data.llm`` path.

Instead of HTTP calls to a server, the prompts go through a ``ray.data.llm`` processor
(``vLLMEngineProcessorConfig`` + ``build_processor``), which runs vLLM engines as actors and
batches the rows on the GPU::

    keys → map_batches(prompts: the model's user state → the profile prompt, as JSON)
         → processor(preprocess: messages + greedy sampling params with the profile JSON schema
                     as structured output → vLLM → postprocess: the generated text)
         → map_batches(profiles: validate the answer exactly as serving does, cache it) → rows

The last stage hands each answer to the model folder's
:class:`~agent.stages.profiles.ProfileService` through :class:`PrecomputedLLM` (an
:class:`~agent.llm.LLM` that replays the engine's answer), so validation, the fallback and the
cache key are serving's own; the model name in that key is ``VLLMConfig.model``, which a vLLM
server for serving must report too (``vllm serve MODEL`` does). One answer per user: there is no
repair retry (the grammar makes invalid JSON rare; such a user gets the fallback, and the row
says why).

Run (a GPU host, ``pip install 'hyrec[ray,vllm]'``)::

    hyrec batch profiles --model-dir DIR --out profiles.parquet --engine ray \\
        --vllm-model Qwen/Qwen2.5-1.5B-Instruct --vllm-engines 1
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from functools import partial
from typing import Any

import numpy as np

from agent.batch.config import RAY_HINT, BatchConfig, VLLMConfig
from agent.batch.jobs import BatchWorker, profile_row
from agent.batch.local import Progress
from agent.batch.output import BatchOutput
from agent.batch.ray_engine import cluster_cpus, init_ray, keys_dataset
from agent.llm import Completion, LLMError, Message

log = logging.getLogger(__name__)

ERROR_COLUMN = "__inference_error__"  # ray.data.llm's per-row error (should_continue_on_error)


def messages_digest(messages: Sequence[Mapping[str, str]]) -> str:
    body = json.dumps([[m["role"], m["content"]] for m in messages], ensure_ascii=False)
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


class PrecomputedLLM:
    """An :class:`~agent.llm.LLM` whose answers were generated beforehand (by the vLLM stage).

    ``complete`` returns the answer recorded for exactly these messages, and raises
    :class:`LLMError` with the recorded reason when the engine failed on that row (or for any
    other conversation, such as a repair turn).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._answers: dict[str, str | BaseException] = {}
        self._lock = threading.Lock()

    def record(self, messages: Sequence[Mapping[str, str]], answer: str | BaseException) -> None:
        with self._lock:
            self._answers[messages_digest(messages)] = answer

    def complete(self, messages: Sequence[Message], **kwargs: Any) -> Completion:
        key = messages_digest([{"role": m.role, "content": m.content} for m in messages])
        with self._lock:
            answer = self._answers.pop(key, None)
        if answer is None:
            raise LLMError("the vLLM stage has no answer for this conversation")
        if isinstance(answer, BaseException):
            raise answer
        return Completion(text=answer, model=self.name)


# ---- the ray.data.llm processor -----------------------------------------------------------------
def preprocess(row: dict[str, Any], *, max_tokens: int) -> dict[str, Any]:
    """A prompt row → what the vLLM stage reads: chat messages and greedy, schema-bound sampling."""
    from agent.stages.profile_types import PROFILE_SCHEMA

    return {
        "messages": json.loads(row["prompt"]),
        "sampling_params": {
            "temperature": 0.0,
            "max_tokens": max_tokens,
            "structured_outputs": {"json": PROFILE_SCHEMA},
        },
    }


def postprocess(row: dict[str, Any]) -> dict[str, Any]:
    """The engine's output row → the key, the prompt and the answer text."""
    return {"key": row["key"], "prompt": row["prompt"], "answer": row["generated_text"]}


def build_vllm_processor(vllm: VLLMConfig, max_tokens: int) -> Callable[[Any], Any]:
    """The ``ray.data.llm`` processor for the profile prompts (needs vLLM and a GPU to run)."""
    try:
        from ray.data.llm import build_processor, vLLMEngineProcessorConfig
    except ImportError:
        raise ImportError(f"the vLLM batch path needs Ray Data's LLM module: {RAY_HINT}") from None
    engine = vLLMEngineProcessorConfig(
        model_source=vllm.model,
        concurrency=vllm.engines,
        batch_size=vllm.batch_size,
        should_continue_on_error=True,  # a failed row is recorded, never dropped
        engine_kwargs={"max_model_len": vllm.max_model_len, **vllm.engine_kwargs},
    )
    return build_processor(
        engine, preprocess=partial(preprocess, max_tokens=max_tokens), postprocess=postprocess
    )


# ---- the two model stages -----------------------------------------------------------------------
class PromptStage(BatchWorker):
    """Keys → ``{"key", "prompt"}``: the profile prompt serving would send, as JSON."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        keys = [str(k) for k in batch["key"]]
        prompts = []
        for user in keys:
            events = self._events(user)
            messages = self.service.messages(events) if events else [Message("user", "-")]
            prompts.append(json.dumps([{"role": m.role, "content": m.content} for m in messages]))
        return {"key": np.asarray(keys, dtype=object), "prompt": np.asarray(prompts, dtype=object)}

    def _events(self, user: str):
        return self.model.parts.users(user, ()).events[-self.model.config.profile_events :]


class ProfileStage(PromptStage):
    """Answered prompts → profile rows, through serving's :class:`ProfileService` (module doc)."""

    def __init__(self, config: BatchConfig, threads: int = 1) -> None:
        super().__init__(config, threads=threads)
        from agent.stages.profiles import ProfileConfig, ProfileService

        assert config.vllm is not None
        self.replay = PrecomputedLLM(config.vllm.model)
        self._service = ProfileService(
            self.replay,
            self.model.encoder,
            cache_dir=self.model.model_dir / "profiles",
            config=ProfileConfig(max_retries=0, show_progress=False),
        )

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        keys = [str(k) for k in batch["key"]]
        answers = batch.get("answer")
        errors = batch.get(ERROR_COLUMN)
        for r, prompt in enumerate(batch["prompt"]):
            failed = "" if errors is None or errors[r] is None else str(errors[r])
            if failed:
                answer: str | BaseException = LLMError(f"vLLM: {failed}")
            else:
                answer = str(answers[r]) if answers is not None else LLMError("vLLM: no answer")
            self.replay.record(json.loads(prompt), answer)
        rows = [self._guarded(self._profile_row, k) for k in keys]
        return {
            "key": np.asarray(keys, dtype=object),
            "row": np.asarray([json.dumps(r, ensure_ascii=False) for r in rows], dtype=object),
        }

    def _profile_row(self, user: str) -> dict[str, Any]:
        profile, n_events, fingerprint = self.profile(user)
        return profile_row(user, profile, n_events, fingerprint)


def run_vllm(
    config: BatchConfig,
    keys: Sequence[str],
    output: BatchOutput,
    progress: Progress,
    processor: Callable[[Any], Any] | None = None,
) -> tuple[int, int]:
    """Profiles of ``keys`` with the in-process vLLM engine; returns (engines, batch size).

    Args:
        processor: The ``ray.data.llm`` processor (default: :func:`build_vllm_processor`);
            tests pass one that generates without a GPU.
    """
    from agent.stages.profiles import ProfileConfig

    assert config.vllm is not None, "run_vllm needs config.vllm"
    ray = init_ray(config)
    actors, _ = config.pool(cluster_cpus(ray))
    stage_config = replace(config, llm=None)
    common = {
        "fn_constructor_kwargs": {"config": stage_config},
        "batch_size": config.batch_size,
        "batch_format": "numpy",
        "compute": ray.data.ActorPoolStrategy(size=actors),
        "num_cpus": config.actor_cpus,
    }
    prompts = keys_dataset(ray, keys, config.batch_size).map_batches(PromptStage, **common)
    processor = processor or build_vllm_processor(config.vllm, ProfileConfig().max_tokens)
    rows = processor(prompts).map_batches(ProfileStage, **common)
    for batch in rows.iter_batches(batch_size=None, batch_format="numpy"):
        got = [json.loads(r) for r in batch["row"]]
        output.write(got)
        progress(got)
    return config.vllm.engines, config.vllm.batch_size
