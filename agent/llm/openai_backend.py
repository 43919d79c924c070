"""The OpenAI-compatible HTTP backend: :class:`OpenAICompatibleLLM`, built on the ``openai`` SDK.

It speaks the chat-completions API that vLLM's server, llama.cpp's servers and hosted endpoints
implement. The SDK builds and sends the requests (``openai.OpenAI(...).chat.completions``); this
module adds only what the SDK cannot know:

* ``max_tokens`` goes in ``extra_body`` so it is always sent under that name (llama-cpp-python's
  server ignores ``max_completion_tokens``);
* ``json_schema`` becomes a ``response_format`` the server turns into a grammar (vLLM: guided
  decoding). It comes in two flavours: OpenAI's ``{"type": "json_schema", "json_schema": {"name",
  "schema"}}`` (vLLM, llama.cpp's C++ server, OpenAI; sent without ``strict``, so any schema is
  accepted) and llama-cpp-python's ``{"type": "json_object", "schema": ...}``, which is not in the
  SDK's types and so travels in ``extra_body``. ``LLMSettings.json_format="auto"`` sends the first
  and, when the server rejects it naming ``response_format``, switches to the second for good.
  Such replies pass through :func:`~agent.llm.jsonparse.normalise_json`, since llama-cpp-python's
  grammar lets raw control characters into strings (it also ignores ``minimum``/``maximum``;
  ``enum`` and ``maxLength`` hold): callers validate;
* the SDK's errors become the :mod:`agent.llm` errors:

  * refused/dropped connection, connect timeout, HTTP 502/503 → :class:`LLMUnavailable`;
  * read/write timeout, waiting longer than the timeout for a free slot, HTTP 408/504 →
    :class:`LLMTimeout`;
  * any other HTTP error or a reply that is not a chat completion → :class:`LLMError`;

* a semaphore bounds the calls in flight, and the SDK never retries (``max_retries=0``): the
  call's timeout is a wall-clock bound and the stages have their own fallbacks;
* the reply is validated here (a trust boundary): without its private strict mode the SDK builds
  its response objects unchecked, and hands back a plain string for a body that is not JSON.

Picking a backend from settings (and starting the embedded server) is :mod:`agent.llm.connect`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import httpx
import openai
import pydantic

from agent.llm.jsonparse import normalise_json
from agent.llm.protocol import (
    Completion,
    LLMBusy,
    LLMError,
    LLMTimeout,
    LLMUnavailable,
    Message,
    check_arguments,
)
from agent.llm.settings import LLMSettings

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 5.0  # seconds for GET /models (connect()'s check)
_CONNECT_TIMEOUT = 5.0  # seconds to open a connection, capped by the call's own timeout
_REJECTED_STATUS = (400, 422, 500)  # how servers refuse a response_format they do not know


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
        transport: An ``httpx`` transport to use instead of the network (tests); it is handed to
            the SDK as ``http_client=httpx.Client(transport=...)``.

    Raises:
        ValueError: ``settings.base_url`` is not set.
    """

    def __init__(self, settings: LLMSettings, *, transport: httpx.BaseTransport | None = None):
        if not settings.base_url:
            raise ValueError("OpenAICompatibleLLM needs settings.base_url (the server's /v1 root)")
        self.settings = settings
        self.name = settings.model
        self.base_url = api_root(settings.base_url)
        self._slots = threading.BoundedSemaphore(settings.max_concurrency)
        self._json_format = settings.json_format
        http_client = httpx.Client(
            limits=httpx.Limits(max_connections=settings.max_concurrency), transport=transport
        )
        self._client = openai.OpenAI(
            base_url=self.base_url,
            api_key=settings.api_key or "none",  # the SDK refuses an empty key
            timeout=_timeouts(settings.timeout),
            max_retries=0,
            http_client=http_client,
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
        wait = min(timeout, self.settings.slot_wait)
        if not self._slots.acquire(timeout=wait):
            raise LLMBusy(
                f"LLM busy: no free slot within {wait:.2f} s ({self.settings.max_concurrency} "
                "calls already in flight; [llm] max_concurrency, slot_wait)"
            )
        args = (messages, max_tokens, temperature, json_schema, logprobs)
        try:
            try:
                response = self._create(*args, deadline=start + timeout)
            except _ResponseFormatRejected:
                log.info("%s rejects json_schema response_format; using json_object", self.base_url)
                self._json_format = "json_object"
                response = self._create(*args, deadline=start + timeout)
        finally:
            self._slots.release()
        completion = _parse_completion(
            _json_body(response, self.base_url),
            seconds=time.perf_counter() - start,
            default_model=self.name,
        )
        if json_schema is not None:
            completion = replace(completion, text=normalise_json(completion.text))
        return completion

    def models(self, timeout: float = PROBE_TIMEOUT) -> list[str]:
        """The model ids the server lists (``GET /models``); raises like :meth:`complete`."""
        self._check_open()
        with _mapped_errors(self.base_url, timeout):
            raw = self._client.models.with_raw_response.list(timeout=_timeouts(timeout))
        body = _json_body(raw.http_response, self.base_url)
        try:
            return [str(m["id"]) for m in body.get("data", [])]
        except (KeyError, TypeError, AttributeError) as e:
            raise LLMError(f"{self.base_url}/models returned an unexpected body: {e}") from None

    def close(self) -> None:
        """Close the connection pool. Idempotent."""
        self._client.close()

    def _check_open(self) -> None:
        if self._client.is_closed():
            raise LLMUnavailable(f"the client for {self.base_url} was closed")

    def _request(
        self,
        messages: Sequence[Message],
        max_tokens: int,
        temperature: float,
        json_schema: Mapping[str, Any] | None,
        logprobs: int,
    ) -> dict[str, Any]:
        """Keyword arguments of ``chat.completions.create`` for one call."""
        extra: dict[str, Any] = {"max_tokens": max_tokens}
        request: dict[str, Any] = {
            "model": self.settings.model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "temperature": temperature,
            "extra_body": extra,
        }
        if json_schema is not None:
            if self._json_format == "json_object":
                extra["response_format"] = {"type": "json_object", "schema": dict(json_schema)}
            else:
                request["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": "response", "schema": dict(json_schema)},
                }
        if logprobs > 0:
            request["logprobs"] = True
            request["top_logprobs"] = logprobs
        return request

    def _create(
        self,
        messages: Sequence[Message],
        max_tokens: int,
        temperature: float,
        json_schema: Mapping[str, Any] | None,
        logprobs: int,
        *,
        deadline: float,
    ) -> httpx.Response:
        self._check_open()
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            raise LLMTimeout("the LLM call timed out waiting for a free slot")
        request = self._request(messages, max_tokens, temperature, json_schema, logprobs)
        may_fall_back = self._json_format == "auto" and json_schema is not None
        with _mapped_errors(self.base_url, remaining):
            try:
                raw = self._client.chat.completions.with_raw_response.create(
                    **request, timeout=_timeouts(remaining)
                )
            except openai.APIStatusError as e:
                if may_fall_back and _rejects_response_format(e):
                    raise _ResponseFormatRejected from e
                raise
        return raw.http_response


