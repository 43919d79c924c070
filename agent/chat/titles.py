"""The catalogue's title index: which items a user's words name.

Owns how a title is normalised into the forms a user types (:func:`title_aliases`: year dropped,
alternate titles, a trailing article moved to the front), the per-catalogue index built once per
:class:`hyrec.data.Dataset` (:class:`CatalogueIndex`, :func:`catalogue_index`: aliases ranked by
popularity, years, and the genre vocabulary of :mod:`agent.chat.lexicon`), title lookup with
remakes told apart by year and close spellings matched fuzzily (:data:`FUZZY_RATIO`), and
:func:`find_title` for one title string.

For :func:`agent.chat.intent.parse_request` it also finds the items a request's token stream
names: titles (:func:`title_mentions`), positions in the previous answer ("the second one",
:func:`answer_references`), and whether the clause before a mention likes or dislikes it
(:func:`sentiment`).
"""

from __future__ import annotations

import difflib
import re
import weakref
from dataclasses import dataclass

import numpy as np

from agent.chat.lexicon import (
    ARTICLES,
    BOUNDARY,
    CLAUSE_END,
    CUE_PAIRS,
    CUES,
    DISLIKE,
    DISLIKE_PAIRS,
    LIKE,
    LIKE_PAIRS,
    NUMBERS,
    ORDINALS,
    REF_NOUNS,
    RESERVED,
    STOP,
    TokenStream,
    concept_genres,
    normalize,
    phrase_concepts,
    tokens,
)
from hyrec.data import Dataset, Item

FUZZY_RATIO = 0.86  # difflib similarity for a misspelt title after a cue ("the godfater")

YEAR_SUFFIX = re.compile(r"\s*\((\d{4})\)\s*(\(v\))?\s*$", re.IGNORECASE)
_PAREN = re.compile(r"\(([^()]*)\)")


# --- catalogue index -----------------------------------------------------------------------------


@dataclass
class CatalogueIndex:
    """Per-catalogue lookups, built once per Dataset object."""

    alias: dict[tuple[str, ...], list[int]]  # title tokens → item positions, most-rated first
    by_length: dict[int, list[tuple[str, str]]]  # token count → (alias string, key) for fuzzy
    max_len: int
    genres: tuple[str, ...]  # the catalogue's genre vocabulary, in first-seen order
    concept_genres: dict[str, tuple[str, ...]]  # concept → catalogue genres
    lexicon: dict[
        tuple[str, ...], tuple[str, ...]
    ]  # phrase → concepts ("comedy", "mood:dark", "genre:X")
    years: np.ndarray  # (n_items,) int year, -1 when unknown
    max_year: int | None
    title_index: dict[str, int]  # exact title → item position


_CACHE: weakref.WeakKeyDictionary[Dataset, CatalogueIndex] = weakref.WeakKeyDictionary()


def catalogue_index(ds: Dataset) -> CatalogueIndex:
    """The index of ``ds``, built on first use and kept while ``ds`` lives."""
    cat = _CACHE.get(ds)
    if cat is None:
        cat = _CACHE[ds] = _build(ds)
    return cat


def title_aliases(title: str) -> list[tuple[str, ...]]:
    """Token forms a user may type for ``title``: year dropped, alternate titles in parentheses,
    a trailing article moved to the front and dropped ("Godfather, The (1972)" → ``the godfather``,
    ``godfather``)."""
    base = YEAR_SUFFIX.sub("", title)
    names = [_PAREN.sub("", base)] + _PAREN.findall(base)
    out: list[tuple[str, ...]] = []
    for name in names:
        head, sep, tail = name.rpartition(",")
        forms = [name]
        if sep and normalize(tail).strip() in ARTICLES:
            forms = [f"{tail} {head}", head]
        for form in forms:
            toks = tuple(t for t in tokens(form) if t not in BOUNDARY)
            if toks and toks[0] in ARTICLES and len(toks) > 1:
                out.append(toks[1:])
            if toks:
                out.append(toks)
    return list(dict.fromkeys(out))


