"""The large-catalogue candidate path (retrieval/candidates.py, views.py, ann.py): the faiss
index, the per-batch score views against exact full-catalogue computations, the candidate-depth
rule, and the hybrid run through it end to end."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from encoders.base import FitData
from eval.synthetic import SyntheticConfig, generate, synthetic_vectors
from hyrec.data import Item, leave_one_out
from hyrec.data.splits import History
from retrieval.candidates import (
    AnnConfig,
    ConstantScores,
    FactorSpace,
    SparseScores,
    VectorIndex,
    candidate_depth,
)
from retrieval.features import standardised_and_ranks
from retrieval.filters import Filter
from retrieval.hybrid import HybridConfig, HybridRecommender


def clustered(rng, n=6_000, d=24, clusters=30):
    """Item vectors in clusters with varied norms (inner product, not cosine, decides)."""
    centres = rng.normal(size=(clusters, d))
    v = centres[rng.integers(0, clusters, n)] + 0.5 * rng.normal(size=(n, d))
    return (v * rng.uniform(0.5, 2.0, (n, 1))).astype(np.float32)


def exact_top(vectors, query, n, seen=(), allowed=None):
    s = vectors @ query
    s[list(seen)] = -np.inf
    if allowed is not None:
        s[~allowed] = -np.inf
    return set(np.argsort(-s)[:n])


def test_index_returns_unseen_catalogue_items_best_first(rng):
    v = clustered(rng)
    index = VectorIndex(v)
    q = rng.normal(size=v.shape[1]).astype(np.float32)
    seen = np.array(sorted(exact_top(v, q, 10)))  # the very best items are already seen
    items, scores = index.search(q, 50, seen)
    assert len(items) == 50 and len(set(items)) == 50
    assert ((items >= 0) & (items < len(v))).all()
    assert not set(items) & set(seen)
    assert np.all(np.diff(scores) <= 0)
    assert np.allclose(scores, v[items] @ q, atol=1e-4)


def test_a_long_history_of_items_inside_the_cells_still_gets_n_unseen_items(rng):
    """The cells are asked for room for the seen items they hold: with every cell read the search
    is exact, however many of the best items are seen, and whether they sit in the cells or among
    the exactly scored items outside them."""
    v = clustered(rng)
    index = VectorIndex(v, AnnConfig(nprobe=10_000))  # every cell: exact
    q = rng.normal(size=v.shape[1]).astype(np.float32)
    ranked = np.argsort(-(v @ q))
    in_cells = np.setdiff1d(ranked[:1_000], index.head)
    for seen in (np.sort(in_cells[:600]), np.sort(ranked[:800])):
        items, _ = index.search(q, 50, seen)
        assert set(items) == exact_top(v, q, 50, seen)


def test_recall_against_exact_scoring_is_high(rng):
    v = clustered(rng)
    index = VectorIndex(v, AnnConfig(nprobe=16))  # 16 of 77 cells: a fifth of the items read
    recalls = []
    for _ in range(30):
        q = rng.normal(size=v.shape[1]).astype(np.float32)
        found = set(index.search(q, 50, np.zeros(0, np.int64))[0])
        recalls.append(len(found & exact_top(v, q, 50)) / 50)
    assert np.mean(recalls) >= 0.9


def test_untrained_items_and_one_outlier_norm_do_not_hide_the_items_that_score(rng):
    """Two thirds of the items never trained (zero factors, as ALS leaves them) and one popular
    item with a norm far above the rest: the shape of ALS on a 10⁶-item catalogue, where the
    index once found none of the exact top items (old code: recall 0.0 here)."""
    v = clustered(rng, n=20_000, d=32) * 0.02
    v[rng.random(len(v)) < 2 / 3] = 0.0
    v[np.flatnonzero(v.any(axis=1))[0]] *= 1_000
    index = VectorIndex(v, AnnConfig(nprobe=8))  # of ~80 cells, as 128 of 1,000 at 10⁶
    none = np.zeros(0, np.int64)
    recalls = []
    for _ in range(20):
        q = 0.05 * rng.normal(size=v.shape[1]).astype(np.float32)
        items, scores = index.search(q, 50, none)
        assert len(items) == 50 and v[items].any(axis=1).all()
        recalls.append(len(set(items) & exact_top(v, q, 50)) / 50)
    assert np.mean(recalls) >= 0.9


def test_items_added_to_an_index_are_found_without_rebuilding_it(rng):
    v = clustered(rng)
    index = VectorIndex(v[:5_000], AnnConfig(nprobe=16))
    grown = v[5_000:].copy()
    grown[0] *= 50  # a norm above the cells' M: scored exactly from now on
    grown[1] = 0.0  # a zero vector: never proposed
    full = np.vstack([v[:5_000], grown])
    index.extend(full)
    assert len(index) == len(v) and 5_000 in set(index.head)
    none = np.zeros(0, np.int64)
    recalls = []
    for _ in range(30):
        q = rng.normal(size=v.shape[1]).astype(np.float32)
        items, _ = index.search(q, 50, none)
        assert 5_001 not in set(items)
        recalls.append(len(set(items) & exact_top(full, q, 50)) / 50)
    assert np.mean(recalls) >= 0.9
    q = grown[0] / np.linalg.norm(grown[0])
    assert index.search(q, 5, none)[0][0] == 5_000


def test_all_zero_vectors_still_search():
    index = VectorIndex(np.zeros((500, 8), np.float32))
    items, scores = index.search(np.ones(8, np.float32), 10, np.array([0, 1]))
    assert len(items) == 10 and not {0, 1} & set(items) and (scores == 0).all()


def test_one_probed_cell_finds_less_than_many(rng):
    """The recall above is the index's doing, not an exhaustive scan in disguise."""
    v = clustered(rng)
    few = VectorIndex(v, AnnConfig(nprobe=1))
    many = VectorIndex(v, AnnConfig(nprobe=64))  # of ~77 cells
    qs = rng.normal(size=(20, v.shape[1])).astype(np.float32)
    none = np.zeros(0, np.int64)

    def recall(index):
        return np.mean(
            [len(set(index.search(q, 50, none)[0]) & exact_top(v, q, 50)) / 50 for q in qs]
        )

    assert recall(few) < recall(many)


