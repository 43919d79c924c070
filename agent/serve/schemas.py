"""HTTP payloads (the trust boundary): pydantic models for every request and response body.

Requests forbid unknown fields (a misspelt ``"usr_id"`` is a 422 naming it, not a silently
ignored field), except the OpenAI chat request, which accepts and ignores the many sampling options
OpenAI clients send. Responses convert from the typed results of :mod:`agent.api`. Every error is
one body, ``{"error": {"message", "type", "details"}}`` (:func:`add_error_handlers`): bad payloads
are 4xx naming the field, unknown items 404, an LLM failure or an overloaded server 503
(``overloaded``, with ``Retry-After``), and only a bug is a 500.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from agent.api import FeedbackReceipt, Recommendation, Recommendations, UnknownItemError
from agent.chat.answers import ITEM_LINE
from agent.feedback import EVENTS, EventConflict, StoreUnavailable
from agent.llm import LLMError
from agent.serve.limits import ServerBusy
from hyrec.data import Dataset, Item
from retrieval.filters import Filter

log = logging.getLogger(__name__)
Id = Field(min_length=1, max_length=256)
MAX_MESSAGE_CHARS = 8_000  # one chat message (the parser reads 4,000)
MAX_CONVERSATION_CHARS = 64_000  # all messages of one chat request
EventKind = Literal["view", "click", "like", "purchase", "rating", "dislike", "skip"]
assert set(EventKind.__args__) == set(EVENTS), "EventKind must list agent.feedback.EVENTS"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FilterIn(_Strict):
    """Which items may come back (every field optional)."""

    genres_any: list[str] = Field(default_factory=list, max_length=100)
    genres_none: list[str] = Field(default_factory=list, max_length=100)
    year_min: int | None = None
    year_max: int | None = None
    exclude_ids: list[str] = Field(default_factory=list, max_length=10_000)

    def to_filter(self) -> Filter:
        return Filter(
            genres_any=tuple(self.genres_any),
            genres_none=tuple(self.genres_none),
            year_min=self.year_min,
            year_max=self.year_max,
            exclude_ids=tuple(self.exclude_ids),
        )


class RecommendationRequest(_Strict):
    user_id: str | None = Field(default=None, min_length=1, max_length=256)
    history: list[str] | None = Field(
        default=None, max_length=1000, description="Item ids, oldest first"
    )
    k: int = Field(default=10, ge=1, le=100)
    context: str | None = Field(
        default=None, max_length=2000, description='Scenario text, e.g. "tonight with the kids"'
    )
    query: str | None = Field(default=None, max_length=2000)
    filters: FilterIn | None = None
    exclude: list[str] = Field(default_factory=list, max_length=10_000)
    explain: bool = True


class RecommendationOut(BaseModel):
    item_id: str
    title: str
    score: float
    sources: list[str]
    contributions: dict[str, float]
    reason: str | None = None
    year: int | None = None
    genres: list[str] = Field(default_factory=list)
    category: str | None = None

    @classmethod
    def of(
        cls, rec: Recommendation, catalogue: Dataset | None = None, reason: str | None = None
    ) -> RecommendationOut:
        """``rec`` as sent; with ``catalogue``, its year, genres and category too (``reason``
        replaces the item's own)."""
        index = catalogue.item_index.get(rec.item_id) if catalogue is not None else None
        item = catalogue.items[index] if index is not None else None
        category = item.attributes.get("category") if item is not None else None
        return cls(
            item_id=rec.item_id,
            title=rec.title,
            score=_finite(rec.score),
            sources=list(rec.sources),
            contributions={k: _finite(v) for k, v in rec.contributions.items()},
            reason=reason or rec.reason,
            year=item.year if item is not None else None,
            genres=list(item.genres) if item is not None else [],
            category=str(category) if category else None,
        )


class RecommendationsResponse(BaseModel):
    user_id: str | None
    items: list[RecommendationOut]
    fallbacks: list[str] = Field(default_factory=list)
    profile: dict[str, Any] | None = None
    request_id: str | None = Field(default=None, description="names the impressions recorded")

    @classmethod
    def of(
        cls, recs: Recommendations, catalogue: Dataset | None = None, request_id: str | None = None
    ) -> RecommendationsResponse:
        profile = recs.profile.model_dump() if recs.profile is not None else None
        return cls(
            user_id=recs.user_id,
            items=[RecommendationOut.of(r, catalogue) for r in recs.items],
            fallbacks=list(recs.fallbacks),
            profile=profile,
            request_id=request_id,
        )


class SimilarRequest(_Strict):
    item_id: str = Id
    k: int = Field(default=5, ge=1, le=100)
    user_id: str | None = Field(
        default=None, min_length=1, max_length=256,
        description="signed-in user: their dislikes are left out and the answer is an impression",
    )  # fmt: skip
    filters: FilterIn | None = None


class SimilarResponse(BaseModel):
    item_id: str
    title: str
    items: list[RecommendationOut]
    request_id: str | None = None

    @classmethod
    def of(
        cls, item_id: str, items: Sequence[Recommendation], ds: Dataset, request_id: str | None
    ) -> SimilarResponse:
        """The neighbours of ``item_id``, each with what it shares with it as its reason."""
        anchor = ds.items[ds.item_index[item_id]]
        out = []
        for rec in items:
            shared = [g for g in ds.items[ds.item_index[rec.item_id]].genres if g in anchor.genres]
            why = f"{', '.join(shared[:3])} like {anchor.title}" if shared else None
            out.append(RecommendationOut.of(rec, ds, why or f"close to {anchor.title}"))
        return cls(item_id=item_id, title=anchor.title, items=out, request_id=request_id)


def chat_items(reply: Any, ds: Dataset) -> list[RecommendationOut]:
    """A chat answer's items, each with the reason its ``"N. Title — reason"`` line gives."""
    reasons: dict[int, str] = {}
    for match in ITEM_LINE.finditer(reply.text):
        _, sep, reason = match.group(2).partition(" — ")
        if sep and reason.strip():
            reasons.setdefault(int(match.group(1)), reason.strip())
    return [RecommendationOut.of(r, ds, reasons.get(n)) for n, r in enumerate(reply.items, 1)]


class FeedbackRequest(_Strict):
    user_id: str = Id
    item_id: str = Id
    event: EventKind
    value: float | None = Field(
        default=None, allow_inf_nan=False, ge=-1e6, le=1e6, description="rating value"
    )
    event_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="idempotency key: a retry with the same id is acknowledged and stored once",
    )


