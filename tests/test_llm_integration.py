"""Integration tests of the LLM backends against real models: the embedded llama.cpp server with
the packaged SmolLM2-135M (the HTTP path vLLM and hosted APIs share) and the transformers backend.
They check structure, never the 135M model's wording."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agent.llm import LLM, LLMBusy, LLMError, LLMUnavailable, Message
from agent.llm.connect import LLMHandle
from agent.llm.embedded import EmbeddedServer, EmbeddedServerConfig, free_port, llama_cpp_installed
from agent.llm.openai_backend import OpenAICompatibleLLM
from agent.llm.settings import LLMSettings
from tests.llm_contract import ASK, GARBAGE, LLMContract, MakeLLM, http_backend

pytestmark = pytest.mark.integration

needs_llama = pytest.mark.skipif(
    not llama_cpp_installed(), reason="llama-cpp-python[server] is not installed"
)


def _gone(pid: int, within: float = 10.0) -> bool:
    """Whether process ``pid`` has exited (and is not a zombie) within ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(")")[-1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.1)
    return False


def test_plain_completion(llm_server: LLMHandle) -> None:
    out = llm_server.llm.complete(ASK, max_tokens=32)
    assert isinstance(out.text, str) and out.text.strip()
    assert out.model == "smollm2" and out.seconds > 0
    assert 1 <= out.usage["completion_tokens"] <= 32 and out.usage["prompt_tokens"] > 10


def test_max_tokens_is_honoured(llm_server: LLMHandle) -> None:
    ask = [Message("user", "Write a long story about a dragon, at least 500 words.")]
    out = llm_server.llm.complete(ask, max_tokens=5, logprobs=1)
    assert out.usage["completion_tokens"] == 5
    assert out.tokens is not None and len(out.tokens) == 5


def concurrent(llm: LLM, n: int = 3) -> list[str | BaseException]:
    out: list[str | BaseException] = []

    def call(i: int) -> None:
        try:
            out.append(llm.complete([Message("user", f"Count to {i}.")], max_tokens=8).text)
        except LLMError as e:
            out.append(e)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_concurrent_calls_queue_for_the_slot_when_the_slot_wait_allows(
    llm_server: LLMHandle,
) -> None:
    """One llama.cpp slot (max_concurrency=1), slot_wait as long as the timeout: all three calls
    queue and succeed, one at a time."""
    settings = LLMSettings(base_url=llm_server.base_url, timeout=60, slot_wait=60)
    llm = OpenAICompatibleLLM(settings)
    texts = concurrent(llm)
    llm.close()
    assert len(texts) == 3 and all(isinstance(t, str) and t.strip() for t in texts), texts


def test_concurrent_calls_past_the_slot_wait_are_skipped_as_busy(llm_server: LLMHandle) -> None:
    """The same server with a short slot wait (0.05 s): whoever gets the slot is answered, and
    a call that finds it taken for longer is refused with LLMBusy, never another error."""
    settings = LLMSettings(base_url=llm_server.base_url, timeout=60, slot_wait=0.05)
    llm = OpenAICompatibleLLM(settings)
    out = concurrent(llm, n=4)
    llm.close()
    answered = [t for t in out if isinstance(t, str)]
    assert len(out) == 4 and answered and all(t.strip() for t in answered), out
    assert all(isinstance(e, LLMBusy) for e in out if not isinstance(e, str)), out


@needs_llama
def test_start_stop_leaves_no_process_and_down_server_is_unavailable() -> None:
    server = EmbeddedServer(EmbeddedServerConfig(n_threads=1))
    settings = LLMSettings(base_url=server.start(), timeout=30)
    with LLMHandle(OpenAICompatibleLLM(settings), server=server) as handle:
        pid = server.pid
        assert pid is not None and server.startup_seconds is not None
        out = handle.llm.complete([Message("user", "Hi")], max_tokens=2)
        assert isinstance(out.text, str) and out.text.strip(), out
        assert 1 <= out.usage["completion_tokens"] <= 2 and out.usage["prompt_tokens"] > 0
    assert _gone(pid, within=1.0) and not server.running()
    with pytest.raises(LLMUnavailable):
        handle.llm.complete([Message("user", "Hi")], max_tokens=2)  # the closed client
    with pytest.raises(LLMUnavailable, match="cannot reach"):
        OpenAICompatibleLLM(settings).complete([Message("user", "Hi")], max_tokens=2)  # fresh
    server.stop()  # idempotent