def _build(ds: Dataset) -> CatalogueIndex:
    counts = np.bincount(ds.interactions.item, minlength=ds.n_items) if len(ds.interactions) else (
        np.zeros(ds.n_items, dtype=np.int64))  # fmt: skip
    alias: dict[tuple[str, ...], list[int]] = {}
    years = np.full(ds.n_items, -1, dtype=np.int64)
    genres: dict[str, None] = {}
    for pos, item in enumerate(ds.items):
        for a in title_aliases(item.title):
            alias.setdefault(a, []).append(pos)
        years[pos] = _item_year(item)
        for g in item.genres:
            genres.setdefault(g, None)
    for positions in alias.values():
        positions.sort(key=lambda p: (-counts[p], p))
    by_length: dict[int, list[tuple[str, str]]] = {}
    for a in alias:
        by_length.setdefault(len(a), []).append((" ".join(a), " ".join(a)))
    vocab = tuple(genres)
    valid = years[years >= 0]
    return CatalogueIndex(
        alias=alias,
        by_length=by_length,
        max_len=max((len(a) for a in alias), default=0),
        genres=vocab,
        concept_genres=concept_genres(vocab),
        lexicon=phrase_concepts(vocab),
        years=years,
        max_year=int(valid.max()) if len(valid) else None,
        title_index={it.title: pos for pos, it in reversed(list(enumerate(ds.items)))},
    )


def _item_year(item: Item) -> int:
    """The year attribute, else the "(1995)" suffix of the title, else -1."""
    if item.year is not None:
        return item.year
    m = YEAR_SUFFIX.search(item.title)
    return int(m.group(1)) if m else -1


def find_title(catalogue: Dataset, text: str) -> str | None:
    """The item id whose title ``text`` names (exact title, then alias, then a close spelling)."""
    cat = catalogue_index(catalogue)
    pos = cat.title_index.get(text.strip())
    if pos is not None:
        return catalogue.items[pos].item_id
    toks = [t for t in tokens(text) if t not in BOUNDARY]
    year = int(toks[-1]) if toks and re.fullmatch(r"\d{4}", toks[-1]) else None
    for candidate in ([toks[:-1]] if year else []) + [toks]:
        hit = _lookup(cat, tuple(candidate), year, fuzzy=True)
        if hit is not None:
            return catalogue.items[hit].item_id
    return None


def _lookup(
    cat: CatalogueIndex, span: tuple[str, ...], year: int | None, fuzzy: bool
) -> int | None:
    if span and span[0] in ARTICLES and len(span) > 1 and span not in cat.alias:
        span = span[1:]
    positions = cat.alias.get(span)
    if positions is None and fuzzy and span:
        pool = [a for n in (len(span) - 1, len(span), len(span) + 1) for a, _ in
                cat.by_length.get(n, [])]  # fmt: skip
        close = difflib.get_close_matches(" ".join(span), pool, n=1, cutoff=FUZZY_RATIO)
        positions = cat.alias[tuple(close[0].split())] if close else None
    if not positions:
        return None
    if year is not None:
        for p in positions:
            if cat.years[p] == year:
                return p
    return positions[0]


# --- items a request names -----------------------------------------------------------------------


def title_mentions(p: TokenStream, cat: CatalogueIndex) -> list[tuple[int, int]]:
    """Title spans: after a cue (fuzzy allowed), quoted, multi-word, or capitalised mid-sentence;
    as (item position, token index) pairs."""
    found: list[tuple[int, int]] = []
    n = len(p.tok)
    i = 0
    while i < n:
        if p.used[i] and p.tok[i] != '"':
            i += 1
            continue
        if p.tok[i] == '"':  # a quoted title: the whole quote, fuzzily
            end = p.tok.index('"', i + 1) if '"' in p.tok[i + 1 :] else -1
            if end > i + 1:
                hit = _lookup(cat, tuple(p.tok[i + 1 : end]), None, fuzzy=True)
                if hit is not None:
                    found.append((hit, i))
                    p.take(i, end + 1)
                    i = end + 1
                    continue
            i += 1
            continue
        cue = _after_cue(p, i)
        hit = _title_at(p, cat, i, cue)
        if hit is None:
            i += 1
            continue
        pos, stop = hit
        found.append((pos, i))
        p.take(i, stop)
        i = stop
    return found


def _after_cue(p: TokenStream, i: int) -> bool:
    """True when token ``i`` follows a cue ("like", "similar to"), possibly through an article."""
    j = i - 1
    if j >= 0 and p.tok[j] in {"the", "a", "an"}:
        j -= 1
    return j >= 0 and (p.tok[j] in CUES or (j > 0 and (p.tok[j - 1], p.tok[j]) in CUE_PAIRS))


