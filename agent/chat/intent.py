"""Deterministic request parsing for chat and scenario context: text → :class:`Intent`.

No LLM and no embedding model: rules over a token stream plus a title index of the catalogue, so
chat works on the embedded defaults (whose 135M model cannot call tools) and the same parser turns
a request's situation ("for tonight, with the kids") into filters and query text for
:meth:`agent.api.Recommender.recommend`. What it recognises, in this order (each rule consumes its
tokens, so a title is never read as a year or a mood):

* **title anchors** — "like Alien", "fans of the godfather", a quoted title, a capitalised title
  mid-sentence; catalogue titles are indexed without the year and with a trailing article moved
  to the front ("Godfather, The (1972)" → "the godfather", "godfather"); after a cue word a
  close spelling is accepted too (difflib ratio, :data:`FUZZY_RATIO`); a year right after the
  title picks among remakes, otherwise the most-rated one wins;
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
"""

from __future__ import annotations

import difflib
import re
import unicodedata
import weakref
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from hyrec.data import Dataset, Item
from retrieval.filters import Filter

FUZZY_RATIO = 0.86  # difflib similarity for a misspelt title after a cue ("the godfater")
MAX_K = 50  # largest count a request may ask for
MAX_CHARS = 4000  # longer requests are read up to here (parsing is linear, ~0.2 ms per word)

_TOKEN = re.compile(r"[A-Za-z0-9]+|[,.;:!?#\"()]")
_YEAR_SUFFIX = re.compile(r"\s*\((\d{4})\)\s*(\(v\))?\s*$", re.IGNORECASE)
_PAREN = re.compile(r"\(([^()]*)\)")
_ARTICLES = ("the", "a", "an", "le", "la", "les", "l", "il", "die", "der", "das", "el")
_BOUNDARY = frozenset(',.;:!?"()')
_CLAUSE_END = frozenset({"but", "though", "although", "however", "yet", "instead", "rather"})


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# --- lexicon -------------------------------------------------------------------------------------

# concept → (pattern matching the catalogue's genre names, words and phrases that ask for it)
_GENRE_CONCEPTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "comedy": (r"comed", ("comedy comedies comedic funny funnier funniest hilarious humor humour "
                          "humorous laugh laughs silly goofy lighthearted", "light hearted",
                          "rom com", "romcom")),
    "horror": (r"horror", ("horror horrors scary scarier scariest creepy spooky frightening "
                           "terrifying slasher", "scare me")),
    "scifi": (r"sci|science", ("scifi futuristic robots aliens spaceships", "sci fi",
                               "science fiction", "outer space", "space")),
    "romance": (r"romanc", ("romance romances romantic romcom", "love story", "love stories",
                            "rom com")),
    "drama": (r"drama", ("drama dramas dramatic tearjerker emotional sad moving",
                         "tear jerker")),
    "action": (r"action", ("action explosions", "action packed")),
    "thriller": (r"thrill", ("thriller thrillers suspense suspenseful tense gripping thrilling",)),
    "mystery": (r"myster", ("mystery mysteries whodunit detective",)),
    "fantasy": (r"fantas", ("fantasy magical magic dragons wizards", "fairy tale")),
    "animation": (r"anim", ("animated animation cartoon cartoons",)),
    "musical": (r"music", ("musical musicals singing",)),
    "western": (r"western", ("western westerns cowboy cowboys",)),
    "war": (r"^war", ("war",)),
    "documentary": (r"documentar", ("documentary documentaries",)),
    "noir": (r"noir", ("noir", "film noir")),
    "adventure": (r"adventur", ("adventure adventures adventurous epic quest",)),
    "crime": (r"crime", ("crime gangster gangsters mafia mob heist heists",)),
}  # fmt: skip
_CHILDREN = r"child|kid|family"

# moods that are not genres: (words, query text when wanted, genre concepts excluded when negated)
_MOODS: dict[str, tuple[tuple[str, ...], str, tuple[str, ...]]] = {
    "violent": (("violent violence gory gore bloody brutal",), "violent", ("horror", "war")),
    "dark": (("dark gritty bleak disturbing",), "dark, gritty", ("horror",)),
    "feelgood": (("uplifting cheerful heartwarming wholesome", "feel good"), "feel-good, uplifting",
                 ()),
    "smart": (("clever smart intelligent cerebral", "thought provoking", "mind bending"),
              "clever, thought-provoking", ()),
}  # fmt: skip

