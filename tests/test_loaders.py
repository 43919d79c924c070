"""Loaders for every supported format, bad-input handling, filters, and where datasets come from.

Every dataset here is a handful of lines written into ``tmp_path``; the network is never touched
(``urllib.request.urlopen`` is replaced for every test). The one integration test reads the real
MovieLens 100K from ``$HYREC_DATA_DIR/ml-100k``.
"""

from __future__ import annotations

import io
import json
import math
import os
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest

from hyrec.data import sources
from hyrec.data.atomic import load_atomic
from hyrec.data.dataset import DataError, Dataset, Item, k_core, to_implicit
from hyrec.data.generic import load_generic
from hyrec.data.movielens import load_ml100k, load_ml_csv, load_ml_dat
from hyrec.data.sources import DataUnavailableError, load_dataset, resolve_data_dir
from hyrec.data.splits import leave_one_out

GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
]  # fmt: skip


def write(path: Path, text: str | bytes, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode(encoding))
    return path


def append_line(path: Path, line: str | bytes, encoding: str = "utf-8") -> int:
    """Append one line and return its 1-based line number."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        data += b"\n"
    raw = line if isinstance(line, bytes) else line.encode(encoding)
    path.write_bytes(data + raw + b"\n")
    return data.count(b"\n") + 1


def events_of(ds: Dataset) -> list[tuple[str, str]]:
    """(user id, item id) per event, in the dataset's row order."""
    inter = ds.interactions
    return [
        (ds.user_ids[u], ds.items[i].item_id) for u, i in zip(inter.user, inter.item, strict=True)
    ]


@pytest.fixture(autouse=True)
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """No test touches the network or the real user cache; returns the URLs a test tried to open."""
    tried: list[str] = []

    def refuse(url: str, *args: object, **kwargs: object) -> None:
        tried.append(url)
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(sources, "cache_root", lambda: tmp_path / "cache")
    return tried


# --- format fixtures -----------------------------------------------------------------------------


def ml100k_item(item_id: int, title: str, genres: list[str]) -> str:
    flags = "|".join("1" if g in genres else "0" for g in GENRES)
    return f"{item_id}|{title}|01-Jan-1995||http://us.imdb.com/M/title-exact?{item_id}|{flags}"


def make_ml100k(directory: Path) -> Path:
    genre_lines = "".join(f"{g}|{i}\n" for i, g in enumerate(GENRES))
    write(directory / "u.genre", genre_lines + "\n", "latin-1")
    items = [
        ml100k_item(1, "Toy Story (1995)", ["Animation", "Children's", "Comedy"]),
        ml100k_item(2, "Misérables, Les (1995)", ["Drama", "Musical"]),
        ml100k_item(3, "Heat (1995)", ["Action", "Crime", "Thriller"]),
    ]
    write(directory / "u.item", "\n".join(items) + "\n", "latin-1")
    write(
        directory / "u.data",
        "1\t1\t5\t100\n1\t2\t4\t101\n2\t1\t3\t102\n2\t3\t1\t103\n3\t2\t2\t104\n",
    )
    return directory


@pytest.fixture
def ml100k(tmp_path: Path) -> Path:
    return make_ml100k(tmp_path / "ml-100k")


@pytest.fixture
def ml1m(tmp_path: Path) -> Path:
    d = tmp_path / "ml-1m"
    movies = "1::Toy Story (1995)::Animation|Children's|Comedy\n2::Misérables, Les (1995)::Drama\n"
    write(d / "movies.dat", movies, "latin-1")
    write(d / "ratings.dat", "1::1::5::978300760\n1::2::3::978302109\n2::2::4::978301968\n")
    return d


@pytest.fixture
def ml10m(tmp_path: Path) -> Path:
    d = tmp_path / "ml-10m"
    movies = "1::Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001)::Comedy|Romance\n"
    movies += "2::Heat (1995)::Action|Crime|Thriller\n"
    write(d / "movies.dat", movies)
    write(d / "ratings.dat", "1::1::4.5::1111\n2::2::3::2222\n2::1::5::3333\n")
    write(d / "tags.dat", "15::1::whimsical::1215184630\n20::1::Paris::1215184631\n")
    return d


