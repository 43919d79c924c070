"""The local engine: the batch pipeline in this process.

The same :class:`~agent.batch.jobs.BatchWorker` the Ray actors run, built once here; each batch
of ``batch_size`` keys is computed ``concurrency`` rows at once (a thread pool inside the worker,
so the LLM calls of a batch overlap) and written before the next batch starts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from agent.batch.config import BatchConfig
from agent.batch.jobs import BatchWorker, Row
from agent.batch.output import BatchOutput

if TYPE_CHECKING:
    from agent.llm import LLM
    from encoders.text import TextEncoder

log = logging.getLogger(__name__)

Progress = Callable[[Sequence[Row]], None]  # called with each batch of rows once written


def chunks(keys: Sequence[str], size: int) -> list[list[str]]:
    return [list(keys[i : i + size]) for i in range(0, len(keys), size)]


def run_local(
    config: BatchConfig,
    keys: Sequence[str],
    output: BatchOutput,
    progress: Progress,
    llm: LLM | None = None,
    encoder: TextEncoder | None = None,
) -> tuple[int, int]:
    """Compute and write the rows of ``keys``; returns (workers, threads).

    Args:
        config: The job.
        keys: The keys still to compute (those already written are left out by the caller).
        output: Where each batch is written.
        progress: Told about every batch written.
        llm: The LLM the worker uses (``None``: connect from ``config.llm``, if any).
        encoder: The text encoder the worker uses (``None``: the model's configured one).
    """
    worker = BatchWorker(config, llm=llm, threads=config.concurrency, encoder=encoder)
    try:
        for batch in chunks(keys, config.batch_size):
            rows = worker.rows(batch)
            output.write(rows)
            progress(rows)
    finally:
        worker.close()
    return 1, config.concurrency
