"""Head features against reference computations: standardised scores and ranks over unseen items,
and one named column per feature."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from hyrec.data import History
from retrieval.features import (
    ItemFacts,
    build_features,
    feature_names,
    seen_rows,
    standardised_and_ranks,
)
from retrieval.items import ItemList


def reference(scores: np.ndarray, seen: np.ndarray, items: np.ndarray):
    """z over unseen items and the count of unseen items scoring strictly higher, the slow way."""
    unseen = scores[~seen]
    z = (scores[items] - unseen.mean()) / (unseen.std() + 1e-6)
    higher = np.array([(unseen > scores[i]).sum() for i in items])
    return z, higher


@settings(max_examples=60, deadline=None)
@given(
    st.integers(2, 40).flatmap(
        lambda n: st.tuples(
            st.lists(st.integers(-5, 5), min_size=n, max_size=n),  # ties are common
            st.sets(st.integers(0, n - 1), max_size=n - 1),
        )
    )
)
def test_standardised_scores_and_ranks_match_the_reference(case):
    values, seen_set = case
    scores = np.array([values], dtype=np.float32)
    n = scores.shape[1]
    seen = np.zeros(n, dtype=bool)
    seen[list(seen_set)] = True
    items = np.flatnonzero(~seen)
    history = History(np.array([0]), (np.array(sorted(seen_set), np.int64),), n)
    [(z, higher)] = standardised_and_ranks(scores, seen_rows(history), [items])
    ref_z, ref_higher = reference(scores[0], seen, items)
    np.testing.assert_allclose(z, ref_z, atol=1e-4)
    np.testing.assert_array_equal(higher, ref_higher)


def test_one_column_per_feature_name(rng):
    n, d = 30, 4
    emb = rng.normal(size=(n, d)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    facts = ItemFacts(
        rng.integers(0, 9, n).astype(np.float32),
        rng.random(n).astype(np.float32),
        np.full(n, 1995.0),
        emb,
    )
    history = History(np.array([0, -1]), (np.array([1, 2, 3]), np.zeros(0, np.int64)), n)
    scores = {"a": rng.normal(size=(2, n)).astype(np.float32), "b": np.ones((2, n), np.float32)}
    cands = [ItemList.union({"a": np.array([4, 5, 6])}), ItemList.union({"b": np.array([7, 8])})]
    for profiles in (None, emb[:2]):
        feats = build_features(history, cands, scores, facts, ["a", "b"], profiles)
        names = feature_names(
            ["a", "b"], ["a", "b"], with_text=True, with_profile=profiles is not None
        )
        assert [f.shape for f in feats] == [(3, len(names)), (2, len(names))]
        assert all(np.isfinite(f).all() for f in feats)
    col = names.index("from:a")
    assert feats[0][:, col].tolist() == [1, 1, 1] and feats[1][:, col].tolist() == [0, 0]
    col = names.index("b:z")  # a constant score: z = 0, every item ranked first
    assert (feats[1][:, col] == 0).all() and (feats[1][:, names.index("b:log_rank")] == 0).all()