# situations: the scenario signal, as query text (soft); kids/family is handled as an audience
_SITUATIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "tonight": (("tonight", "this evening", "movie night"),
                "an engaging, easy-to-watch crowd-pleaser"),
    "date night": (("date night", "a date", "with my girlfriend", "with my boyfriend",
                    "with my partner", "with my wife", "with my husband"), "romantic date night"),
    "friends": (("with friends", "with my friends", "party", "with the guys", "with the girls"),
                "a fun crowd-pleaser to watch with friends"),
    "short": (("something short", "short", "quick", "not too long", "not long"),
              "short, light and easy"),
    "cozy": (("cozy", "cosy", "rainy day", "rainy", "lazy sunday", "comfort"),
             "cozy, comforting, feel-good"),
    "relax": (("relax", "relaxing", "chill", "unwind", "fall asleep", "wind down"),
              "calm, relaxing, light"),
    "holiday": (("christmas", "holiday", "holidays"), "christmas holiday"),
}  # fmt: skip
_AUDIENCE = ("kids kid children child family toddler toddlers childrens son daughter",
             "family friendly", "kid friendly", "for the little ones")  # fmt: skip
_RECENT = ("recent", "latest", "newer", "newest", "modern")

_NEGATORS = _words(
    "no not nothing without avoid avoiding dont never none except excluding exclude skip hate "
    "dislike isnt arent nor neither nothin didnt doesnt"
)
_NOT_NEGATING = {("dont", "mind"), ("didnt", "mind"), ("not", "only"), ("no", "matter")}

_CUES = _words("like as than loved liked enjoyed love adore adored watched saw seen")
_CUE_PAIRS = frozenset(
    {("similar", "to"), ("fan", "of"), ("fans", "of"), ("me", "of"), ("vein", "of"),
     ("style", "of"), ("such", "as"), ("same", "as"), ("version", "of"), ("lines", "of")}
)  # fmt: skip
_STOP = _words(
    """a an the and or but to of in on at for from with by about into is are was be been it its
    this that these those i me my we us our you your im ive id want wanna would could should can
    will like something anything stuff movie movies film films flick flicks watch watching see
    recommend suggest suggestions recommendation recommendations please show give get find need
    looking look some any more less really very too just good great best nice one ones pick picks
    what which who kind sort type maybe also again another other else than as so such lets let
    have has had do does did make same similar new tonight please thanks thank hi hello hey
    love loved liked enjoyed enjoy fan fans much many lot lots bit little quite pretty mood feel
    feeling prefer preferably ideally perhaps only all something okay ok yes well now then there
    here way ones whatever time seen saw watched top between got tell help how why where when
    vein style lines version hated disliked detested loathed adored didnt doesnt"""
)

_ORDINALS = {
    "first": 1, "1st": 1, "second": 2, "2nd": 2, "third": 3, "3rd": 3, "fourth": 4, "4th": 4,
    "fifth": 5, "5th": 5, "sixth": 6, "6th": 6, "seventh": 7, "7th": 7, "eighth": 8, "8th": 8,
    "ninth": 9, "9th": 9, "tenth": 10, "10th": 10, "last": -1,
}  # fmt: skip
_REF_NOUNS = _words("one movie film pick option suggestion title recommendation item")
_NUMBERS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "fifteen": 15, "twenty": 20,
}  # fmt: skip
_COUNT_NOUNS = _words(
    "movies films titles picks recommendations suggestions options ones things shows items "
    "movie film title pick recommendation suggestion option"
)
_DECADE_WORDS = {
    "twenties": 1920, "thirties": 1930, "forties": 1940, "fifties": 1950, "sixties": 1960,
    "seventies": 1970, "eighties": 1980, "nineties": 1990,
}  # fmt: skip
_AFTER = _words("after since post newer later past")  # "newer than 1990"
_BEFORE = _words("before pre older earlier until till prior")
_LIKE = _words("loved liked enjoyed adored")
_LIKE_PAIRS = frozenset((w, v) for w in ("i", "we") for v in ("love", "like", "adore", "enjoy"))
_DISLIKE = _words("hated disliked hate dislike detested loathed")
_DISLIKE_PAIRS = frozenset(
    {("didnt", "like"), ("dont", "like"), ("not", "like"), ("didnt", "enjoy"), ("not", "enjoy")}
)
_STRICT = _words("after post newer later past before pre older earlier prior")
_RESERVED = frozenset(
    [w for spec in _AUDIENCE for w in spec.split()]
    + [w for spec, _ in _SITUATIONS.values() for ph in spec for w in ph.split()]
    + [*_ORDINALS, *_NUMBERS, *_DECADE_WORDS, *_AFTER, *_BEFORE, *_RECENT, *_NEGATORS]
)


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


