"""The synthetic dataset generator (eval/synthetic.py): seeded, the shapes asked for, a power-law
popularity and long-tailed histories."""

from __future__ import annotations

import numpy as np
import pytest

from eval.synthetic import SyntheticConfig, generate, history_lengths, synthetic_vectors

SMALL = SyntheticConfig(interactions=20_000, users=400, items=1_500, seed=3)


def test_same_seed_same_data_other_seed_other_data():
    a, b = generate(SMALL), generate(SMALL)
    assert np.array_equal(a.interactions.item, b.interactions.item)
    assert np.array_equal(a.interactions.timestamp, b.interactions.timestamp)
    assert [it.text() for it in a.items[:20]] == [it.text() for it in b.items[:20]]
    c = generate(SyntheticConfig(interactions=20_000, users=400, items=1_500, seed=4))
    assert not np.array_equal(a.interactions.item, c.interactions.item)


def test_shapes_and_indices():
    ds = generate(SMALL)
    assert (ds.n_users, ds.n_items, len(ds.interactions)) == (400, 1_500, 20_000)
    inter = ds.interactions
    assert inter.item.min() >= 0 and inter.item.max() < ds.n_items
    assert set(np.unique(inter.user)) == set(range(400))
    assert len({it.item_id for it in ds.items}) == ds.n_items


def test_each_history_is_time_ordered_and_at_least_min_history():
    ds = generate(SMALL)
    inter = ds.interactions
    counts = np.bincount(inter.user)
    assert counts.min() >= SMALL.min_history
    same_user = inter.user[1:] == inter.user[:-1]
    assert (np.diff(inter.timestamp)[same_user] > 0).all()


def test_history_lengths_are_long_tailed_and_sum_exactly():
    rng = np.random.default_rng(0)
    config = SyntheticConfig(interactions=500_000, users=10_000, items=2_000)
    lengths = history_lengths(config, rng)
    assert lengths.sum() == 500_000
    median, top = np.median(lengths), lengths.max()
    assert top > 10 * median  # a long tail: heavy users have many times the median
    assert np.mean(lengths) > median  # right-skewed


def test_item_popularity_follows_a_power_law():
    ds = generate(SyntheticConfig(interactions=200_000, users=2_000, items=5_000, taste=0.0))
    counts = np.sort(np.bincount(ds.interactions.item, minlength=ds.n_items))[::-1]
    ranks = np.arange(1, len(counts) + 1)
    head = slice(9, 1_000)  # where every item has plenty of events: counts are not noise
    slope = np.polyfit(np.log(ranks[head]), np.log(counts[head]), 1)[0]
    assert slope == pytest.approx(-SMALL.popularity_exponent, abs=0.15)
    assert counts[:50].sum() > 5 * counts[-2_500:].sum() / 50  # a head of hits


def test_text_has_realistic_length_and_genre_vocabulary():
    ds = generate(SMALL)
    words = np.array([len(it.description.split()) for it in ds.items])
    assert 25 <= np.median(words) <= 60 and words.max() > 2 * np.median(words)
    item = ds.items[0]
    stem = item.genres[0].lower().replace("-", "")
    assert sum(w.lower().startswith(stem) for w in item.description.split()) > 0
    assert all(2 <= len(it.title.split()) <= 7 for it in ds.items)


def test_vectors_are_unit_and_cluster_by_genre():
    ds = generate(SMALL)
    v = synthetic_vectors(ds, dim=32)
    assert v.shape == (ds.n_items, 32)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    genre = np.array([it.genres[0] for it in ds.items])
    same = genre[:200, None] == genre[None, :200]
    cos = v[:200] @ v[:200].T
    assert cos[same & ~np.eye(200, dtype=bool)].mean() > cos[~same].mean() + 0.2


def test_impossible_sizes_name_the_fix():
    with pytest.raises(ValueError, match="raise interactions"):
        SyntheticConfig(interactions=100, users=100, items=10)
