"""The deterministic request parser on a tiny synthetic movie catalogue with known answers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.chat.intent import Intent, parse_request
from agent.chat.titles import find_title, title_aliases
from hyrec.data import Dataset, Item
from retrieval.filters import Filter

MOVIES = [
    ("1", "Alien (1979)", ["Action", "Horror", "Sci-Fi", "Thriller"]),
    ("2", "Aliens (1986)", ["Action", "Sci-Fi", "Thriller", "War"]),
    ("3", "Godfather, The (1972)", ["Action", "Crime", "Drama"]),
    ("4", "Toy Story (1995)", ["Animation", "Children's", "Comedy"]),
    ("5", "Spaceballs (1987)", ["Comedy", "Sci-Fi"]),
    ("6", "Men in Black (1997)", ["Action", "Adventure", "Comedy", "Sci-Fi"]),
    ("7", "Lion King, The (1994)", ["Animation", "Children's", "Musical"]),
    ("8", "Scream (1996)", ["Horror", "Thriller"]),
    ("9", "Sabrina (1954)", ["Comedy", "Romance"]),
    ("10", "Sabrina (1995)", ["Comedy", "Romance"]),
    ("11", "Star Wars (1977)", ["Action", "Adventure", "Romance", "Sci-Fi", "War"]),
    ("12", "Kids (1995)", ["Drama"]),
    ("13", "Aladdin (1992)", ["Animation", "Children's", "Comedy", "Musical"]),
    ("14", "Casablanca (1942)", ["Drama", "Romance", "War"]),
    ("15", "Seven (Se7en) (1995)", ["Crime", "Thriller"]),
]


def tiny_catalogue(with_genres: bool = True) -> Dataset:
    """15 movies; Sabrina (1995) is rated more often than Sabrina (1954)."""
    items = [
        Item(i, t, attributes={"genres": g, "year": int(t[-5:-1])} if with_genres else {})
        for i, t, g in MOVIES
    ]
    events = [(f"u{u}", i, 100 + u, 4.0, "") for u in range(3) for i in ("1", "4", "10", "11")]
    events += [("u9", "9", 100, 4.0, "")]
    return Dataset.from_records("tiny", items, events)


@pytest.fixture(scope="module")
def cat() -> Dataset:
    return tiny_catalogue()


def test_like_alien_but_funnier_for_tonight(cat):
    got = parse_request("something like Alien but funnier, for tonight", cat)
    assert got == Intent(
        query_text="Alien. Genres: Comedy, Action, Horror, Sci-Fi, Thriller. "
        "an engaging, easy-to-watch crowd-pleaser",
        anchors=("1",),
        filters=Filter(genres_any=("Comedy",)),
        genres=("Comedy",),
        situations=("tonight",),
    )


def test_no_horror_90s_for_kids(cat):
    got = parse_request("no horror, 90s, for kids", cat)
    assert got == Intent(
        query_text="Genres: Children's, Animation",
        anchors=(),
        filters=Filter(
            genres_any=("Children's", "Animation"),
            genres_none=("Horror",),
            year_min=1990,
            year_max=1999,
        ),
        audience="kids",
    )


def test_more_like_the_second_one(cat):
    got = parse_request("more like the second one", cat, previous=["4", "13", "7"])
    assert got == Intent(
        query_text="Aladdin. Genres: Animation, Children's, Comedy, Musical",
        anchors=("13",),
        filters=Filter(),
        references=True,
    )


def test_cold_start_description_keeps_free_words(cat):
    got = parse_request("I love slow atmospheric space movies, nothing too gory", cat)
    assert got.anchors == ()
    assert got.filters == Filter(genres_any=("Sci-Fi",), genres_none=("Horror", "War"))
    assert got.free_text == "slow atmospheric"
    assert got.query_text == "Genres: Sci-Fi. slow atmospheric"


@pytest.mark.parametrize(
    ("text", "anchor"),
    [
        ("like the godfather", "3"),
        ("fans of Godfather", "3"),
        ("something like the godfater", "3"),  # misspelt, after a cue
        ("I loved The Lion King", "7"),
        ("similar to Star Wars", "11"),
        ("star wars but newer", "11"),  # two ordinary words need no cue
        ('"Men in Black"', "6"),
        ("like Se7en", "15"),
        ("like Aliens", "2"),  # lower-case "aliens" is a sci-fi wish
        ("like Alien", "1"),
        ("like Sabrina", "10"),  # the remake is rated more often
        ("like Sabrina 1954", "9"),
        ("like Sabrina (1954)", "9"),
    ],
)
def test_title_anchors(cat, text, anchor):
    assert parse_request(text, cat).anchors == (anchor,)


@pytest.mark.parametrize(
    "text",
    ["something for kids", "anything scary", "a funny one", "movies with aliens", "2 films"],
)
def test_ordinary_words_are_not_titles(cat, text):
    assert parse_request(text, cat).anchors == ()


def test_a_title_year_is_not_a_year_filter(cat):
    got = parse_request("like Sabrina 1954 but from the 90s", cat)
    assert got.anchors == ("9",)
    assert (got.filters.year_min, got.filters.year_max) == (1990, 1999)


@pytest.mark.parametrize(
    ("text", "years"),
    [
        ("from the 80s", (1980, 1989)),
        ("1990s please", (1990, 1999)),
        ("the nineties", (1990, 1999)),
        ("early 90s", (1990, 1993)),
        ("late 80s", (1986, 1989)),
        ("after 2000", (2001, None)),
        ("since 1990", (1990, None)),
        ("before 1980", (None, 1979)),
        ("1995", (1995, 1995)),
        ("between 1980 and 1990", (1980, 1990)),
        ("from 1980 to 1985", (1980, 1985)),
        ("newer than 1990", (1991, None)),
        ("recent ones", (1993, None)),  # the catalogue's newest year is 1997
        ("after 1990 but before 1980", (None, 1979)),  # contradiction: the later one wins
    ],
)
def test_years(cat, text, years):
    f = parse_request(text, cat).filters
    assert (f.year_min, f.year_max) == years


@pytest.mark.parametrize(
    ("text", "none"),
    [
        ("no horror", ("Horror",)),
        ("not a comedy", ("Comedy",)),
        ("nothing violent", ("Horror", "War")),
        ("without romance or war, but funny", ("Romance", "War")),
        ("I don't want anything scary", ("Horror",)),
    ],
)
def test_negations(cat, text, none):
    got = parse_request(text, cat)
    assert got.filters.genres_none == none
    assert not set(none) & set(got.filters.genres_any)
    assert "scary" not in got.query_text and "horror" not in got.query_text.lower()


def test_negation_stops_at_but(cat):
    got = parse_request("no horror but funny", cat)
    assert got.filters == Filter(genres_any=("Comedy",), genres_none=("Horror",))


def test_dont_mind_is_not_a_negation(cat):
    assert parse_request("I don't mind horror", cat).filters.genres_any == ("Horror",)


@pytest.mark.parametrize(
    ("text", "k"),
    [
        ("three movies", 3),
        ("top 5 comedies", 5),
        ("give me 4", 4),
        ("a couple of westerns", 2),
        ("2 funny films", 2),
        ("something funny, three please", 3),
        ("two more", 2),
        ("give me five", 5),
        ("a movie for the two of us tonight", None),
        ("movies from 1995", None),
        ("more like the second one", None),
    ],
)
def test_count(cat, text, k):
    assert parse_request(text, cat, previous=["4", "13"]).k == k


def test_references_resolve_against_previous(cat):
    prev = ["4", "13", "7"]
    assert parse_request("the last one", cat, prev).anchors == ("7",)
    assert parse_request("like #1", cat, prev).anchors == ("4",)
    assert parse_request("more like those", cat, prev).anchors == ("4", "13", "7")
    out_of_range = parse_request("the fourth one", cat, prev)
    assert out_of_range.anchors == ()
    assert out_of_range.notes == ("the last list had only 3 items, not 4",)


def test_unknown_previous_ids_are_ignored(cat):
    got = parse_request("the first one", cat, previous=["nope", "4"])
    assert got.anchors == ("4",)


def test_situations_shape_the_query_not_the_filter(cat):
    got = parse_request("date night, something short", cat)
    assert got.situations == ("date night", "short")
    assert got.filters == Filter()
    assert "romantic date night" in got.query_text


def test_catalogue_without_genres_keeps_moods_as_text():
    plain = tiny_catalogue(with_genres=False)
    got = parse_request("something funny", plain)
    assert got.filters == Filter()
    assert got.query_text == "funny"


def test_pure_similarity(cat):
    assert parse_request("like Alien", cat).is_pure_similarity
    assert not parse_request("like Alien but funnier", cat).is_pure_similarity
    assert not parse_request("like Alien from the 80s", cat).is_pure_similarity


def test_title_aliases_move_the_article():
    assert set(title_aliases("Godfather, The (1972)")) == {("the", "godfather"), ("godfather",)}
    assert ("se7en",) in title_aliases("Seven (Se7en) (1995)")


def test_find_title(cat):
    assert find_title(cat, "Alien (1979)") == "1"
    assert find_title(cat, "the godfather") == "3"
    assert find_title(cat, "Sabrina (1954)") == "9"
    assert find_title(cat, "Nonexistent Picture") is None


WORDS = [
    "like", "the", "alien", "Alien", "godfather", "no", "not", "horror", "funny", "90s", "1995",
    "after", "before", "for", "kids", "second", "one", "#", "3", "three", "movies", "but", ",",
    "sabrina", "star", "wars", "more", "those", "last", "tonight", "date", "night", '"', "seven",
    "between", "and", "early", "-", "'", "zzz", "comédie", "2000", "to", "first",
]  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(
    words=st.lists(st.sampled_from(WORDS) | st.text(max_size=6), max_size=14),
    previous=st.lists(st.sampled_from(["1", "4", "13", "99", "", "x"]), max_size=5),
)
def test_never_returns_unknown_ids(words, previous):
    cat = tiny_catalogue()
    got = parse_request(" ".join(words), cat, previous)
    assert set(got.anchors) <= set(cat.item_index)
    assert len(set(got.anchors)) == len(got.anchors)
    vocab = {g for _, _, gs in MOVIES for g in gs}
    assert set(got.filters.genres_any) | set(got.filters.genres_none) <= vocab
    assert not set(got.filters.genres_any) & set(got.filters.genres_none)
    f = got.filters
    assert f.year_min is None or f.year_max is None or f.year_min <= f.year_max
    assert got.k is None or 1 <= got.k <= 50


def test_liking_and_disliking(cat):
    got = parse_request("I didn't like Toy Story but loved Aladdin", cat)
    assert (got.anchors, got.liked, got.disliked) == (("13",), ("13",), ("4",))
    assert "Toy Story" not in got.query_text
    hated = parse_request("I hated the second one, something else", cat, previous=["4", "13"])
    assert (hated.anchors, hated.disliked) == ((), ("13",))
    neutral = parse_request("I'd like something like Alien", cat)
    assert (neutral.anchors, neutral.liked) == (("1",), ())


def test_long_requests_are_cut_and_say_so(cat):
    got = parse_request("no horror " + "x" * 10_000, cat)
    assert got.filters.genres_none == ("Horror",)
    assert got.notes == ("only the first 4000 characters of the request were read",)
