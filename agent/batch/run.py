"""Running a batch job: :func:`run_batch`, the one entry point of the CLI and of Python callers.

It resolves the keys (every user of the model's snapshot, the ``users`` asked for, or the items
to embed), opens the output (skipping the keys an earlier run wrote), starts the LLM the job
needs once (the embedded llama.cpp server when no server is configured; workers reach it over
HTTP), and hands the rest to the engine. Each row's status is counted in the returned
:class:`~agent.batch.config.BatchReport`.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from agent.batch.config import BatchConfig, BatchReport
from agent.batch.jobs import Row, job_items
from agent.batch.output import BatchOutput

if TYPE_CHECKING:
    from agent.llm import LLM
    from agent.llm.connect import LLMHandle
    from encoders.text import TextEncoder

log = logging.getLogger(__name__)


def job_keys(config: BatchConfig) -> list[str]:
    """The keys the job covers, in order, without duplicates.

    Raises:
        FileNotFoundError: ``model_dir`` holds no saved model.
        ValueError: ``users`` names ids the model does not know (the first few are named).
    """
    from hyrec.data.snapshot import load_snapshot

    folder = Path(config.model_dir)
    if not (folder / "hybrid.json").is_file() or not (folder / "data").is_dir():
        raise FileNotFoundError(f"{folder} is not a saved model folder (run `hyrec fit` first)")
    if config.job == "embed" and config.embed == "items":
        return list(dict.fromkeys(it.item_id for it in job_items(config)))
    known = [str(u) for u in load_snapshot(folder / "data").user_ids if str(u)]  # "": erased
    if config.users is None:
        return known
    wanted = list(dict.fromkeys(str(u) for u in config.users))
    unknown = sorted(set(wanted) - set(known))
    if unknown:
        raise ValueError(
            f"{len(unknown)} user id(s) the model does not know, e.g. {unknown[:5]}; "
            "list only users of the model's snapshot"
        )
    return wanted


def read_users(path: Path) -> tuple[str, ...]:
    """A ``--users`` file: one user id per line (blank lines and ``#`` comments skipped)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    ids = tuple(s.strip() for s in lines if s.strip() and not s.lstrip().startswith("#"))
    if not ids:
        raise ValueError(f"{path} lists no user ids (one per line)")
    return ids


def run_batch(
    config: BatchConfig,
    *,
    llm: LLM | None = None,
    encoder: TextEncoder | None = None,
    progress: Callable[[Sequence[Row]], None] | None = None,
    started: Callable[[int, int], None] | None = None,
) -> BatchReport:
    """Run ``config``'s job to the end, resuming what an earlier run wrote.

    Args:
        config: The job.
        llm: ``local`` engine only: an LLM object to use instead of connecting from
            ``config.llm`` (tests, or a caller holding a client).
        encoder: ``local`` engine only: a text encoder instead of the model's configured one.
        progress: Called with each batch of rows once it is written.
        started: Called once with (rows in the job, rows already written) before any work.

    Raises:
        FileNotFoundError, ValueError: the model folder, the users or the output (named).
        ImportError: ``--engine ray`` without Ray installed (names ``hyrec[ray]``).
        agent.llm.LLMUnavailable: the job needs an LLM and none can be reached.
    """
    t0 = time.perf_counter()
    if (llm is not None or encoder is not None) and config.engine != "local":
        raise ValueError("llm and encoder objects go to the local engine only; use config.llm")
    keys = job_keys(config)
    if config.feedback_url is None:
        _ensure_opened(Path(config.model_dir))
    output = BatchOutput(Path(config.out), config.manifest(), config.key_field)
    todo = [k for k in keys if k not in output.done]
    skipped = len(keys) - len(todo)
    if started is not None:
        started(len(keys), skipped)
    statuses: Counter[str] = Counter()

    def count(rows: Sequence[Row]) -> None:
        statuses.update(str(r.get("status")) for r in rows)
        if progress is not None:
            progress(rows)

    workers = threads = 0
    handle = None
    try:
        if todo:
            if llm is None and config.vllm is None:
                config, handle = _start_llm(config)
            workers, threads = _engine(config, todo, output, count, llm, encoder)
    finally:
        if handle is not None:
            handle.close()
    seconds = time.perf_counter() - t0
    written = sum(statuses.values())
    report = BatchReport(
        job=config.job,
        engine="ray+vllm" if config.vllm is not None else config.engine,
        out=str(config.out),
        total=len(keys),
        skipped=skipped,
        written=written,
        statuses=dict(statuses),
        seconds=round(seconds, 3),
        rows_per_s=round(written / seconds, 3) if written and seconds > 0 else None,
        workers=workers,
        threads=threads,
    )
    log.info("batch %s: %s", config.job, report.to_dict())
    return report


def _engine(config, todo, output, count, llm, encoder) -> tuple[int, int]:
    if config.vllm is not None:
        from agent.batch.vllm import run_vllm

        return run_vllm(config, todo, output, count)
    if config.engine == "ray":
        from agent.batch.ray_engine import run_ray

        return run_ray(config, todo, output, count)
    from agent.batch.local import run_local

    return run_local(config, todo, output, count, llm=llm, encoder=encoder)


def _start_llm(config: BatchConfig) -> tuple[BatchConfig, LLMHandle | None]:
    """Start the embedded LLM server once, here, when the job needs it; workers get its URL.

    A configured server (``base_url``) or the in-process transformers model is opened by each
    worker itself.
    """
    settings = config.llm
    needs = config.job != "embed" or config.embed == "profiles"
    if settings is None or not needs or settings.base_url or settings.backend == "transformers":
        return config, None
    from agent.llm.connect import connect

    handle = connect(settings)
    served = getattr(handle.llm, "settings", None)
    if served is None:  # transformers after a failed llama.cpp start: each worker loads it
        handle.close()
        return replace(config, llm=replace(settings, backend="transformers")), None
    log.info("batch: %s", handle.description)
    batch = replace(served, max_concurrency=settings.max_concurrency, slot_wait=settings.slot_wait)
    return replace(config, llm=batch), handle


def _ensure_opened(folder: Path) -> None:
    """Open the model once here before workers open it at the same time: a folder from
    ``hyrec fit`` gets its recommender.json (salt) and feedback database written once."""
    from agent.api import CONFIG_FILE, FEEDBACK_FILE, Recommender

    if not (folder / CONFIG_FILE).is_file() or not (folder / FEEDBACK_FILE).is_file():
        Recommender.load(folder).close()
