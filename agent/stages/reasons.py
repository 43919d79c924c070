"""Reasons: a short explanation per recommended item, anchored on one item of the user's own
history. The LLM picks which history item (by number) and writes one sentence; the deterministic
fallback takes the most similar history item by text vector, then by shared genres."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

import prompts
from agent.llm import LLM, LLMError, Message
from agent.llm.jsonparse import parse_json_object
from agent.stages.privacy import prompt_text
from agent.stages.profiles import ProfileEvent
from encoders.base import unit_rows
from hyrec.data import Item, attribute_genres

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Explanation:
    """A reason, the history item it rests on, and whether the LLM wrote it."""

    text: str
    anchor: str | None  # title of the history item the reason refers to
    source: Literal["llm", "fallback"]
    error: str | None = None


def _genre_set(attributes: Mapping[str, Any]) -> set[str]:
    return set(attribute_genres(attributes))


def _explain_window(history: Sequence[ProfileEvent], n: int) -> list[ProfileEvent]:
    """The latest ``n`` events the user liked (rating ≥ 4 when rated), else the latest ``n``."""
    ordered = sorted(history, key=lambda e: e.timestamp)
    liked = [e for e in ordered if e.rating is None or not np.isfinite(e.rating) or e.rating >= 4]
    return (liked or ordered)[-n:]


def fallback_explanation(
    history: Sequence[ProfileEvent],
    item: Item,
    *,
    history_vectors: np.ndarray | None = None,
    item_vector: np.ndarray | None = None,
) -> Explanation:
    """ "Because you liked "X", also Comedy and Drama." — X is the history item most similar to
    ``item`` by embedding (when vectors are given, one row per ``history`` event), else by shared
    genres (ties: the most recent)."""
    if not history:
        return Explanation("Popular with other viewers (no history yet).", None, "fallback")
    events = list(history)
    genres = _genre_set(item.attributes)
    shared = np.array([len(genres & _genre_set(e.attributes)) for e in events], dtype=np.float64)
    if history_vectors is not None and item_vector is not None:
        if len(history_vectors) != len(events):
            raise ValueError(f"{len(history_vectors)} history vectors for {len(events)} events")
        sim = unit_rows(history_vectors) @ unit_rows(np.asarray(item_vector)[None])[0]
    else:
        sim = shared
    recency = np.array([e.timestamp for e in events], dtype=np.float64)
    best = int(np.lexsort((-recency, -shared, -sim))[0])
    anchor = events[best]
    common = sorted(genres & _genre_set(anchor.attributes))
    text = f'Because you liked "{anchor.title}"'
    text += f", also {_join_words(common[:2])}." if common else "."
    return Explanation(text, anchor.title, "fallback")


def _join_words(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def explanation(
    llm: LLM | None,
    history: Sequence[ProfileEvent],
    item: Item,
    *,
    timeout: float | None = None,
    history_vectors: np.ndarray | None = None,
    item_vector: np.ndarray | None = None,
    window: int = 10,
    domain: str = "movies",
) -> Explanation:
    """One short reason for recommending ``item``, grounded in one item of ``history``.

    The LLM (if any) names the history item that explains the recommendation (by number) and writes
    one sentence; the answer must be JSON with a valid number, and a reason that does not mention
    its anchor is prefixed with it, so every reason points at the user's own history. Any failure
    gives :func:`fallback_explanation` with the error recorded.

    Args:
        history_vectors: Optional (n, d) embeddings, one row per ``history`` event (fallback only).
        item_vector: Optional (d,) embedding of ``item`` (fallback only).
        window: Latest liked history items shown to the LLM.
    """
    fallback = fallback_explanation(
        history, item, history_vectors=history_vectors, item_vector=item_vector
    )
    if llm is None or not history:
        return fallback
    events = _explain_window(history, window)
    template = prompts.load("explain")
    rendered = template.render(
        domain=domain,
        history=[
            {
                "title": prompt_text(e.title, 100),
                "genres": prompt_text(", ".join(sorted(_genre_set(e.attributes))), 60),
            }
            for e in events
        ],
        item={
            "title": prompt_text(item.title, 100),
            "genres": prompt_text(", ".join(sorted(_genre_set(item.attributes))), 60),
        },
    )
    schema = {
        "type": "object",
        "properties": {
            "because": {"type": "integer", "minimum": 1, "maximum": len(events)},
            "reason": {"type": "string", "minLength": 1, "maxLength": 200},
        },
        "required": ["because", "reason"],
    }
    try:
        answer = llm.complete(
            [Message("system", rendered.system), Message("user", rendered.user)],
            max_tokens=80,
            temperature=0.0,
            json_schema=schema,
            timeout=timeout,
        )
        body = parse_json_object(answer.text)
        number, reason = body.get("because"), body.get("reason")
        if isinstance(number, str) and number.strip().isdigit():
            number = int(number.strip())
        if not isinstance(number, int) or not 1 <= number <= len(events):
            raise ValueError(f"'because' must be a history number 1..{len(events)}, got {number!r}")
        if not isinstance(reason, str) or not prompt_text(reason, 200):
            raise ValueError("'reason' must be a non-empty string")
        if not _is_sentence(reason, (item.title, events[number - 1].title)):
            raise ValueError(f"'reason' is not a sentence about the item: {reason[:60]!r}")
    except (LLMError, ValueError) as e:
        log.warning("explain: %s; using the similarity-based reason", e)
        return Explanation(fallback.text, fallback.anchor, "fallback", str(e))
    anchor = events[number - 1].title
    reason = prompt_text(reason, 200)
    core = anchor.split(" (")[0].lower()
    if core not in reason.lower():
        reason = f'Because you liked "{anchor}": {reason}'
    return Explanation(reason, anchor, "llm")


def _is_sentence(reason: str, titles: Sequence[str]) -> bool:
    """At least three words, and not merely one of ``titles`` restated (small models do that)."""

    def norm(text: str) -> str:
        return " ".join(re.findall(r"[a-z0-9]+", re.sub(r"\(\d{4}\)", " ", text.lower())))

    words = re.findall(r"[A-Za-z]{2,}", reason)
    return len(words) >= 3 and norm(reason) not in {norm(t) for t in titles}


def explain(
    llm: LLM | None,
    history: Sequence[ProfileEvent],
    item: Item,
    *,
    timeout: float | None = None,
    history_vectors: np.ndarray | None = None,
    item_vector: np.ndarray | None = None,
) -> str:
    """The text of :func:`explanation` (never raises on an LLM failure)."""
    return explanation(
        llm,
        history,
        item,
        timeout=timeout,
        history_vectors=history_vectors,
        item_vector=item_vector,
    ).text