@pytest.mark.parametrize("share", [0.02, 0.5])
def test_filtered_search_returns_only_allowed_items(rng, share):
    """A selective filter is searched exactly over its items; a broad one inside the index."""
    v = clustered(rng)
    allowed = rng.random(len(v)) < share
    index = VectorIndex(v, AnnConfig(exact_below=1_000))
    q = rng.normal(size=v.shape[1]).astype(np.float32)
    seen = np.flatnonzero(allowed)[:5]
    items, _ = index.search(q, 40, seen, allowed)
    assert len(items) == 40
    assert allowed[items].all() and not set(items) & set(seen)
    assert len(set(items) & exact_top(v, q, 40, seen, allowed)) >= 30


def test_factor_view_moments_are_exact_and_ranks_close(rng):
    v = clustered(rng, n=3_000)
    space = FactorSpace(v, AnnConfig(rank_sample=1_000))
    users = rng.normal(size=(3, v.shape[1])).astype(np.float32)
    view = space.view(users)
    dense = users @ v.T
    seen = [np.array([1, 7, 99]), np.zeros(0, np.int64), np.arange(50)]
    for row in range(3):
        top = view.top(row, 100, seen[row], None)
        cands = np.concatenate([top[:20], rng.choice(len(v), 20, replace=False)])
        cands = np.setdiff1d(cands, seen[row])
        ((z, higher),) = standardised_and_ranks(dense[row : row + 1], [seen[row]], [cands])
        mean, std = view.stats(row, seen[row])
        assert np.allclose((view.at(row, cands) - mean) / std, z, atol=1e-3)
        estimate = view.higher(row, view.at(row, cands), seen[row])
        inside = np.isin(cands, top[:20])
        assert np.abs(estimate[inside] - higher[inside]).max() <= 2  # exact inside its top list
        # beyond it: a sample estimate, within a few percent of the catalogue
        assert np.abs(estimate[~inside] - higher[~inside]).max() <= 0.08 * len(v)


def test_sparse_and_constant_views_equal_dense_features(rng):
    dense = np.where(rng.random((2, 500)) < 0.05, rng.random((2, 500)), 0.0).astype(np.float32)
    pop = rng.integers(0, 40, 500).astype(np.float32)
    seen = [np.array([3, 4]), np.array([10])]
    cands = [np.array([0, 5, 9, 200]), np.array([1, 2, 300])]
    for view, scores in ((SparseScores(sp.csr_matrix(dense)), dense), (ConstantScores(pop), None)):
        matrix = scores if scores is not None else np.stack([pop, pop])
        expected = standardised_and_ranks(matrix, seen, cands)
        for row in range(2):
            mean, std = view.stats(row, seen[row])
            values = view.at(row, cands[row])
            assert np.allclose(values, matrix[row, cands[row]])
            assert np.allclose((values - mean) / std, expected[row][0], atol=1e-4)
            assert np.array_equal(view.higher(row, values, seen[row]), expected[row][1])
            top = view.top(row, 5, seen[row], None)
            assert not set(top) & set(seen[row])