def _title_at(p: TokenStream, cat: CatalogueIndex, i: int, cue: bool) -> tuple[int, int] | None:
    """The longest title starting at token ``i`` and the position after it, or None.

    A one-word title needs a cue or a capital mid-sentence (both when the word means something
    else here, like "Kids"); a longer one needs a cue, a capital, or two words that are not stop
    words, one of them not read by another rule ("star wars").
    """
    limit = i
    while limit < len(p.tok) and not p.used[limit] and limit - i <= cat.max_len:
        limit += 1
    for stop in range(limit, i, -1):
        span = tuple(p.tok[i:stop])
        core = span[1:] if span[0] in ARTICLES and len(span) > 1 else span
        if span not in cat.alias and core not in cat.alias:
            continue
        capital = p.title_case(i + len(span) - len(core), len(core))
        ordinary = [t for t in core if not _reserved(t, cat)]
        if len(core) == 1:
            ok = (bool(ordinary) and (cue or capital)) or (cue and capital)
        else:
            content = [t for t in core if t not in STOP]
            ok = cue or capital or (len(ordinary) >= 1 and len(content) >= 2)
        if not ok:
            continue
        year, stop = _year_after(p, stop)
        return _lookup(cat, span, year, fuzzy=False), stop
    if not cue or _reserved(p.tok[i], cat):
        return None
    for stop in range(min(limit, i + 4), i, -1):  # a close spelling, only right after a cue
        span = tuple(p.tok[i:stop])
        if _reserved(span[-1], cat) or not span[-1].isalpha():
            continue
        pos = _lookup(cat, span, None, fuzzy=True)
        if pos is not None:
            year, end = _year_after(p, stop)
            if year is not None:
                pos = _lookup(cat, span, year, fuzzy=True)
            return pos, end
    return None


def _reserved(word: str, cat: CatalogueIndex) -> bool:
    """Words other rules read (stop words, genres, moods, audience, situations, numbers)."""
    return (
        word in STOP or word in RESERVED or (word,) in cat.lexicon or word in BOUNDARY
        or word.isdigit()
    )  # fmt: skip


def _year_after(p: TokenStream, stop: int) -> tuple[int | None, int]:
    """A year right after a title ("Sabrina 1954", "Sabrina (1954)") and where it ends."""
    j = stop + (1 if stop < len(p.tok) and p.tok[stop] == "(" else 0)
    if j < len(p.tok) and not p.used[j] and re.fullmatch(r"1[89]\d\d|20\d\d", p.tok[j]):
        end = j + 1 + (1 if j + 1 < len(p.tok) and p.tok[j + 1] == ")" else 0)
        return int(p.tok[j]), end
    return None, stop


def answer_references(
    p: TokenStream, previous: list[str], notes: list[str]
) -> list[tuple[str, int]]:
    """Items named by position in the previous answer ("the second one", "#2", "those"), as
    (item id, token index) pairs; ``previous`` holds only catalogue ids."""
    out: list[tuple[str, int]] = []
    n = len(p.tok)
    for i, t in enumerate(p.tok):
        if p.used[i]:
            continue
        rank, stop = None, i + 1
        if t in ORDINALS and i > 0 and p.tok[i - 1] == "the":
            nxt = p.tok[i + 1] if i + 1 < n else "."
            if nxt in REF_NOUNS or nxt in BOUNDARY or nxt in {"and", "but", "please", "one"}:
                rank, stop = ORDINALS[t], i + 1 + (nxt in REF_NOUNS)
        elif t in {"#", "number"} and i + 1 < n and (p.tok[i + 1].isdigit() or
                                                      p.tok[i + 1] in NUMBERS):  # fmt: skip
            nxt = p.tok[i + 1]
            rank, stop = int(nxt) if nxt.isdigit() else NUMBERS[nxt], i + 2
        elif t in {"those", "these", "them"} and i > 0 and p.tok[i - 1] in {"like", "to"}:
            if previous:
                out += [(item_id, i) for item_id in previous]
                p.take(i, i + 1)
            continue
        if rank is None:
            continue
        p.take(i - (t in ORDINALS), stop)
        if not previous:
            notes.append("there is no earlier list to refer to")
        elif rank == -1 or 1 <= rank <= len(previous):
            out.append((previous[rank - 1 if rank > 0 else -1], i))
        else:
            notes.append(f"the last list had only {len(previous)} items, not {rank}")
    return out


def sentiment(p: TokenStream, i: int) -> str | None:
    """ "like" or "dislike" when the clause before token ``i`` says the user (dis)liked it ("I
    loved", "we hated", "didn't like"), else None ("something like" is not a liking)."""
    j = i - 1
    while j >= 0 and p.tok[j] not in BOUNDARY | CLAUSE_END | {"and"}:
        j -= 1
    clause = p.tok[j + 1 : i]
    pairs = set(zip(clause, clause[1:], strict=False))
    if DISLIKE & set(clause) or DISLIKE_PAIRS & pairs or "not a fan" in " ".join(clause):
        return "dislike"
    if LIKE & set(clause) or LIKE_PAIRS & pairs:
        return "like"
    return None
