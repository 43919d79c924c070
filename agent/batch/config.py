"""What a batch job is: :class:`BatchConfig` (the job, its inputs, its engine) and
:class:`BatchReport` (what a run did).

One config drives both engines (:mod:`agent.batch.local`, :mod:`agent.batch.ray_engine`) and the
in-process vLLM path (:mod:`agent.batch.vllm`). :meth:`BatchConfig.manifest` is the part of it
that decides the rows: the output folder keeps it, so a restart with other settings into the
same ``out`` is refused instead of mixing rows of two jobs.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from agent.llm.settings import LLMSettings

Job = Literal["profiles", "embed", "recommend"]
Engine = Literal["local", "ray"]
EmbedKind = Literal["items", "profiles"]

JOBS: tuple[str, ...] = ("profiles", "embed", "recommend")
RAY_HINT = "pip install 'hyrec[ray]'"


@dataclass(frozen=True)
class VLLMConfig:
    """The in-process vLLM engine of ``ray.data.llm`` (GPU hosts; profiles only)."""

    model: str  # HF model id or path; also the model name the profile cache is keyed by
    engines: int = 1  # vLLM engine replicas (one per GPU, or per tensor-parallel group)
    batch_size: int = 64  # rows per engine call: vLLM batches them on the GPU
    max_model_len: int = 4096  # profile prompts are ~400 tokens; small keeps the KV cache cheap
    engine_kwargs: dict[str, Any] = field(default_factory=dict)  # more vllm.LLM(...) arguments


@dataclass(frozen=True)
class BatchConfig:
    """One batch job (see ``hyrec batch --help``).

    Args:
        job: ``profiles``, ``embed`` or ``recommend``.
        model_dir: A folder written by ``hyrec fit`` / :meth:`Recommender.save`.
        out: A ``.jsonl`` file, or a Parquet folder (any other name).
        engine: ``local`` (this process, a thread pool) or ``ray`` (Ray Data, an actor pool).
        concurrency: Rows computed at once over all workers: the LLM calls in flight.
        batch_size: Rows per batch: the unit of work, of writing and of resuming.
        users: The users to process (``None``: every user of the model's snapshot).
        k: ``recommend``: list length.
        reasons: ``recommend``: attach a reason to every item (as ``Recommender.recommend``).
        embed: ``embed``: embed ``items`` (the catalogue) or ``profiles`` (one per user).
        items_file: ``embed items``: a JSON-lines catalogue to embed instead of the model's
            (``item_id``, ``title``, ``description``, ``attributes``).
        llm: How workers reach the LLM (an OpenAI-compatible server, or the in-process
            transformers model); ``None``: no LLM (deterministic profiles, the non-LLM path).
        ray_address: ``ray``: the cluster to join (``None``: start one in this process).
        actors: ``ray``: actor pool size (``None``: ``min(concurrency, the cluster's CPUs)``).
        actor_cpus: ``ray``: CPUs each actor reserves.
        vllm: ``ray`` + ``profiles``: generate with ``ray.data.llm``'s vLLM engine instead of
            ``llm`` over HTTP.
        feedback_url: The feedback database the served model uses (``postgresql://...``), so
            workers read the same feedback and write profiles where serving replicas look
            (``None``: the model folder's SQLite file and profile folder).
    """

    job: Job
    model_dir: Path
    out: Path
    engine: Engine = "local"
    concurrency: int = 1  # 1 suits llama.cpp's one-slot server; vLLM batches 8-64 at once
    batch_size: int = 16  # a killed job loses at most one batch per worker
    users: tuple[str, ...] | None = None
    k: int = 10
    reasons: bool = False  # off: the list alone, what serving systems cache
    embed: EmbedKind = "items"
    items_file: Path | None = None
    llm: LLMSettings | None = None
    ray_address: str | None = None
    actors: int | None = None
    actor_cpus: float = 1.0  # one per actor: the model is scored on one BLAS thread
    vllm: VLLMConfig | None = None
    feedback_url: str | None = None

    def __post_init__(self) -> None:
        if self.job not in JOBS:
            raise ValueError(f"unknown batch job {self.job!r}: use one of {', '.join(JOBS)}")
        if self.engine not in ("local", "ray"):
            raise ValueError(f"unknown engine {self.engine!r}: use local or ray")
        if self.concurrency < 1 or self.batch_size < 1 or self.k < 1:
            raise ValueError("concurrency, batch_size and k must be at least 1")
        if self.actors is not None and self.actors < 1:
            raise ValueError("actors must be at least 1")
        if self.vllm is not None and (self.engine != "ray" or self.job != "profiles"):
            raise ValueError("the vLLM engine runs `profiles` on --engine ray only")

    @property
    def key_field(self) -> str:
        """The column a row is identified by (each key is written exactly once)."""
        return "item_id" if self.job == "embed" and self.embed == "items" else "user_id"

    def pool(self, cluster_cpus: float) -> tuple[int, int]:
        """(actors, threads per actor) for the Ray engine: ``concurrency`` rows at once."""
        fits = max(1, int(cluster_cpus // max(self.actor_cpus, 1e-6)))
        actors = self.actors or min(self.concurrency, fits)
        return actors, max(1, math.ceil(self.concurrency / actors))

    def manifest(self) -> dict[str, Any]:
        """What decides the rows (not how fast they come): kept beside the output."""
        llm = None
        if self.vllm is not None:
            llm = {"vllm": self.vllm.model}
        elif self.llm is not None:
            llm = {"model": self.llm.model, "backend": self.llm.backend}
        body: dict[str, Any] = {"job": self.job, "model_dir": str(Path(self.model_dir).resolve())}
        if self.job == "recommend":
            body.update(k=self.k, reasons=self.reasons)
        if self.job == "embed":
            body["embed"] = self.embed
            if self.items_file is not None:
                data = Path(self.items_file).read_bytes()
                body["items_sha256"] = hashlib.sha256(data).hexdigest()
        if self.job != "embed" or self.embed == "profiles":
            body["llm"] = llm
        return body


@dataclass(frozen=True)
class BatchReport:
    """What one run did.

    Attributes:
        job, engine: As configured.
        out: Where the rows are.
        total: Rows the job has (users or items asked for).
        skipped: Rows already written by an earlier run (resumed), not computed again.
        written: Rows this run wrote.
        statuses: Rows this run wrote, by status (``ok``, ``fallback``, ``error``).
        seconds: Wall time of this run (start-up included).
        rows_per_s: ``written / seconds``.
        workers: Ray actors (1 for the local engine); threads: rows at once per worker.
    """

    job: str
    engine: str
    out: str
    total: int
    skipped: int
    written: int
    statuses: dict[str, int]
    seconds: float
    rows_per_s: float | None
    workers: int
    threads: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)