class _ResponseFormatRejected(Exception):
    """The server refused OpenAI's json_schema response_format (llama-cpp-python does)."""


def _rejects_response_format(error: openai.APIStatusError) -> bool:
    return error.status_code in _REJECTED_STATUS and "response_format" in error.response.text


def _timeouts(seconds: float) -> httpx.Timeout:
    return httpx.Timeout(seconds, connect=min(seconds, _CONNECT_TIMEOUT))


@contextmanager
def _mapped_errors(base_url: str, timeout: float) -> Iterator[None]:
    """Turn the SDK's errors into :mod:`agent.llm` errors."""
    try:
        yield
    except openai.APIStatusError as e:
        raise _status_error(e, base_url) from e
    except openai.APIConnectionError as e:  # APITimeoutError included
        raise _connection_error(e, base_url, timeout) from e
    except openai.OpenAIError as e:
        raise LLMError(f"LLM request to {base_url} failed: {e}") from e


def _connection_error(error: openai.APIConnectionError, base_url: str, timeout: float) -> LLMError:
    """The SDK wraps the transport's exception (``__cause__``); the kind decides the error."""
    cause = error.__cause__
    if isinstance(cause, httpx.ConnectTimeout | httpx.ConnectError | httpx.RemoteProtocolError):
        return LLMUnavailable(
            f"cannot reach the LLM server at {base_url} ({type(cause).__name__}: {cause}); is it "
            "running? Set HYREC_LLM_BASE_URL, or unset it to use the embedded server"
        )
    if isinstance(error, openai.APITimeoutError):
        return LLMTimeout(f"the LLM server at {base_url} did not answer within {timeout:.1f}s")
    if isinstance(cause, httpx.NetworkError):
        return LLMUnavailable(f"lost the connection to the LLM server at {base_url}: {cause}")
    return LLMError(f"LLM request to {base_url} failed: {cause or error}")


def _status_error(error: openai.APIStatusError, base_url: str) -> LLMError:
    response, status = error.response, error.status_code
    detail = _error_detail(response)
    where = f"{response.request.method} {response.request.url}"
    if status in (408, 504):
        return LLMTimeout(f"{where} timed out on the server side (HTTP {status}): {detail}")
    if status in (502, 503):
        return LLMUnavailable(f"{where}: server unavailable (HTTP {status}): {detail}")
    if status in (401, 403):
        return LLMError(f"{where} refused the API key (HTTP {status}); check HYREC_LLM_API_KEY")
    if status == 404:
        return LLMError(
            f"{where} not found (HTTP 404): {detail}; is {base_url} the API root (…/v1) "
            "and HYREC_LLM_MODEL a model the server serves?"
        )
    return LLMError(f"{where} failed (HTTP {status}): {detail}")


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


def _json_body(response: httpx.Response, base_url: str) -> Any:
    try:
        return response.json()
    except ValueError:
        raise LLMError(f"{base_url} returned a body that is not JSON") from None


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