# --- tokens --------------------------------------------------------------------------------------


def normalize(text: str) -> str:
    """Lowercase, accents and apostrophes removed, hyphens and slashes as spaces."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"['`]", "", text)
    return re.sub(r"[-/&+]", " ", text).lower()


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(normalize(text))


def _phrases(spec: Iterable[str]) -> list[tuple[str, ...]]:
    """Entries are space-separated single words, or one multi-word phrase when it holds a space
    and is not the first entry."""
    out: list[tuple[str, ...]] = []
    for i, entry in enumerate(spec):
        out += [(w,) for w in entry.split()] if i == 0 else [tuple(entry.split())]
    return out


# --- catalogue index -----------------------------------------------------------------------------


@dataclass
class _Catalogue:
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


_CACHE: weakref.WeakKeyDictionary[Dataset, _Catalogue] = weakref.WeakKeyDictionary()


def _catalogue(ds: Dataset) -> _Catalogue:
    cat = _CACHE.get(ds)
    if cat is None:
        cat = _CACHE[ds] = _build(ds)
    return cat


def title_aliases(title: str) -> list[tuple[str, ...]]:
    """Token forms a user may type for ``title``: year dropped, alternate titles in parentheses,
    a trailing article moved to the front and dropped ("Godfather, The (1972)" → ``the godfather``,
    ``godfather``)."""
    base = _YEAR_SUFFIX.sub("", title)
    names = [_PAREN.sub("", base)] + _PAREN.findall(base)
    out: list[tuple[str, ...]] = []
    for name in names:
        head, sep, tail = name.rpartition(",")
        forms = [name]
        if sep and normalize(tail).strip() in _ARTICLES:
            forms = [f"{tail} {head}", head]
        for form in forms:
            toks = tuple(t for t in tokens(form) if t not in _BOUNDARY)
            if toks and toks[0] in _ARTICLES and len(toks) > 1:
                out.append(toks[1:])
            if toks:
                out.append(toks)
    return list(dict.fromkeys(out))


def _build(ds: Dataset) -> _Catalogue:
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
    concept_genres = {
        c: tuple(g for g in vocab if re.search(pat, normalize(g))) for c, (pat, _) in
        _GENRE_CONCEPTS.items()
    }  # fmt: skip
    concept_genres["children"] = tuple(g for g in vocab if re.search(_CHILDREN, normalize(g)))
    lexicon: dict[tuple[str, ...], tuple[str, ...]] = {}
    for g in vocab:  # the catalogue's own genre names ("Film-Noir", "Children's", "Anime")
        name = tuple(tokens(g))
        if name:
            for form in (name, (*name[:-1], name[-1] + "s")):
                lexicon[form] = (*lexicon.get(form, ()), f"genre:{g}")
    for concept, (_, spec) in _GENRE_CONCEPTS.items():
        for p in _phrases(spec):
            lexicon[p] = (*lexicon.get(p, ()), concept)
    for mood, (spec, _, _) in _MOODS.items():
        for p in _phrases(spec):
            lexicon[p] = (*lexicon.get(p, ()), f"mood:{mood}")
    valid = years[years >= 0]
    return _Catalogue(
        alias=alias,
        by_length=by_length,
        max_len=max((len(a) for a in alias), default=0),
        genres=vocab,
        concept_genres=concept_genres,
        lexicon=lexicon,
        years=years,
        max_year=int(valid.max()) if len(valid) else None,
        title_index={it.title: pos for pos, it in reversed(list(enumerate(ds.items)))},
    )


def _item_year(item: Item) -> int:
    """The year attribute, else the "(1995)" suffix of the title, else -1."""
    if item.year is not None:
        return item.year
    m = _YEAR_SUFFIX.search(item.title)
    return int(m.group(1)) if m else -1


def find_title(catalogue: Dataset, text: str) -> str | None:
    """The item id whose title ``text`` names (exact title, then alias, then a close spelling)."""
    cat = _catalogue(catalogue)
    pos = cat.title_index.get(text.strip())
    if pos is not None:
        return catalogue.items[pos].item_id
    toks = [t for t in tokens(text) if t not in _BOUNDARY]
    year = int(toks[-1]) if toks and re.fullmatch(r"\d{4}", toks[-1]) else None
    for candidate in ([toks[:-1]] if year else []) + [toks]:
        hit = _lookup(cat, tuple(candidate), year, fuzzy=True)
        if hit is not None:
            return catalogue.items[hit].item_id
    return None


def _lookup(cat: _Catalogue, span: tuple[str, ...], year: int | None, fuzzy: bool) -> int | None:
    if span and span[0] in _ARTICLES and len(span) > 1 and span not in cat.alias:
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


# --- parsing -------------------------------------------------------------------------------------


class _Parse:
    """One request's token stream and what has been taken from it."""

    def __init__(self, text: str) -> None:
        self.raw = _TOKEN.findall(
            unicodedata.normalize("NFKD", re.sub(r"[-/&+]", " ", re.sub(r"['`’]", "", text)))
            .encode("ascii", "ignore")
            .decode("ascii")
        )
        self.tok = [t.lower() for t in self.raw]
        self.used = [t in _BOUNDARY for t in self.tok]

    def take(self, start: int, stop: int) -> None:
        for i in range(start, stop):
            self.used[i] = True

    def free(self, start: int, stop: int) -> bool:
        return stop <= len(self.tok) and not any(self.used[start:stop])

    def match(self, phrase: tuple[str, ...], start: int) -> bool:
        stop = start + len(phrase)
        return self.free(start, stop) and tuple(self.tok[start:stop]) == phrase

    def title_case(self, start: int, n: int) -> bool:
        """True when the ``n`` tokens from ``start`` are written as a title: every word longer
        than three letters capitalised, and for a lone word, not merely the sentence's first."""
        words = self.raw[start : start + n]
        if not all(w[:1].isupper() or w[:1].isdigit() or len(w) <= 3 for w in words):
            return False
        if not words[0][:1].isupper():
            return False
        sentence_start = start == 0 or self.tok[start - 1] in {".", "!", "?", '"', ":"}
        return n > 1 or not sentence_start or self.tok[start] not in _STOP


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
    cat = _catalogue(catalogue)
    notes: list[str] = []
    if len(text) > MAX_CHARS:
        text = text[:MAX_CHARS]
        notes.append(f"only the first {MAX_CHARS} characters of the request were read")
    p = _Parse(text)
    titles = [(catalogue.items[a].item_id, i) for a, i in _titles(p, cat)]
    refs = _references(p, [i for i in previous if i in catalogue.item_index], notes)
    mentions = sorted(titles + refs, key=lambda m: m[1])
    feeling = {item_id: _sentiment(p, i) for item_id, i in mentions}
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
        if not p.used[i] and i not in negated and t not in _STOP and not t.isdigit()
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