@pytest.fixture
def mllatest(tmp_path: Path) -> Path:
    d = tmp_path / "ml-latest-small"
    write(
        d / "movies.csv",
        "movieId,title,genres\n"
        "1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy\n"
        '2,"American President, The (1995)",Comedy|Drama|Romance\n'
        "3,Untitled,(no genres listed)\n",
    )
    write(
        d / "ratings.csv",
        "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,2,4.5,964981247\n2,3,3.5,1\n",
    )
    write(d / "tags.csv", "userId,movieId,tag,timestamp\n2,1,pixar,1\n3,1,pixar,2\n3,1,fun,3\n")
    return d


# UniSRec-style sequences (raw ids); the last item is test, the one before it validation.
SEQUENCES = {
    "U_alice": ["B01", "B02", "B03", "B04", "B05", "B06", "B02"],  # repeats are kept
    "U_bob": ["B03", "B01", "B04"],  # one training item: no row in the train file
    "U_carol": ["B06", "B05", "B04", "B03", "B02"],
}
TEXTS = {
    "B01": "Digital Caliper 6 Inch. Industrial & Scientific Measuring Tools. Neiko. ",
    "B02": "Nitrile Gloves, Box of 100. Lab Supplies. ",
    "B03": "Stainless Steel Lab Stand " + "with Clamp Holder " * 6 + ". Lab. Generic. ",
    "B04": "Borosilicate Beaker Set. Lab Glassware. Pyrex. ",
    "B05": "pH Test Strips. Testing. ",
    # B06 has no text
}


def write_unisrec(directory: Path, stem: str, sequences: dict[str, list[str]], max_len: int = 3):
    """Atomic files laid out as UniSRec's preprocessing writes them; histories cut to max_len."""
    users = {u: str(n) for n, u in enumerate(sequences)}
    items: dict[str, str] = {}
    for seq in sequences.values():
        for it in seq:
            items.setdefault(it, str(len(items)))
    header = "user_id:token\titem_id_list:token_seq\titem_id:token\n"
    train, valid, test = header, header, header
    for user, seq in sequences.items():
        u, idx = users[user], [items[i] for i in seq]
        history = idx[:-2]
        for back in range(1, len(history)):  # newest target first, as UniSRec writes them
            train += f"{u}\t{' '.join(history[:-back][-max_len:])}\t{history[-back]}\n"
        valid += f"{u}\t{' '.join(history[-max_len:])}\t{idx[-2]}\n"
        test += f"{u}\t{' '.join(idx[:-1][-max_len:])}\t{idx[-1]}\n"
    write(directory / f"{stem}.train.inter", train)
    write(directory / f"{stem}.valid.inter", valid)
    write(directory / f"{stem}.test.inter", test)
    write(directory / f"{stem}.user2index", "".join(f"{u}\t{i}\n" for u, i in users.items()))
    write(directory / f"{stem}.item2index", "".join(f"{r}\t{i}\n" for r, i in items.items()))
    text = "item_id:token\ttext:token_seq\n" + "".join(f"{r}\t{t}\n" for r, t in TEXTS.items())
    write(directory / f"{stem}.text", text)


@pytest.fixture
def atomic(tmp_path: Path) -> Path:
    write_unisrec(tmp_path / "Scientific", "Scientific", SEQUENCES)
    return tmp_path / "Scientific"


@pytest.fixture
def atomic_plain(tmp_path: Path) -> Path:
    d = tmp_path / "ml-plain"
    write(
        d / "ml-plain.inter",
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "196\t242\t3\t881250949\n186\t302\t3.5\t891717742.0\n196\t302\t1\t881250950\n",
    )
    return d


ITEMS_CSV = (
    "item_id,title,description,genres,year,brand\n"
    "m1,The Matrix,A hacker learns the truth.,Action|Sci-Fi,1999,\n"
    'm2,"Amélie, the film",,Comedy|Romance,2001,Tiger\n'
    "m3,Heat,,,,\n"
)
EVENTS_CSV = (
    "user_id,item_id,timestamp,rating,context\n"
    "u1,m1,1700000000,5,mobile\n"
    "u1,m2,2024-01-01T00:00:00Z,4.5,\n"
    "u2,m3,2024-01-01T01:00:00+01:00,,tv\n"
)
JAN_1_2024 = 1704067200


@pytest.fixture
def generic_csv(tmp_path: Path) -> Path:
    d = tmp_path / "shop-csv"
    write(d / "items.csv", ITEMS_CSV)
    write(d / "events.csv", EVENTS_CSV)
    return d


