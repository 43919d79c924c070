"""The hybrid recommender on the checkerboard: fusion works, filters hold, nothing seen or unknown
comes back, and a saved model gives identical answers."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from encoders.base import FitData
from hyrec.data import History, Item, leave_one_out
from hyrec.metrics import evaluate
from retrieval.filters import Filter
from retrieval.hybrid import HybridConfig, HybridRecommender, inner_split
from retrieval.items import ItemList
from tests.conftest import cheap_hybrid, checkerboard


def designed_embeddings(n_items: int, rng: np.random.Generator) -> np.ndarray:
    """Block A items point one way, block B the other, plus a little noise; unit norm."""
    v = np.zeros((n_items, 8), np.float32)
    v[: n_items // 2, 0] = 1.0
    v[n_items // 2 :, 1] = 1.0
    v += 0.1 * rng.normal(size=v.shape).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


CHEAP = cheap_hybrid()


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


def test_mlp_head_learns_with_missing_feature_values(tmp_path):
    import torch

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
    assert len(head.nets) == 3
    with torch.no_grad():  # the NumPy forward pass is the torch nets' mean
        x = torch.from_numpy(head._norm(xs[40]))
        reference = np.mean([net(x).squeeze(1).numpy() for net in head.nets], axis=0)
    np.testing.assert_allclose(scores[0], reference, rtol=1e-4, atol=1e-5)
    head.save(tmp_path / "head")
    np.testing.assert_array_equal(MLPRanker.load(tmp_path / "head").predict(xs[40]), scores[0])


def test_mlp_heads_of_different_seeds_share_no_net():
    from retrieval.ranker import MLPConfig, MLPRanker

    rng = np.random.default_rng(2)
    xs = [rng.normal(size=(6, 2)).astype(np.float32) for _ in range(16)]
    ys = [np.eye(6, dtype=np.float32)[int(np.argmax(x[:, 0]))] for x in xs]
    heads = [MLPRanker(MLPConfig(epochs=2, members=2, seed=s)).fit(xs, ys) for s in (0, 1)]
    weights = [[net[0].weight.detach().numpy() for net in h.nets] for h in heads]
    assert not any(np.array_equal(a, b) for a in weights[0] for b in weights[1])


def test_the_mlp_heads_work_cap_bounds_its_epochs(caplog):
    from retrieval.ranker import MLPConfig, MLPRanker

    rng = np.random.default_rng(3)
    xs = [rng.normal(size=(6, 2)).astype(np.float32) for _ in range(16)]
    ys = [np.eye(6, dtype=np.float32)[int(np.argmax(x[:, 0]))] for x in xs]
    config = MLPConfig(epochs=10, members=1, max_work=3 * 12)  # 12 training lists: 3 epochs
    with caplog.at_level(logging.DEBUG, logger="retrieval.ranker"):
        MLPRanker(config).fit(xs[:12], ys[:12], valid=(xs[12:], ys[12:]))
    assert sum("valid ndcg@10" in r.getMessage() for r in caplog.records) == 3


def test_mlp_head_ignores_a_feature_missing_from_all_training_lists(tmp_path):
    from retrieval.ranker import MLPRanker

    rng = np.random.default_rng(1)
    xs = [rng.normal(size=(6, 2)).astype(np.float32) for _ in range(20)]
    for x in xs:
        x[:, 1] = np.nan  # e.g. a catalogue with no release years
    ys = [np.eye(6, dtype=np.float32)[int(np.argmax(x[:, 0]))] for x in xs]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "mean of empty slice"
        head = MLPRanker().fit(xs, ys)
    served = xs[0].copy()
    served[:, 1] = 1990.0  # the feature appears at serving time: the head never learned it
    np.testing.assert_array_equal(head.predict(served), head.predict(xs[0]))
    head.save(tmp_path / "head")
    np.testing.assert_array_equal(
        MLPRanker.load(tmp_path / "head").predict(served), head.predict(xs[0])
    )


# ---- query blend, cold start, profiles, similar, add_items ---------------------------------------
def block_vector(emb: np.ndarray, block: str) -> np.ndarray:
    """A unit query vector pointing at block A (items 0-11) or B (items 12-23)."""
    v = emb[:12].mean(0) if block == "A" else emb[12:].mean(0)
    return (v / np.linalg.norm(v)).astype(np.float32)


def test_a_query_shifts_the_list_towards_its_items_and_is_tagged(fitted):
    model, split = fitted
    history = split.task("test").history[np.arange(0, 40, 2)]  # even users: they love block A
    emb = model.facts.embeddings
    plain = model.recommend_batch(history, k=5)
    assert np.mean([(lst.items < 12).mean() for lst in plain]) >= 0.8
    queries = np.tile(block_vector(emb, "B"), (len(history), 1))
    asked = model.recommend_batch(history, k=5, query_vectors=queries)
    assert np.mean([(lst.items >= 12).mean() for lst in asked]) >= 0.5  # weight 1: half and half
    for lst in asked:
        assert "query" in lst.columns
        assert lst.sources["query"].any()
    zero = model.recommend_batch(history, k=5, query_vectors=np.zeros_like(queries))
    for a, b in zip(plain, zero, strict=True):  # a zero row means "no query"
        np.testing.assert_array_equal(a.items, b.items)


def test_query_vectors_of_the_wrong_shape_are_refused(fitted):
    model, split = fitted
    history = split.task("test").history[:3]
    with pytest.raises(ValueError, match="expected \\(3, 8\\)"):
        model.recommend_batch(history, query_vectors=np.ones((2, 8), np.float32))


def test_cold_start_row_with_an_empty_history(fitted):
    model, _ = fitted
    empty = History(np.array([-1]), (np.zeros(0, np.int32),), 24)
    lst = model.recommend_batch(empty, k=5)[0]
    assert len(lst) == 5 and len(set(lst.items.tolist())) == 5
    popularity = model.facts.popularity[lst.items]  # no history, no query: the most popular first
    assert (np.diff(popularity) <= 0).all()
    assert popularity[0] == model.facts.popularity.max()
    kids = model.recommend_batch(empty, k=3, filter=Filter(genres_any=("B",)))[0]
    best_b = np.sort(model.facts.popularity[12:])[::-1][:3]
    np.testing.assert_array_equal(np.sort(model.facts.popularity[kids.items])[::-1], best_b)
    query = block_vector(model.facts.embeddings, "B")[None]
    lst = model.recommend_batch(empty, k=5, query_vectors=query)[0]
    assert (lst.items >= 12).all()


def test_more_filters_genres_none_exclusions_and_unknown_genres(fitted):
    model, split = fitted
    history = split.task("test").history
    lists = model.recommend_batch(history, k=5, filter=Filter(genres_none=("A",)))
    assert all((lst.items >= 12).all() for lst in lists)
    banned = tuple(str(i) for i in range(12, 24))
    lists = model.recommend_batch(history[1::2], k=5, filter=Filter(exclude_ids=banned))
    assert all((lst.items < 12).all() for lst in lists)  # odd users, their own block banned
    lists = model.recommend_batch(history, k=5, filter=Filter(genres_any=("Western",)))
    assert all(len(lst) == 0 for lst in lists)


def test_similar_items_come_from_the_same_block_and_respect_filters(fitted):
    model, _ = fitted
    lst = model.similar(3, k=5)
    assert len(lst) == 5 and 3 not in lst.items.tolist()
    assert (lst.items < 12).all()
    assert set(lst.columns) == {"text", "collaborative"}
    lst = model.similar(3, k=5, filter=Filter(year_min=2005))  # items 15.. only
    assert (lst.items >= 15).all()
    with pytest.raises(IndexError, match="outside the catalogue"):
        model.similar(24)


def fresh_model(profile_fn=None):
    ds = checkerboard(n_users=40, n_items=24)
    split = leave_one_out(ds)
    emb = designed_embeddings(ds.n_items, np.random.default_rng(0))
    model = HybridRecommender(CHEAP)
    data = FitData(ds, split.train, split.task("valid"), item_embeddings=emb)
    return model.fit(data, profiles=profile_fn), split


def test_add_items_grows_the_catalogue_and_survives_save_load(tmp_path):
    from hyrec.data import Item

    model, split = fresh_model()
    emb = model.facts.embeddings
    new = [Item("n1", "new 1", attributes={"genres": ["B"], "year": 2020}), Item("n2", "new 2")]
    before = model.store.count()
    assert model.add_items(new, np.stack([block_vector(emb, "B")] * 2)) == 2
    assert model.dataset.n_items == 26 and model.store.count() == before + 2
    assert model.native_items["als"] == 24 and model.native_items["semantic"] == 26
    history = split.task("test").history
    lists = model.recommend_batch(history[1::2], k=26)  # odd users love block B
    assert all({24, 25} <= set(lst.items.tolist()) for lst in lists)
    assert (model.similar(24, k=5).items >= 12).all()  # a new item's neighbours: by its text
    assert (model.recommend_batch(history, k=5, filter=Filter(year_min=2020))[1].items == 24).all()
    with pytest.raises(ValueError, match="already in the catalogue"):
        model.add_items([Item("n1", "again")], emb[:1])
    with pytest.raises(ValueError, match="expected \\(1, 8\\)"):
        model.add_items([Item("n3", "bad")], np.ones((1, 4)))
    assert model.dataset.n_items == 26  # the refused calls changed nothing
    model.save(tmp_path / "m")
    loaded = HybridRecommender.load(tmp_path / "m")
    assert loaded.dataset.n_items == 26 and loaded.native_items == model.native_items
    for a, b in zip(
        model.recommend_batch(history, 10), loaded.recommend_batch(history, 10), strict=True
    ):
        np.testing.assert_array_equal(a.items, b.items)


def test_profile_feature_is_trained_on_histories_without_the_target():
    calls = []

    def profile_fn(history):
        calls.append(history)
        out = np.zeros((len(history), 8), np.float32)
        for row, seq in enumerate(history.sequences):
            if len(seq):
                out[row, 0 if np.mean(seq < 12) >= 0.5 else 1] = 1.0
        return out

    model, split = fresh_model(profile_fn)
    assert model.uses_profile
    rest, held = inner_split(split.train)
    head_call = calls[0]  # the head-training groups come first
    for user, seq in zip(head_call.users, head_call.sequences, strict=True):
        target = held.item[held.user == user]
        assert len(seq) == (rest.user == user).sum()
        assert not np.isin(target, seq).any()
    n_features = model.ranker.booster.num_feature()
    history = split.task("test").history
    n_calls = len(calls)
    lists = model.recommend_batch(history, k=5, profile_vectors=profile_fn(history))
    assert len(calls) == n_calls + 1  # serving never calls it: the caller passes the vectors
    assert np.mean([(lst.items < 12).mean() for lst in lists[::2]]) >= 0.8
    plain, _ = fresh_model()
    assert plain.ranker.booster.num_feature() == n_features - 1
    without = model.recommend_batch(history, k=5)  # no vectors given: zero profiles, still lists
    assert all(len(lst) == 5 for lst in without)
    with pytest.raises(ValueError, match="profile_vectors has shape"):
        model.recommend_batch(history, k=5, profile_vectors=np.ones((1, 8)))


def test_ann_path_gives_the_exact_lists_on_a_small_catalogue(fitted):
    """The large-catalogue path (faiss proposals, candidate-only features) equals exact scoring
    where its index is exhaustive (one IVF cell on 24 items) and its rank sample is the whole
    catalogue."""
    from dataclasses import replace

    model, split = fitted
    history = split.task("test").history
    queries = np.tile(block_vector(model.facts.embeddings, "B"), (len(history), 1))
    flt = Filter(genres_none=("A",), exclude_ids=("23",))
    exact = model.recommend_batch(history, k=5, filter=flt, query_vectors=queries)
    config = model.config
    model.config = replace(config, ann_min_items=0)  # every catalogue takes the ANN path
    try:
        ann = model.recommend_batch(history, k=5, filter=flt, query_vectors=queries)
    finally:
        model.config = config
    for a, b in zip(exact, ann, strict=True):
        np.testing.assert_array_equal(a.items, b.items)
        assert 23 not in b.items.tolist() and (b.items >= 12).all()


def test_filters_read_genres_and_years_the_same_way_as_the_store():
    from retrieval.hybrid import CatalogueIndex
    from retrieval.records import item_metadata

    items = [
        Item("a", "A", attributes={"genres": "Comedy", "year": 1995.0}),  # a bare string, a float
        Item("b", "B", attributes={"genres": ["Drama"], "year": "1980"}),
        Item("c", "C", attributes={"genres": ["Comedy", "Drama"], "year": True}),  # not a year
    ]
    index = CatalogueIndex(items)
    comedy_90s = Filter(genres_any=("Comedy",), year_min=1990)
    assert index.allowed(comedy_90s).tolist() == [True, False, False]
    assert [item_metadata(it).get("year") for it in items] == [1995, 1980, None]
    assert [item_metadata(it).get("genres") for it in items] == [
        ["Comedy"],
        ["Drama"],
        ["Comedy", "Drama"],
    ]


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"components": ("als", "nope")}, "unknown"),
        ({"components": ("als", "pop"), "sources": ("als", "itemknn")}, "sources"),
        ({"sources": ("als", "semantic")}, "sources"),
        ({"ranker": "xgboost"}, "ranker"),
    ],
)
def test_a_bad_config_fails_before_training(bad, message):
    with pytest.raises(ValueError, match=message):
        HybridConfig(**bad)


def test_the_hybrid_seed_reaches_its_seeded_components_and_head(tmp_path):
    ds = checkerboard(n_users=40, n_items=24)
    split = leave_one_out(ds)
    emb = designed_embeddings(ds.n_items, np.random.default_rng(0))
    data = FitData(ds, split.train, split.task("valid"), item_embeddings=emb)
    config = HybridConfig(
        components=("bpr", "itemknn", "pop"),
        sources=("bpr", "itemknn", "pop"),
        per_source=8,
        ranker="lightgbm",
        seed=5,
    )
    model = HybridRecommender(config, store_path=tmp_path / "store").fit(data)
    assert model.components["bpr"].config.seed == 5
    assert model.ranker.config.seed == 5
    model.save(tmp_path / "saved")
    assert HybridRecommender.load(tmp_path / "saved").config.seed == 5
