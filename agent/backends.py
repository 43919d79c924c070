"""LLM backends behind :class:`agent.llm.LLM`, and :func:`connect`, which picks one from settings.

:class:`OpenAICompatibleLLM` speaks the OpenAI chat-completions HTTP API that vLLM's server,
llama.cpp's servers and hosted endpoints implement. It sends ``max_tokens`` (llama-cpp-python's
server ignores ``max_completion_tokens``), turns ``json_schema`` into a ``response_format`` the
server turns into a grammar (vLLM: guided decoding), asks for ``logprobs``/``top_logprobs``, bounds
the calls in flight with a semaphore and maps failures onto the :mod:`agent.llm` errors:

* refused/dropped connection, connect timeout, HTTP 502/503 → :class:`LLMUnavailable`;
* read/write timeout, waiting longer than the timeout for a free slot, HTTP 408/504 →
  :class:`LLMTimeout`;
* any other HTTP error or a reply that is not a chat completion → :class:`LLMError`.

``response_format`` comes in two flavours: OpenAI's ``{"type": "json_schema", "json_schema":
{"name", "schema"}}`` (vLLM, llama.cpp's C++ server, OpenAI; sent without ``strict``, so any schema
is accepted) and llama-cpp-python's ``{"type": "json_object", "schema": ...}``.
``LLMSettings.json_format="auto"`` sends the first and, when the server rejects it naming
``response_format``, switches to the second for good. Such replies pass through
:func:`normalise_json`, since llama-cpp-python's grammar lets raw control characters into strings
(it also ignores ``minimum``/``maximum``; ``enum`` and ``maxLength`` hold): callers validate.

:func:`connect` returns an :class:`LLMHandle`: the configured HTTP server, the in-process
transformers model (``backend="transformers"``), or, with no ``base_url``, the embedded llama.cpp
server started on loopback (:mod:`agent.embedded`) and stopped by :meth:`LLMHandle.close`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Self
from urllib.parse import urlsplit

import httpx
import pydantic

from agent.embedded import EmbeddedServer, EmbeddedServerConfig
from agent.llm import (
    LLM,
    Completion,
    LLMError,
    LLMTimeout,
    LLMUnavailable,
    Message,
    check_arguments,
)
from agent.settings import LLMSettings

log = logging.getLogger(__name__)

_CONNECT_TIMEOUT = 5.0  # seconds to open a connection, capped by the call's own timeout
_PROBE_TIMEOUT = 5.0  # seconds for connect()'s GET /models check


def api_root(base_url: str) -> str:
    """The API root without a trailing slash; a bare ``http://host:port`` gets ``/v1`` appended."""
    url = base_url.strip().rstrip("/")
    if urlsplit(url).path in ("", "/"):
        url += "/v1"
    return url