def test_candidate_depth_follows_the_catalogue_unless_set():
    assert candidate_depth(1_682).per_source == 50  # the floor: ML-100K keeps its depth
    assert candidate_depth(5_000).per_source == 71
    assert candidate_depth(10_000).per_source == 100
    assert candidate_depth(10**6).per_source == 150  # capped: features cost grows with depth
    assert candidate_depth(100).per_source == 50
    assert candidate_depth(10**6, per_source=30).per_source == 30
    assert candidate_depth(10**6, neighbours=7).neighbours == 7


@pytest.fixture(scope="module")
def large_model():
    ds = generate(SyntheticConfig(interactions=12_000, users=300, items=800, seed=1))
    vectors = synthetic_vectors(ds, dim=32)
    split = leave_one_out(ds)
    config = HybridConfig(
        ann_min_items=1,  # every catalogue is "large": candidates from the ANN path
        ranker="lightgbm",
        params={"sasrec": {"max_epochs": 2}, "lightgcn": {"max_epochs": 2}},
    )
    model = HybridRecommender(config).fit(FitData(ds, split.train, split.task("valid"), vectors))
    return model, split, vectors


def test_large_catalogue_path_recommends_unseen_catalogue_items(large_model):
    model, split, vectors = large_model
    assert set(model._spaces) == {"sasrec", "lightgcn", "als", "semantic"}
    task = split.task("test")
    lists = model.recommend_batch(task.history[np.arange(20)], k=10)
    for lst, seq in zip(lists, task.history.sequences[:20], strict=True):
        assert len(lst) == 10 and len(set(lst.items)) == 10
        assert ((lst.items >= 0) & (lst.items < model.dataset.n_items)).all()
        assert not set(lst.items) & set(seq)
    flt = Filter(genres_any=(model.dataset.items[0].genres[0],))
    allowed = model.index.allowed(flt)
    q = vectors[:1]
    for lst in model.recommend_batch(task.history[np.arange(1)], k=10, filter=flt, query_vectors=q):
        assert allowed[lst.items].all() and "query" in lst.columns


def test_large_catalogue_features_match_the_exact_path_in_shape(large_model):
    model, split, _ = large_model
    history = split.task("valid").history[np.arange(5)]
    cands, feats = model._candidates_and_features(history, None)
    assert all(f.shape == (len(c), feats[0].shape[1]) for c, f in zip(cands, feats, strict=True))
    assert all(np.isfinite(f).all() for f in feats)  # every synthetic item has a year


def test_items_added_to_a_large_catalogue_can_be_candidates_and_history(large_model, tmp_path):
    """Catalogue growth on the ANN path: the popularity view knows only the fitted items, and a
    new item proposed by the text source, or in a history, raised IndexError there (old code:
    on any catalogue past ``ann_min_items`` after an upsert)."""
    model, split, _ = large_model
    model.save(tmp_path / "m")
    grown = HybridRecommender.load(tmp_path / "m")  # the module's model stays as fitted
    history = split.task("test").history[np.arange(5)]
    n = grown.dataset.n_items
    near_each_user = grown.components["semantic"].query_vectors(history)
    grown.recommend_batch(history, k=10)  # builds the ANN spaces, which the upsert then grows
    grown.add_items([Item(f"new-{r}", f"new item {r}") for r in range(5)], near_each_user)
    spaces = grown.__dict__["_spaces"]  # the same spaces, grown in place (not rebuilt)
    assert len(spaces["semantic"].index) == len(spaces["sasrec"].index) == n + 5
    assert len(spaces["als"].index) == n  # ALS scores only its fitted items
    cands, _ = grown._candidates_and_features(history, None)
    assert any((c.items >= n).any() for c in cands)  # the text source proposed them
    for lst in grown.recommend_batch(history, k=10):
        assert len(lst) == 10
    seqs = tuple(np.append(s, n + r) for r, s in enumerate(history.sequences))
    with_new = History(history.users, seqs, grown.dataset.n_items)
    for lst, seq in zip(grown.recommend_batch(with_new, k=10), seqs, strict=True):
        assert len(lst) == 10 and not set(lst.items) & set(seq)