def _titles(p: _Parse, cat: _Catalogue) -> list[tuple[int, int]]:
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


def _after_cue(p: _Parse, i: int) -> bool:
    """True when token ``i`` follows a cue ("like", "similar to"), possibly through an article."""
    j = i - 1
    if j >= 0 and p.tok[j] in {"the", "a", "an"}:
        j -= 1
    return j >= 0 and (p.tok[j] in _CUES or (j > 0 and (p.tok[j - 1], p.tok[j]) in _CUE_PAIRS))


def _title_at(p: _Parse, cat: _Catalogue, i: int, cue: bool) -> tuple[int, int] | None:
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
        core = span[1:] if span[0] in _ARTICLES and len(span) > 1 else span
        if span not in cat.alias and core not in cat.alias:
            continue
        capital = p.title_case(i + len(span) - len(core), len(core))
        ordinary = [t for t in core if not _reserved(t, cat)]
        if len(core) == 1:
            ok = (bool(ordinary) and (cue or capital)) or (cue and capital)
        else:
            content = [t for t in core if t not in _STOP]
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


def _reserved(word: str, cat: _Catalogue) -> bool:
    """Words other rules read (stop words, genres, moods, audience, situations, numbers)."""
    return (
        word in _STOP or word in _RESERVED or (word,) in cat.lexicon or word in _BOUNDARY
        or word.isdigit()
    )  # fmt: skip


