"""Progress of a fit that a person can follow, in a terminal and in a log file alike.

The fitting code stays free of any display: it logs at INFO with a ``progress`` dict in the
record's ``extra`` (the keys below), and :class:`FitProgress` listens on hyrec's loggers while a
fit runs::

    log.info("sasrec epoch %d ...", epoch, extra={"progress": {
        "stage": "sasrec",          # one key per stage (a component's kind, "head", "store", ...)
        "label": "SASRec, ...",     # what it does (the first record of a stage should carry it)
        "step": 5, "total": 40,     # how far it is (both optional)
        "valid": 0.091,             # validation NDCG@10 now (optional), "best": the best so far
        "done": True,               # the stage ended ("seconds": how long it took, optional)
    }})

In a terminal (``console.is_terminal``) every stage is a line of a rich progress display: what it
does, a bar, step/total, the validation score and the elapsed time. Anywhere else (a pipe, a CI log,
``make demo > log``) the same records become plain timestamped lines on stderr: a stage's start,
its progress at most every ``every`` seconds, its end, and a "still running" line when a stage has
said nothing for ``every`` seconds. Warnings from those loggers are shown in both modes; other INFO
records are not. Nothing here imports the fitting code.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TextIO

from rich.console import Console, Group
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Column, Table
from rich.text import Text

#: Loggers whose records carry fit progress (hyrec's own packages).
PROGRESS_LOGGERS = ("hyrec", "encoders", "retrieval", "agent")


@dataclass
class _Stage:
    key: str
    label: str
    started: float
    step: int | None = None
    total: int | None = None
    valid: float | None = None
    best: float | None = None
    done: bool = False
    seconds: float | None = None
    printed: float = 0.0  # when its last plain line was written
    task: TaskID | None = None

    def where(self) -> str:
        """'epoch 5/40, valid NDCG@10 0.0912 (best 0.0951)' — whatever is known."""
        parts = []
        if self.step is not None:
            parts.append(f"{self.step}/{self.total}" if self.total else f"{self.step}")
        if self.valid is not None:
            best = f" (best {self.best:.4f})" if self.best is not None else ""
            parts.append(f"valid NDCG@10 {self.valid:.4f}{best}")
        return ", ".join(parts)


@dataclass
class _Options:
    every: float
    stream: TextIO | None
    loggers: tuple[str, ...]
    saved: dict[str, tuple[int, bool]] = field(default_factory=dict)


class FitProgress:
    """Shows the stages of a fit while it runs; a context manager.

    Args:
        console: Where the terminal display and :meth:`print` go.
        live: Rich display (``True``) or plain lines (``False``); ``None``: a display exactly when
            ``console`` is a terminal.
        every: Plain mode: seconds between two progress lines of one stage (and before a "still
            running" line).
        stream: Plain mode: where lines go (``None``: ``sys.stderr`` at the time of writing).
        loggers: The loggers to listen on.
    """

    def __init__(
        self,
        console: Console | None = None,
        *,
        live: bool | None = None,
        every: float = 10.0,
        stream: TextIO | None = None,
        loggers: tuple[str, ...] = PROGRESS_LOGGERS,
    ) -> None:
        self.console = console or Console()
        self.live = self.console.is_terminal if live is None else live
        self._options = _Options(every, stream, loggers)
        self._stages: dict[str, _Stage] = {}
        self._lock = threading.RLock()
        self._start = time.perf_counter()
        self._progress: Progress | None = None
        self._handler = _Handler(self)
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    # ---- lifetime ------------------------------------------------------------------------------
    def __enter__(self) -> FitProgress:
        self._start = time.perf_counter()
        for name in self._options.loggers:
            logger = logging.getLogger(name)
            self._options.saved[name] = (logger.level, logger.propagate)
            logger.setLevel(logging.INFO)
            logger.addHandler(self._handler)
            logger.propagate = False  # the root handler would print the same records again
        if self.live:
            self._progress = Progress(
                SpinnerColumn(finished_text="[green]✓[/]"),
                TextColumn(
                    "{task.description}",
                    table_column=Column(ratio=3, no_wrap=True, overflow="ellipsis"),
                ),
                BarColumn(bar_width=None, table_column=Column(ratio=1)),
                TextColumn(
                    "{task.fields[where]}",
                    table_column=Column(ratio=4, no_wrap=True, overflow="ellipsis"),
                ),
                TimeElapsedColumn(),
                console=self.console,
                expand=True,
            )
            self._progress.start()
        else:
            self._beat = threading.Thread(target=self._heartbeat, daemon=True)
            self._beat.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=2)
        if self._progress is not None:
            self._progress.stop()
        for name, (level, propagate) in self._options.saved.items():
            logger = logging.getLogger(name)
            logger.removeHandler(self._handler)
            logger.setLevel(level)
            logger.propagate = propagate
        self._options.saved.clear()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self._start

    @contextmanager
    def stage(self, key: str, label: str) -> Iterator[None]:
        """A stage run by the caller itself (loading data, encoding text, saving)."""
        started = time.perf_counter()
        self.update({"stage": key, "label": label})
        yield
        self.update({"stage": key, "done": True, "seconds": time.perf_counter() - started})

    # ---- records -------------------------------------------------------------------------------
    def update(self, info: Mapping[str, Any]) -> None:
        """Apply one progress record (the keys in the module doc)."""
        key = str(info.get("stage") or "fit")
        now = time.perf_counter()
        with self._lock:
            stage = self._stages.get(key)
            new = stage is None or stage.done
            if new:
                stage = _Stage(key, str(info.get("label") or key), now)
                self._stages[key] = stage
            elif info.get("label"):
                stage.label = str(info["label"])
            for name in ("step", "total"):
                if info.get(name) is not None:
                    setattr(stage, name, int(info[name]))
            for name in ("valid", "best"):
                value = info.get(name)
                if isinstance(value, int | float) and value == value:  # not NaN
                    setattr(stage, name, float(value))
            if info.get("done"):
                stage.done = True
                seconds = info.get("seconds")
                stage.seconds = float(seconds) if seconds is not None else now - stage.started
            if self.live:
                self._show(stage, new)
            else:
                self._plain(stage, new, now)

    def warn(self, message: str) -> None:
        if self._progress is not None:
            self._progress.console.print(f"[yellow]warning:[/] {message}", markup=True)
        else:
            self._write(f"warning: {message}")

    def _show(self, stage: _Stage, new: bool) -> None:
        assert self._progress is not None
        if new or stage.task is None:
            stage.task = self._progress.add_task(
                f"{stage.key}: {stage.label}", total=stage.total, where=""
            )
        where = stage.where()
        if stage.done:
            took = f"{stage.seconds:.1f} s"
            where = f"{where} · {took}" if where else took
            total = stage.total or stage.step or 1
            self._progress.update(stage.task, total=total, completed=total, where=where)
            self._progress.stop_task(stage.task)
        else:
            self._progress.update(
                stage.task,
                description=f"{stage.key}: {stage.label}",
                total=stage.total,
                completed=stage.step or 0,
                where=where,
            )

    def _plain(self, stage: _Stage, new: bool, now: float) -> None:
        if new:
            self._line(stage, f"{stage.label}", now)
        if stage.done:
            where = stage.where()
            self._line(
                stage, f"done in {stage.seconds:.1f} s" + (f" — {where}" if where else ""), now
            )
        elif not new and now - stage.printed >= self._options.every and stage.where():
            self._line(stage, stage.where(), now)

    def _line(self, stage: _Stage, text: str, now: float) -> None:
        stage.printed = now
        self._write(f"{stage.key}: {text}")

    def _write(self, text: str) -> None:
        stream = self._options.stream or sys.stderr
        stream.write(f"[{self.elapsed:6.1f} s] {text}\n")
        stream.flush()

    def _heartbeat(self) -> None:
        every = self._options.every
        while not self._stop.wait(min(every, 1.0)):
            now = time.perf_counter()
            with self._lock:
                running = [s for s in self._stages.values() if not s.done]
                if not running:
                    continue
                stage = max(running, key=lambda s: s.started)  # the innermost stage
                quiet = now - max(s.printed for s in self._stages.values())
                if quiet >= every:
                    where = stage.where()
                    note = f"still running ({now - stage.started:.0f} s)"
                    self._line(stage, f"{note}, {where}" if where else note, now)

    # ---- the end -------------------------------------------------------------------------------
    def print(self, renderable: Any) -> None:
        self.console.print(renderable)


class _Handler(logging.Handler):
    def __init__(self, progress: FitProgress) -> None:
        super().__init__(logging.INFO)
        self.progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        try:
            info = getattr(record, "progress", None)
            if isinstance(info, Mapping):
                self.progress.update(info)
            elif record.levelno >= logging.WARNING:
                self.progress.warn(f"{record.name}: {record.getMessage()}")
        except Exception:  # a display problem must never break the fit
            self.handleError(record)


def fit_summary(report: Mapping[str, Any], *, profile: str | None, seconds: float | None) -> Group:
    """One screen: each component's validation NDCG@10 and fit seconds, then the hybrid's.

    ``report`` is a hybrid's ``fit_report``; the validation task is the one the fit early-stopped
    on (for ``hyrec fit`` / ``hyrec demo``: each user's last event).
    """
    valid = report.get("component_valid_ndcg@10", {})
    secs = report.get("component_seconds", {})
    heads = report.get("ranker_valid_ndcg@10", {})
    chosen = report.get("ranker")
    title = "fit summary" + (f" — profile {profile}" if profile else "")
    table = Table(title=title, title_justify="left")
    table.add_column("model")
    table.add_column("valid NDCG@10", justify="right")
    table.add_column("fit s", justify="right")
    for name in secs or valid:
        score = valid.get(name)
        table.add_row(name, "–" if score is None else f"{score:.4f}", f"{secs.get(name, 0.0):.1f}")
    notes = []
    if chosen in heads:
        others = ", ".join(f"{k} {v:.4f}" for k, v in heads.items() if k != chosen)
        label = f"[bold]hybrid[/] (head: {chosen}" + (f"; {others}" if others else "") + ")"
        table.add_row(label, f"[bold]{heads[chosen]:.4f}[/]", f"{report.get('seconds', 0):.1f}")
        scored = {k: v for k, v in valid.items() if v is not None}
        if scored:
            best = max(scored, key=scored.__getitem__)
            notes.append(
                f"hybrid / best single component ({best}): ×{heads[chosen] / scored[best]:.2f}"
            )
    if seconds is not None:
        notes.append(f"whole fit {seconds:.0f} s (data, text, components, head, saving)")
    return Group(table, *(Text(note) for note in notes))