@needs_llama
def test_server_exits_when_its_parent_is_killed(tmp_path: Path) -> None:
    script = (
        "from agent.llm.embedded import EmbeddedServer, EmbeddedServerConfig\n"
        "s = EmbeddedServer(EmbeddedServerConfig(n_threads=1)); s.start()\n"
        "print(s.pid, flush=True)\n"
        "import time; time.sleep(600)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=Path.cwd()
    )
    try:
        server_pid = int(parent.stdout.readline())
    finally:
        parent.kill()
        parent.wait()
    assert _gone(server_pid, within=10.0)


@needs_llama
def test_broken_model_file_is_unavailable_with_the_log(tmp_path: Path) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"not a gguf file" * 100)
    server = EmbeddedServer(EmbeddedServerConfig(model_path=bad, startup_timeout=60))
    with pytest.raises(LLMUnavailable, match="exited with code"):
        server.start()
    assert not server.running() and server.pid is None


@needs_llama
def test_cli_serve_runs_in_the_foreground_and_stops_on_ctrl_c() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from agent.cli.llm import app; app()",
            "serve",
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        # as from a terminal: a test run started in the background (`make test &`, CI runners)
        # inherits SIGINT ignored, and Python then never raises KeyboardInterrupt
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "pid" in line:
                break
        output = "".join(lines)
        assert f"http://127.0.0.1:{port}/v1" in output, output
        server_pid = int(output.split("server pid")[1].split(";")[0])
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5).json()
        assert [m["id"] for m in models["data"]] == ["smollm2"]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0  # stopping the llama.cpp child takes seconds on busy cores
        assert _gone(server_pid, within=1.0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_check_against_the_server(llm_server: LLMHandle, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from agent.cli.llm import app

    config = tmp_path / "config.toml"
    config.write_text(f'[llm]\nbase_url = "{llm_server.base_url}"\n')
    result = CliRunner().invoke(app, ["check", "--config", str(config)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "ok" in result.output and llm_server.base_url in result.output


# --- the LLM contract on the real backends --------------------------------------------------------


class TestOpenAICompatibleOnLlamaCppContract(LLMContract):
    """The HTTP backend against the real llama.cpp server; a scripted slow server, a garbage
    server and a dead port for the failure cases."""

    tokens_spell_text = True
    garbage_calls = len(GARBAGE)

    @pytest.fixture
    def make_llm(self, llm_server: LLMHandle) -> Iterator[MakeLLM]:
        with contextlib.ExitStack() as stack:
            yield lambda kind: llm_server.llm if kind == "working" else http_backend(kind, stack)


@pytest.fixture(scope="module")
def transformers_llm():
    """The packaged SmolLM2 in-process on one CPU thread (converted once, then loaded from the
    cache in about 0.3 s)."""
    pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    pytest.importorskip("accelerate")
    import torch

    from agent.llm.transformers_backend import TransformersConfig, TransformersLLM

    threads = torch.get_num_threads()
    llm = TransformersLLM(TransformersConfig(device="cpu", num_threads=1))  # converts once, cached
    yield llm
    torch.set_num_threads(threads)


class TestTransformersContract(LLMContract):
    """The in-process backend. ``json_schema`` is a prompt hint there (no constrained decoding),
    so its "garbage" is a prose answer to a JSON request; "down" is a model that does not exist."""

    enforces_json_schema = False
    structured_max_tokens = 24
    slow_timeout = 0.01
    slow_max_tokens = 64
    timeout_grace = 2.0

    @pytest.fixture
    def make_llm(self, transformers_llm, tmp_path: Path) -> MakeLLM:
        from agent.llm.transformers_backend import TransformersConfig, TransformersLLM

        def make(kind: str) -> LLM:
            if kind == "down":
                missing = str(tmp_path / "missing.gguf")
                return TransformersLLM(TransformersConfig(model=missing, device="cpu"))
            return transformers_llm

        return make


def test_transformers_samples_with_a_temperature(transformers_llm) -> None:
    out = transformers_llm.complete(ASK, max_tokens=4, temperature=0.7)
    assert isinstance(out.text, str) and 1 <= out.usage["completion_tokens"] <= 4
    assert out.tokens is None and out.top_logprobs is None  # not asked for


def test_transformers_refuses_a_call_as_busy_after_the_slot_wait(transformers_llm) -> None:
    """Another call is generating (its lock is held): this one waits ``slot_wait``, not its whole
    timeout, and is refused as LLMBusy, as the HTTP backend does past its slots."""
    from agent.llm import LLMBusy

    with transformers_llm._lock:
        start = time.perf_counter()
        with pytest.raises(LLMBusy, match="LLM busy"):
            transformers_llm.complete(ASK, max_tokens=2, timeout=10)
        assert time.perf_counter() - start < transformers_llm.config.slot_wait + 0.5
    out = transformers_llm.complete(ASK, max_tokens=2)  # the lock is free again: answered
    assert 1 <= out.usage["completion_tokens"] <= 2
