"""Property tests (hypothesis) for the list stages: MMR, ItemList.union / top, and the hybrid's
fusion of candidates (``HybridRecommender.recommend_batch`` on a tiny model fitted once).

Whatever the input: never an unknown, duplicate, seen or excluded item; at most k items, exactly
k when there are enough candidates; scores sorted best first.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from encoders.base import FitData
from hyrec.data import History, Item, leave_one_out
from retrieval.filters import Filter
from retrieval.hybrid import HybridRecommender
from retrieval.items import Catalogue, ItemList
from retrieval.mmr import mmr, mmr_order
from tests.conftest import cheap_hybrid, checkerboard
from tests.scorer_contract import block_embeddings

FEW = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
N_USERS, N_ITEMS = 20, 20

finite = st.floats(-100, 100, allow_nan=False, allow_infinity=False, width=32)


@st.composite
def candidates_and_vectors(draw, max_n: int = 12):
    """(relevance (n,), embeddings (n, d)): some rows may repeat or be all zero."""
    n = draw(st.integers(1, max_n))
    d = draw(st.integers(1, 5))
    relevance = draw(arrays(np.float64, n, elements=st.sampled_from([0.0, 0.5, 1.0]) | finite))
    vectors = draw(arrays(np.float32, (n, d), elements=st.floats(-1, 1, width=32)))
    return relevance, vectors


# ---- MMR ---------------------------------------------------------------------------------------


@FEW
@given(candidates_and_vectors(), st.integers(0, 15), st.floats(0, 1))
def test_mmr_order_picks_distinct_rows_greedily(case, k, lambda_):
    relevance, vectors = case
    n = len(relevance)
    order = mmr_order(relevance, vectors, k, lambda_)
    assert len(order) == min(k, n) and len(set(order.tolist())) == len(order)
    assert ((order >= 0) & (order < n)).all()
    if len(order):
        assert order[0] == int(np.argmax(relevance))  # the first pick is the most relevant
    # greedy: a shorter list is the start of a longer one
    np.testing.assert_array_equal(order, mmr_order(relevance, vectors, n, lambda_)[: len(order)])


@FEW
@given(candidates_and_vectors(), st.integers(1, 15))
def test_mmr_order_at_lambda_one_is_the_relevance_order(case, k):
    relevance, vectors = case
    expected = np.argsort(-relevance, kind="stable")[:k]
    np.testing.assert_array_equal(mmr_order(relevance, vectors, k, 1.0), expected)


@given(st.floats(allow_nan=False).filter(lambda x: not 0 <= x <= 1))
@settings(max_examples=10, deadline=None)
def test_mmr_order_refuses_lambda_outside_zero_one(lambda_):
    with pytest.raises(ValueError, match="lambda_"):
        mmr_order(np.ones(3), np.eye(3), 2, lambda_)


@st.composite
def scored_lists(draw, n_catalogue: int = 15):
    """An ItemList over a catalogue with text vectors, with ties in its scores."""
    items = draw(st.lists(st.integers(0, n_catalogue - 1), max_size=n_catalogue, unique=True))
    scores = draw(
        st.lists(
            st.sampled_from([0.0, 1.0, 2.0]) | finite, min_size=len(items), max_size=len(items)
        )
    )
    emb = draw(arrays(np.float32, (n_catalogue, 4), elements=st.floats(-1, 1, width=32)))
    catalogue = Catalogue([Item(str(i), f"item {i}") for i in range(n_catalogue)], emb)
    return ItemList(np.array(items, np.int64), np.array(scores, np.float32), catalogue=catalogue)


@FEW
@given(scored_lists(), st.integers(0, 20), st.floats(0, 1))
def test_mmr_reranks_a_subset_of_the_candidates(lst, k, lambda_):
    out = mmr(lst, k, lambda_)
    assert len(out) == min(k, len(lst))
    assert len(set(out.items.tolist())) == len(out)
    assert set(out.items.tolist()) <= set(lst.items.tolist())
    np.testing.assert_array_equal(out.scores, np.arange(len(out), 0, -1, dtype=np.float32))
    original = dict(zip(lst.items.tolist(), lst.scores.tolist(), strict=True))
    assert out.columns["head_score"].tolist() == [original[i] for i in out.items.tolist()]
    assert out.catalogue is lst.catalogue
    if lambda_ == 1.0:
        assert np.all(np.diff(out.columns["head_score"]) <= 0)


def test_mmr_needs_text_vectors():
    lst = ItemList(np.arange(3), np.ones(3, np.float32), catalogue=Catalogue([Item("a", "a")] * 3))
    with pytest.raises(ValueError, match="text vectors"):
        mmr(lst, 2)


# ---- ItemList.union / top ---------------------------------------------------------------------


@FEW
@given(
    st.dictionaries(
        st.sampled_from(["als", "pop", "semantic", "query"]),
        st.lists(st.integers(0, 30), max_size=12),
        min_size=1,
    )
)
def test_union_holds_every_proposal_once_tagged_by_its_sources(proposals):
    proposals = {k: np.array(v, dtype=np.int64) for k, v in proposals.items()}
    catalogue = Catalogue([Item(str(i), str(i)) for i in range(31)])
    lst = ItemList.union(proposals, catalogue)
    assert len(set(lst.items.tolist())) == len(lst)
    assert set(lst.items.tolist()) == set().union(*(set(v.tolist()) for v in proposals.values()))
    assert set(lst.sources) == set(proposals) and not lst.scores.any()
    for name, items in proposals.items():
        assert set(lst.items[lst.sources[name]].tolist()) == set(items.tolist())
    assert lst.catalogue is catalogue


@FEW
@given(scored_lists(), st.integers(0, 20))
def test_top_keeps_the_k_best_sorted_with_ties_by_item(lst, k):
    top = lst.top(k)
    assert len(top) == min(k, len(lst))
    assert set(top.items.tolist()) <= set(lst.items.tolist())
    assert np.all(np.diff(top.scores) <= 0)
    tie = np.diff(top.scores) == 0
    assert np.all(np.diff(top.items)[tie] > 0)  # equal scores: lower item index first
    rest = np.setdiff1d(lst.items, top.items)
    if len(top) and len(rest):
        assert top.scores.min() >= lst.scores[np.isin(lst.items, rest)].max()
    np.testing.assert_array_equal(top.items, lst.top(len(lst)).items[: len(top)])


# ---- the hybrid's fusion ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def hybrid() -> HybridRecommender:
    ds = checkerboard(n_users=N_USERS, n_items=N_ITEMS)
    split = leave_one_out(ds)
    data = FitData(ds, split.train, split.task("valid"), block_embeddings(N_ITEMS))
    return HybridRecommender(cheap_hybrid()).fit(data)


@st.composite
def requests(draw):
    """A batch of 1-3 histories (known or cold users, any items, repeats allowed), k, a filter
    and optional query vectors."""
    rows = draw(st.integers(1, 3))
    users = draw(st.lists(st.integers(-1, N_USERS - 1), min_size=rows, max_size=rows))
    seqs = draw(
        st.lists(st.lists(st.integers(0, N_ITEMS - 1), max_size=10), min_size=rows, max_size=rows)
    )
    history = History(
        np.array(users, np.int64), tuple(np.array(s, np.int32) for s in seqs), N_ITEMS
    )
    k = draw(st.integers(1, N_ITEMS + 5))
    ids = [str(i) for i in range(N_ITEMS)] + ["not-an-item"]
    low = draw(st.none() | st.integers(1985, 2012))
    high = draw(st.none() | st.integers(low or 1985, 2015))
    filter = Filter(
        genres_any=draw(st.sampled_from([(), ("A",), ("B",), ("A", "B"), ("C",)])),
        year_min=low,
        year_max=high,
        exclude_ids=tuple(draw(st.lists(st.sampled_from(ids), max_size=8))),
    )
    queries = None
    if draw(st.booleans()):
        queries = draw(arrays(np.float32, (rows, 8), elements=st.floats(-1, 1, width=32)))
    return history, k, filter, queries


def allowed_items(hybrid: HybridRecommender, filter: Filter) -> set[int]:
    """Items the filter lets through, read from the items themselves (not the model's index)."""
    out = set()
    for i, item in enumerate(hybrid.dataset.items):
        if filter.genres_any and not set(filter.genres_any) & set(item.genres):
            continue
        if filter.year_min is not None and (item.year is None or item.year < filter.year_min):
            continue
        if filter.year_max is not None and (item.year is None or item.year > filter.year_max):
            continue
        if item.item_id in filter.exclude_ids:
            continue
        out.add(i)
    return out


@FEW
@given(requests())
def test_fused_lists_hold_only_allowed_unseen_items_k_at_most_sorted(hybrid, request_):
    history, k, filter, queries = request_
    lists = hybrid.recommend_batch(history, k=k, filter=filter, query_vectors=queries)
    every = hybrid.recommend_batch(history, k=N_ITEMS, filter=filter, query_vectors=queries)
    ok = allowed_items(hybrid, filter)
    per_source = hybrid.config.depth(N_ITEMS).per_source
    assert len(lists) == len(every) == len(history)
    for row, (lst, full) in enumerate(zip(lists, every, strict=True)):
        items = lst.items.tolist()
        assert len(items) == len(set(items)) <= k
        assert set(items) <= ok, "an unknown, excluded or filtered-out item"
        unseen_ok = ok - set(history.sequences[row].tolist())
        assert set(full.items.tolist()) <= unseen_ok, "a seen item came back"
        assert len(lst) == min(k, len(full))  # k exactly when there are enough candidates
        assert len(full) >= min(per_source, len(unseen_ok))  # each source fills its quota
        assert np.isfinite(lst.scores).all() and np.all(np.diff(lst.scores) <= 0)
        np.testing.assert_array_equal(lst.items, full.items[: len(lst)])
