"""Every scorer passes the contract (tests/scorer_contract.py); the collaborative baselines, the
semantic scorer and the hybrid are run here, LightGCN and SASRec in their own files. Then the known
answers of popularity, which the contract cannot check for a non-personalised scorer."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import scipy.sparse as sp

from encoders.base import FitData
from encoders.collaborative import (
    ALS,
    BPR,
    ALSConfig,
    BPRConfig,
    ItemKNN,
    ItemKNNConfig,
    MostPopular,
)
from encoders.registry import SCORERS
from encoders.semantic import SemanticScorer
from hyrec.data import Dataset, EvalTask, History, Item, leave_one_out
from hyrec.metrics import evaluate
from retrieval.hybrid import HybridRecommender
from tests.conftest import cheap_hybrid
from tests.scorer_contract import ScorerContract


class TestMostPopular(ScorerContract):
    personalised = False

    def make(self):
        return MostPopular()


class TestItemKNN(ScorerContract):
    def make(self):
        return ItemKNN(ItemKNNConfig(neighbours=10))


class TestALS(ScorerContract):
    def make(self):
        return ALS(ALSConfig(factors=2))  # the checkerboard has rank 2


class TestBPR(ScorerContract):
    def make(self):
        return BPR(BPRConfig(factors=8, learning_rate=0.05, iterations=200))


class TestSemantic(ScorerContract):
    def make(self):
        return SemanticScorer()


class TestHybrid(ScorerContract):
    candidate_only = True  # head scores on its candidates, -inf elsewhere
    seen = "excluded"  # candidates are unseen items only
    in_registry = False  # a hybrid is not a component: HybridRecommender.load reopens it

    def make(self):
        return HybridRecommender(cheap_hybrid())


def contract_signature(model) -> tuple[str, str | None]:
    return type(model).kind, getattr(getattr(model, "config", None), "item_input", None)


def test_every_registered_scorer_and_the_hybrid_run_the_contract():
    for module in ("tests.test_lightgcn", "tests.test_sasrec"):  # their suites live there
        importlib.import_module(module)
    covered = set()
    stack = list(ScorerContract.__subclasses__())
    while stack:
        cls = stack.pop()
        stack += cls.__subclasses__()
        covered.add(contract_signature(cls().make()))
    expected = {contract_signature(entry()) for entry in SCORERS.values()} | {("hybrid", None)}
    assert expected <= covered, f"no contract suite for {sorted(expected - covered, key=str)}"


# ---- popularity: known answers ----------------------------------------------------------------


def popularity_dataset() -> Dataset:
    """Six items whose training popularity (distinct users) is 5, 3, 4, 1, 0, 2.

    u0 repeats item 3 three times (still one user). Every user ends on item 4 twice: after
    leave-one-out those are the validation and test events, which count for nothing.
    """
    wanted = {0: 5, 1: 3, 2: 4, 3: 1, 4: 0, 5: 2}
    users: dict[str, list[int]] = {f"u{u}": [] for u in range(5)}
    for item, count in wanted.items():
        for u in range(count):
            users[f"u{u}"].append(item)
    users["u0"] += [3, 3]
    events = []
    for user, seq in users.items():
        for t, item in enumerate([*seq, 4, 4]):  # the last two: validation and test
            events.append((user, str(item), 1000 + t, 1.0, ""))
    items = [Item(str(i), f"item {i}") for i in range(6)]
    return Dataset.from_records("popularity", items, events)


def test_most_popular_scores_are_the_training_user_counts():
    ds = popularity_dataset()
    split = leave_one_out(ds)
    model = MostPopular().fit(FitData(ds, split.train))
    expected = np.zeros(6, np.float32)
    for label, count in {"0": 5, "1": 3, "2": 4, "3": 1, "4": 0, "5": 2}.items():
        expected[ds.item_index[label]] = count
    scores = model.score(History.of_items([], 6))[0]
    np.testing.assert_array_equal(scores, expected)
    order = [ds.item_ids[i] for i in np.argsort(-scores, kind="stable")]
    assert order == ["0", "2", "1", "5", "3", "4"]


def test_most_popular_metrics_have_known_values():
    """Three users whose only unseen item ranks 1st, 2nd and 3rd among the unseen: hr@1 = 1/3,
    ndcg@3 = (1 + 1/log2(3) + 1/log2(4)) / 3."""
    ds = popularity_dataset()
    split = leave_one_out(ds)
    model = MostPopular().fit(FitData(ds, split.train))
    idx = ds.item_index
    # order by popularity: 0, 2, 1, 5, 3, 4; each user has seen everything before their target
    seen = [["3", "4"], ["0", "3", "4"], ["0", "3", "4"]]
    targets = ["0", "1", "5"]  # 1st, 2nd, 3rd among each user's unseen items
    history = History(
        np.full(3, -1), tuple(np.array([idx[i] for i in s]) for s in seen), ds.n_items
    )
    truth = sp.csr_matrix(
        (np.ones(3, np.float32), (np.arange(3), [idx[t] for t in targets])), shape=(3, ds.n_items)
    )
    result = evaluate(model.score, EvalTask(history, truth), ks=(1, 3))
    assert result["hr@1"] == pytest.approx(1 / 3)
    assert result["hr@3"] == pytest.approx(1.0)
    assert result["ndcg@3"] == pytest.approx((1 + 1 / np.log2(3) + 1 / np.log2(4)) / 3)


def test_most_popular_is_blind_to_the_checkerboard_blocks(board):
    """Both blocks are equally popular, so popularity is no better than chance at the block."""
    split = leave_one_out(board)
    model = MostPopular().fit(FitData(board, split.train))
    counts = model.score(History.of_items([], board.n_items))[0]
    half = board.n_items // 2
    assert counts[:half].sum() == counts[half:].sum() == 40  # 10 users x 4 training events


# ---- the registry and seeds ---------------------------------------------------------------------


def test_load_refuses_another_kind(board, tmp_path):
    split = leave_one_out(board)
    MostPopular().fit(FitData(board, split.train)).save(tmp_path / "pop")
    with pytest.raises(ValueError, match="'pop' scorer, not 'als'"):
        ALS.load(tmp_path / "pop")


def test_with_seed_sets_a_models_seed_and_leaves_unseeded_models_alone():
    from encoders.base import is_seeded, with_seed
    from encoders.sasrec import SASRec, SASRecConfig

    model = with_seed(SASRec(SASRecConfig(item_input="id", hidden=16)), 7)
    assert model.config.seed == 7 and model.config.item_input == "id" and model.config.hidden == 16
    knn = ItemKNN()
    assert not is_seeded(knn) and with_seed(knn, 7) is knn
