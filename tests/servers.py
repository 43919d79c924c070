"""Real server processes for tests: ``hyrec serve`` (with the tests' bag-of-words encoder, which
the tiny models are fitted with) and the scripted OpenAI-compatible LLM of ``eval.scripted_llm``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]

# `hyrec serve` with the tests' encoder: agent.folder builds its TextEncoder through this name
SERVE = """
import sys
from dataclasses import replace
import typer
import agent.folder
from agent.cli.serve import serve
from encoders.text import TextEncoder
from tests.test_api import BagOfWords

cache = sys.argv.pop(1)
agent.folder.TextEncoder = lambda config: TextEncoder(
    replace(config, cache_dir=cache), model=BagOfWords(), model_id="bag-of-words"
)
typer.run(serve)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    proc: subprocess.Popen
    base: str
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_serve(
    model_dir: Path,
    cache: Path,
    log: Path,
    *args: str,
    key: str | None = "abuse-key",
    env: dict[str, str] | None = None,
    port: int | None = None,
    wait: bool = True,
) -> Server:
    """``hyrec serve`` on a free loopback port; waits for /healthz unless ``wait`` is False."""
    port = port or free_port()
    cmd = [sys.executable, "-c", SERVE, str(cache), "--model-dir", str(model_dir)]
    cmd += ["--port", str(port), *args]
    full_env = {**os.environ, **(env or {})}
    if key is not None:
        full_env["HYREC_API_KEY"] = key
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=full_env)
    server = Server(proc, f"http://127.0.0.1:{port}", log)
    if wait:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {server.text()[-2000:]}")
            try:
                if httpx.get(server.base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                server.stop()
                raise RuntimeError("server did not answer /healthz in 90 s")
            time.sleep(0.2)
    return server


def rss_kib(pid: int) -> int:
    """Resident memory of a process, in KiB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")