@pytest.fixture
def generic_jsonl(tmp_path: Path) -> Path:
    d = tmp_path / "shop-jsonl"
    items = [
        {"item_id": 1, "title": "The Matrix", "genres": ["Action", "Sci-Fi"], "year": 1999},
        {"item_id": 2, "title": "Amélie", "description": "Paris.", "tags": "quirky|french"},
        {"item_id": 3, "title": "Heat", "extra": {"runtime": 170}},
    ]
    events = [
        {"user_id": "u1", "item_id": 1, "timestamp": 1700000000, "rating": 5},
        {"user_id": "u1", "item_id": 2, "timestamp": "2024-01-01T00:00:00", "context": "tv"},
        {"user_id": 7, "item_id": 3, "timestamp": 1700000001.0, "rating": None},
    ]
    write(d / "items.jsonl", "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in items))
    write(d / "events.jsonl", "".join(json.dumps(x) + "\n" for x in events))
    return d


# --- loading each format -------------------------------------------------------------------------


def test_ml100k(ml100k: Path) -> None:
    ds = load_ml100k(ml100k)
    assert (ds.n_users, ds.n_items, len(ds.interactions)) == (3, 3, 5)
    assert ds.titles() == ["Toy Story (1995)", "Misérables, Les (1995)", "Heat (1995)"]
    assert ds.items[0].attributes["genres"] == ["Animation", "Children's", "Comedy"]
    assert ds.items[1].attributes["year"] == 1995
    assert events_of(ds)[:2] == [("1", "1"), ("1", "2")]
    assert ds.interactions.rating.tolist() == [5, 4, 3, 1, 2]
    assert ds.interactions.timestamp.tolist() == [100, 101, 102, 103, 104]
    assert ds.skipped == {}


def test_ml1m_latin1(ml1m: Path) -> None:
    ds = load_ml_dat(ml1m, name="ml-1m")
    assert ds.titles() == ["Toy Story (1995)", "Misérables, Les (1995)"]
    assert ds.items[1].attributes == {"genres": ["Drama"], "year": 1995}
    assert (ds.n_users, len(ds.interactions)) == (2, 3)


def test_ml10m_utf8_with_tags(ml10m: Path) -> None:
    ds = load_ml_dat(ml10m, name="ml-10m")
    assert ds.items[0].title.startswith("Amélie (Fabuleux destin d'Amélie")
    assert ds.items[0].attributes["tags"] == ["whimsical", "Paris"]
    assert ds.items[0].attributes["year"] == 2001
    assert ds.interactions.rating.tolist() == [4.5, 3.0, 5.0]


def test_ml_latest_csv_with_tags(mllatest: Path) -> None:
    ds = load_ml_csv(mllatest)
    assert ds.titles()[1] == "American President, The (1995)"
    assert ds.items[0].attributes["tags"] == ["pixar", "fun"]
    assert ds.items[2].attributes == {"genres": []}  # "(no genres listed)", no year
    assert ds.interactions.rating.tolist() == [4.0, 4.5, 3.5]


def test_atomic_rebuilds_unisrec_sequences(atomic: Path) -> None:
    ds = load_atomic(atomic)
    assert ds.name == "Scientific"
    assert list(ds.user_ids) == ["U_alice", "U_bob", "U_carol"]  # user2index order
    assert list(ds.item_ids) == ["B01", "B02", "B03", "B04", "B05", "B06"]  # item2index order
    for user, seq in SEQUENCES.items():
        assert [i for u, i in events_of(ds) if u == user] == seq, user
    alice = ds.interactions.user == 0
    assert ds.interactions.timestamp[alice].tolist() == list(range(7))
    assert np.isnan(ds.interactions.rating).all()


def test_atomic_leave_one_out_reproduces_the_files_split(atomic: Path) -> None:
    ds = load_atomic(atomic)
    split = leave_one_out(ds)
    for part, offset in ((split.valid, -2), (split.test, -1)):
        got = {
            ds.user_ids[u]: ds.items[i].item_id for u, i in zip(part.user, part.item, strict=True)
        }
        assert got == {u: seq[offset] for u, seq in SEQUENCES.items()}
    assert len(split.train) == sum(len(s) - 2 for s in SEQUENCES.values())


def test_atomic_reads_oldest_first_rows_and_long_histories(tmp_path: Path) -> None:
    long = {"u": [f"i{n}" for n in range(60)], "v": ["i1", "i2", "i3"]}
    write_unisrec(tmp_path / "Long", "Long", long, max_len=50)
    train = tmp_path / "Long" / "Long.train.inter"
    header, *rows = train.read_text().splitlines(keepends=True)
    train.write_text(header + "".join(reversed(rows)))  # oldest first, as RecBole writes them
    ds = load_atomic(tmp_path / "Long")
    assert [i for u, i in events_of(ds) if u == "u"] == long["u"]


def test_atomic_folder_with_two_datasets(atomic: Path, atomic_plain: Path) -> None:
    for path in atomic_plain.iterdir():
        path.rename(atomic / path.name)
    with pytest.raises(DataError, match=r"several datasets \['Scientific', 'ml-plain'\]"):
        load_atomic(atomic)
    assert load_atomic(atomic, name="scientific").n_users == 3  # the name picks one, any case
    assert load_atomic(atomic, name="ml-plain").n_users == 2


def test_atomic_titles_from_text(atomic: Path) -> None:
    items = {it.item_id: it for it in load_atomic(atomic).items}
    assert items["B01"].title == "Digital Caliper 6 Inch"
    assert items["B01"].description == TEXTS["B01"].strip()
    assert items["B02"].title == "Nitrile Gloves, Box of 100"
    assert len(items["B03"].title) <= 81 and items["B03"].title.endswith("…")
    assert items["B06"].title == "B06" and items["B06"].description == ""


def test_atomic_plain_inter(atomic_plain: Path) -> None:
    ds = load_atomic(atomic_plain)
    assert ds.name == "ml-plain"
    assert events_of(ds) == [("196", "242"), ("186", "302"), ("196", "302")]
    assert ds.interactions.rating.tolist() == [3.0, 3.5, 1.0]
    assert ds.interactions.timestamp.tolist() == [881250949, 891717742, 881250950]
    assert ds.titles() == ["242", "302"]  # no .text file: titled by id


def test_generic_csv(generic_csv: Path) -> None:
    ds = load_generic(generic_csv)
    assert ds.name == "shop-csv"
    m1, m2, m3 = ds.items
    assert m1 == Item(
        "m1",
        "The Matrix",
        "A hacker learns the truth.",
        {"genres": ["Action", "Sci-Fi"], "year": 1999},
    )
    assert m2.title == "Amélie, the film"
    assert m2.attributes == {"genres": ["Comedy", "Romance"], "year": 2001, "brand": "Tiger"}
    assert m3.attributes == {}
    assert ds.interactions.timestamp.tolist() == [1700000000, JAN_1_2024, JAN_1_2024]
    assert ds.interactions.rating[:2].tolist() == [5.0, 4.5]
    assert math.isnan(ds.interactions.rating[2])  # empty cell: no rating
    assert ds.interactions.context.tolist() == ["mobile", "", "tv"]


def test_generic_jsonl(generic_jsonl: Path) -> None:
    ds = load_generic(generic_jsonl, name="shop")
    assert ds.name == "shop"
    assert list(ds.item_ids) == ["1", "2", "3"]
    assert ds.items[0].attributes == {"genres": ["Action", "Sci-Fi"], "year": 1999}
    assert ds.items[1].description == "Paris."
    assert ds.items[1].attributes == {"tags": ["quirky", "french"]}  # "|"-string split
    assert ds.items[2].attributes == {"extra": {"runtime": 170}}
    assert list(ds.user_ids) == ["u1", "7"]
    assert ds.interactions.timestamp.tolist() == [1700000000, JAN_1_2024, 1700000001]
    assert ds.interactions.context.tolist() == ["", "tv", ""]


@pytest.mark.parametrize(
    ("fixture", "n_users", "n_items", "n_events"),
    [
        ("ml100k", 3, 3, 5),
        ("ml1m", 2, 2, 3),
        ("ml10m", 2, 2, 3),
        ("mllatest", 2, 3, 3),
        ("atomic", 3, 6, 15),
        ("atomic_plain", 2, 2, 3),
        ("generic_csv", 2, 3, 3),
        ("generic_jsonl", 2, 3, 3),
    ],
)
def test_load_dataset_detects_the_format(request, fixture, n_users, n_items, n_events) -> None:
    ds = load_dataset("any", request.getfixturevalue(fixture))
    assert ds.name == "any"
    assert (ds.n_users, ds.n_items, len(ds.interactions)) == (n_users, n_items, n_events)


# --- bad input -----------------------------------------------------------------------------------

# (fixture, file, appended line, message fragment after "<file>:<line>: ")
BAD_LINES = [
    ("ml100k", "u.data", "1\t2\t3", "expected 4 fields"),
    ("ml100k", "u.item", ml100k_item(4, "Short", []).rsplit("|", 1)[0], "expected 24 fields"),
    ("ml100k", "u.data", "1\t2\tfive\t100", "rating is not a number"),
    ("ml1m", "ratings.dat", "1::1::5::yesterday", "timestamp is not an integer"),
    ("ml10m", "ratings.dat", b"1::2::\xff::1", "cannot decode as utf-8"),
    ("mllatest", "ratings.csv", "1,1,4.0,soon", "timestamp is not an integer"),
    ("mllatest", "ratings.csv", "1,1,4.0", "expected 4 columns"),
    ("ml100k", "u.item", ml100k_item(1, "Toy Story again (1995)", []), "duplicate item id: '1'"),
    ("mllatest", "movies.csv", "2,Twice (2000),Drama", "duplicate item id: '2'"),
    ("atomic", "Scientific.train.inter", "0\t1 2", "expected 3 fields"),
    ("atomic", "Scientific.train.inter", "0\t0 1\t99", "item is not in the item2index file: '99'"),
    ("atomic", "Scientific.text", b"B07\tCaf\xe9 Thermometer. ", "cannot decode as utf-8"),
    ("atomic", "Scientific.text", "B01\tAgain. ", "duplicate item id: 'B01'"),
    ("atomic", "Scientific.test.inter", "1\t0 2\t3", "a second row for this user"),
    ("atomic_plain", "ml-plain.inter", "196\t242\tgood\t1", "rating is not a number"),
    ("generic_csv", "events.csv", "u3,m1,next tuesday,3,", "timestamp is neither"),
    ("generic_csv", "events.csv", "u3,m1,1700000000,great,", "rating is not a number"),
    ("generic_csv", "events.csv", "u3,m9,1700000000,3,", "item is not in items.csv: 'm9'"),
    ("generic_csv", "items.csv", "m2,Amélie again,,,,", "duplicate item id: 'm2'"),
    ("generic_csv", "items.csv", "m4,Year Zero,,,soon,", "year is not an integer"),
    ("generic_jsonl", "events.jsonl", '{"user_id": "u1", "item_id": 1}', "missing required key(s)"),
    ("generic_jsonl", "events.jsonl", '{"user_id": "u1", "item_id": 1,', "invalid JSON"),
    ("generic_jsonl", "events.jsonl", b'{"user_id": "\xff", "item_id": 1}', "cannot decode"),
    ("generic_jsonl", "items.jsonl", '{"item_id": 4, "title": ""}', "title must be a non-empty"),
]  # fmt: skip


@pytest.mark.parametrize(("fixture", "file", "line", "fragment"), BAD_LINES)
def test_bad_line_names_file_and_line(request, fixture, file, line, fragment) -> None:
    directory = request.getfixturevalue(fixture)
    lineno = append_line(directory / file, line)
    with pytest.raises(DataError) as err:
        load_dataset("bad", directory)
    assert f"{file}:{lineno}: " in str(err.value)
    assert fragment in str(err.value)


@pytest.mark.parametrize(("fixture", "file", "line", "fragment"), BAD_LINES)
def test_skip_drops_and_counts_each_bad_line(request, fixture, file, line, fragment) -> None:
    directory = request.getfixturevalue(fixture)
    clean = load_dataset("ok", directory)
    append_line(directory / file, line)
    ds = load_dataset("bad", directory, on_bad_lines="skip")
    assert sum(ds.skipped.values()) == 1, ds.skipped
    [reason] = ds.skipped
    assert reason.startswith(f"{file}: ")
    assert len(ds.interactions) == len(clean.interactions) and ds.n_items == clean.n_items


def test_skip_counts_by_reason(ml100k: Path) -> None:
    append_line(ml100k / "u.data", "1\t2\t3")
    append_line(ml100k / "u.data", "1\t2\tx\t100")
    append_line(ml100k / "u.data", "2\t2\ty\t100")
    append_line(ml100k / "u.data", "1\t99\t4\t100")
    ds = load_ml100k(ml100k, on_bad_lines="skip")
    assert ds.skipped == {
        "u.data: expected 4 fields separated by '\\t', got 3": 1,
        "u.data: rating is not a number": 2,
        "u.data: item id not in the catalogue": 1,
    }
    assert len(ds.interactions) == 5


def test_generic_skip_counts_by_reason(generic_csv: Path) -> None:
    append_line(generic_csv / "items.csv", "m1,Duplicate,,,,")
    append_line(generic_csv / "items.csv", "m2,Duplicate,,,,")
    append_line(generic_csv / "events.csv", "u3,m9,1700000000,3,")
    append_line(generic_csv / "events.csv", "u3,m1,1700000000,x,")
    ds = load_generic(generic_csv, on_bad_lines="skip")
    assert ds.skipped == {
        "items.csv: duplicate item id": 2,
        "events.csv: item is not in items.csv": 1,
        "events.csv: rating is not a number": 1,
    }
    assert (ds.n_items, len(ds.interactions)) == (3, 3)


def test_unknown_item_in_movielens_ratings(ml100k: Path) -> None:
    lineno = append_line(ml100k / "u.data", "1\t99\t4\t100")
    with pytest.raises(DataError, match=rf"u\.data:{lineno}: item id not in the catalogue: '99'"):
        load_ml100k(ml100k)


@pytest.mark.parametrize(
    ("fixture", "file", "header", "missing"),
    [
        ("mllatest", "ratings.csv", "userId,movieId,rating\n1,1,4.0\n", "['timestamp']"),
        ("mllatest", "movies.csv", "movieId,name,genres\n1,Toy Story,Comedy\n", "['title']"),
        ("generic_csv", "items.csv", "item_id,name\nm1,The Matrix\n", "['title']"),
        ("generic_csv", "events.csv", "user,item_id\nu1,m1\n", "['user_id', 'timestamp']"),
        ("atomic_plain", "ml-plain.inter", "user_id:token\trating:float\n1\t3\n", "['item_id']"),
        ("atomic", "Scientific.test.inter", "user_id:token\titem_id:token\n", "['item_id_list']"),
    ],
)
def test_missing_column(request, fixture, file, header, missing) -> None:
    directory = request.getfixturevalue(fixture)
    write(directory / file, header)
    with pytest.raises(DataError) as err:
        load_dataset("x", directory)
    assert file in str(err.value) and f"missing column(s) {missing}" in str(err.value)


def test_generic_needs_one_file_per_table(generic_csv: Path) -> None:
    write(generic_csv / "items.jsonl", '{"item_id": "m1", "title": "The Matrix"}\n')
    with pytest.raises(DataError, match="both items.csv and items.jsonl"):
        load_generic(generic_csv)
    (generic_csv / "items.jsonl").unlink()
    (generic_csv / "items.csv").unlink()
    with pytest.raises(DataError, match="no items.csv or items.jsonl"):
        load_generic(generic_csv)


def test_atomic_row_that_contradicts_the_sequence(atomic: Path) -> None:
    path = atomic / "Scientific.valid.inter"
    lines = path.read_text().splitlines()
    lines[1] = "0\t5 4 3\t5"  # alice's history is not "B06 B05 B04"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"Scientific\.valid\.inter:2: item_id_list does not end"):
        load_atomic(atomic)


def test_bad_encoding_in_csv_names_the_line(generic_csv: Path) -> None:
    lineno = append_line(generic_csv / "events.csv", b"u\xff,m1,1700000000,3,")
    with pytest.raises(DataError, match=rf"events\.csv:{lineno}: cannot decode"):
        load_generic(generic_csv)


# --- filters -------------------------------------------------------------------------------------


def tiny(events: list[tuple[str, str, float]]) -> Dataset:
    items = sorted({i for _, i, _ in events})
    records = [(u, i, n, r, "") for n, (u, i, r) in enumerate(events)]
    return Dataset.from_records("tiny", [Item(i, f"title {i}") for i in items], records)


def test_to_implicit_keeps_high_and_unrated() -> None:
    ds = tiny([("a", "1", 5.0), ("a", "2", 3.0), ("b", "1", math.nan), ("b", "2", 4.0)])
    kept = to_implicit(ds, min_rating=4.0)
    assert events_of(kept) == [("a", "1"), ("b", "1"), ("b", "2")]
    assert kept.n_users == ds.n_users and kept.n_items == ds.n_items


def test_k_core_cascades_and_counts_distinct_items() -> None:
    # k=2: D (one item) goes; then item 3 has only C, so C-3 goes; then C has one item, so C-2
    # goes. E rated item 1 twice, which is still one distinct item.
    events = [("A", "1"), ("A", "2"), ("B", "1"), ("B", "2"), ("C", "2"), ("C", "3"), ("D", "3"),
              ("E", "1"), ("E", "1")]  # fmt: skip
    ds = tiny([(u, i, 1.0) for u, i in events])
    core = k_core(ds, 2)
    assert events_of(core) == [("A", "1"), ("A", "2"), ("B", "1"), ("B", "2")]
    assert core.name == "tiny-2core"
    assert (core.n_users, core.n_items) == (ds.n_users, ds.n_items)  # indices stay comparable
    again = k_core(ds, 2)
    assert core.fingerprint() == again.fingerprint()  # deterministic
    assert len(k_core(ds, 1).interactions) == len(events)
    assert len(k_core(ds, 3).interactions) == 0


# --- where datasets come from --------------------------------------------------------------------


def make_shop(directory: Path, title: str) -> Path:
    write(directory / "items.csv", f"item_id,title\nm1,{title}\n")
    write(directory / "events.csv", "user_id,item_id,timestamp\nu1,m1,1\n")
    return directory


def test_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit = make_shop(tmp_path / "explicit", "from --data-dir")
    make_shop(tmp_path / "env" / "shop", "from HYREC_DATA_DIR")
    make_shop(tmp_path / "cache" / "shop", "from the cache")
    monkeypatch.setenv("HYREC_DATA_DIR", str(tmp_path / "env"))
    assert load_dataset("shop", explicit).titles() == ["from --data-dir"]
    assert load_dataset("shop").titles() == ["from HYREC_DATA_DIR"]
    for path in (tmp_path / "env" / "shop").iterdir():
        path.unlink()  # an empty folder does not count
    assert load_dataset("shop").titles() == ["from the cache"]
    monkeypatch.delenv("HYREC_DATA_DIR")
    assert load_dataset("shop").titles() == ["from the cache"]


def test_data_dir_must_exist(tmp_path: Path) -> None:
    with pytest.raises(DataUnavailableError, match="--data-dir"):
        resolve_data_dir("shop", tmp_path / "nowhere")


def test_unknown_dataset_says_how_to_supply_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HYREC_DATA_DIR", raising=False)
    with pytest.raises(DataUnavailableError) as err:
        load_dataset("my-shop")
    assert "--data-dir" in str(err.value) and "HYREC_DATA_DIR" in str(err.value)


def test_failed_download_says_how_to_supply_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offline: list[str]
) -> None:
    monkeypatch.delenv("HYREC_DATA_DIR", raising=False)
    with pytest.raises(DataUnavailableError) as err:
        load_dataset("ml-100k")
    message = str(err.value)
    assert "--data-dir" in message and "HYREC_DATA_DIR" in message and "download failed" in message
    assert offline == [sources.DOWNLOADS["ml-100k"][0]]
    assert not (tmp_path / "cache" / "ml-100k").exists()


