"""Picking the LLM the settings describe: :func:`choose_backend`, :func:`connect` and the
:class:`LLMHandle` it returns.

:func:`connect` returns the configured HTTP server (:class:`~agent.llm.openai_backend.
OpenAICompatibleLLM`) or, with no ``base_url``, an embedded backend running the packaged SmolLM2:
llama.cpp's server started on loopback (:mod:`agent.llm.embedded`) when llama-cpp-python is
installed (the ``hyrec[llamacpp]`` extra; ``make test`` installs it), else the model in this
process with transformers (:mod:`agent.llm.transformers_backend`), which needs no compiler: a
plain ``pip install hyrec`` gets it. With neither, :class:`LLMUnavailable` says what to install,
and the callers fall back to the non-LLM ranking and say so. The handle owns whatever was started
and stops it in :meth:`LLMHandle.close`.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass, replace
from typing import Literal, Self

from agent.llm import embedded as _embedded
from agent.llm.embedded import INSTALL_HINT, EmbeddedServer, EmbeddedServerConfig
from agent.llm.openai_backend import OpenAICompatibleLLM
from agent.llm.protocol import LLM, LLMError, LLMUnavailable
from agent.llm.settings import LLMSettings

log = logging.getLogger(__name__)

#: What :func:`connect` runs: an HTTP server the settings name, the embedded llama.cpp server,
#: the in-process transformers model, or nothing (no backend is installed).
BackendKind = Literal["http", "llama.cpp", "transformers"]

BACKEND_LABELS: dict[str, str] = {
    "http": "the configured OpenAI-compatible server",
    "llama.cpp": "the embedded llama.cpp server",
    "transformers": "the in-process transformers model",
}


@dataclass(frozen=True)
class BackendChoice:
    """What :func:`connect` would run for some settings, and why.

    Attributes:
        kind: The backend, or ``None`` when nothing usable is installed.
        reason: One line for a person: why this one (or what to install).
        fallback: A second backend to try if ``kind`` fails to start (``auto`` only).
    """

    kind: BackendKind | None
    reason: str
    fallback: BackendKind | None = None


def transformers_installed() -> bool:
    """Whether the in-process backend can run: torch and transformers importable."""
    return all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers"))


def choose_backend(settings: LLMSettings, *, start_embedded: bool = True) -> BackendChoice:
    """The backend :func:`connect` uses for ``settings`` (nothing is started or imported).

    * ``backend="transformers"``: in-process, whatever ``base_url`` says.
    * ``base_url`` set: that server over HTTP.
    * otherwise (``start_embedded``): ``"openai"`` starts the embedded llama.cpp server;
      ``"auto"`` (the default) starts it when llama-cpp-python is installed and runs the model
      in-process with transformers when it is not (or when the server fails to start).
    """
    if settings.backend == "transformers":
        return BackendChoice("transformers", "HYREC_LLM_BACKEND=transformers")
    if settings.base_url:
        return BackendChoice("http", f"HYREC_LLM_BASE_URL={settings.base_url}")
    if not start_embedded:
        return BackendChoice(
            None,
            "no LLM configured: set HYREC_LLM_BASE_URL (or [llm] base_url in the config file), "
            "or allow starting an embedded backend (the llama.cpp server or transformers)",
        )
    llama, local = _embedded.llama_cpp_installed(), transformers_installed()
    if settings.backend == "openai":
        return BackendChoice("llama.cpp", "HYREC_LLM_BACKEND=openai without a base URL")
    if llama:
        return BackendChoice(
            "llama.cpp", "llama-cpp-python is installed", "transformers" if local else None
        )
    if local:
        return BackendChoice(
            "transformers",
            f"llama-cpp-python is not installed; for its server: {INSTALL_HINT}",
        )
    return BackendChoice(
        None,
        "no embedded LLM backend is installed: pip install torch transformers (the in-process "
        f"backend) or {INSTALL_HINT}; or set HYREC_LLM_BASE_URL to an OpenAI-compatible server",
    )


class LLMHandle:
    """An LLM plus whatever :func:`connect` started for it; a context manager.

    Attributes:
        llm: The :class:`agent.llm.LLM` to hand to the stages.
        backend: Which backend ``llm`` is (:data:`BackendKind`).
        embedded: Whether ``llm`` talks to an embedded server this handle started.
        server: That server, else ``None``.
        notes: What happened on the way (e.g. the llama.cpp server failed, transformers ran).
    """

    def __init__(
        self,
        llm: LLM,
        *,
        server: EmbeddedServer | None = None,
        backend: BackendKind | None = None,
        notes: tuple[str, ...] = (),
    ):
        self.llm = llm
        self.server = server
        self.embedded = server is not None
        self.backend: BackendKind = backend or ("llama.cpp" if server is not None else "http")
        self.notes = notes

    @property
    def description(self) -> str:
        """One line for a person: which backend and model answer."""
        label = BACKEND_LABELS[self.backend]
        where = f" at {self.base_url}" if self.backend == "http" else ""
        return f"{label}{where} ({getattr(self.llm, 'name', None) or 'model'})"

    @property
    def base_url(self) -> str | None:
        """The HTTP API root, or ``None`` for an in-process backend."""
        return getattr(self.llm, "base_url", None)

    def close(self) -> None:
        """Close the client and stop the embedded server, if one was started. Idempotent."""
        close = getattr(self.llm, "close", None)
        if close is not None:
            close()
        if self.server is not None:
            self.server.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(
    settings: LLMSettings | None = None,
    *,
    start_embedded: bool = True,
    server_config: EmbeddedServerConfig | None = None,
    probe: bool = True,
) -> LLMHandle:
    """The LLM the settings describe, ready to use (the backend is :func:`choose_backend`'s).

    * ``backend="transformers"``: loads the model in-process
      (:mod:`agent.llm.transformers_backend`).
    * ``base_url`` set: an HTTP client for it; with ``probe``, checks ``GET /models`` first.
    * otherwise, with ``start_embedded``: the embedded llama.cpp server with the packaged SmolLM2
      on a free loopback port (a few seconds) if llama-cpp-python is installed, else (``auto``)
      the same model in-process with transformers (a second or two once converted; the first
      run converts the packaged GGUF, ~30 s, and caches it).

    Args:
        settings: Defaults to :meth:`LLMSettings.from_env`.
        start_embedded: Start an embedded backend when no ``base_url`` is configured.
        server_config: How to start the embedded llama.cpp server.
        probe: Check that a configured server answers before returning.

    Returns:
        The handle; close it (or use it as a context manager) to stop what it started.

    Raises:
        LLMUnavailable: Nothing configured or installed, the server cannot be reached, or the
            embedded backend cannot be started; the message says how to fix it.
    """
    if settings is None:
        try:
            settings = LLMSettings.from_env()
        except (ValueError, OSError) as e:  # a bad HYREC_LLM_* value or config file
            raise LLMUnavailable(f"the LLM settings are invalid: {e}") from e
    choice = choose_backend(settings, start_embedded=start_embedded)
    if choice.kind is None:
        raise LLMUnavailable(choice.reason)
    if choice.kind == "transformers":
        return _transformers(settings)
    if choice.kind == "http":
        llm = OpenAICompatibleLLM(settings)
        if probe:
            try:
                llm.models()
            except LLMError as e:
                llm.close()
                raise LLMUnavailable(f"the configured LLM server does not answer: {e}") from e
        return LLMHandle(llm, backend="http")
    try:
        return _llama_cpp(settings, server_config)
    except LLMUnavailable as e:
        if choice.fallback != "transformers":
            raise
        log.warning("the embedded llama.cpp server did not start (%s); using transformers", e)
        note = f"llama.cpp server failed to start ({_first_line(e)}); used transformers"
        return _transformers(settings, notes=(note,))


def _llama_cpp(settings: LLMSettings, server_config: EmbeddedServerConfig | None) -> LLMHandle:
    server = EmbeddedServer(server_config or EmbeddedServerConfig())
    base_url = server.start()
    embedded = replace(
        settings, base_url=base_url, model=server.config.alias, json_format="json_object"
    )
    return LLMHandle(OpenAICompatibleLLM(embedded), server=server, backend="llama.cpp")


def _transformers(settings: LLMSettings, notes: tuple[str, ...] = ()) -> LLMHandle:
    from agent.llm.transformers_backend import TransformersConfig, TransformersLLM, cpu_threads

    config = TransformersConfig(
        model=settings.model,
        timeout=settings.timeout,
        slot_wait=settings.slot_wait,
        num_threads=cpu_threads(),
    )
    return LLMHandle(TransformersLLM(config), backend="transformers", notes=notes)


def _first_line(error: Exception) -> str:
    return (str(error).splitlines() or [""])[0]
