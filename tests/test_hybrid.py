"""The hybrid recommender on the checkerboard: fusion works, filters hold, nothing seen or unknown
comes back, and a saved model gives identical answers."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from encoders.base import FitData
from encoders.collaborative import ALS, ALSConfig
from hyrec.data import History, leave_one_out
from hyrec.metrics import evaluate
from retrieval.hybrid import HybridConfig, HybridRecommender, inner_split
from retrieval.items import ItemList
from retrieval.store import Filter
from tests.conftest import checkerboard


def designed_embeddings(n_items: int, rng: np.random.Generator) -> np.ndarray:
    """Block A items point one way, block B the other, plus a little noise; unit norm."""
    v = np.zeros((n_items, 8), np.float32)
    v[: n_items // 2, 0] = 1.0
    v[n_items // 2 :, 1] = 1.0
    v += 0.1 * rng.normal(size=v.shape).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


CHEAP = HybridConfig(
    components=("als", "itemknn", "semantic", "pop"),
    sources=("als", "itemknn", "pop"),
    per_source=8,
    neighbours=5,
    ranker="lightgbm",
    component_overrides={"als": ALS(ALSConfig(factors=2))},
)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    ds = checkerboard(n_users=40, n_items=24)
    split = leave_one_out(ds)
    emb = designed_embeddings(ds.n_items, np.random.default_rng(0))
    data = FitData(ds, split.train, split.task("valid"), item_embeddings=emb)
    store = tmp_path_factory.mktemp("store")
    return HybridRecommender(CHEAP, store_path=store).fit(data), split


def test_inner_split_holds_out_each_users_last_training_event():
    ds = checkerboard()
    split = leave_one_out(ds)
    rest, held = inner_split(split.train)
    assert len(rest) + len(held) == len(split.train)
    assert len(held) == ds.n_users  # every user has 4 training events
    for u in range(ds.n_users):
        assert held.timestamp[held.user == u][0] >= rest.timestamp[rest.user == u].max()


def test_hybrid_finds_the_held_out_items(fitted):
    model, split = fitted
    # 7 unseen items are left in each user's block: the target must be among the first 7
    result = evaluate(model.score, split.task("test"), ks=(7,))
    assert result["hr@7"] >= 0.9
    assert model.fit_report["ranker"] == "lightgbm"
    assert 0 < model.fit_report["candidate_recall_valid"] <= 1


def test_lists_hold_only_unseen_known_items_with_sources(fitted):
    model, split = fitted
    task = split.task("test")
    for row, lst in enumerate(model.recommend_batch(task.history, k=10)):
        seen = set(task.history.sequences[row].tolist())
        assert len(lst) == len(set(lst.items.tolist())) <= 10
        assert not seen.intersection(lst.items.tolist())
        assert ((lst.items >= 0) & (lst.items < 24)).all()
        assert np.all(np.diff(lst.scores) <= 0)
        assert all(lst.source_names(r) for r in range(len(lst)))
        assert set(lst.columns) == {"als", "itemknn", "semantic", "pop"}


def test_filters_are_respected(fitted):
    model, split = fitted
    history = split.task("test").history
    # block A (items 0-11) is genre "A"; even users love it, so asking for B must still return B
    # only
    lists = model.recommend_batch(history, k=5, filter=Filter(genres_any=("B",)))
    for lst in lists:
        assert (lst.items >= 12).all()
    lists = model.recommend_batch(history, k=5, filter=Filter(year_min=1990, year_max=1995))
    for lst in lists:
        assert ((lst.items >= 0) & (lst.items <= 5)).all()


def test_cold_start_user_from_history_alone(fitted):
    model, _ = fitted
    lst = model.recommend_batch(History.of_items([12, 13, 14], 24), k=5)[0]
    assert len(lst) == 5 and (lst.items >= 12).mean() >= 0.8


def test_save_load_gives_identical_recommendations(fitted, tmp_path):
    model, split = fitted
    model.save(tmp_path / "model")
    loaded = HybridRecommender.load(tmp_path / "model")
    history = split.task("test").history
    for a, b in zip(
        model.recommend_batch(history, 10), loaded.recommend_batch(history, 10), strict=True
    ):
        np.testing.assert_array_equal(a.items, b.items)
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6)


def test_load_without_a_model_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="no saved hybrid model"):
        HybridRecommender.load(tmp_path)


def test_text_components_need_embeddings():
    ds = checkerboard()
    split = leave_one_out(ds)
    with pytest.raises(ValueError, match="item_embeddings"):
        HybridRecommender(CHEAP).fit(FitData(ds, split.train, split.task("valid")))


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(st.sampled_from(["a", "b", "c"]), st.lists(st.integers(0, 30), max_size=12)))
def test_item_list_union_never_duplicates_and_tags_sources(proposals):
    proposals = {k: np.array(v, dtype=np.int64) for k, v in proposals.items()}
    if not proposals:
        return
    lst = ItemList.union(proposals)
    assert len(set(lst.items.tolist())) == len(lst)
    assert set(lst.items.tolist()) == set().union(*(set(v.tolist()) for v in proposals.values()))
    for name, items in proposals.items():
        assert set(lst.items[lst.sources[name]].tolist()) == set(items.tolist())
    top = lst.rescored(np.arange(len(lst), dtype=np.float32)).top(3)
    assert len(top) == min(3, len(lst)) and np.all(np.diff(top.scores) <= 0)


def test_mlp_head_learns_with_missing_feature_values():
    from retrieval.ranker import MLPRanker, ndcg_at

    rng = np.random.default_rng(0)
    xs, ys = [], []
    for _ in range(60):
        x = rng.normal(size=(12, 3)).astype(np.float32)
        x[rng.random(12) < 0.3, 2] = np.nan  # e.g. an unknown release year
        y = np.zeros(12, np.float32)
        y[np.argmax(x[:, 0])] = 1.0  # the target is the candidate with the largest first feature
        xs.append(x)
        ys.append(y)
    head = MLPRanker().fit(xs[:40], ys[:40], valid=(xs[40:], ys[40:]))
    scores = [head.predict(x) for x in xs[40:]]
    assert all(np.isfinite(s).all() for s in scores)
    assert ndcg_at(scores, ys[40:]) > 0.8
