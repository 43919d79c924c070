"""The chaos bench's server under test: a cheap model fitted for it, the ``hyrec serve`` process
(started, SIGKILLed and started again on the same folder and port) and the feedback database's
write lock, taken on a connection of the bench's own.

Used by :mod:`eval.bench_chaos`. ``KEY`` is the API key the server is started with, ``AUTH`` the
header the load generator (:mod:`eval.chaos_load`) sends with every request.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
KEY = "chaos-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


def fit_model(folder: Path, dataset: str) -> int:
    """A cheap hybrid on the real dataset (ALS, item-kNN, text, popularity; about a minute):
    the benchmark measures serving, not fitting. Returns the catalogue size."""
    from agent.api import Recommender, RecommenderConfig
    from hyrec.data import load_dataset
    from retrieval.hybrid import HybridConfig

    hybrid = HybridConfig(
        components=("als", "itemknn", "semantic", "pop"),
        sources=("als", "itemknn", "pop"),
        ranker="lightgbm",
    )
    ds = load_dataset(dataset)
    model = Recommender.fit(ds, RecommenderConfig(hybrid=hybrid))
    model.save(folder)
    model.close()
    return ds.n_items


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """The server process, restartable on the same folder and port."""

    def __init__(self, model_dir: Path, llm_port: int, log: Path, store_inline: bool) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.cmd = [sys.executable, "-m", "agent.cli.serve", "--model-dir", str(model_dir)]
        self.cmd += ["--port", str(self.port), "--llm", "--threads", "8"]
        self.env = {
            **os.environ,
            "HYREC_API_KEY": KEY,
            "HYREC_LLM_BASE_URL": f"http://127.0.0.1:{llm_port}/v1",
            "HYREC_LLM_MODEL": "scripted",
            "HYREC_CHROMA_PROCESS": "0" if store_inline else "1",
        }
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self) -> float:
        t0 = time.perf_counter()
        out = self.log.open("a")
        self.proc = subprocess.Popen(
            self.cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=self.env
        )
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited; see {self.log}")
            try:
                if httpx.get(self.base + "/healthz", timeout=1).status_code == 200:
                    return time.perf_counter() - t0
            except httpx.HTTPError:
                time.sleep(0.2)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def lock_database(path: Path, seconds: float, log: list) -> None:
    conn = sqlite3.connect(str(path), timeout=10, isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    log.append(("db locked", time.monotonic()))
    time.sleep(seconds)
    conn.execute("ROLLBACK")
    conn.close()
    log.append(("db unlocked", time.monotonic()))