class FeedbackResponse(BaseModel):
    stored: bool = True
    duplicate: bool = Field(
        default=False, description="true when this event_id was already stored (nothing new)"
    )
    event_id: int
    client_event_id: str | None = None
    user_id: str
    item_id: str
    event: str
    value: float | None
    timestamp: float
    positive: bool

    @classmethod
    def of(cls, r: FeedbackReceipt) -> FeedbackResponse:
        return cls(
            duplicate=r.duplicate,
            event_id=r.event_id,
            client_event_id=r.client_event_id,
            user_id=r.user_id,
            item_id=r.item_id,
            event=r.event,
            value=r.value,
            timestamp=r.timestamp,
            positive=r.positive,
        )


class ItemIn(_Strict):
    item_id: str = Id
    title: str = Field(min_length=1, max_length=1000)
    description: str = Field(default="", max_length=20_000)
    attributes: dict[str, Any] = Field(default_factory=dict)

    def to_item(self) -> Item:
        return Item(self.item_id, self.title, self.description, self.attributes)


class ItemsRequest(_Strict):
    items: list[ItemIn] = Field(min_length=1, max_length=1000)


class ItemsResponse(BaseModel):
    upserted: int
    n_items: int


class ForgetRequest(_Strict):
    user_id: str = Id  # any id the feedback endpoint accepts (slashes, spaces, unicode)


class ForgetResponse(BaseModel):
    user_id: str
    removed_events: int


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"
    n_items: int | None = Field(default=None, description="catalogue size (with the token)")
    n_users: int | None = Field(default=None, description="snapshot users (with the token)")
    llm: bool
    auth: bool = Field(description="whether /v1 needs a bearer token (the web page asks for it)")


