"""The contract every scorer passes (a shared mixin, like implicit's and LensKit's ScorerTests).

A test class inherits :class:`ScorerContract`, sets :meth:`~ScorerContract.make` and declares what
kind of scorer it is; every check below then runs against it, fitted once per class on a
checkerboard whose right answer is known (``tests.conftest.checkerboard``): even users touch items
of block A (0-9), odd users items of block B (10-19), six each, so after leave-one-out the test
target is one of the five items left in the user's own block, and a scorer that ranks that block
first has hr@5 = 1. Item text embeddings are designed the same way: one direction per block plus a
little noise, so text scorers have the same known answer.

Declared properties:

* ``personalised``: must find the user's block (hr@5 >= 0.9); a non-personalised scorer must give
  every user the same row instead.
* ``candidate_only``: scores only its own candidates and gives −inf to every other item (the hybrid)
  instead of a finite score for the whole catalogue.
* ``seen``: ``"scored"`` (items in the history get a finite score like any other; the evaluation
  excludes them) or ``"excluded"`` (they score −inf and never come back).
* ``in_registry``: ``encoders.registry.load_scorer`` reopens it from its ``kind``.
* ``n_users``: the checkerboard's size (a model that learns only from co-occurrence may need more).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest

from encoders.base import FitData, NotFittedError, Scorer
from encoders.registry import load_scorer
from hyrec.data import History, Split, leave_one_out
from hyrec.metrics import evaluate, top_k
from tests.conftest import checkerboard

N_ITEMS = 20
BLOCK = N_ITEMS // 2
SEEN = ("scored", "excluded")


def block_embeddings(n_items: int = N_ITEMS, dim: int = 8, seed: int = 0) -> np.ndarray:
    """(n_items, dim) unit rows: block A along axis 0, block B along axis 1, plus 0.1 noise."""
    rng = np.random.default_rng(seed)
    v = np.zeros((n_items, dim), np.float32)
    v[: n_items // 2, 0] = 1.0
    v[n_items // 2 :, 1] = 1.0
    v += 0.1 * rng.normal(size=v.shape).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def block_of(item: np.ndarray | int) -> np.ndarray:
    return np.asarray(item) // BLOCK


class ScorerContract:
    """Subclasses set :meth:`make` (a new, unfitted scorer with a cheap config) and the declared
    properties (module doc); they inherit every check."""

    personalised: ClassVar[bool] = True
    candidate_only: ClassVar[bool] = False
    seen: ClassVar[str] = "scored"
    in_registry: ClassVar[bool] = True
    n_users: ClassVar[int] = 20

    def make(self) -> Scorer:
        raise NotImplementedError

    # ---- one fit per class (class-scoped fixtures are classmethods) ----------------------------
    @pytest.fixture(scope="class")
    @classmethod
    def split(cls) -> Split:
        return leave_one_out(checkerboard(n_users=cls.n_users, n_items=N_ITEMS))

    @pytest.fixture(scope="class")
    @classmethod
    def data(cls, split) -> FitData:
        return FitData(split.dataset, split.train, split.task("valid"), block_embeddings())

    @pytest.fixture(scope="class")
    @classmethod
    def fit_result(cls, data) -> tuple[Scorer, object]:
        model = cls().make()
        return model, model.fit(data)

    @pytest.fixture(scope="class")
    @classmethod
    def fitted(cls, fit_result) -> Scorer:
        return fit_result[0]

    @pytest.fixture(scope="class")
    @classmethod
    def history(cls, split) -> History:
        """The test users, plus two users the model never saw (index -1 and past the end)."""
        h = split.task("test").history
        users = np.concatenate([h.users, [-1, cls.n_users + 5]])
        extra = (np.array([0, 1, 2], np.int32), np.array([12, 15], np.int32))
        return History(users, h.sequences + extra, h.n_items)

    def check_values(self, scores: np.ndarray, history: History) -> None:
        """The scores of ``history``: (B, n_items) float32, finite where the scorer says so."""
        assert scores.shape == (len(history), history.n_items)
        assert scores.dtype == np.float32
        if not self.candidate_only:
            assert np.isfinite(scores).all()
            return
        assert not np.isnan(scores).any() and not (scores == np.inf).any()
        for row, seq in enumerate(history.sequences):
            unseen = N_ITEMS - len(np.unique(seq))
            assert np.isfinite(scores[row]).sum() >= min(5, unseen), "too few candidates"

    # ---- the checks ------------------------------------------------------------------------------
    def test_declared_properties_are_known(self):
        assert self.seen in SEEN, f"seen must be one of {SEEN}"

    def test_fit_returns_the_fitted_scorer(self, fit_result):
        model, returned = fit_result
        assert returned is model
        assert isinstance(model, Scorer)
        assert isinstance(type(model).kind, str) and type(model).kind

    def test_scores_one_row_per_user_one_column_per_item(self, fitted, history):
        scores = fitted.score(history)
        self.check_values(scores, history)
        np.testing.assert_array_equal(fitted.score(history), scores)  # scoring changes nothing

    def test_seen_items_are_handled_as_declared(self, fitted, history):
        scores = fitted.score(history)
        for row, seq in enumerate(history.sequences):
            if self.seen == "excluded":
                assert (scores[row, seq] == -np.inf).all(), f"row {row} scores a seen item"
            else:
                assert np.isfinite(scores[row, seq]).all(), f"row {row}: a seen item is not scored"

    def test_save_load_gives_identical_scores(self, fitted, history, tmp_path):
        fitted.save(tmp_path / "model")
        loaded = type(fitted).load(tmp_path / "model")
        np.testing.assert_array_equal(loaded.score(history), fitted.score(history))
        if self.in_registry:
            again = load_scorer(tmp_path / "model")
            assert type(again) is type(fitted)
            np.testing.assert_array_equal(again.score(history), fitted.score(history))

    def test_known_answer_on_the_checkerboard(self, fitted, split):
        task = split.task("test")
        scores = fitted.score(task.history)
        if not self.personalised:  # the same list for everyone, whatever their history
            assert (scores == scores[:1]).all()
            return
        result = evaluate(fitted.score, task, ks=(5,))
        assert result["hr@5"] >= 0.9, result  # the target is 1 of 5 unseen items of the block
        top = top_k(scores, 5, exclude=task.history.matrix)
        own = np.array([block_of(seq[0]) for seq in task.history.sequences])[:, None]
        assert (block_of(top) == own).mean() >= 0.9, "the other block takes top-5 places"

    @pytest.mark.parametrize("block", [0, 1])
    @pytest.mark.parametrize("who", ["cold", "past-the-end"])
    def test_unknown_user_is_scored_from_history(self, fitted, split, block, who):
        items = np.arange(4) + block * BLOCK
        user = -1 if who == "cold" else self.n_users + 5
        history = History.of_items(items, N_ITEMS, user=user)
        scores = fitted.score(history)
        self.check_values(scores, history)
        if not self.personalised:
            np.testing.assert_array_equal(scores[0], fitted.score(split.task("test").history)[0])
            return
        rest = np.setdiff1d(np.arange(N_ITEMS), items)
        best = rest[np.argsort(-scores[0, rest], kind="stable")[:3]]
        assert (block_of(best) == block).all(), f"history in block {block}, best {best}"

    def test_unfitted_scorer_raises_not_fitted(self, tmp_path):
        with pytest.raises(NotFittedError):
            self.make().score(History.of_items([0, 1], N_ITEMS))
        with pytest.raises(NotFittedError):
            self.make().save(tmp_path / "unfitted")