def _year_after(p: _Parse, stop: int) -> tuple[int | None, int]:
    """A year right after a title ("Sabrina 1954", "Sabrina (1954)") and where it ends."""
    j = stop + (1 if stop < len(p.tok) and p.tok[stop] == "(" else 0)
    if j < len(p.tok) and not p.used[j] and re.fullmatch(r"1[89]\d\d|20\d\d", p.tok[j]):
        end = j + 1 + (1 if j + 1 < len(p.tok) and p.tok[j + 1] == ")" else 0)
        return int(p.tok[j]), end
    return None, stop


def _references(p: _Parse, previous: list[str], notes: list[str]) -> list[tuple[str, int]]:
    """Items named by position in the previous answer ("the second one", "#2", "those"), as
    (item id, token index) pairs; ``previous`` holds only catalogue ids."""
    out: list[tuple[str, int]] = []
    n = len(p.tok)
    for i, t in enumerate(p.tok):
        if p.used[i]:
            continue
        rank, stop = None, i + 1
        if t in _ORDINALS and i > 0 and p.tok[i - 1] == "the":
            nxt = p.tok[i + 1] if i + 1 < n else "."
            if nxt in _REF_NOUNS or nxt in _BOUNDARY or nxt in {"and", "but", "please", "one"}:
                rank, stop = _ORDINALS[t], i + 1 + (nxt in _REF_NOUNS)
        elif t in {"#", "number"} and i + 1 < n and (p.tok[i + 1].isdigit() or
                                                      p.tok[i + 1] in _NUMBERS):  # fmt: skip
            nxt = p.tok[i + 1]
            rank, stop = int(nxt) if nxt.isdigit() else _NUMBERS[nxt], i + 2
        elif t in {"those", "these", "them"} and i > 0 and p.tok[i - 1] in {"like", "to"}:
            if previous:
                out += [(item_id, i) for item_id in previous]
                p.take(i, i + 1)
            continue
        if rank is None:
            continue
        p.take(i - (t in _ORDINALS), stop)
        if not previous:
            notes.append("there is no earlier list to refer to")
        elif rank == -1 or 1 <= rank <= len(previous):
            out.append((previous[rank - 1 if rank > 0 else -1], i))
        else:
            notes.append(f"the last list had only {len(previous)} items, not {rank}")
    return out


def _sentiment(p: _Parse, i: int) -> str | None:
    """ "like" or "dislike" when the clause before token ``i`` says the user (dis)liked it ("I
    loved", "we hated", "didn't like"), else None ("something like" is not a liking)."""
    j = i - 1
    while j >= 0 and p.tok[j] not in _BOUNDARY | _CLAUSE_END | {"and"}:
        j -= 1
    clause = p.tok[j + 1 : i]
    pairs = set(zip(clause, clause[1:], strict=False))
    if _DISLIKE & set(clause) or _DISLIKE_PAIRS & pairs or "not a fan" in " ".join(clause):
        return "dislike"
    if _LIKE & set(clause) or _LIKE_PAIRS & pairs:
        return "like"
    return None


def _situations(p: _Parse) -> list[str]:
    found: list[str] = []
    phrases = sorted(
        ((tuple(tokens(ph)), name) for name, (spec, _) in _SITUATIONS.items() for ph in spec),
        key=lambda x: -len(x[0]),
    )
    for phrase, name in phrases:
        for i in range(len(p.tok)):
            if p.match(phrase, i):
                p.take(i, i + len(phrase))
                found.append(name)
    return list(dict.fromkeys(found))


def _audience(p: _Parse) -> str | None:
    audience = None
    for phrase in sorted(_phrases(_AUDIENCE), key=lambda x: -len(x)):
        for i in range(len(p.tok)):
            if p.match(phrase, i):
                negated = i > 0 and p.tok[i - 1] in {"not", "no"}
                p.take(i - negated, i + len(phrase))
                audience = "not kids" if negated else audience or "kids"
    return audience


def _negation_scopes(p: _Parse) -> set[int]:
    """Token positions inside a negation: from a negator to the next punctuation or "but"."""
    scope: set[int] = set()
    i = 0
    while i < len(p.tok):
        t = p.tok[i]
        nxt = p.tok[i + 1] if i + 1 < len(p.tok) else ""
        neg = t in _NEGATORS or (t == "do" and nxt == "not") or (t == "not" and nxt == "a")
        if not neg or p.used[i] or (t, nxt) in _NOT_NEGATING:
            i += 1
            continue
        j = i + 1
        while j < len(p.tok) and p.tok[j] not in _BOUNDARY and p.tok[j] not in _CLAUSE_END:
            scope.add(j)
            j += 1
        p.take(i, i + 1)
        i = j
    return scope


