"""A chat answer: how it is composed, written, and read back.

Owns the answer format, a numbered list with one item per line (``"N. Title (year) — reason"``,
:data:`ITEM_LINE`), and everything that depends on it: fusing the recommender's lists into the one
shown (:func:`fuse`); writing the answer text — a header that sums up the request, per-item
reasons, notes (:func:`format_answer`, :func:`title_of`); and reading the conversation back from
earlier answers — which items the last one listed (:func:`listed_items`), which were ever shown and
what the user asked before (:class:`Turns`), and how a follow-up keeps the earlier request's
constraints (:func:`inherit`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from agent.chat.intent import Intent
from agent.chat.titles import find_title
from agent.llm import Message
from hyrec.data import Dataset
from retrieval.filters import Filter

if TYPE_CHECKING:
    from agent.api import Recommendation

ITEM_LINE = re.compile(r"^\s*(\d{1,2})[.)]\s+(.+?)\s*$", re.MULTILINE)
_RRF_K = 60  # reciprocal rank fusion's constant (the paper's value)

_SITUATION_LABEL = {
    "tonight": "for tonight",
    "date night": "date night",
    "friends": "with friends",
    "short": "something short",
    "cozy": "cozy",
    "relax": "to relax",
    "holiday": "holiday",
}


# ---- composing ---------------------------------------------------------------------------------
def fuse(
    lists: Sequence[Sequence[Recommendation]], catalogue: Dataset, anchor_genres: set[str]
) -> list[Recommendation]:
    """Reciprocal rank fusion of ``lists`` (Cormack, Clarke & Büttcher, SIGIR 2009: score
    Σ 1/(60 + rank)); with ``anchor_genres`` ("like X but funnier"), items sharing more of them
    come first and fusion orders the ties. Each item keeps its first list's record (the
    personal list's carries the reason)."""
    score: dict[str, float] = {}
    first: dict[str, Recommendation] = {}
    for lst in lists:
        for rank, rec in enumerate(lst, start=1):
            score[rec.item_id] = score.get(rec.item_id, 0.0) + 1.0 / (_RRF_K + rank)
            first.setdefault(rec.item_id, rec)

    def shared(item_id: str) -> int:
        index = catalogue.item_index.get(item_id)
        if index is None or not anchor_genres:
            return 0
        return len(anchor_genres & set(catalogue.items[index].genres))

    order = sorted(score, key=lambda i: (-shared(i), -score[i], i))
    return [first[i] for i in order]


# ---- writing -----------------------------------------------------------------------------------
def format_answer(
    catalogue: Dataset,
    intent: Intent,
    items: Sequence[Recommendation],
    notes: Sequence[str],
    user_id: str | None,
    *,
    reason_chars: int,
    header: str | None = None,
    noted: Sequence[str] = (),
) -> str:
    """The answer text: ``noted`` feedback, a header (``header`` or one summing up ``intent``),
    one ``"N. Title — reason"`` line per item (reasons cut at ``reason_chars``), then ``notes``;
    with no items, what was searched for and a hint to loosen it."""
    known = user_id is not None and user_id in catalogue.user_index
    if not items:
        lines = [f"Noted: {n}." for n in noted]
        lines.append(f"I found nothing in the catalogue for: {_summary(catalogue, intent, known)}.")
        lines += [f"Note: {n}." for n in notes]
        lines.append("Try fewer constraints (another decade, or without a genre).")
        return "\n".join(lines)
    header = header or _header(catalogue, intent, len(items), known, user_id)
    lines = [f"Noted: {n}." for n in noted] + [header]
    for n, rec in enumerate(items, start=1):
        lines.append(f"{n}. {rec.title} — {_reason(catalogue, rec, intent, reason_chars)}")
    lines += [f"Note: {n}." for n in notes]
    return "\n".join(lines)


def title_of(catalogue: Dataset, item_id: str, *, year: bool = True) -> str:
    """The item's title (without its "(1995)" suffix when ``year`` is False), else its id."""
    index = catalogue.item_index.get(item_id)
    if index is None:
        return item_id
    title = catalogue.items[index].title
    return title if year else re.sub(r"\s*\(\d{4}\)\s*$", "", title)


def _header(catalogue: Dataset, intent: Intent, n: int, known: bool, user_id: str | None) -> str:
    who = "" if known or user_id is None else " (new here, so going by what you asked)"
    return f"{n} picks — {_summary(catalogue, intent, known)}{who}:"