class ReadyResponse(BaseModel):
    status: Literal["ok", "degraded"]
    store: str = Field(description='"ok", or why the feedback store cannot answer now')


class ErrorDetail(BaseModel):
    message: str
    type: str
    details: list[dict[str, Any]] = Field(default_factory=list)


class ErrorResponse(BaseModel):
    error: ErrorDetail


# ---- OpenAI-compatible chat -------------------------------------------------------------------
class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="allow")  # name, tool_calls, … are accepted and ignored
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(p.text or "" for p in self.content if p.type == "text")


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # temperature, top_p, max_tokens, …: ignored
    model: str = "hyrec"
    messages: list[ChatMessageIn] = Field(min_length=1, max_length=200)
    stream: bool = False
    user: str | None = Field(default=None, max_length=256, description="hyrec user id")

    @field_validator("messages")
    @classmethod
    def _has_user_turn(cls, messages: list[ChatMessageIn]) -> list[ChatMessageIn]:
        if not any(m.role == "user" and m.text().strip() for m in messages):
            raise ValueError("messages need at least one non-empty 'user' message")
        sizes = [len(m.text()) for m in messages]
        if max(sizes) > MAX_MESSAGE_CHARS:
            raise ValueError(f"a message is over the {MAX_MESSAGE_CHARS}-character limit")
        if sum(sizes) > MAX_CONVERSATION_CHARS:
            raise ValueError(
                f"the conversation is over the {MAX_CONVERSATION_CHARS}-character limit"
            )
        return messages


def _finite(x: float) -> float:
    """JSON has no infinities: clamp the head's -inf/inf scores (filtered-out items) to 0-safe
    extremes."""
    if x != x:
        return 0.0
    return max(min(float(x), 1e30), -1e30)


# ---- errors -----------------------------------------------------------------------------------
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 404, 422, 503)
}


def error_response(
    status: int, message: str, kind: str, details: list | None = None
) -> JSONResponse:
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


def add_error_handlers(app: FastAPI) -> None:
    """Every error as the one error body (see the module doc)."""

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, details = _field_errors(exc)
        return error_response(422, message, "invalid_request_error", details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "authentication_error" if exc.status_code == 401 else "invalid_request_error"
        return error_response(exc.status_code, str(exc.detail), kind)

    @app.exception_handler(UnknownItemError)
    async def unknown_item(request: Request, exc: UnknownItemError) -> JSONResponse:
        return error_response(404, str(exc), "not_found_error")

    @app.exception_handler(ValueError)
    async def bad_value(request: Request, exc: ValueError) -> JSONResponse:
        return error_response(400, str(exc), "invalid_request_error")

    @app.exception_handler(LLMError)
    async def llm_down(request: Request, exc: LLMError) -> JSONResponse:
        return error_response(503, f"the LLM failed: {exc}", "llm_unavailable")

    @app.exception_handler(StoreUnavailable)
    async def store_down(request: Request, exc: StoreUnavailable) -> JSONResponse:
        response = error_response(503, str(exc), "store_unavailable")
        response.headers["Retry-After"] = str(max(1, round(exc.retry_after)))
        return response

    @app.exception_handler(ServerBusy)
    async def overloaded(request: Request, exc: ServerBusy) -> JSONResponse:
        response = error_response(503, str(exc), "overloaded")
        response.headers["Retry-After"] = str(max(1, round(exc.retry_after)))
        return response

    @app.exception_handler(EventConflict)
    async def conflict(request: Request, exc: EventConflict) -> JSONResponse:
        return error_response(409, str(exc), "conflict_error")

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, route_template(request))
        return error_response(500, f"internal error ({type(exc).__name__})", "server_error")


def route_template(request: Request) -> str:
    """The matched route's template (``/v1/users/{user_id}``), never the raw path with its ids."""
    route = request.scope.get("route")
    return getattr(route, "path", None) or "(unmatched)"