def _genres(
    p: _Parse, cat: _Catalogue, negated: set[int]
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
    cat: _Catalogue,
    wanted: list[str],
    unwanted: list[str],
    text: list[str],
    phrase: tuple[str, ...],
) -> None:
    """Record one recognised genre or mood concept as wanted, excluded or query text."""
    if concept.startswith("genre:"):
        (unwanted if neg else wanted).append(concept[6:])
    elif concept.startswith("mood:"):
        _, mood_text, excluded = _MOODS[concept[5:]]
        if neg:
            unwanted += [g for c in excluded for g in cat.concept_genres.get(c, ())]
        else:
            text.append(mood_text)
    else:
        genres = cat.concept_genres.get(concept, ())
        (unwanted if neg else wanted).extend(genres)
        if not genres and not neg:
            text.append(" ".join(phrase))


def _years(p: _Parse, cat: _Catalogue) -> tuple[int | None, int | None]:
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
        span = _decade(t)
        if span is None and re.fullmatch(r"1[89]\d\d|20\d\d", t):
            span = (int(t), int(t))
        if span is None:
            if t in _RECENT and cat.max_year is not None:
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
        if prev in _AFTER:
            set_range(span[1] + 1 if prev in _STRICT else span[0], None)
        elif prev in _BEFORE:
            set_range(None, span[0] - 1 if prev in _STRICT else span[1])
        elif i + 2 < n and p.tok[i + 1] in {"to", "and", "through"} and _span(p.tok[i + 2]):
            end = _span(p.tok[i + 2])
            set_range(min(span[0], end[0]), max(span[1], end[1]))
            p.take(i, i + 3)
        elif i + 1 < n and _span(p.tok[i + 1]) and prev in {"between", "from"}:
            end = _span(p.tok[i + 1])  # "1980-1990" arrives as two tokens
            set_range(min(span[0], end[0]), max(span[1], end[1]))
            p.take(i, i + 2)
        else:
            set_range(*span)
        p.take(max(start - 1, 0) if prev in _AFTER | _BEFORE else start, i + 1)
    return low, high


def _span(t: str) -> tuple[int, int] | None:
    if re.fullmatch(r"1[89]\d\d|20\d\d", t):
        return int(t), int(t)
    return _decade(t)


def _decade(t: str) -> tuple[int, int] | None:
    if t in _DECADE_WORDS:
        return _DECADE_WORDS[t], _DECADE_WORDS[t] + 9
    m = re.fullmatch(r"(1[89]\d0|20\d0)s|(\d)0s", t)
    if not m:
        return None
    start = int(m.group(1)) if m.group(1) else int(m.group(2)) * 10
    if start < 100:
        start += 2000 if start < 20 else 1900
    return start, start + 9


def _count(p: _Parse, cat: _Catalogue) -> int | None:
    """How many items were asked for: "three movies", "two comedies", "top 5", "a couple"."""
    for i, t in enumerate(p.tok):
        if p.used[i]:
            continue
        if t in {"couple", "few", "handful"} and i > 0 and p.tok[i - 1] == "a":
            p.take(i - 1, i + 1)
            return {"couple": 2, "few": 3, "handful": 5}[t]
        value = int(t) if t.isdigit() and len(t) <= 2 else _NUMBERS.get(t)
        if value is None or not 1 <= value <= MAX_K:
            continue
        after = p.tok[i + 1 : i + 4]
        noun = any(w in _COUNT_NOUNS or (w,) in cat.lexicon for w in after)
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
        parts.append("; ".join(_YEAR_SUFFIX.sub("", it.title) for it in anchor_items))
    genre_votes = Counter(g for it in anchor_items for g in it.genres)
    genres = list(dict.fromkeys([*wanted, *(g for g, _ in genre_votes.most_common())]))
    genres = [g for g in genres if g not in excluded]
    if genres:
        parts.append("Genres: " + ", ".join(genres))
    parts += list(moods)
    parts += [_SITUATIONS[s][1] for s in situations]
    if free:
        parts.append(" ".join(free))
    return ". ".join(parts)