class OpenAICompatibleLLM:
    """An :class:`agent.llm.LLM` over the OpenAI-compatible chat-completions API. Thread-safe.

    Args:
        settings: Server URL (``base_url`` is required), model, key, timeout, concurrency.
        transport: An ``httpx`` transport to use instead of the network (tests).
    """

    def __init__(self, settings: LLMSettings, *, transport: httpx.BaseTransport | None = None):
        if not settings.base_url:
            raise ValueError("OpenAICompatibleLLM needs settings.base_url (the server's /v1 root)")
        self.settings = settings
        self.name = settings.model
        self.base_url = api_root(settings.base_url)
        self._slots = threading.BoundedSemaphore(settings.max_concurrency)
        self._json_format = settings.json_format
        self._client = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {settings.api_key}"},
            limits=httpx.Limits(max_connections=settings.max_concurrency),
            transport=transport,
        )

    def complete(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        json_schema: Mapping[str, Any] | None = None,
        logprobs: int = 0,
        timeout: float | None = None,
    ) -> Completion:
        """One chat completion; see :meth:`agent.llm.LLM.complete`."""
        timeout = self.settings.timeout if timeout is None else timeout
        check_arguments(messages, max_tokens, temperature, logprobs, timeout)
        start = time.perf_counter()
        if not self._slots.acquire(timeout=timeout):
            raise LLMTimeout(
                f"no free LLM slot within {timeout:.1f}s "
                f"({self.settings.max_concurrency} calls already in flight)"
            )
        try:
            payload = self._payload(messages, max_tokens, temperature, json_schema, logprobs)
            try:
                data = self._post(payload, deadline=start + timeout)
            except _ResponseFormatRejected:
                log.info("%s rejects json_schema response_format; using json_object", self.base_url)
                self._json_format = "json_object"
                payload = self._payload(messages, max_tokens, temperature, json_schema, logprobs)
                data = self._post(payload, deadline=start + timeout)
        finally:
            self._slots.release()
        completion = _parse_completion(
            data, seconds=time.perf_counter() - start, default_model=self.name
        )
        if json_schema is not None:
            completion = replace(completion, text=normalise_json(completion.text))
        return completion

    def models(self, timeout: float = _PROBE_TIMEOUT) -> list[str]:
        """The model ids the server lists (``GET /models``); raises like :meth:`complete`."""
        if self._client.is_closed:
            raise LLMUnavailable(f"the client for {self.base_url} was closed")
        with _mapped_errors(self.base_url, timeout):
            response = self._client.get("/models", timeout=_timeouts(timeout))
        _raise_for_status(response, self.base_url)
        try:
            return [str(m["id"]) for m in response.json().get("data", [])]
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise LLMError(f"{self.base_url}/models returned an unexpected body: {e}") from None

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def _payload(
        self,
        messages: Sequence[Message],
        max_tokens: int,
        temperature: float,
        json_schema: Mapping[str, Any] | None,
        logprobs: int,
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.settings.model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "max_tokens": max_tokens,
            "temperature": temperature,
        }
        if json_schema is not None:
            if self._json_format == "json_object":
                payload["response_format"] = {"type": "json_object", "schema": dict(json_schema)}
            else:
                payload["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": "response", "schema": dict(json_schema)},
                }
        if logprobs > 0:
            payload["logprobs"] = True
            payload["top_logprobs"] = logprobs
        return payload

    def _post(self, payload: dict[str, Any], *, deadline: float) -> dict[str, Any]:
        if self._client.is_closed:
            raise LLMUnavailable(f"the client for {self.base_url} was closed")
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            raise LLMTimeout("the LLM call timed out waiting for a free slot")
        with _mapped_errors(self.base_url, remaining):
            response = self._client.post(
                "/chat/completions", json=payload, timeout=_timeouts(remaining)
            )
        if (
            self._json_format == "auto"
            and "response_format" in payload
            and response.status_code in (400, 422, 500)
            and "response_format" in response.text
        ):
            raise _ResponseFormatRejected
        _raise_for_status(response, self.base_url)
        try:
            return response.json()
        except ValueError:
            raise LLMError(f"{self.base_url} returned a body that is not JSON") from None


class _ResponseFormatRejected(Exception):
    """The server refused OpenAI's json_schema response_format (llama-cpp-python does)."""


def normalise_json(text: str) -> str:
    """``text`` as strict JSON when it is JSON with raw control characters inside strings.

    llama-cpp-python's schema-to-grammar converter lets a string hold a raw newline, which strict
    parsers (``json.loads``, pydantic) reject; such text is re-serialised. Text that is already
    strict JSON, or not JSON at all (e.g. cut off by ``max_tokens``), is returned unchanged.
    """
    try:
        json.loads(text)
        return text
    except ValueError:
        pass
    try:
        return json.dumps(json.loads(text, strict=False), ensure_ascii=False)
    except ValueError:
        return text


def _timeouts(seconds: float) -> httpx.Timeout:
    return httpx.Timeout(seconds, connect=min(seconds, _CONNECT_TIMEOUT))


