"""Batch jobs over every user or item of a model folder: ``hyrec batch profiles|embed|recommend``.

:func:`run_batch` runs a :class:`BatchConfig` on the local engine (this process, a thread pool)
or on Ray Data (an actor pool; ``pip install 'hyrec[ray]'``), writing resumable, idempotent rows
(:class:`~agent.batch.output.BatchOutput`). The rooms: ``config.py`` (what a job is),
``jobs.py`` (what a worker computes per batch), ``local.py`` and ``ray_engine.py`` (how it runs),
``vllm.py`` (profiles with ``ray.data.llm``'s vLLM engine on GPU hosts), ``output.py`` (where the
rows go), ``run.py`` (the entry point).
"""

from agent.batch.config import BatchConfig, BatchReport, VLLMConfig
from agent.batch.output import BatchOutput, OutputMismatch, read_rows
from agent.batch.run import job_keys, read_users, run_batch

__all__ = [
    "BatchConfig",
    "BatchOutput",
    "BatchReport",
    "OutputMismatch",
    "VLLMConfig",
    "job_keys",
    "read_rows",
    "read_users",
    "run_batch",
]
