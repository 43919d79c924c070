"""Deterministic request parsing for chat and scenario context: text → :class:`Intent`.

No LLM and no embedding model: rules over a token stream plus a title index of the catalogue, so
chat works on the embedded defaults (whose 135M model cannot call tools) and the same parser turns
a request's situation ("for tonight, with the kids") into filters and query text for
:meth:`agent.api.Recommender.recommend`. What it recognises, in this order (each rule consumes its
tokens, so a title is never read as a year or a mood):

* **title anchors** — "like Alien", "fans of the godfather", a quoted title, a capitalised title
  mid-sentence; catalogue titles are indexed without the year and with a trailing article moved
  to the front ("Godfather, The (1972)" → "the godfather", "godfather"); after a cue word a
  close spelling is accepted too (difflib ratio, :data:`agent.chat.titles.FUZZY_RATIO`); a year
  right after the title picks among remakes, otherwise the most-rated one wins;
* **references to the previous answer** — "the second one", "#3", "the last one", "those";
* **liking** — a mention in a clause like "I loved …" / "I hated …" is reported in ``liked`` /
  ``disliked`` (a disliked item is not an anchor);
* **situations** (the scenario signal) — "for tonight", "date night", "something short",
  "with friends"…: text added to the query, never a hard filter;
* **audience** — "for kids", "family" → ``genres_any`` of the catalogue's children/animation
  genres and ``genres_none`` of horror;
* **negations** — "no horror", "nothing violent", "not a comedy": genre and mood words inside a
  negation (up to the next punctuation or "but") go to ``Filter.genres_none``;
* **genres and moods** — "funnier" → Comedy, "scary" → Horror: the genres become
  ``Filter.genres_any`` and are written into the query text;
* **years** — "90s", "early 80s", "after 2000", "before 1980", "1995", "between 1980 and 1990";
* **count** — "three movies", "top 5", "a couple".

Genre names come from the catalogue (``attributes["genres"]``); a concept the catalogue has no
genre for only shapes the query text.

This module owns the :class:`Intent` type and the rules (:func:`parse_request`); the words they
read are :mod:`agent.chat.lexicon`, and the title index they look titles up in is
:mod:`agent.chat.titles`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from agent.chat.lexicon import (
    AFTER,
    AUDIENCE,
    BEFORE,
    BOUNDARY,
    CLAUSE_END,
    COUNT_NOUNS,
    MOODS,
    NEGATORS,
    NOT_NEGATING,
    NUMBERS,
    RECENT,
    SITUATIONS,
    STOP,
    STRICT,
    TokenStream,
    decade,
    split_phrases,
    tokens,
    year_span,
)
from agent.chat.titles import (
    YEAR_SUFFIX,
    CatalogueIndex,
    answer_references,
    catalogue_index,
    sentiment,
    title_mentions,
)
from hyrec.data import Dataset
from retrieval.filters import Filter

MAX_K = 50  # largest count a request may ask for
MAX_CHARS = 4000  # longer requests are read up to here (parsing is linear, ~0.2 ms per word)


@dataclass(frozen=True)
class Intent:
    """What one request asks for.

    Attributes:
        query_text: What to embed ("Alien. Genres: Comedy, Sci-Fi, Action. …"); empty when the
            request says nothing beyond filters.
        anchors: Catalogue item ids the request refers to ("like Alien", "the second one").
        filters: Genre and year constraints (``exclude_ids`` is left to the caller).
        audience: "kids" when the request is for children, else None.
        k: How many items were asked for, or None.
        genres: Genres asked for (also in ``filters.genres_any`` unless from an anchor only).
        situations: Scenario signals recognised ("tonight", "date night", …).
        references: True when the request points back at the previous answer.
        notes: What could not be honoured ("there was no 4th item"), for the reply.
        free_text: Words no rule recognised (part of ``query_text``), e.g. "heist space".
        liked: Mentioned items the user says they liked ("I loved Alien"); also anchors.
        disliked: Mentioned items the user says they disliked ("I hated the second one"); not
            anchors (the caller should leave them out and may record the feedback).
    """

    query_text: str
    anchors: tuple[str, ...]
    filters: Filter
    audience: str | None = None
    k: int | None = None
    genres: tuple[str, ...] = ()
    situations: tuple[str, ...] = ()
    references: bool = False
    notes: tuple[str, ...] = ()
    free_text: str = ""
    liked: tuple[str, ...] = ()
    disliked: tuple[str, ...] = ()

    @property
    def is_pure_similarity(self) -> bool:
        """True for "like X" and nothing else (no genre, year, audience, situation or free text)."""
        f = self.filters
        years = f.year_min is not None or f.year_max is not None
        constrained = f.genres_any or f.genres_none or years
        extra = constrained or self.genres or self.situations or self.audience or self.free_text
        return bool(self.anchors) and not extra


# --- parsing -------------------------------------------------------------------------------------


def parse_request(text: str, catalogue: Dataset, previous: Sequence[str] = ()) -> Intent:
    """Parse one request against ``catalogue``.

    Args:
        text: The user's message (or a scenario context string).
        catalogue: The dataset whose titles, genres and years are recognised.
        previous: Item ids listed in the last answer, in order, for "the second one"; ids not in
            the catalogue are ignored.

    Returns:
        The :class:`Intent`; every anchor is an id of ``catalogue``.
    """
    cat = catalogue_index(catalogue)
    notes: list[str] = []
    if len(text) > MAX_CHARS:
        text = text[:MAX_CHARS]
        notes.append(f"only the first {MAX_CHARS} characters of the request were read")
    p = TokenStream(text)
    titles = [(catalogue.items[a].item_id, i) for a, i in title_mentions(p, cat)]
    refs = answer_references(p, [i for i in previous if i in catalogue.item_index], notes)
    mentions = sorted(titles + refs, key=lambda m: m[1])
    feeling = {item_id: sentiment(p, i) for item_id, i in mentions}
    liked = [a for a, f in feeling.items() if f == "like"]
    disliked = [a for a, f in feeling.items() if f == "dislike"]
    anchors = [a for a in dict.fromkeys(a for a, _ in mentions) if a not in disliked]
    situations = _situations(p)
    audience = _audience(p)
    negated = _negation_scopes(p)
    wanted, unwanted, mood_text = _genres(p, cat, negated)
    year_min, year_max = _years(p, cat)
    k = _count(p, cat)
    genres_any = list(wanted)
    genres_none = list(unwanted)
    if audience == "kids":
        genres_any += cat.concept_genres["children"] + cat.concept_genres["animation"]
        genres_none += cat.concept_genres["horror"]
    elif audience == "not kids":
        genres_none += cat.concept_genres["children"]
        audience = None
    genres_none = list(dict.fromkeys(genres_none))
    genres_any = [g for g in dict.fromkeys(genres_any) if g not in genres_none]
    if wanted and not [g for g in wanted if g not in genres_none]:
        notes.append("asked both for and against " + ", ".join(wanted) + "; kept the exclusion")
    free = tuple(
        t for i, t in enumerate(p.tok)
        if not p.used[i] and i not in negated and t not in STOP and not t.isdigit()
    )  # fmt: skip
    filters = Filter(
        genres_any=tuple(genres_any),
        genres_none=tuple(genres_none),
        year_min=year_min,
        year_max=year_max,
    )
    query = _query_text(catalogue, anchors, genres_any, genres_none, mood_text, situations, free)
    return Intent(
        query_text=query,
        anchors=tuple(anchors),
        filters=filters,
        audience=audience,
        k=k,
        genres=tuple(g for g in wanted if g not in genres_none),
        situations=tuple(situations),
        references=bool(refs),
        notes=tuple(notes),
        free_text=" ".join(free),
        liked=tuple(liked),
        disliked=tuple(disliked),
    )


def _situations(p: TokenStream) -> list[str]:
    found: list[str] = []
    phrases = sorted(
        ((tuple(tokens(ph)), name) for name, (spec, _) in SITUATIONS.items() for ph in spec),
        key=lambda x: -len(x[0]),
    )
    for phrase, name in phrases:
        for i in range(len(p.tok)):
            if p.match(phrase, i):
                p.take(i, i + len(phrase))
                found.append(name)
    return list(dict.fromkeys(found))


def _audience(p: TokenStream) -> str | None:
    audience = None
    for phrase in sorted(split_phrases(AUDIENCE), key=lambda x: -len(x)):
        for i in range(len(p.tok)):
            if p.match(phrase, i):
                negated = i > 0 and p.tok[i - 1] in {"not", "no"}
                p.take(i - negated, i + len(phrase))
                audience = "not kids" if negated else audience or "kids"
    return audience


def _negation_scopes(p: TokenStream) -> set[int]:
    """Token positions inside a negation: from a negator to the next punctuation or "but"."""
    scope: set[int] = set()
    i = 0
    while i < len(p.tok):
        t = p.tok[i]
        nxt = p.tok[i + 1] if i + 1 < len(p.tok) else ""
        neg = t in NEGATORS or (t == "do" and nxt == "not") or (t == "not" and nxt == "a")
        if not neg or p.used[i] or (t, nxt) in NOT_NEGATING:
            i += 1
            continue
        j = i + 1
        while j < len(p.tok) and p.tok[j] not in BOUNDARY and p.tok[j] not in CLAUSE_END:
            scope.add(j)
            j += 1
        p.take(i, i + 1)
        i = j
    return scope


def _genres(
    p: TokenStream, cat: CatalogueIndex, negated: set[int]
) -> tuple[list[str], list[str], list[str]]:
    """Genres wanted, genres excluded, and mood text, from the lexicon."""
    wanted: list[str] = []
    unwanted: list[str] = []
    text: list[str] = []
    hits: list[tuple[int, tuple[str, ...], tuple[str, ...]]] = []
    for phrase, concepts in sorted(cat.lexicon.items(), key=lambda kv: -len(kv[0])):
        for i in range(len(p.tok)):
            if p.match(phrase, i):
                p.take(i, i + len(phrase))
                hits.append((i, phrase, concepts))
    for i, phrase, concepts in sorted(hits):  # in the order the request says them
        for concept in concepts:
            _concept(concept, i in negated, cat, wanted, unwanted, text, phrase)
    return list(dict.fromkeys(wanted)), list(dict.fromkeys(unwanted)), text


def _concept(
    concept: str,
    neg: bool,
    cat: CatalogueIndex,
    wanted: list[str],
    unwanted: list[str],
    text: list[str],
    phrase: tuple[str, ...],
) -> None:
    """Record one recognised genre or mood concept as wanted, excluded or query text."""
    if concept.startswith("genre:"):
        (unwanted if neg else wanted).append(concept[6:])
    elif concept.startswith("mood:"):
        _, mood_text, excluded = MOODS[concept[5:]]
        if neg:
            unwanted += [g for c in excluded for g in cat.concept_genres.get(c, ())]
        else:
            text.append(mood_text)
    else:
        genres = cat.concept_genres.get(concept, ())
        (unwanted if neg else wanted).extend(genres)
        if not genres and not neg:
            text.append(" ".join(phrase))


def _years(p: TokenStream, cat: CatalogueIndex) -> tuple[int | None, int | None]:
    """Year range from decades, years, comparators and "recent"; the last constraint wins on
    conflict."""
    low: int | None = None
    high: int | None = None
    n = len(p.tok)

    def set_range(a: int | None, b: int | None) -> None:
        nonlocal low, high
        new_low = a if a is not None else low
        new_high = b if b is not None else high
        if new_low is not None and new_high is not None and new_low > new_high:
            new_low, new_high = a, b  # contradicts an earlier constraint: keep the later one
        low, high = new_low, new_high

    for i in range(n):
        if p.used[i]:
            continue
        t = p.tok[i]
        span = decade(t)
        if span is None and re.fullmatch(r"1[89]\d\d|20\d\d", t):
            span = (int(t), int(t))
        if span is None:
            if t in RECENT and cat.max_year is not None:
                set_range(cat.max_year - 4, None)
                p.take(i, i + 1)
            continue
        start = i
        prev = p.tok[i - 1] if i > 0 else ""
        if prev == "the" and i > 1:
            start, prev = i - 1, p.tok[i - 2]
        qualifier = p.tok[start - 1] if start > 0 else ""
        if span[1] - span[0] == 9 and qualifier in {"early", "mid", "late"}:
            d = span[0]
            span = {"early": (d, d + 3), "mid": (d + 3, d + 6), "late": (d + 6, d + 9)}[qualifier]
            start -= 1
            prev = p.tok[start - 1] if start > 0 else ""
        if prev == "than" and start > 1:
            start, prev = start - 1, p.tok[start - 2]
        if prev in AFTER:
            set_range(span[1] + 1 if prev in STRICT else span[0], None)
        elif prev in BEFORE:
            set_range(None, span[0] - 1 if prev in STRICT else span[1])
        elif i + 2 < n and p.tok[i + 1] in {"to", "and", "through"} and year_span(p.tok[i + 2]):
            end = year_span(p.tok[i + 2])
            set_range(min(span[0], end[0]), max(span[1], end[1]))
            p.take(i, i + 3)
        elif i + 1 < n and year_span(p.tok[i + 1]) and prev in {"between", "from"}:
            end = year_span(p.tok[i + 1])  # "1980-1990" arrives as two tokens
            set_range(min(span[0], end[0]), max(span[1], end[1]))
            p.take(i, i + 2)
        else:
            set_range(*span)
        p.take(max(start - 1, 0) if prev in AFTER | BEFORE else start, i + 1)
    return low, high


def _count(p: TokenStream, cat: CatalogueIndex) -> int | None:
    """How many items were asked for: "three movies", "two comedies", "top 5", "a couple"."""
    for i, t in enumerate(p.tok):
        if p.used[i]:
            continue
        if t in {"couple", "few", "handful"} and i > 0 and p.tok[i - 1] == "a":
            p.take(i - 1, i + 1)
            return {"couple": 2, "few": 3, "handful": 5}[t]
        value = int(t) if t.isdigit() and len(t) <= 2 else NUMBERS.get(t)
        if value is None or not 1 <= value <= MAX_K:
            continue
        after = p.tok[i + 1 : i + 4]
        noun = any(w in COUNT_NOUNS or (w,) in cat.lexicon for w in after)
        lead = i > 0 and p.tok[i - 1] in {"top", "me", "just", "only", "recommend", "suggest"}
        # "three please", "two more"; not "of" ("the two of us", "one of those")
        tail = not after or after[0] in {"please", "more"}
        if noun or lead or tail:
            p.take(i, i + 1)
            return value
    return None


def _query_text(
    catalogue: Dataset,
    anchors: Sequence[str],
    wanted: Sequence[str],
    excluded: Sequence[str],
    moods: Sequence[str],
    situations: Sequence[str],
    free: Sequence[str],
) -> str:
    """The text to embed, shaped like :meth:`Item.text` ("Title. Genres: A, B. …")."""
    parts: list[str] = []
    anchor_items = [catalogue.items[catalogue.item_index[a]] for a in anchors]
    if anchor_items:
        parts.append("; ".join(YEAR_SUFFIX.sub("", it.title) for it in anchor_items))
    genre_votes = Counter(g for it in anchor_items for g in it.genres)
    genres = list(dict.fromkeys([*wanted, *(g for g, _ in genre_votes.most_common())]))
    genres = [g for g in genres if g not in excluded]
    if genres:
        parts.append("Genres: " + ", ".join(genres))
    parts += list(moods)
    parts += [SITUATIONS[s][1] for s in situations]
    if free:
        parts.append(" ".join(free))
    return ". ".join(parts)
