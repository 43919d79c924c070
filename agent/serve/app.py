"""The HTTP server: a FastAPI app over one :class:`~agent.api.Recommender`.

Endpoints (bearer-token auth on everything under ``/v1``)::

    POST   /v1/recommendations     {"user_id": "1", "k": 10, "context": "..."} → {"items": [...]}
    POST   /v1/chat/completions    OpenAI-compatible chat (delegates to agent.chat.agent.ChatAgent)
    POST   /v1/feedback            {"user_id", "item_id", "event", "value"?} → committed receipt
    PUT    /v1/items               catalogue upsert
    DELETE /v1/users/{user_id}     forget a user
    GET    /healthz                liveness and sizes (no auth)

The endpoints are plain ``def`` functions, so FastAPI runs the blocking model calls in its thread
pool; the :class:`Recommender` locks what it mutates. Every error is a JSON body
``{"error": {"message", "type", "details"}}``: bad payloads are 4xx naming the field, unknown items
404, and only a bug is a 500. The lifespan closes the feedback store (checkpointing the WAL) and
the LLM handle when uvicorn shuts down on SIGTERM/SIGINT.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import anyio.to_thread
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from agent.api import Recommender, UnknownItemError
from agent.llm import LLMError, Message
from agent.serve.schemas import (
    ChatCompletionRequest,
    ErrorResponse,
    FeedbackRequest,
    FeedbackResponse,
    ForgetResponse,
    HealthResponse,
    ItemsRequest,
    ItemsResponse,
    RecommendationOut,
    RecommendationRequest,
    RecommendationsResponse,
)

log = logging.getLogger(__name__)

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 404, 422, 503)
}


_bearer = HTTPBearer(auto_error=False)  # module level: endpoint annotations resolve in globals


class _Closer:
    """Something with ``close()`` the lifespan must close (e.g. an :class:`LLMHandle`)."""

    def __init__(self, *things: Any) -> None:
        self.things = [t for t in things if t is not None]

    def close(self) -> None:
        for thing in self.things:
            try:
                thing.close()
            except Exception:  # keep closing the rest
                log.exception("closing %r failed", thing)


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_auth_settings(host: str, api_key: str | None, no_auth: bool) -> str | None:
    """The API key to require, or None when auth is explicitly off on a loopback address.

    Raises:
        ValueError: no key and auth not disabled, or auth disabled on a non-loopback address.
    """
    if api_key:
        return api_key
    if not no_auth:
        raise ValueError(
            "no API key: pass --api-key KEY (or set HYREC_API_KEY), or --no-auth on a loopback "
            "address"
        )
    if not is_loopback(host):
        raise ValueError(f"--no-auth is only allowed on a loopback address, not {host!r}")
    return None


def _error(status: int, message: str, kind: str, details: list | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": kind, "details": details or []}}
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, headers=headers)


def _field_errors(exc: RequestValidationError) -> tuple[str, list[dict[str, Any]]]:
    details, parts = [], []
    for e in exc.errors():
        loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        details.append({"field": loc, "message": e.get("msg", ""), "type": e.get("type", "")})
        parts.append(f"{loc}: {e.get('msg', '')}")
    return "invalid request: " + "; ".join(parts), details


def create_app(
    recommender: Recommender,
    *,
    api_key: str | None,
    closing: tuple[Any, ...] = (),
    chat_agent: Callable[[Recommender], Any] | None = None,
    threads: int = 8,
) -> FastAPI:
    """The FastAPI app serving ``recommender``.

    Args:
        recommender: The model to serve (closed at shutdown).
        api_key: Bearer token every ``/v1`` request must carry; ``None`` disables auth (call
            :func:`check_auth_settings` first: only loopback servers may do that).
        closing: More things to close at shutdown (e.g. the LLM handle).
        chat_agent: Builds the chat agent (default: ``agent.chat.agent.ChatAgent``).
        threads: Requests computed at once (the thread pool running the endpoints; anyio's
            default is 40). The work is CPU-bound under the GIL: with 200 clients on 2 cores, 4
            and 40 threads gave the same throughput within noise (45 and 49 requests/s).
    """
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    closer = _Closer(recommender, *closing)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = threads
        yield
        log.info("shutting down: closing the feedback store and the LLM")
        closer.close()

    app = FastAPI(
        title="hyrec",
        summary="LLM-augmented hybrid recommender",
        version="1",
        lifespan=lifespan,
        responses=ERRORS,
    )

    def authorize(
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        if api_key is None:
            return
        given = creds.credentials if creds is not None else ""
        if not hmac.compare_digest(given.encode(), api_key.encode()):
            raise StarletteHTTPException(401, "missing or wrong API key (Authorization: Bearer)")

    _add_error_handlers(app)
    agent_lock = threading.Lock()
    agents: list[Any] = []

    def chat() -> Any:
        with agent_lock:
            if not agents:
                if chat_agent is None:
                    from agent.chat.agent import ChatAgent

                    agents.append(ChatAgent(recommender))
                else:
                    agents.append(chat_agent(recommender))
            return agents[0]

    @app.get("/healthz", response_model=HealthResponse, tags=["ops"])
    def healthz() -> HealthResponse:
        ds = recommender.catalogue
        return HealthResponse(
            n_items=ds.n_items,
            n_users=ds.n_users,
            feedback_events=recommender.store.count(),
            llm=recommender.llm is not None,
        )

    auth = [Depends(authorize)]

    @app.post(
        "/v1/recommendations",
        response_model=RecommendationsResponse,
        dependencies=auth,
        tags=["recommendations"],
    )
    def recommendations(body: RecommendationRequest) -> RecommendationsResponse:
        recs = recommender.recommend(
            body.user_id,
            history=body.history,
            k=body.k,
            context=body.context,
            query=body.query,
            filters=body.filters.to_filter() if body.filters else None,
            exclude=body.exclude,
            explain=body.explain,
        )
        return RecommendationsResponse.of(recs)

    @app.post("/v1/feedback", response_model=FeedbackResponse, dependencies=auth, tags=["feedback"])
    def feedback(body: FeedbackRequest) -> FeedbackResponse:
        receipt = recommender.feedback(body.user_id, body.item_id, body.event, body.value)
        return FeedbackResponse.of(receipt)

    @app.put("/v1/items", response_model=ItemsResponse, dependencies=auth, tags=["catalogue"])
    def put_items(body: ItemsRequest) -> ItemsResponse:
        n = recommender.upsert_items([it.to_item() for it in body.items])
        return ItemsResponse(upserted=n, n_items=recommender.catalogue.n_items)

    @app.delete(
        "/v1/users/{user_id}", response_model=ForgetResponse, dependencies=auth, tags=["users"]
    )
    def forget(user_id: str) -> ForgetResponse:
        if not user_id.strip():
            raise ValueError("user id must not be empty")
        return ForgetResponse(user_id=user_id, removed_events=recommender.forget_user(user_id))

    @app.post("/v1/chat/completions", dependencies=auth, tags=["chat"])
    def chat_completions(body: ChatCompletionRequest) -> Any:
        messages = [
            Message("system" if m.role == "developer" else m.role, m.text())
            for m in body.messages
            if m.role != "tool"
        ]
        reply = chat().reply(messages, user_id=body.user)
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        extra = {
            "items": [RecommendationOut.of(r).model_dump() for r in reply.items],
            "fallbacks": list(reply.fallbacks),
        }
        if body.stream:
            return StreamingResponse(
                _sse(completion_id, created, body.model, reply.text, extra),
                media_type="text/event-stream",
            )
        return {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": body.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply.text},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
            "hyrec": extra,
        }

    return app


def _sse(cid: str, created: int, model: str, text: str, extra: dict) -> Iterator[str]:
    """The whole answer as one OpenAI ``chat.completion.chunk`` stream (content, stop, [DONE])."""
    base = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model}
    first = {"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": None}
    last = {"index": 0, "delta": {}, "finish_reason": "stop"}
    yield f"data: {json.dumps({**base, 'choices': [first]})}\n\n"
    yield f"data: {json.dumps({**base, 'choices': [last], 'hyrec': extra})}\n\n"
    yield "data: [DONE]\n\n"


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, details = _field_errors(exc)
        return _error(422, message, "invalid_request_error", details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "authentication_error" if exc.status_code == 401 else "invalid_request_error"
        return _error(exc.status_code, str(exc.detail), kind)

    @app.exception_handler(UnknownItemError)
    async def unknown_item(request: Request, exc: UnknownItemError) -> JSONResponse:
        return _error(404, str(exc), "not_found_error")

    @app.exception_handler(ValueError)
    async def bad_value(request: Request, exc: ValueError) -> JSONResponse:
        return _error(400, str(exc), "invalid_request_error")

    @app.exception_handler(LLMError)
    async def llm_down(request: Request, exc: LLMError) -> JSONResponse:
        return _error(503, f"the LLM failed: {exc}", "llm_unavailable")

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error(500, f"internal error ({type(exc).__name__})", "server_error")


def app_from_env() -> FastAPI:
    """An app factory for ``uvicorn --factory agent.serve.app:app_from_env``.

    Reads ``HYREC_MODEL_DIR`` (required), ``HYREC_API_KEY``, ``HYREC_NO_AUTH=1`` with
    ``HYREC_HOST`` (loopback only) and ``HYREC_LLM=0`` (serve without an LLM).
    """
    model_dir = os.environ.get("HYREC_MODEL_DIR")
    if not model_dir:
        raise RuntimeError("set HYREC_MODEL_DIR to a folder written by `hyrec fit`")
    key = check_auth_settings(
        os.environ.get("HYREC_HOST", "127.0.0.1"),
        os.environ.get("HYREC_API_KEY") or None,
        os.environ.get("HYREC_NO_AUTH", "") == "1",
    )
    recommender, handle, chat = open_model(
        Path(model_dir), use_llm=os.environ.get("HYREC_LLM") != "0"
    )
    return create_app(recommender, api_key=key, closing=(handle,), chat_agent=chat)


def open_model(
    model_dir: Path, *, use_llm: bool
) -> tuple[Recommender, Any, Callable[[Recommender], Any]]:
    """Load the model folder, with an LLM when ``use_llm`` and one can be reached or started.

    Returns:
        The recommender, the LLM handle to close at shutdown (None without an LLM), and the chat
        agent factory (tool calling only for a capable model, per ``HYREC_CHAT_TOOLS``).
    """
    from agent.chat.agent import ChatAgent, chat_mode, make_chat_model

    handle, chat_model = None, None
    if use_llm:
        from agent.llm.connect import connect
        from agent.llm.settings import LLMSettings

        settings = LLMSettings.from_env()
        try:
            handle = connect(settings)
        except LLMError as e:
            log.warning("serving without an LLM: %s", e)
        else:
            chat_model = make_chat_model(settings, chat_mode(), base_url=handle.base_url)
    llm = handle.llm if handle is not None else None
    try:
        recommender = Recommender.load(model_dir, llm=llm)
    except BaseException:
        if handle is not None:
            handle.close()
        raise
    return recommender, handle, lambda r: ChatAgent(r, chat_model=chat_model)
