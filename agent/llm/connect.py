"""Picking the LLM the settings describe: :func:`connect` and the :class:`LLMHandle` it returns.

:func:`connect` returns the configured HTTP server (:class:`~agent.llm.openai_backend.
OpenAICompatibleLLM`), the in-process transformers model (``backend="transformers"``,
:mod:`agent.llm.transformers_backend`), or, with no ``base_url``, the embedded llama.cpp server
started on loopback (:mod:`agent.llm.embedded`). The handle owns whatever was started and stops it
in :meth:`LLMHandle.close`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Self

from agent.llm.embedded import EmbeddedServer, EmbeddedServerConfig
from agent.llm.openai_backend import OpenAICompatibleLLM
from agent.llm.protocol import LLM, LLMError, LLMUnavailable
from agent.llm.settings import LLMSettings


class LLMHandle:
    """An LLM plus whatever :func:`connect` started for it; a context manager.

    Attributes:
        llm: The :class:`agent.llm.LLM` to hand to the stages.
        embedded: Whether ``llm`` talks to an embedded server this handle started.
        server: That server, else ``None``.
    """

    def __init__(self, llm: LLM, *, server: EmbeddedServer | None = None):
        self.llm = llm
        self.server = server
        self.embedded = server is not None

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
    """The LLM the settings describe, ready to use.

    * ``backend="transformers"``: loads the model in-process
      (:mod:`agent.llm.transformers_backend`).
    * ``base_url`` set: an HTTP client for it; with ``probe``, checks ``GET /models`` first.
    * otherwise, with ``start_embedded``: starts the embedded llama.cpp server with the packaged
      SmolLM2 model on a free loopback port (a few seconds) and returns a client for it.

    Args:
        settings: Defaults to :meth:`LLMSettings.from_env`.
        start_embedded: Start the embedded server when no ``base_url`` is configured.
        server_config: How to start the embedded server.
        probe: Check that a configured server answers before returning.

    Returns:
        The handle; close it (or use it as a context manager) to stop what it started.

    Raises:
        LLMUnavailable: Nothing configured, the server cannot be reached, or the embedded server
            or in-process model cannot be started; the message says how to fix it.
    """
    if settings is None:
        try:
            settings = LLMSettings.from_env()
        except (ValueError, OSError) as e:  # a bad HYREC_LLM_* value or config file
            raise LLMUnavailable(f"the LLM settings are invalid: {e}") from e
    if settings.backend == "transformers":
        from agent.llm.transformers_backend import TransformersConfig, TransformersLLM

        config = TransformersConfig(model=settings.model, timeout=settings.timeout)
        return LLMHandle(TransformersLLM(config))
    if settings.base_url:
        llm = OpenAICompatibleLLM(settings)
        if probe:
            try:
                llm.models()
            except LLMError as e:
                llm.close()
                raise LLMUnavailable(f"the configured LLM server does not answer: {e}") from e
        return LLMHandle(llm)
    if not start_embedded:
        raise LLMUnavailable(
            "no LLM configured: set HYREC_LLM_BASE_URL (or [llm] base_url in the config file), "
            "or allow starting the embedded llama.cpp server"
        )
    server = EmbeddedServer(server_config or EmbeddedServerConfig())
    base_url = server.start()
    embedded = replace(
        settings, base_url=base_url, model=server.config.alias, json_format="json_object"
    )
    return LLMHandle(OpenAICompatibleLLM(embedded), server=server)
