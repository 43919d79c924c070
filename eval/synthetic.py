"""Seeded synthetic datasets at a chosen scale, for the fit and serving benchmarks.

:func:`generate` builds a :class:`~hyrec.data.Dataset` with the shapes real implicit-feedback
catalogues have, fully vectorised (no Python loop over events, so 10⁷ interactions take seconds):

* **item popularity** follows a power law: the item at popularity rank r is drawn with weight
  ``(r + 1) ** -popularity_exponent`` (Zipf; ~1 gives a head of hits and a long tail);
* **history lengths** are long-tailed: ``min_history`` plus a Pareto draw (shape
  ``history_shape``), rescaled so the lengths sum to the requested number of interactions;
* **tastes**: each user prefers one or two of ``genres``; a share ``taste`` of their events come
  from their genres (by popularity inside the genre), the rest from the whole catalogue, so
  collaborative and text signals both carry information;
* **time**: each user's events are time-ordered with exponential gaps from a random start;
* **item text** of realistic length: a 2-7 word title and a description whose length in words is
  log-normal (median ``description_words``), drawn from a genre-specific vocabulary, so text
  vectors cluster by genre as real ones do.

:func:`synthetic_vectors` gives unit text vectors clustered by genre, for runs where encoding the
text with MiniLM would dominate (its cost is linear in items: ~270 titles/s on the 2-core machine,
fewer for long descriptions). Nothing is written to disk.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hyrec.data import Dataset, Interactions, Item

GENRES = (
    "Action", "Adventure", "Animation", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
    "Horror", "Mystery", "Romance", "Sci-Fi", "Thriller", "Western",
)  # fmt: skip

_COMMON_TEXT = (
    "the a of and in to with for on at from by after before during under over into through "
    "story life world night day city family friend home war love time man woman young old last "
    "first new secret dark light house road river town heart dream journey return"
)


@dataclass(frozen=True)
class SyntheticConfig:
    interactions: int = 100_000  # events in total (repeats of a (user, item) pair can occur)
    users: int = 1_000
    items: int = 2_000
    seed: int = 0
    popularity_exponent: float = 0.8  # Zipf exponent of item popularity by rank (1: steeper)
    history_shape: float = 1.5  # Pareto shape of history lengths: smaller = longer tail
    min_history: int = 5  # every user has at least this many events
    max_history_ratio: float = 100.0  # cap on the Pareto tail (x its median), like real logs
    taste: float = 0.8  # share of a user's events drawn from their preferred genres
    description_words: int = 40  # median description length in words (0: no description)
    genres: tuple[str, ...] = GENRES
    vocabulary: int = 300  # words per genre vocabulary (plus shared function words)

    def __post_init__(self) -> None:
        if self.users < 1 or self.items < 2:
            raise ValueError(f"need users >= 1 and items >= 2, got {self.users}, {self.items}")
        if self.interactions < self.users * self.min_history:
            raise ValueError(
                f"{self.interactions} interactions cannot give {self.users} users at least "
                f"{self.min_history} events each: raise interactions or lower min_history"
            )
        if not 0 <= self.taste <= 1:
            raise ValueError(f"taste must be in [0, 1], got {self.taste}")


def history_lengths(config: SyntheticConfig, rng: np.random.Generator) -> np.ndarray:
    """(users,) long-tailed lengths, each >= ``min_history``, summing to ``interactions``; the
    longest is at most ~``max_history_ratio`` times the median's excess
    (a heavy but finite tail)."""
    c = config
    tail = rng.pareto(c.history_shape, c.users)
    tail = np.minimum(tail, c.max_history_ratio * np.median(tail))
    spare = c.interactions - c.users * c.min_history
    extra = np.floor(tail / tail.sum() * spare).astype(np.int64)
    # hand the rounding remainder to the users with the largest fractional parts
    remainder = spare - int(extra.sum())
    if remainder:
        frac = tail / tail.sum() * spare - extra
        extra[np.argsort(-frac)[:remainder]] += 1
    return c.min_history + extra


def _sample_from(cdf: np.ndarray, pool: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Items of ``pool`` drawn by inverse CDF at uniforms ``u``."""
    return pool[np.minimum(np.searchsorted(cdf, u * cdf[-1], side="right"), len(pool) - 1)]


