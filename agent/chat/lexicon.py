"""The chat parser's vocabulary: what words mean, as data.

Owns the word lists and phrase tables that :func:`agent.chat.intent.parse_request` reads a request
with — genre concepts and moods, situations (the scenario signal), audience words, negators, cue
words for titles, stop words, ordinals and numbers, decades and year comparators, liking and
disliking — plus the tiny helpers over them: how text is normalised and cut into tokens
(:func:`normalize`, :func:`tokens`, :class:`TokenStream`), how a table entry becomes phrases
(:func:`split_phrases`), how a token names a year span (:func:`decade`, :func:`year_span`), and how
a catalogue's genre names map onto the concepts (:func:`concept_genres`, :func:`phrase_concepts`).

No catalogue index and no parsing rules live here: titles are :mod:`agent.chat.titles`, the rules
are :mod:`agent.chat.intent`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence

TOKEN = re.compile(r"[A-Za-z0-9]+|[,.;:!?#\"()]")
ARTICLES = ("the", "a", "an", "le", "la", "les", "l", "il", "die", "der", "das", "el")
BOUNDARY = frozenset(',.;:!?"()')
CLAUSE_END = frozenset({"but", "though", "although", "however", "yet", "instead", "rather"})


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# --- words and phrases -------------------------------------------------------------------------

# concept → (pattern matching the catalogue's genre names, words and phrases that ask for it)
GENRE_CONCEPTS: dict[str, tuple[str, tuple[str, ...]]] = {
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
CHILDREN = r"child|kid|family"

# moods that are not genres: (words, query text when wanted, genre concepts excluded when negated)
MOODS: dict[str, tuple[tuple[str, ...], str, tuple[str, ...]]] = {
    "violent": (("violent violence gory gore bloody brutal",), "violent", ("horror", "war")),
    "dark": (("dark gritty bleak disturbing",), "dark, gritty", ("horror",)),
    "feelgood": (("uplifting cheerful heartwarming wholesome", "feel good"), "feel-good, uplifting",
                 ()),
    "smart": (("clever smart intelligent cerebral", "thought provoking", "mind bending"),
              "clever, thought-provoking", ()),
}  # fmt: skip

# situations: the scenario signal, as query text (soft); kids/family is handled as an audience
SITUATIONS: dict[str, tuple[tuple[str, ...], str]] = {
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
AUDIENCE = ("kids kid children child family toddler toddlers childrens son daughter",
             "family friendly", "kid friendly", "for the little ones")  # fmt: skip
RECENT = ("recent", "latest", "newer", "newest", "modern")

NEGATORS = _words(
    "no not nothing without avoid avoiding dont never none except excluding exclude skip hate "
    "dislike isnt arent nor neither nothin didnt doesnt"
)
NOT_NEGATING = {("dont", "mind"), ("didnt", "mind"), ("not", "only"), ("no", "matter")}

CUES = _words("like as than loved liked enjoyed love adore adored watched saw seen")
CUE_PAIRS = frozenset(
    {("similar", "to"), ("fan", "of"), ("fans", "of"), ("me", "of"), ("vein", "of"),
     ("style", "of"), ("such", "as"), ("same", "as"), ("version", "of"), ("lines", "of")}
)  # fmt: skip
STOP = _words(
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

ORDINALS = {
    "first": 1, "1st": 1, "second": 2, "2nd": 2, "third": 3, "3rd": 3, "fourth": 4, "4th": 4,
    "fifth": 5, "5th": 5, "sixth": 6, "6th": 6, "seventh": 7, "7th": 7, "eighth": 8, "8th": 8,
    "ninth": 9, "9th": 9, "tenth": 10, "10th": 10, "last": -1,
}  # fmt: skip
REF_NOUNS = _words("one movie film pick option suggestion title recommendation item")
NUMBERS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "fifteen": 15, "twenty": 20,
}  # fmt: skip
COUNT_NOUNS = _words(
    "movies films titles picks recommendations suggestions options ones things shows items "
    "movie film title pick recommendation suggestion option"
)
DECADE_WORDS = {
    "twenties": 1920, "thirties": 1930, "forties": 1940, "fifties": 1950, "sixties": 1960,
    "seventies": 1970, "eighties": 1980, "nineties": 1990,
}  # fmt: skip
AFTER = _words("after since post newer later past")  # "newer than 1990"
BEFORE = _words("before pre older earlier until till prior")
LIKE = _words("loved liked enjoyed adored")
LIKE_PAIRS = frozenset((w, v) for w in ("i", "we") for v in ("love", "like", "adore", "enjoy"))
DISLIKE = _words("hated disliked hate dislike detested loathed")
DISLIKE_PAIRS = frozenset(
    {("didnt", "like"), ("dont", "like"), ("not", "like"), ("didnt", "enjoy"), ("not", "enjoy")}
)
STRICT = _words("after post newer later past before pre older earlier prior")
RESERVED = frozenset(
    [w for spec in AUDIENCE for w in spec.split()]
    + [w for spec, _ in SITUATIONS.values() for ph in spec for w in ph.split()]
    + [*ORDINALS, *NUMBERS, *DECADE_WORDS, *AFTER, *BEFORE, *RECENT, *NEGATORS]
)


# --- tokens --------------------------------------------------------------------------------------


def normalize(text: str) -> str:
    """Lowercase, accents and apostrophes removed, hyphens and slashes as spaces."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"['`]", "", text)
    return re.sub(r"[-/&+]", " ", text).lower()


def tokens(text: str) -> list[str]:
    """The words and punctuation marks of :func:`normalize`'d ``text``."""
    return TOKEN.findall(normalize(text))


def split_phrases(spec: Iterable[str]) -> list[tuple[str, ...]]:
    """Entries are space-separated single words, or one multi-word phrase when it holds a space
    and is not the first entry."""
    out: list[tuple[str, ...]] = []
    for i, entry in enumerate(spec):
        out += [(w,) for w in entry.split()] if i == 0 else [tuple(entry.split())]
    return out


class TokenStream:
    """One request's token stream and what has been taken from it."""

    def __init__(self, text: str) -> None:
        self.raw = TOKEN.findall(
            unicodedata.normalize("NFKD", re.sub(r"[-/&+]", " ", re.sub(r"['`’]", "", text)))
            .encode("ascii", "ignore")
            .decode("ascii")
        )
        self.tok = [t.lower() for t in self.raw]
        self.used = [t in BOUNDARY for t in self.tok]

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
        return n > 1 or not sentence_start or self.tok[start] not in STOP


# --- years -------------------------------------------------------------------------------------


def year_span(t: str) -> tuple[int, int] | None:
    """The years a token names: a year ("1995") or a decade ("90s", "eighties"), else None."""
    if re.fullmatch(r"1[89]\d\d|20\d\d", t):
        return int(t), int(t)
    return decade(t)


def decade(t: str) -> tuple[int, int] | None:
    """The years of a decade token ("1980s", "80s", "eighties"), else None."""
    if t in DECADE_WORDS:
        return DECADE_WORDS[t], DECADE_WORDS[t] + 9
    m = re.fullmatch(r"(1[89]\d0|20\d0)s|(\d)0s", t)
    if not m:
        return None
    start = int(m.group(1)) if m.group(1) else int(m.group(2)) * 10
    if start < 100:
        start += 2000 if start < 20 else 1900
    return start, start + 9


# --- the catalogue's genres ---------------------------------------------------------------------


def concept_genres(vocab: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Concept → the genres of ``vocab`` (a catalogue's genre names) it stands for, by the
    patterns of :data:`GENRE_CONCEPTS`; ``"children"`` by :data:`CHILDREN`."""
    out = {
        c: tuple(g for g in vocab if re.search(pat, normalize(g))) for c, (pat, _) in
        GENRE_CONCEPTS.items()
    }  # fmt: skip
    out["children"] = tuple(g for g in vocab if re.search(CHILDREN, normalize(g)))
    return out


def phrase_concepts(vocab: Sequence[str]) -> dict[tuple[str, ...], tuple[str, ...]]:
    """Phrase → the concepts it asks for: ``"genre:X"`` for the genre names of ``vocab`` (and
    their plurals), the :data:`GENRE_CONCEPTS` ("comedy"), and ``"mood:M"`` for :data:`MOODS`."""
    lexicon: dict[tuple[str, ...], tuple[str, ...]] = {}
    for g in vocab:  # the catalogue's own genre names ("Film-Noir", "Children's", "Anime")
        name = tuple(tokens(g))
        if name:
            for form in (name, (*name[:-1], name[-1] + "s")):
                lexicon[form] = (*lexicon.get(form, ()), f"genre:{g}")
    for concept, (_, spec) in GENRE_CONCEPTS.items():
        for p in split_phrases(spec):
            lexicon[p] = (*lexicon.get(p, ()), concept)
    for mood, (spec, _, _) in MOODS.items():
        for p in split_phrases(spec):
            lexicon[p] = (*lexicon.get(p, ()), f"mood:{mood}")
    return lexicon
