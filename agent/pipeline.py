"""The one request path. Every door (Python API, chat, HTTP, CLI, the LLM benchmark) calls
:func:`recommend`::

    user state → intent → profile → hybrid candidates + head → re-rank → reasons

Each stage is a plain function below, and one :class:`~retrieval.items.ItemList` flows from the
hybrid to the end: titles and text vectors are read from the list itself. Stages that need an LLM
(profile, re-rank, reasons) degrade to their deterministic fallback on any LLM failure, and each
one that fell back is named in :attr:`Recommendations.fallbacks`; all of them together spend at
most ``RecommenderConfig.llm_budget`` seconds. Raw user ids never reach a prompt: profiles are
keyed by a salted pseudonym (``Parts.user_key``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field, fields

import numpy as np

from agent.chat.intent import parse_request
from agent.config import Recommendation, Recommendations, RecommenderConfig
from agent.llm.guard import GuardedLLM
from agent.stages.profiles import InterestProfile, ProfileService
from agent.stages.reasons import explanation
from agent.stages.rerank import LLMReranker
from agent.state import UserState
from encoders.text import TextEncoder
from retrieval.filters import Filter, merge
from retrieval.hybrid import HybridRecommender
from retrieval.items import ItemList


@dataclass(frozen=True)
class Request:
    """One recommendation request (see :meth:`agent.api.Recommender.recommend`)."""

    user: str | None = None
    history: tuple[str, ...] = ()  # item ids after the stored history, oldest first
    k: int = 10
    context: str | None = None  # scenario text, parsed into filters and query text
    query: str | None = None  # free text the list should match
    filters: Filter | None = None
    exclude: tuple[str, ...] = ()
    explain: bool = True

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be at least 1, got {self.k}")


@dataclass
class Parts:
    """What the stages run on: the fitted model and the (optional) LLM stages."""

    hybrid: HybridRecommender
    encoder: TextEncoder
    config: RecommenderConfig
    users: Callable[[str | None, Sequence[str]], UserState]  # the user-state stage
    user_key: Callable[[str], str]  # user id → pseudonym (profile cache key)
    llm: GuardedLLM | None = None
    profiles: ProfileService | None = None
    reranker: LLMReranker | None = None
    read: Callable[[], AbstractContextManager] = field(default=nullcontext)  # the model lock
    # a slot for the hybrid's scoring, taken before the model lock (RecommenderConfig.scoring)
    score: Callable[[], AbstractContextManager] = field(default=nullcontext)


def recommend(parts: Parts, request: Request) -> Recommendations:
    """Top-k for one user (known, new or anonymous): the whole path in one screen.

    The model lock is held only while the user's state is read and while the hybrid scores (a few
    milliseconds each); the LLM stages run outside it, so a slow LLM call never holds back a
    catalogue writer, nor, through a waiting writer, anyone else's request.
    """
    fallbacks: list[str] = []
    with budget(parts):
        with parts.read():
            state = parts.users(request.user, request.history)
            flt, query_text = read_intent(parts, request, state)
        profile, profile_vector = profile_stage(parts, request, state, fallbacks)
        with parts.score(), parts.read():
            ranked = rank(parts, state, request.k, flt, query_text, profile_vector)
        ranked = rerank_stage(parts, ranked, state, request.k, fallbacks)
        items = reasons_stage(parts, ranked, state, fallbacks, explain=request.explain)
    return Recommendations(request.user, tuple(items), tuple(fallbacks), profile)


# ---- the stages, in order ------------------------------------------------------------------
def read_intent(parts: Parts, request: Request, state: UserState) -> tuple[Filter | None, str]:
    """Filters (the request's, its exclusions, the user's dislikes, what ``context`` asks for) and
    the query text (``query`` plus the text ``context`` leaves after parsing)."""
    texts = [request.query] if request.query else []
    flt = merge(request.filters, Filter(exclude_ids=request.exclude + state.disliked))
    if request.context:
        intent = parse_request(request.context, parts.hybrid.dataset)
        flt = merge(flt, intent.filters)
        texts.append(intent.query_text)
    return flt, " ".join(t for t in texts if t and t.strip())


def profile_stage(
    parts: Parts, request: Request, state: UserState, fallbacks: list[str]
) -> tuple[InterestProfile | None, np.ndarray | None]:
    """The user's interest profile (cached; LLM within its share of the budget, else the
    attribute-based one) and, for a head fitted with profiles, its vector."""
    if parts.profiles is None or not state.events:
        return None, None
    if request.user:  # the user's own profile, or a variant with the items the request named
        key, variant = (
            parts.user_key(request.user),
            digest(request.history) if request.history else "",
        )
    else:
        key, variant = "anon-" + digest(request.history), ""
    config = parts.config
    events = state.events[-config.profile_events :]
    with budget(parts, config.llm_budget * config.profile_share):
        profile = parts.profiles.profile(key, events, variant)
    if parts.llm is not None and profile.source != "llm":
        why = profile.fallback_reason or "LLM failed"
        fallbacks.append(f"profile: {why}; used the attribute-based profile")
    vector = parts.profiles.embed([profile]) if parts.hybrid.uses_profile else None
    return profile, vector


def rank(
    parts: Parts,
    state: UserState,
    k: int,
    flt: Filter | None,
    query_text: str,
    profile_vector: np.ndarray | None,
) -> ItemList:
    """The hybrid's candidates and head: the top list the re-ranker picks from (its window when
    there is one, else ``k``)."""
    n = max(k, parts.reranker.config.window) if parts.reranker is not None else k
    query = parts.encoder.encode_queries([query_text]) if query_text else None
    history = state.history(parts.hybrid.dataset.n_items)
    return parts.hybrid.recommend_batch(
        history, n, flt, query_vectors=query, profile_vectors=profile_vector
    )[0]


def rerank_stage(
    parts: Parts, ranked: ItemList, state: UserState, k: int, fallbacks: list[str]
) -> ItemList:
    """The LLM re-ranker over the head's top list (MMR when the LLM fails); no LLM: the head's
    top ``k``."""
    if parts.reranker is None or len(ranked) <= 1:
        return ranked.top(k)
    history = parts.reranker.config.history
    recent = [e.title for e in state.events[-history:]]
    result = parts.reranker.rerank(recent, ranked, k)
    if result.method != "llm":
        fallbacks.append(f"rerank: {result.error or 'LLM unavailable'}; used {result.method}")
    return result.items.top(k) if len(result.items) > k else result.items


def reasons_stage(
    parts: Parts, ranked: ItemList, state: UserState, fallbacks: list[str], *, explain: bool
) -> list[Recommendation]:
    """One :class:`Recommendation` per item; with ``explain``, a reason grounded in the user's
    history (the LLM writes the first ``llm_reasons``, the rest are similarity-based)."""
    items = [as_recommendation(ranked, r) for r in range(len(ranked))]
    if not explain:
        return items
    events, event_items = state.latest(parts.config.profile_events)
    embeddings = parts.hybrid.facts.embeddings
    history_vectors = embeddings[event_items] if embeddings is not None else None
    item_vectors = ranked.vectors
    failed = []
    for r, rec in enumerate(items):
        llm = parts.llm if r < parts.config.llm_reasons else None
        got = explanation(
            llm,
            events,
            ranked.item(r),
            history_vectors=history_vectors,
            item_vector=None if item_vectors is None else item_vectors[r],
        )
        if llm is not None and got.source != "llm":
            failed.append(got.error or "LLM failed")
        items[r] = Recommendation(**{**_fields(rec), "reason": got.text})
    if failed:
        fallbacks.append(
            f"reasons: {len(failed)} LLM reason(s) failed ({failed[0]}); "
            "used similarity-based reasons"
        )
    return items


# ---- helpers -----------------------------------------------------------------------------------
def as_recommendation(lst: ItemList, row: int) -> Recommendation:
    item = lst.item(row)
    contributions = {name: float(col[row]) for name, col in lst.columns.items()}
    return Recommendation(
        item.item_id,
        item.title,
        float(lst.scores[row]),
        tuple(lst.source_names(row)),
        contributions,
    )


@contextmanager
def budget(parts: Parts, seconds: float | None = None) -> Iterator[None]:
    """LLM calls inside share ``seconds`` (default: the whole ``llm_budget``)."""
    if parts.llm is None:
        yield
        return
    with parts.llm.budget(parts.config.llm_budget if seconds is None else seconds):
        yield


def digest(ids: Sequence[str]) -> str:
    return hashlib.sha256("\x00".join(ids).encode()).hexdigest()[:16]


def _fields(obj: object) -> dict:
    return {f.name: getattr(obj, f.name) for f in fields(obj)}