def zipped_ml100k(tmp_path: Path) -> bytes:
    folder = make_ml100k(tmp_path / "zip-src" / "ml-100k")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for path in folder.iterdir():
            z.write(path, f"ml-100k/{path.name}")
    return buffer.getvalue()


def test_download_unpacks_into_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HYREC_DATA_DIR", raising=False)
    payload = zipped_ml100k(tmp_path)
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: io.BytesIO(payload))
    ds = load_dataset("ml-100k")
    assert len(ds.interactions) == 5
    assert (tmp_path / "cache" / "ml-100k" / "u.data").is_file()


def test_download_into_an_empty_cache_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HYREC_DATA_DIR", raising=False)
    (tmp_path / "cache" / "ml-100k").mkdir(parents=True)  # left over from an interrupted run
    payload = zipped_ml100k(tmp_path)
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: io.BytesIO(payload))
    assert len(load_dataset("ml-100k").interactions) == 5


# --- the real data -------------------------------------------------------------------------------


@pytest.mark.integration
def test_real_ml100k() -> None:
    if not os.environ.get("HYREC_DATA_DIR") and not os.environ.get("CI"):
        pytest.skip("set HYREC_DATA_DIR to a folder holding ml-100k/")
    ds = load_dataset("ml-100k", download=False)
    assert (ds.n_users, ds.n_items, len(ds.interactions)) == (943, 1682, 100_000)
    assert any("Misérables" in t for t in ds.titles())
    assert ds.skipped == {}
