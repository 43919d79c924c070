"""Contract suite every scorer passes (the implicit-style shared mixin), on the checkerboard
dataset."""

from __future__ import annotations

import numpy as np
import pytest

from encoders.base import FitData, NotFittedError, Scorer
from encoders.collaborative import (
    ALS,
    BPR,
    ALSConfig,
    BPRConfig,
    ItemKNN,
    ItemKNNConfig,
    MostPopular,
)
from hyrec.data import History, leave_one_out
from hyrec.metrics import evaluate


class ScorerContract:
    """Subclasses set ``make`` and inherit every check. ``personalised`` scorers must beat
    chance."""

    personalised = True

    def make(self) -> Scorer:
        raise NotImplementedError

    @pytest.fixture
    def fitted(self, board):
        split = leave_one_out(board)
        data = FitData(board, split.train, split.task("valid"))
        return self.make().fit(data), split

    def test_scores_cover_the_catalogue(self, fitted, board):
        model, split = fitted
        task = split.task("test")
        scores = model.score(task.history)
        assert scores.shape == (len(task), board.n_items) and np.isfinite(scores).all()

    def test_ranks_the_users_own_block_first(self, fitted):
        model, split = fitted
        result = evaluate(model.score, split.task("test"), ks=(5,))
        if self.personalised:
            # all targets are in the user's block: 5 of the 14 unseen items
            assert result["hr@5"] >= 0.9
        assert 0.0 <= result["ndcg@5"] <= 1.0

    def test_save_load_round_trip(self, fitted, tmp_path):
        model, split = fitted
        model.save(tmp_path / "m")
        loaded = type(model).load(tmp_path / "m")
        task = split.task("test")
        np.testing.assert_array_equal(model.score(task.history), loaded.score(task.history))

    def test_unknown_user_is_scored_from_history(self, fitted, board):
        model, _ = fitted
        block_a = [0, 1, 2, 3]  # items of the even users' block
        scores = model.score(History.of_items(block_a, board.n_items))
        assert scores.shape == (1, board.n_items) and np.isfinite(scores).all()
        if self.personalised:
            rest = np.setdiff1d(np.arange(board.n_items), block_a)
            best = rest[np.argsort(-scores[0, rest])[:3]]
            assert (best < board.n_items // 2).all()

    def test_unfitted_scorer_says_so(self, board, tmp_path):
        with pytest.raises(NotFittedError):
            self.make().score(History.of_items([0], board.n_items))


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


def test_load_refuses_another_kind(board, tmp_path):
    split = leave_one_out(board)
    MostPopular().fit(FitData(board, split.train)).save(tmp_path / "pop")
    with pytest.raises(ValueError, match="'pop' scorer, not 'als'"):
        ALS.load(tmp_path / "pop")


def test_with_seed_sets_a_models_seed_and_leaves_unseeded_models_alone():
    from encoders.base import is_seeded, with_seed
    from encoders.collaborative import ItemKNN
    from encoders.sasrec import SASRec, SASRecConfig

    model = with_seed(SASRec(SASRecConfig(item_input="id", hidden=16)), 7)
    assert model.config.seed == 7 and model.config.item_input == "id" and model.config.hidden == 16
    knn = ItemKNN()
    assert not is_seeded(knn) and with_seed(knn, 7) is knn
