"""The chat agent's LangChain tools over :class:`agent.api.Recommender`.

:func:`make_tools` returns five ``langchain_core`` structured tools a tool-calling model may use:
``search_catalog`` (semantic search with genre/year filters), ``recommend_for_user``,
``similar_items``, ``explain`` and ``record_feedback``. Each tool answers with compact JSON the
model can read back (numbered items with ids, titles and reasons); errors are returned as
``{"error": ...}`` text rather than raised, so one bad call does not end the turn. Every list a tool
returns is also kept in :class:`ToolSession`, from which :func:`agent.chat.tool_path.tool_reply`
formats the final answer: the model chooses what to look up, the catalogue supplies the titles
(a model cannot invent an item).

The tools are bound to one conversation: the user id comes from the caller, never from the model.
Catalogue text reaches the model only inside the tools' JSON answers, as quoted data. The one tool
that writes, ``record_feedback``, acts only on what the user said in the current turn (the items
the request parser read as liked or disliked there, :attr:`agent.chat.intent.Intent.liked`): an
instruction injected through a title or description cannot make it store anything.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from agent.chat.titles import find_title
from retrieval.filters import Filter

if TYPE_CHECKING:
    from langchain_core.tools import BaseTool

    from agent.api import Recommendation, Recommender

log = logging.getLogger(__name__)

MAX_TOOL_K = 20  # the most items one tool call may return
NEGATIVE_EVENTS = frozenset({"dislike", "skip"})  # the rest count as the user liking the item


@dataclass
class ToolSession:
    """What the tools did during one reply.

    Attributes:
        lists: Every item list a tool returned, in call order.
        feedback: ``(item_id, event)`` pairs recorded.
        calls: ``(tool name, arguments, ok)`` of every call.
    """

    lists: list[list[Recommendation]] = field(default_factory=list)
    feedback: list[tuple[str, str]] = field(default_factory=list)
    calls: list[tuple[str, dict[str, Any], bool]] = field(default_factory=list)

    @property
    def items(self) -> list[Recommendation]:
        """The last non-empty list a tool returned (what the answer shows)."""
        for lst in reversed(self.lists):
            if lst:
                return lst
        return []


class _Filters(BaseModel):
    genres_any: list[str] = Field(default_factory=list, description="keep items with any of these")
    genres_none: list[str] = Field(default_factory=list, description="drop items with any of these")
    year_min: int | None = Field(default=None, description="earliest release year")
    year_max: int | None = Field(default=None, description="latest release year")


class SearchArgs(_Filters):
    query: str = Field(description="what the user wants, in words (mood, plot, style)")
    k: int = Field(default=5, ge=1, le=MAX_TOOL_K)


class RecommendArgs(_Filters):
    query: str | None = Field(default=None, description="the request's situation or taste")
    k: int = Field(default=5, ge=1, le=MAX_TOOL_K)
    exclude: list[str] = Field(default_factory=list, description="item ids or titles to leave out")


class SimilarArgs(_Filters):
    item: str = Field(description="an item id or a title, e.g. 'Alien (1979)' or 'the godfather'")
    k: int = Field(default=5, ge=1, le=MAX_TOOL_K)


class ExplainArgs(BaseModel):
    item: str = Field(description="an item id or a title")


class FeedbackArgs(BaseModel):
    item: str = Field(description="an item id or a title")
    event: str = Field(description="one of: like, dislike, view, click, purchase, rating")
    value: float | None = Field(default=None, description="the rating, for event='rating'")


def make_tools(
    recommender: Recommender,
    user_id: str | None,
    session: ToolSession,
    said: Mapping[str, str] | None = None,
) -> list[BaseTool]:
    """The five tools for one conversation turn.

    Args:
        recommender: Serves every call.
        user_id: The signed-in user (``None``: anonymous; feedback and explain then refuse).
        session: Collects the lists, feedback and calls for the caller.
        said: What the user's own words in this turn say of items: item id → ``"like"`` or
            ``"dislike"``. ``record_feedback`` stores only an event that agrees with it.
    """
    said = dict(said or {})
    from langchain_core.tools import StructuredTool

    catalogue = recommender.catalogue

    def resolve(item: str) -> str:
        if item in catalogue.item_index:
            return item
        found = find_title(catalogue, item)
        if found is None:
            raise ValueError(f"no catalogue item is called {item!r}")
        return found

    def listing(name: str, args: dict[str, Any], run: Any) -> str:
        try:
            recs = list(run())
        except Exception as e:  # a tool answers with the error; the model may try again
            log.info("tool %s failed: %s", name, e)
            session.calls.append((name, args, False))
            return json.dumps({"error": f"{type(e).__name__}: {e}"})
        session.calls.append((name, args, True))
        session.lists.append(recs)
        return _items_json(recs)

    def search_catalog(query: str, k: int = 5, **flt: Any) -> str:
        args = {"query": query, "k": k, **flt}
        return listing("search_catalog", args, lambda: recommender.search(query, k, _filter(flt)))

    def recommend_for_user(
        query: str | None = None, k: int = 5, exclude: Sequence[str] = (), **flt: Any
    ) -> str:
        args = {"query": query, "k": k, "exclude": list(exclude), **flt}

        def run() -> Sequence[Recommendation]:
            ids = [resolve(x) for x in exclude]
            got = recommender.recommend(
                user_id, k=k, query=query or None, filters=_filter(flt), exclude=ids
            )
            return got.items

        return listing("recommend_for_user", args, run)

    def similar_items(item: str, k: int = 5, **flt: Any) -> str:
        args = {"item": item, "k": k, **flt}
        return listing(
            "similar_items", args, lambda: recommender.similar_items(resolve(item), k, _filter(flt))
        )

    def explain(item: str) -> str:
        try:
            if user_id is None:
                raise ValueError("no signed-in user: explanations need a user's history")
            text = recommender.explain(user_id, resolve(item))
        except Exception as e:
            session.calls.append(("explain", {"item": item}, False))
            return json.dumps({"error": f"{type(e).__name__}: {e}"})
        session.calls.append(("explain", {"item": item}, True))
        return json.dumps({"item": item, "reason": text})

    def record_feedback(item: str, event: str, value: float | None = None) -> str:
        args = {"item": item, "event": event, "value": value}
        try:
            if user_id is None:
                raise ValueError("no signed-in user: feedback needs a user id")
            item_id = resolve(item)
            low = event == "rating" and value is not None and value < 3.5  # a low rating
            wanted = "dislike" if event in NEGATIVE_EVENTS or low else "like"
            if said.get(item_id) != wanted:
                raise PermissionError(
                    "record_feedback stores only what the user said in this message; they did "
                    f"not say they {wanted}d this item"
                )
            receipt = recommender.feedback(user_id, item_id, event, value)
        except Exception as e:
            session.calls.append(("record_feedback", args, False))
            return json.dumps({"error": f"{type(e).__name__}: {e}"})
        session.calls.append(("record_feedback", args, True))
        session.feedback.append((item_id, event))
        return json.dumps({"recorded": event, "item_id": item_id, "event_id": receipt.event_id})

    spec = [
        (search_catalog, SearchArgs, "Search the catalogue by meaning, with optional filters."),
        (
            recommend_for_user,
            RecommendArgs,
            "Personal recommendations for this user (works for "
            "new users too), shifted by an optional query and filters.",
        ),  # fmt: skip
        (similar_items, SimilarArgs, "Items similar to one item (id or title)."),
        (explain, ExplainArgs, "Why an item suits this user, from their history."),
        (record_feedback, FeedbackArgs, "Record that the user liked, disliked or rated an item."),
    ]
    return [
        StructuredTool.from_function(func=f, name=f.__name__, description=d, args_schema=schema)
        for f, schema, d in spec
    ]


def _filter(flt: dict[str, Any]) -> Filter | None:
    """A :class:`Filter` from tool arguments (None when they constrain nothing)."""
    low, high = flt.get("year_min"), flt.get("year_max")
    if low is not None and high is not None and low > high:
        low, high = high, low  # a model that swapped the bounds still gets the range it meant
    f = Filter(
        genres_any=tuple(flt.get("genres_any") or ()),
        genres_none=tuple(flt.get("genres_none") or ()),
        year_min=low,
        year_max=high,
    )
    return None if f == Filter() else f


def _items_json(recs: Sequence[Recommendation]) -> str:
    return json.dumps(
        [
            {"n": n, "item_id": r.item_id, "title": r.title, "reason": r.reason}
            for n, r in enumerate(recs, start=1)
        ],
        ensure_ascii=False,
    )