@contextmanager
def _mapped_errors(base_url: str, timeout: float) -> Iterator[None]:
    """Turn httpx transport errors into :mod:`agent.llm` errors."""
    try:
        yield
    except (httpx.ConnectTimeout, httpx.ConnectError, httpx.RemoteProtocolError) as e:
        raise LLMUnavailable(
            f"cannot reach the LLM server at {base_url} ({type(e).__name__}: {e}); is it "
            "running? Set HYREC_LLM_BASE_URL, or unset it to use the embedded server"
        ) from e
    except httpx.TimeoutException as e:
        raise LLMTimeout(
            f"the LLM server at {base_url} did not answer within {timeout:.1f}s"
        ) from e
    except httpx.NetworkError as e:
        raise LLMUnavailable(f"lost the connection to the LLM server at {base_url}: {e}") from e
    except httpx.HTTPError as e:
        raise LLMError(f"LLM request to {base_url} failed: {e}") from e


def _raise_for_status(response: httpx.Response, base_url: str) -> None:
    status = response.status_code
    if status < 400:
        return
    detail = _error_detail(response)
    where = f"{response.request.method} {response.request.url}"
    if status in (408, 504):
        raise LLMTimeout(f"{where} timed out on the server side (HTTP {status}): {detail}")
    if status in (502, 503):
        raise LLMUnavailable(f"{where}: server unavailable (HTTP {status}): {detail}")
    if status in (401, 403):
        raise LLMError(f"{where} refused the API key (HTTP {status}); check HYREC_LLM_API_KEY")
    if status == 404:
        raise LLMError(
            f"{where} not found (HTTP 404): {detail}; is {base_url} the API root (…/v1) "
            "and HYREC_LLM_MODEL a model the server serves?"
        )
    raise LLMError(f"{where} failed (HTTP {status}): {detail}")


def _error_detail(response: httpx.Response, limit: int = 300) -> str:
    try:
        body = response.json()
        message = body.get("error", body) if isinstance(body, dict) else body
        if isinstance(message, dict):
            message = message.get("message", message)
        text = str(message)
    except ValueError:
        text = response.text
    return text.strip()[:limit] or "(empty body)"


class _TopLogprob(pydantic.BaseModel):
    token: str
    logprob: float


class _TokenLogprob(_TopLogprob):
    top_logprobs: list[_TopLogprob] = []


class _Logprobs(pydantic.BaseModel):
    content: list[_TokenLogprob] | None = None


class _Message(pydantic.BaseModel):
    content: str | None = None


class _Choice(pydantic.BaseModel):
    message: _Message
    logprobs: _Logprobs | None = None
    finish_reason: str | None = None


class _Usage(pydantic.BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _ChatCompletion(pydantic.BaseModel):
    """The part of an OpenAI chat-completion response hyrec reads (a trust boundary)."""

    model: str = ""
    choices: list[_Choice] = pydantic.Field(min_length=1)
    usage: _Usage | None = None


def _parse_completion(data: Any, *, seconds: float, default_model: str) -> Completion:
    try:
        reply = _ChatCompletion.model_validate(data)
    except pydantic.ValidationError as e:
        raise LLMError(
            f"the server's reply is not a chat completion: {e.errors()[0]['msg']}"
        ) from e
    choice = reply.choices[0]
    content = choice.logprobs.content if choice.logprobs else None
    tokens = logprobs = top = None
    if content:
        tokens = tuple(t.token for t in content)
        logprobs = tuple(t.logprob for t in content)
        top = tuple({alt.token: alt.logprob for alt in t.top_logprobs} for t in content)
    usage = reply.usage.model_dump() if reply.usage else {}
    return Completion(
        text=choice.message.content or "",
        model=reply.model or default_model,
        seconds=seconds,
        tokens=tokens,
        logprobs=logprobs,
        top_logprobs=top,
        usage=usage,
    )


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

    * ``backend="transformers"``: loads the model in-process (:mod:`agent.transformers_llm`).
    * ``base_url`` set: an HTTP client for it; with ``probe``, checks ``GET /models`` first.
    * otherwise, with ``start_embedded``: starts the embedded llama.cpp server with the packaged
      SmolLM2 model on a free loopback port (a few seconds) and returns a client for it.

    Args:
        settings: Defaults to :meth:`LLMSettings.from_env`.
        start_embedded: Start the embedded server when no ``base_url`` is configured.
        server_config: How to start the embedded server.
        probe: Check that a configured server answers before returning.

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
        from agent.transformers_llm import TransformersConfig, TransformersLLM

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
