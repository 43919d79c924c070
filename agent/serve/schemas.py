"""HTTP payloads (the trust boundary): pydantic models for every request and response body.

Requests forbid unknown fields (a misspelt ``"usr_id"`` is a 422 naming it, not a silently
ignored field), except the OpenAI chat request, which accepts and ignores the many sampling options
OpenAI clients send. Responses convert from the typed results of :mod:`agent.api`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agent.api import FeedbackReceipt, Recommendation, Recommendations
from agent.feedback import EVENTS
from hyrec.data import Item
from retrieval.filters import Filter

Id = Field(min_length=1, max_length=256)
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

    @classmethod
    def of(cls, rec: Recommendation) -> RecommendationOut:
        return cls(
            item_id=rec.item_id,
            title=rec.title,
            score=_finite(rec.score),
            sources=list(rec.sources),
            contributions={k: _finite(v) for k, v in rec.contributions.items()},
            reason=rec.reason,
        )


class RecommendationsResponse(BaseModel):
    user_id: str | None
    items: list[RecommendationOut]
    fallbacks: list[str] = Field(default_factory=list)
    profile: dict[str, Any] | None = None

    @classmethod
    def of(cls, recs: Recommendations) -> RecommendationsResponse:
        profile = recs.profile.model_dump() if recs.profile is not None else None
        return cls(
            user_id=recs.user_id,
            items=[RecommendationOut.of(r) for r in recs.items],
            fallbacks=list(recs.fallbacks),
            profile=profile,
        )


class FeedbackRequest(_Strict):
    user_id: str = Id
    item_id: str = Id
    event: EventKind
    value: float | None = Field(default=None, allow_inf_nan=False, description="rating value")


class FeedbackResponse(BaseModel):
    stored: bool = True
    event_id: int
    user_id: str
    item_id: str
    event: str
    value: float | None
    timestamp: float
    positive: bool

    @classmethod
    def of(cls, r: FeedbackReceipt) -> FeedbackResponse:
        return cls(
            event_id=r.event_id,
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


class ForgetResponse(BaseModel):
    user_id: str
    removed_events: int


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"
    n_items: int
    n_users: int
    feedback_events: int
    llm: bool


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
        return messages


def _finite(x: float) -> float:
    """JSON has no infinities: clamp the head's -inf/inf scores (filtered-out items) to 0-safe
    extremes."""
    if x != x:
        return 0.0
    return max(min(float(x), 1e30), -1e30)
