"""The conditions of a first-run measurement (:mod:`eval.first_run`): the machine it ran on
(:func:`machine`), the 1-minute load average, read once (:func:`load_average`), sampled in a
thread (:class:`LoadSampler`) or waited on until the machine is idle (:func:`wait_until_idle`), an
environment without this checkout's venv, with a new ``HOME`` and no pip cache
(:func:`clean_env`), and a command run with every output line timed (:func:`run_timed`).
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def machine() -> dict[str, Any]:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def wait_until_idle(limit: float, max_wait: float, pattern: str = "python3 -m eval") -> float:
    """Block until no process matches ``pattern`` and the 1-minute load is below ``limit``."""
    start = time.perf_counter()
    while time.perf_counter() - start < max_wait:
        busy = subprocess.run(["pgrep", "-f", pattern], capture_output=True).returncode == 0
        if not busy and os.getloadavg()[0] < limit:
            break
        time.sleep(15)
    return load_average()


class LoadSampler:
    """The 1-minute load average every ``every`` seconds, in a thread."""

    def __init__(self, every: float = 10.0) -> None:
        self.every, self.samples = every, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.samples.append(load_average())

    def __enter__(self) -> LoadSampler:
        self.samples.append(load_average())
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=1)
        self.samples.append(load_average())

    def summary(self) -> dict[str, float]:
        s = self.samples
        return {"start": s[0], "max": max(s), "mean": round(statistics.fmean(s), 2), "end": s[-1]}


def run_timed(
    cmd: Sequence[str], cwd: Path, env: dict[str, str], log: Path, echo: bool = True
) -> tuple[int, list[tuple[float, str]], float]:
    """Run ``cmd``; every output line with its arrival time (s from the start), exit code, wall."""
    start = time.perf_counter()
    lines: list[tuple[float, str]] = []
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            t = time.perf_counter() - start
            line = line.rstrip("\n")
            lines.append((t, line))
            out.write(f"{t:8.1f} {line}\n")
            out.flush()
            if echo:
                print(f"{t:8.1f} {line}", flush=True)
        code = proc.wait()
    return code, lines, time.perf_counter() - start


def clean_env(home: Path, data_dir: str | None) -> dict[str, str]:
    """This process's environment without its venv, with a new HOME and no pip cache."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("VIRTUAL_ENV", "PYTHONHOME", "PYTHONPATH") and not k.startswith("XDG_")
    }
    venv_bins = {str(ROOT / ".venv" / "bin"), str(Path(sys.prefix) / "bin")}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p not in venv_bins)
    env |= {"HOME": str(home), "PIP_NO_CACHE_DIR": "1", "PYTHONUNBUFFERED": "1"}
    if data_dir:
        env["HYREC_DATA_DIR"] = data_dir
    return env
