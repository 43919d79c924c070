"""What a command needs around a slow run: one-line progress (:class:`Say`, :class:`Step`) and
the LLM it talks to (:func:`connect_llm`: the configured server, else an embedded one)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

from rich.console import Console

console = Console()


def quiet_logging() -> None:
    """Errors only: the commands that list every fallback themselves need no warnings too."""
    logging.getLogger().setLevel(logging.ERROR)


class Say:
    """A line for the person running the command: stdout normally, stderr under --json."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def __call__(self, text: str) -> None:
        if self.as_json:
            print(text, file=sys.stderr, flush=True)
        else:
            console.print(text, highlight=False, markup=False)  # "[llamacpp]" is not a style


class Step:
    """A slow step: a spinner in a terminal, a start and an end line elsewhere."""

    def __init__(self, say: Say, label: str) -> None:
        self.say, self.label = say, label
        self.live = console.is_terminal and not say.as_json
        self._status = None

    def __enter__(self) -> Step:
        self.start = time.perf_counter()
        if self.live:
            self._status = console.status(self.label + "…")
            self._status.__enter__()
        else:
            self.say(self.label + "…")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._status is not None:
            self._status.__exit__(*exc)
        if exc[0] is None:
            self.say(f"{self.label}: done in {time.perf_counter() - self.start:.1f} s")


def connect_llm(
    use_llm: bool, *, prepare: subprocess.Popen | None = None, say=None
) -> tuple[object | None, str | None]:
    """(LLMHandle or None, why not): the configured LLM, else an embedded one (the llama.cpp
    server if installed, else the in-process transformers model; see
    :func:`agent.llm.connect.choose_backend`)."""
    if not use_llm:
        stop(prepare)
        return None, "LLM stages off (--no-llm)"
    from agent.llm import LLMUnavailable
    from agent.llm.connect import BACKEND_LABELS, choose_backend, connect
    from agent.llm.settings import LLMSettings

    say = say or Say(False)
    try:
        settings = LLMSettings.from_env()
    except (ValueError, OSError) as e:
        stop(prepare)
        return None, f"no LLM: the LLM settings are invalid ({e}); used the non-LLM ranking"
    choice = choose_backend(settings)
    if choice.kind is None:
        stop(prepare)
        return None, f"no LLM ({choice.reason}); used the non-LLM ranking"
    if prepare is not None and prepare.poll() is None:
        with Step(say, "LLM: finishing the one-time conversion of the packaged SmolLM2"):
            prepare.wait()
    say(f"LLM: {BACKEND_LABELS[choice.kind]} — {choice.reason}")
    try:
        if choice.kind == "transformers":
            from agent.llm.transformers_backend import needs_conversion, resolve_model

            if needs_conversion(settings.model):
                with Step(say, "LLM: converting the packaged SmolLM2 for transformers (once)"):
                    resolve_model(settings.model)
        with Step(say, f"LLM: starting {BACKEND_LABELS[choice.kind]}"):
            handle = connect(settings)
    except LLMUnavailable as e:
        return None, f"no LLM reachable ({e}); used the non-LLM ranking"
    say(f"LLM: {handle.description}")
    return handle, None


def prepare_llm_in_background(use_llm: bool) -> subprocess.Popen | None:
    """Start the transformers backend's one-time GGUF conversion in a child process when
    :func:`agent.llm.connect.connect` will need it; ``None`` when nothing is to do."""
    if not use_llm:
        return None
    from agent.llm.connect import choose_backend
    from agent.llm.settings import LLMSettings

    try:
        settings = LLMSettings.from_env()
        if choose_backend(settings).kind != "transformers":
            return None
        from agent.llm.transformers_backend import needs_conversion

        if not needs_conversion(settings.model):
            return None
    except (ValueError, OSError):
        return None  # connect() reports it
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one core: the fit keeps the other
    return subprocess.Popen(
        [sys.executable, "-m", "agent.llm.transformers_backend", settings.model],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )


def stop(process: subprocess.Popen | None) -> None:
    if process is not None and process.poll() is None:
        process.terminate()
        process.wait(10)