def _summary(catalogue: Dataset, intent: Intent, known: bool = False) -> str:
    f = intent.filters
    parts: list[str] = []
    if intent.anchors:
        parts.append("like " + " and ".join(title_of(catalogue, a) for a in intent.anchors))
    if intent.genres:
        parts.append(", ".join(intent.genres))
    if intent.audience == "kids":
        parts.append("for kids")
    if f.year_min is not None or f.year_max is not None:
        parts.append(_years(f.year_min, f.year_max))
    if f.genres_none:
        parts.append("no " + ", ".join(f.genres_none))
    parts += [_SITUATION_LABEL.get(s, s) for s in intent.situations]
    if intent.free_text:
        parts.append(f"“{intent.free_text}”")
    return "; ".join(parts) or ("picked for you" if known else "popular picks")


def _reason(catalogue: Dataset, rec: Recommendation, intent: Intent, limit: int) -> str:
    ds = catalogue
    index = ds.item_index.get(rec.item_id)
    genres = ds.items[index].genres if index is not None else []
    bits: list[str] = []
    anchor_genres = {g for a in intent.anchors for g in ds.items[ds.item_index[a]].genres}
    asked = [g for g in genres if g in intent.genres or g in intent.filters.genres_any]
    shared = [g for g in genres if g in anchor_genres and g not in asked]
    if asked:
        bits.append(", ".join(asked) + " as asked")
    if intent.anchors and shared:
        bits.append(", ".join(shared[:3]) + " like " + title_of(ds, intent.anchors[0], year=False))
    elif intent.anchors and not asked:
        bits.append("close to " + title_of(ds, intent.anchors[0], year=False))
    if not bits and genres:
        bits.append(", ".join(genres[:3]))
    if rec.reason:
        bits.append(rec.reason.strip().rstrip("."))
    reason = "; ".join(bits) or "a strong match for you"
    return reason if len(reason) <= limit else reason[: limit - 1].rstrip() + "…"


def _years(low: int | None, high: int | None) -> str:
    if low is not None and high is not None:
        return str(low) if low == high else f"{low}–{high}"
    return f"from {low}" if low is not None else f"up to {high}"


# ---- reading back ------------------------------------------------------------------------------
class Turns:
    """The conversation as the rules path needs it."""

    def __init__(self, messages: Sequence[Message], catalogue: Dataset) -> None:
        self.text = messages[-1].content
        answers = [i for i, m in enumerate(messages) if m.role == "assistant"]
        lists = [listed_items(messages[i].content, catalogue) for i in answers]
        self.previous: list[str] = lists[-1] if lists else []
        self.shown: tuple[str, ...] = tuple(dict.fromkeys(i for lst in lists for i in lst))
        asks = [i for i, m in enumerate(messages[:-1]) if m.role == "user"]
        self.earlier_request = messages[asks[-1]].content if asks else None
        before = [
            listed_items(messages[i].content, catalogue) for i in answers if asks and i < asks[-1]
        ]
        self.earlier_previous: list[str] = before[-1] if before else []


def listed_items(text: str, catalogue: Dataset) -> list[str]:
    """Item ids of the numbered ``"N. Title — reason"`` lines of an answer, in order."""
    out: list[str] = []
    for match in ITEM_LINE.finditer(text):
        title = match.group(2).split(" — ", 1)[0].strip()
        item_id = find_title(catalogue, title)
        if item_id is not None and item_id not in out:
            out.append(item_id)
    return out


def inherit(intent: Intent, before: Intent) -> Intent:
    """A follow-up keeps the earlier request's filters and audience where it sets none itself."""
    f, b = intent.filters, before.filters
    year_min, year_max = f.year_min, f.year_max
    if year_min is None and year_max is None:
        year_min, year_max = b.year_min, b.year_max
    genres_none = tuple(dict.fromkeys(f.genres_none + b.genres_none))
    filters = Filter(
        genres_any=tuple(g for g in f.genres_any or b.genres_any if g not in genres_none),
        genres_none=genres_none,
        year_min=year_min,
        year_max=year_max,
    )
    return replace(
        intent,
        filters=filters,
        audience=intent.audience or before.audience,
        genres=intent.genres or before.genres,
        situations=intent.situations or before.situations,
        k=intent.k or before.k,
    )
