"""The HTTP server: a FastAPI app over one :class:`~agent.api.Recommender`.

Endpoints (bearer-token auth on everything under ``/v1`` and on ``/metrics``)::

    POST   /v1/recommendations     {"user_id": "1", "k": 10, "context": "..."} → {"items": [...]}
    POST   /v1/chat/completions    OpenAI-compatible chat (delegates to agent.chat.agent.ChatAgent);
                                   the items as data in the extra top-level field ``hyrec``
    POST   /v1/similar             {"item_id", "k"?, "user_id"?} → items like it ("more like this")
    POST   /v1/feedback            {"user_id", "item_id", "event", "value"?} → committed receipt
    PUT    /v1/items               catalogue upsert
    POST   /v1/users/forget        {"user_id"} → forget a user (any characters in the id)
    DELETE /v1/users/{user_id}     the same, for ids that fit in a path
    GET    /v1/dashboard           the dashboard's data (agent.serve.dashboard)
    GET    /metrics                Prometheus text format (agent.serve.metrics)
    GET    /healthz                liveness, from memory (sizes only with the token)
    GET    /readyz                 readiness: the feedback store answers (503 naming why)
    GET    /, /dashboard           the chat page and the dashboard (no auth; their calls carry it)

Every answer that shows items to a signed-in user (recommendations and chat for a ``user_id``/
``user``, similar items with a ``user_id``) is recorded as impressions in the feedback store, after
the answer is computed and before it is sent: the online metrics of the dashboard count from them.

Limits come before work (:mod:`agent.serve.limits`): the token is checked before a body is read,
and bodies over ``max_body`` are refused while they stream in. ``/docs`` and the OpenAPI schema
exist only with ``docs=True`` (``hyrec serve --docs``), behind the token. Blocking model calls run
in thread pools of their own: endpoints that may wait on an LLM (recommendations, chat, similar
items) in one, catalogue writes and erasure (which wait on the model's write lock) in another, and
feedback in a third, so feedback never queues behind an LLM call or a catalogue writer; the
token check runs on the event loop, without a thread hop. The :class:`Recommender` locks what
it mutates. A feedback store that cannot answer in time, or feedback that finds every one of its
threads taken for the store's wait, is a 503 with ``Retry-After``; so is a recommendation, chat
or similar-items request that finds every thread of its pool taken for ``queue_wait`` seconds
(``overloaded``: the server sheds load instead of queueing without bound). Every error is one JSON
body (4xx naming the field for bad payloads; only a bug is a 500:
:func:`agent.serve.schemas.add_error_handlers`). The lifespan closes the feedback store
(checkpointing the WAL) and the LLM handle on SIGTERM/SIGINT.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import anyio.to_thread
from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from agent.api import Recommender
from agent.feedback import StoreUnavailable, is_positive
from agent.feedback.deadline import store_deadline
from agent.llm import Message
from agent.serve.dashboard import add_pages, dashboard_data
from agent.serve.limits import MAX_BODY, QUEUE_WAIT, BoundedPool, Limits, ServerBusy
from agent.serve.metrics import CONTENT_TYPE, Metrics, MetricsMiddleware, meter_llm
from agent.serve.schemas import (
    ERRORS,
    ChatCompletionRequest,
    FeedbackRequest,
    FeedbackResponse,
    ForgetRequest,
    ForgetResponse,
    HealthResponse,
    ItemsRequest,
    ItemsResponse,
    ReadyResponse,
    RecommendationRequest,
    RecommendationsResponse,
    SimilarRequest,
    SimilarResponse,
    add_error_handlers,
    chat_items,
)
from retrieval.filters import Filter, merge

log = logging.getLogger(__name__)

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


def create_app(
    recommender: Recommender,
    *,
    api_key: str | None,
    closing: tuple[Any, ...] = (),
    chat_agent: Callable[[Recommender], Any] | None = None,
    threads: int = 8,
    max_body: int = MAX_BODY,
    docs: bool = False,
    queue_wait: float = QUEUE_WAIT,
) -> FastAPI:
    """The FastAPI app serving ``recommender``.

    Args:
        recommender: The model to serve (closed at shutdown).
        api_key: Bearer token every ``/v1`` request must carry; ``None`` disables auth (call
            :func:`check_auth_settings` first: only loopback servers may do that).
        closing: More things to close at shutdown (e.g. the LLM handle).
        chat_agent: Builds the chat agent (default: ``agent.chat.agent.ChatAgent``).
        threads: Requests computed at once, per pool: recommendations, chat and similar items
            (which may wait on an LLM), upserts and erasure (which wait on the model's write
            lock), and feedback each have a pool of ``threads`` (feedback 4 × ``threads``: its
            threads mostly wait on a commit), so feedback never queues behind
            the others (in one shared pool, upserts waiting on the write lock took every thread
            and feedback waited seconds for one, three times a request). The work is CPU-bound
            under the GIL: with 200 clients on 2 cores, 4 and 40 threads gave the same
            throughput within noise (45 and 49 requests/s).
        max_body: Largest request body in bytes (413 above it, before anything is parsed).
        docs: Serve ``/docs``, ``/redoc`` and ``/openapi.json`` (behind the token); off by default.
        queue_wait: Longest a recommendation, chat or similar-items request waits for one of its
            pool's threads before a 503 ``overloaded`` with ``Retry-After`` (load shedding: past
            it, a closed-loop crowd would otherwise queue for minutes behind the LLM).
    """
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    if not 0 < queue_wait <= 600:
        raise ValueError(f"queue_wait must be in (0, 600] seconds, got {queue_wait!r}")
    closer = _Closer(recommender, *closing)
    metrics = Metrics(recommender)
    meter_llm(recommender, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = threads
        app.state.heavy = BoundedPool(  # endpoints that may wait on an LLM: shed past queue_wait
            threads,
            queue_wait,
            lambda: ServerBusy(
                f"every one of the {threads} recommendation threads stayed busy for "
                f"{queue_wait:g} s (--queue-wait); retry later",
                queue_wait,
            ),
        )
        app.state.catalogue = anyio.CapacityLimiter(threads)  # upserts, erasure: the write lock
        wait = recommender.config.store_wait
        # feedback: never behind the others, never unbounded; 4x the threads, because a feedback
        # thread mostly waits (its group commit, or a file locked elsewhere) and a request that
        # waits for a thread first and then for the file would wait two store waits in all
        app.state.writes = BoundedPool(
            4 * threads,
            wait,
            lambda: StoreUnavailable("storing feedback: every feedback thread is busy", wait),
        )
        yield
        log.info("shutting down: closing the feedback store and the LLM")
        closer.close()

    app = FastAPI(
        title="hyrec",
        summary="LLM-augmented hybrid recommender",
        version="1",
        lifespan=lifespan,
        responses=ERRORS,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )

    async def authorize(  # async: a compare needs no thread (a sync one costs every request a hop)
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        if api_key is None:
            return
        given = creds.credentials if creds is not None else ""
        if not hmac.compare_digest(given.encode(), api_key.encode()):
            raise StarletteHTTPException(401, "missing or wrong API key (Authorization: Bearer)")

    add_error_handlers(app)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(Limits, api_key=api_key, max_body=max_body)  # outermost: before any work
    add_pages(app)
    app.state.metrics = metrics
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
    def healthz(
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> HealthResponse:
        """Liveness: answers at once from memory, never touching the store; sizes only with the
        token."""
        given = creds.credentials if creds is not None else ""
        trusted = api_key is None or hmac.compare_digest(given.encode(), api_key.encode())
        ds = recommender.catalogue
        return HealthResponse(
            n_items=ds.n_items if trusted else None,
            n_users=ds.n_users if trusted else None,
            llm=recommender.llm is not None,
            auth=api_key is not None,
        )

    @app.get("/readyz", response_model=ReadyResponse, tags=["ops"])
    def readyz() -> Any:
        """Readiness: the feedback store answers within its wait; 503 naming why otherwise."""
        ok, why = recommender.store.health()
        body = ReadyResponse(status="ok" if ok else "degraded", store=why)
        return body if ok else JSONResponse(body.model_dump(), status_code=503)

    auth = [Depends(authorize)]

    async def heavy(fn: Callable[..., Any], *args: Any) -> Any:
        return await app.state.heavy.run(fn, *args)

    @app.post(
        "/v1/recommendations",
        response_model=RecommendationsResponse,
        dependencies=auth,
        tags=["recommendations"],
    )
    async def recommendations(body: RecommendationRequest) -> RecommendationsResponse:
        return await heavy(_recommendations, body)

    def _recommendations(body: RecommendationRequest) -> RecommendationsResponse:
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
        metrics.observe_fallbacks(recs.fallbacks)
        request_id = shown(body.user_id, [r.item_id for r in recs.items])
        return RecommendationsResponse.of(recs, recommender.catalogue, request_id)

    def shown(user_id: str | None, item_ids: list[str], request_id: str | None = None) -> str:
        """Record the impressions of one answer for a signed-in user; returns the request id."""
        request_id = request_id or uuid.uuid4().hex
        if user_id and item_ids:
            try:
                recommender.store.add_impressions(user_id, item_ids, request_id)
            except Exception:  # the answer matters more than its telemetry
                log.exception("recording impressions failed")
        return request_id

    @app.post(
        "/v1/similar", response_model=SimilarResponse, dependencies=auth, tags=["recommendations"]
    )
    async def similar(body: SimilarRequest) -> SimilarResponse:
        return await heavy(_similar, body)

    def _similar(body: SimilarRequest) -> SimilarResponse:
        disliked: tuple[str, ...] = ()
        if body.user_id:
            cut = recommender.config.positive_rating
            events = recommender.store.events(body.user_id)
            disliked = tuple(e.item_id for e in events if not is_positive(e.event, e.value, cut))
        asked = body.filters.to_filter() if body.filters else None
        items = recommender.similar_items(
            body.item_id, body.k, merge(asked, Filter(exclude_ids=disliked))
        )
        request_id = shown(body.user_id, [r.item_id for r in items])
        return SimilarResponse.of(body.item_id, items, recommender.catalogue, request_id)

    @app.get("/v1/dashboard", dependencies=auth, tags=["ops"])
    def dashboard() -> dict[str, Any]:
        return dashboard_data(recommender, metrics)

    @app.get("/metrics", dependencies=auth, tags=["ops"], response_class=Response)
    def prometheus() -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)

    @app.post("/v1/feedback", response_model=FeedbackResponse, dependencies=auth, tags=["feedback"])
    async def feedback(body: FeedbackRequest) -> FeedbackResponse:
        # one budget for the wait for a thread and the store's waits (agent.feedback.deadline)
        deadline = time.monotonic() + recommender.config.store_wait
        return await app.state.writes.run(_feedback, body, deadline)

    def _feedback(body: FeedbackRequest, deadline: float) -> FeedbackResponse:
        with store_deadline(deadline):
            receipt = recommender.feedback(
                body.user_id, body.item_id, body.event, body.value, event_id=body.event_id
            )
        return FeedbackResponse.of(receipt)

    async def catalogue(fn: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(fn, *args, limiter=app.state.catalogue)

    @app.put("/v1/items", response_model=ItemsResponse, dependencies=auth, tags=["catalogue"])
    async def put_items(body: ItemsRequest) -> ItemsResponse:
        return await catalogue(_put_items, body)

    def _put_items(body: ItemsRequest) -> ItemsResponse:
        n = recommender.upsert_items([it.to_item() for it in body.items])
        return ItemsResponse(upserted=n, n_items=recommender.catalogue.n_items)

    @app.post("/v1/users/forget", response_model=ForgetResponse, dependencies=auth, tags=["users"])
    async def forget_any(body: ForgetRequest) -> ForgetResponse:
        """Forget a user whatever characters the id holds (the body carries it)."""
        return await forget(body.user_id)

    @app.delete(
        "/v1/users/{user_id:path}", response_model=ForgetResponse, dependencies=auth, tags=["users"]
    )
    async def forget(user_id: str) -> ForgetResponse:
        if not user_id.strip():
            raise ValueError("user id must not be empty")
        return await catalogue(_forget, user_id)

    def _forget(user_id: str) -> ForgetResponse:
        return ForgetResponse(user_id=user_id, removed_events=recommender.forget_user(user_id))

    @app.post("/v1/chat/completions", dependencies=auth, tags=["chat"])
    async def chat_completions(body: ChatCompletionRequest) -> Any:
        return await heavy(_chat_completions, body)

    def _chat_completions(body: ChatCompletionRequest) -> Any:
        messages = [
            Message("system" if m.role == "developer" else m.role, m.text())
            for m in body.messages
            if m.role != "tool"
        ]
        reply = chat().reply(messages, user_id=body.user)
        metrics.observe_fallbacks(reply.fallbacks)
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        extra = {
            "items": [it.model_dump() for it in chat_items(reply, recommender.catalogue)],
            "fallbacks": list(reply.fallbacks),
            "request_id": shown(body.user, [r.item_id for r in reply.items], completion_id),
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
    """The answer as an OpenAI ``chat.completion.chunk`` stream: one chunk per line of text, then
    the stop chunk carrying the items (``hyrec``), then ``[DONE]``."""
    base = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model}
    for n, line in enumerate(text.splitlines(keepends=True) or [""]):
        delta = {"role": "assistant", "content": line} if n == 0 else {"content": line}
        choice = {"index": 0, "delta": delta, "finish_reason": None}
        yield f"data: {json.dumps({**base, 'choices': [choice]})}\n\n"
    last = {"index": 0, "delta": {}, "finish_reason": "stop"}
    yield f"data: {json.dumps({**base, 'choices': [last], 'hyrec': extra})}\n\n"
    yield "data: [DONE]\n\n"
