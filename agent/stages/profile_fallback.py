"""The deterministic interest profile: genre shares, main decade and recent items of a history.
It is the fallback of the LLM profile and the profile a model without an LLM serves."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from agent.stages.profile_types import FALLBACK_VERSION, InterestProfile, ProfileEvent
from hyrec.data import attribute_genres, attribute_year


def _genres(attributes: Mapping[str, Any]) -> list[str]:
    return list(attribute_genres(attributes))


def _weight(event: ProfileEvent) -> float:
    """How much an event says the user liked it: rating − 2.5 (ratings on a 1–5 scale), or 1."""
    if event.rating is None or not np.isfinite(event.rating):
        return 1.0
    return float(event.rating) - 2.5


def genre_shares(events: Sequence[ProfileEvent]) -> dict[str, float]:
    """Share of each genre among the events' genre mentions, largest first."""
    counts = Counter(g for e in events for g in _genres(e.attributes))
    total = sum(counts.values())
    return {g: c / total for g, c in counts.most_common()} if total else {}


def long_term_summary(events: Sequence[ProfileEvent]) -> str:
    """``"Drama 30%, Comedy 22%, Thriller 10%; mostly 1990s; mean rating 3.7"`` (or "none")."""
    parts = []
    shares = genre_shares(events)
    if shares:
        parts.append(", ".join(f"{g} {round(100 * s)}%" for g, s in list(shares.items())[:5]))
    decade = _main_decade(events)
    if decade:
        parts.append(f"mostly {decade}s")
    ratings = [e.rating for e in events if e.rating is not None and np.isfinite(e.rating)]
    if ratings:
        parts.append(f"mean rating {np.mean(ratings):.1f}")
    return "; ".join(parts) or "none"


def _main_decade(events: Sequence[ProfileEvent], share: float = 0.5) -> int | None:
    decades = Counter(
        y // 10 * 10 for e in events if (y := attribute_year(e.attributes)) is not None
    )
    if not decades:
        return None
    decade, n = decades.most_common(1)[0]
    return decade if n / sum(decades.values()) >= share else None


def fallback_profile(events: Sequence[ProfileEvent], recent: int = 5) -> InterestProfile:
    """A deterministic profile from the items' attributes and ratings.

    Likes: genres with the highest rating-weighted count (rating − 2.5; unrated events count 1).
    Dislikes: genres seen at least twice whose mean weight is negative. Recent shift: the genre
    whose share grew most among the last ``recent`` items (if by 15 points or more). Constraints:
    the dominant release decade.
    """
    score: Counter[str] = Counter()
    seen: Counter[str] = Counter()
    for e in events:
        for g in _genres(e.attributes):
            score[g] += _weight(e)
            seen[g] += 1
    likes = [g for g, s in sorted(score.items(), key=lambda kv: (-kv[1], kv[0])) if s > 0][:5]
    dislikes = sorted(
        (g for g, s in score.items() if s < 0 and seen[g] >= 2), key=lambda g: (score[g], g)
    )[:3]
    ordered = sorted(events, key=lambda e: e.timestamp)
    shift = ""
    if len(ordered) > recent:
        before, now = genre_shares(ordered), genre_shares(ordered[-recent:])
        growth = {g: now[g] - before.get(g, 0.0) for g in now}
        g, delta = max(sorted(growth.items()), key=lambda kv: kv[1], default=("", 0.0))
        if delta >= 0.15:
            shift = f"more {g} lately"
    decade = _main_decade(events, share=0.7)
    constraints = [f"mostly {decade}s releases"] if decade else []
    if likes:
        summary = "Enjoys " + _and(likes[:3])
        summary += f"; recently {shift}." if shift else "."
    else:
        summary = "No clear preferences yet."
    return InterestProfile(
        likes=likes,
        dislikes=dislikes,
        recent_shift=shift,
        constraints=constraints,
        summary=summary,
        source="fallback",
        prompt_version=FALLBACK_VERSION,
        model="none",
    )


def _and(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def history_fingerprint(events: Sequence[ProfileEvent]) -> str:
    """sha256 (16 hex digits) over every event's title, attributes, rating and time."""
    h = hashlib.sha256()
    for e in events:
        row = [e.title, dict(e.attributes), e.rating, int(e.timestamp)]
        h.update(json.dumps(row, sort_keys=True, default=str).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()[:16]
