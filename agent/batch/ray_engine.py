"""The Ray engine: the batch pipeline as a Ray Data dataset over the keys.

``ray.data.from_items`` holds the keys still to compute, one block per batch; ``map_batches``
runs :class:`~agent.batch.jobs.BatchWorker` in a fixed pool of actors (``ActorPoolStrategy``:
each actor opens the model folder and its LLM client once), each computing ``threads`` rows of a
batch at once so the LLM calls overlap within an actor as well as across actors. The driver
streams the finished batches (``iter_batches``) into the :class:`~agent.batch.output.BatchOutput`,
so the same resumable writer serves both engines and a key is written exactly once.

``ray_address=None`` starts a local cluster in this process (``ray.init``), the documented way
for a single machine and for tests; an address joins a running cluster (``ray start --head``).
A Ray that is already initialised (tests share one per session) is used as it is.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from agent.batch.config import RAY_HINT, BatchConfig
from agent.batch.jobs import BatchWorker
from agent.batch.local import Progress
from agent.batch.output import BatchOutput

log = logging.getLogger(__name__)


def require_ray() -> Any:
    """The ``ray`` module with Ray Data, or an ImportError naming the extra to install."""
    try:
        import ray
        import ray.data  # noqa: F401  (Ray Data is the `data` extra of ray)
    except ImportError:
        raise ImportError(
            f"--engine ray needs Ray Data: {RAY_HINT} (or run with --engine local)"
        ) from None
    return ray


def init_ray(config: BatchConfig) -> Any:
    """Connect to ``config.ray_address`` or start a local cluster, unless Ray already runs."""
    ray = require_ray()
    if not ray.is_initialized():
        if config.ray_address:
            ray.init(address=config.ray_address, log_to_driver=False)
        else:
            ray.init(include_dashboard=False, log_to_driver=False)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the caller shows one bar with rows/s
    return ray


def cluster_cpus(ray: Any) -> float:
    return float(ray.cluster_resources().get("CPU", 1.0))


def keys_dataset(ray: Any, keys: Sequence[str], batch_size: int) -> Any:
    """The keys as a dataset of one block per batch."""
    blocks = max(1, -(-len(keys) // batch_size))
    return ray.data.from_items([{"key": k} for k in keys], override_num_blocks=blocks)


def run_ray(
    config: BatchConfig, keys: Sequence[str], output: BatchOutput, progress: Progress
) -> tuple[int, int]:
    """Compute and write the rows of ``keys`` on Ray Data; returns (actors, threads per actor)."""
    ray = init_ray(config)
    actors, threads = config.pool(cluster_cpus(ray))
    llm = config.llm
    if llm is not None:  # each actor's client keeps `threads` calls in flight
        llm = llm.for_batch(threads)
    worker_config = replace(config, llm=llm)
    log.info("ray: %d actors x %d threads over %d keys", actors, threads, len(keys))
    rows = keys_dataset(ray, keys, config.batch_size).map_batches(
        BatchWorker,
        fn_constructor_kwargs={"config": worker_config, "threads": threads},
        batch_size=config.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=config.actor_cpus,
    )
    for batch in rows.iter_batches(batch_size=None, batch_format="numpy"):
        got = [json.loads(r) for r in batch["row"]]
        output.write(got)
        progress(got)
    return actors, threads