def _events(config: SyntheticConfig, rng: np.random.Generator, genre: np.ndarray, weight):
    """(user, item) columns of every event, users in order, each user's events in time order."""
    c = config
    lengths = history_lengths(c, rng)
    user = np.repeat(np.arange(c.users, dtype=np.int32), lengths)
    n_genres = len(c.genres)
    first = rng.integers(0, n_genres, c.users)
    second = np.where(rng.random(c.users) < 0.5, first, rng.integers(0, n_genres, c.users))
    event_genre = np.where(rng.random(len(user)) < 0.5, first[user], second[user])
    from_taste = rng.random(len(user)) < c.taste
    item = _sample_from(np.cumsum(weight), np.arange(c.items), rng.random(len(user)))
    for g in range(n_genres):
        pool = np.flatnonzero(genre == g)
        rows = np.flatnonzero(from_taste & (event_genre == g))
        if len(pool) and len(rows):
            item[rows] = _sample_from(np.cumsum(weight[pool]), pool, rng.random(len(rows)))
    return user, item.astype(np.int32), lengths


def _texts(config: SyntheticConfig, rng: np.random.Generator, genre: np.ndarray):
    """Titles and descriptions from genre vocabularies (one word list per genre)."""
    c = config
    n_genres = len(c.genres)
    words = np.array(
        [f"{g.lower().replace('-', '')}{w}" for g in c.genres for w in range(c.vocabulary)]
    )
    common = np.array(_COMMON_TEXT.split())
    title_len = rng.integers(2, 8, c.items)
    if c.description_words:
        desc_len = np.clip(rng.lognormal(np.log(c.description_words), 0.6, c.items), 5, 250)
        desc_len = desc_len.astype(np.int64)
    else:
        desc_len = np.zeros(c.items, np.int64)
    total = title_len + desc_len
    # each word: a genre word (65%) or a common word; genre words from the item's own genre
    n_words = int(total.sum())
    owner = np.repeat(np.arange(c.items), total)
    own = genre[owner] * c.vocabulary + rng.integers(0, c.vocabulary, n_words)
    other = rng.integers(0, n_genres * c.vocabulary, n_words)  # a little cross-genre vocabulary
    pick = rng.random(n_words)
    token = np.where(pick < 0.55, words[own], np.where(pick < 0.65, words[other], ""))
    token = np.where(token == "", common[rng.integers(0, len(common), n_words)], token)
    bounds = np.concatenate([[0], np.cumsum(total)])
    titles, descriptions = [], []
    for i in range(c.items):
        start, mid, end = bounds[i], bounds[i] + title_len[i], bounds[i + 1]
        titles.append(" ".join(token[start:mid]).capitalize())
        descriptions.append(" ".join(token[mid:end]).capitalize() + ("." if end > mid else ""))
    return titles, descriptions


def generate(config: SyntheticConfig | None = None) -> Dataset:
    """A seeded synthetic dataset (module doc); the same config always gives the same data."""
    c = config or SyntheticConfig()
    rng = np.random.default_rng(c.seed)
    genre = rng.integers(0, len(c.genres), c.items)
    rank = rng.permutation(c.items)  # item i's popularity rank
    weight = (rank + 1.0) ** -c.popularity_exponent
    user, item, lengths = _events(c, rng, genre, weight)
    start = rng.integers(880_000_000, 1_500_000_000, c.users)
    gaps = rng.exponential(3 * 86_400.0, len(user)).astype(np.int64) + 1
    firsts = np.cumsum(lengths) - lengths  # each user's first event
    csum = np.cumsum(gaps)
    within = csum - (csum[firsts] - gaps[firsts])[user]  # gaps summed within the user
    timestamp = start[user] + within
    titles, descriptions = _texts(c, rng, genre)
    year = rng.integers(1930, 2025, c.items)
    items = tuple(
        Item(f"i{i}", titles[i], descriptions[i], {"genres": [c.genres[g]], "year": int(y)})
        for i, (g, y) in enumerate(zip(genre, year, strict=True))
    )
    inter = Interactions(
        user=user,
        item=item,
        timestamp=timestamp.astype(np.int64),
        rating=np.full(len(user), np.nan, np.float32),
    )
    users = np.array([f"u{u}" for u in range(c.users)], dtype=object)
    name = f"synthetic-{c.interactions}x{c.users}x{c.items}-s{c.seed}"
    return Dataset(name, items, users, inter)


def synthetic_vectors(dataset: Dataset, dim: int = 384, noise: float = 0.8, seed: int = 0):
    """(n_items, dim) unit float32 text vectors clustered by each item's first genre."""
    rng = np.random.default_rng(seed)
    names = sorted({g for it in dataset.items for g in it.genres[:1]})
    code = {g: n for n, g in enumerate(names)}
    genre = np.array([code[it.genres[0]] if it.genres else -1 for it in dataset.items])
    centres = rng.normal(size=(len(names) + 1, dim))
    vectors = centres[genre] + noise * rng.normal(size=(dataset.n_items, dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32)
