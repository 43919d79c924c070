"""Collaborative baselines behind the scorer protocol: popularity, item-kNN, ALS and BPR.

Item-kNN (Sarwar et al. 2001, cosine), ALS (Hu, Koren & Volinsky 2008) and BPR-MF (Rendle et al.
2009)
are the ``implicit`` library's CPU implementations; this module adapts them to
:class:`~encoders.base.Scorer`
(full-catalogue scores for a batch of histories, unknown users folded in from their history) and
saves
their learned arrays as ``.npz``.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Self

import numpy as np
from implicit.cpu.als import AlternatingLeastSquares
from implicit.cpu.bpr import BayesianPersonalizedRanking
from implicit.nearest_neighbours import CosineRecommender
from implicit.utils import ParameterWarning
from threadpoolctl import threadpool_limits

from hyrec.data.splits import History

from .base import (
    FitData,
    NotFittedError,
    known_users,
    load_arrays,
    load_csr,
    read_config,
    save_arrays,
    save_csr,
    write_config,
)
from .search_space import Float, Int, check_space

log = logging.getLogger(__name__)


class MostPopular:
    """Scores every item by how many training users interacted with it (the same list for
    everyone)."""

    kind: ClassVar[str] = "pop"

    def __init__(self) -> None:
        self.counts: np.ndarray | None = None

    def fit(self, data: FitData) -> Self:
        self.counts = data.item_popularity.astype(np.float32)
        return self

    def score(self, history: History) -> np.ndarray:
        if self.counts is None:
            raise NotFittedError("MostPopular.fit() first")
        return np.broadcast_to(self.counts, (len(history), len(self.counts))).copy()

    def save(self, path: Path) -> None:
        if self.counts is None:
            raise NotFittedError("MostPopular.fit() first")
        write_config(path, self.kind, {})
        save_arrays(path, counts=self.counts)

    @classmethod
    def load(cls, path: Path) -> Self:
        read_config(path, cls.kind)
        model = cls()
        model.counts = load_arrays(path)["counts"]
        return model


@dataclass(frozen=True)
class ItemKNNConfig:
    neighbours: int = (
        10  # chosen on ML-100K validation NDCG@10 (eval/results/ml-100k/tuning-itemknn.md)
    )


#: What ``hyrec tune`` searches (docs/tuning.md).
ITEMKNN_SPACE = check_space({"neighbours": Int(5, 400, log=True)}, ItemKNNConfig, ItemKNNConfig())


class ItemKNN:
    """Item-based kNN: score(u, i) = Σ_{j ∈ history(u)} cos(j, i), keeping each item's top-k
    neighbours.

    Works for any history, so unknown users need no special path.
    """

    kind: ClassVar[str] = "itemknn"

    def __init__(self, config: ItemKNNConfig | None = None) -> None:
        self.config = config or ItemKNNConfig()
        self.similarity = None

    def fit(self, data: FitData) -> Self:
        model = CosineRecommender(K=self.config.neighbours, num_threads=0)
        with (
            warnings.catch_warnings()
        ):  # implicit converts its own normalised copy to CSR and warns
            warnings.simplefilter("ignore", ParameterWarning)
            model.fit(data.matrix, show_progress=False)
        self.similarity = model.similarity.tocsr().astype(np.float32)
        return self

    def score(self, history: History) -> np.ndarray:
        if self.similarity is None:
            raise NotFittedError("ItemKNN.fit() first")
        return np.asarray((history.matrix @ self.similarity).todense(), dtype=np.float32)

    def save(self, path: Path) -> None:
        if self.similarity is None:
            raise NotFittedError("ItemKNN.fit() first")
        write_config(path, self.kind, self.config)
        save_arrays(path, **save_csr("similarity", self.similarity))

    @classmethod
    def load(cls, path: Path) -> Self:
        config, _ = read_config(path, cls.kind, ItemKNNConfig)
        model = cls(config)
        model.similarity = load_csr("similarity", load_arrays(path))
        return model


class _FactorModel:
    """Shared scoring and persistence for matrix-factorisation scorers: score = user · item
    factors."""

    kind: ClassVar[str]
    config_cls: ClassVar[type]

    def __init__(self, config=None) -> None:
        self.config = config or self.config_cls()
        self.user_factors: np.ndarray | None = None
        self.item_factors: np.ndarray | None = None

    def _fold_in(self, history: History) -> np.ndarray:
        """User factors for histories of users not seen in training."""
        raise NotImplementedError

    def user_vectors(self, history: History) -> np.ndarray:
        """(B, d) user factors (folded in for unknown users): score = user_vectors @ item_vectors.T
        (:class:`encoders.base.FactorScorer`, which large catalogues search with an ANN index)."""
        if self.user_factors is None or self.item_factors is None:
            raise NotFittedError(f"{type(self).__name__}.fit() first")
        known = known_users(history, len(self.user_factors))
        users = np.empty((len(history), self.item_factors.shape[1]), dtype=np.float32)
        users[known] = self.user_factors[history.users[known]]
        if not known.all():
            users[~known] = self._fold_in(history[~known])
        return users

    def item_vectors(self) -> np.ndarray:
        """(n_items, d) item factors."""
        if self.item_factors is None:
            raise NotFittedError(f"{type(self).__name__}.fit() first")
        return self.item_factors

    def score(self, history: History) -> np.ndarray:
        return self.user_vectors(history) @ self.item_factors.T

    def save(self, path: Path) -> None:
        if self.user_factors is None:
            raise NotFittedError(f"{type(self).__name__}.fit() first")
        write_config(path, self.kind, self.config)
        save_arrays(path, user_factors=self.user_factors, item_factors=self.item_factors)

    @classmethod
    def load(cls, path: Path) -> Self:
        config, _ = read_config(path, cls.kind, cls.config_cls)
        model = cls(config)
        arrays = load_arrays(path)
        model.user_factors, model.item_factors = arrays["user_factors"], arrays["item_factors"]
        return model


@dataclass(frozen=True)
class ALSConfig:
    factors: int = 32  # chosen on ML-100K validation NDCG@10 (eval/results/ml-100k/tuning-als.md)
    regularization: float = 0.05
    alpha: float = 1.0  # weight of an observed interaction in the confidence
    iterations: int = 15
    seed: int = 0


ALS_SPACE = check_space(
    {
        "factors": Int(16, 256, log=True),
        "regularization": Float(1e-3, 1.0, log=True),
        "alpha": Float(0.5, 20.0, log=True),
        "iterations": Int(5, 30),
    },
    ALSConfig,
    ALSConfig(),
)


class ALS(_FactorModel):
    """Weighted matrix factorisation for implicit feedback (implicit's ALS); unknown users are
    solved for
    from their history with the item factors fixed."""

    kind: ClassVar[str] = "als"
    config_cls: ClassVar[type] = ALSConfig

    def __init__(self, config: ALSConfig | None = None) -> None:
        super().__init__(config)
        self._fold_in_solver: AlternatingLeastSquares | None = None

    def _model(self) -> AlternatingLeastSquares:
        c = self.config
        return AlternatingLeastSquares(
            factors=c.factors,
            regularization=c.regularization,
            alpha=c.alpha,
            iterations=c.iterations,
            random_state=c.seed,
        )

    def fit(self, data: FitData) -> Self:
        with threadpool_limits(
            1, "blas"
        ):  # implicit's ALS runs its own threads; BLAS's would oversubscribe
            model = self._model()
            model.fit(data.matrix, show_progress=False)
        self.user_factors = np.asarray(model.user_factors, dtype=np.float32)
        self.item_factors = np.asarray(model.item_factors, dtype=np.float32)
        return self

    def _fold_in(self, history: History) -> np.ndarray:
        # implicit's least-squares solve for user vectors with the item factors fixed
        return self._solver().recalculate_user(np.arange(len(history)), history.matrix)

    def _solver(self) -> AlternatingLeastSquares:
        """The fold-in solver, built once per item factors: its Yᵀ·Y (n_items · d², what a
        solve costs most on a large catalogue) and the BLAS thread limit (threadpoolctl scans
        the loaded libraries, ~1.8 ms) were paid on every request when it was built per call.
        Two threads may both build it; either copy is the same."""
        solver = self._fold_in_solver
        if solver is None or solver.item_factors is not self.item_factors:
            solver = self._model()
            solver.item_factors = self.item_factors
            with threadpool_limits(1, "blas"):
                _ = solver.YtY  # computed now, read by every later solve
            self._fold_in_solver = solver
        return solver


@dataclass(frozen=True)
class BPRConfig:
    factors: int = 128  # chosen on ML-100K validation NDCG@10 (eval/results/ml-100k/tuning-bpr.md)
    learning_rate: float = 0.01
    regularization: float = 0.001
    iterations: int = 100  # more epochs overfit ML-100K at this learning rate
    seed: int = 0


BPR_SPACE = check_space(
    {
        "factors": Int(16, 256, log=True),
        "learning_rate": Float(1e-3, 5e-2, log=True),
        "regularization": Float(1e-4, 1e-1, log=True),
        "iterations": Int(20, 200),
    },
    BPRConfig,
    BPRConfig(),
)


class BPR(_FactorModel):
    """BPR-MF (implicit's SGD implementation, single-threaded so a seed gives one result); an
    unknown
    user's vector is the mean of their history's item factors."""

    kind: ClassVar[str] = "bpr"
    config_cls: ClassVar[type] = BPRConfig

    def fit(self, data: FitData) -> Self:
        c = self.config
        model = BayesianPersonalizedRanking(
            factors=c.factors,
            learning_rate=c.learning_rate,
            regularization=c.regularization,
            iterations=c.iterations,
            num_threads=1,
            random_state=c.seed,
        )
        model.fit(data.matrix, show_progress=False)
        self.user_factors = np.asarray(model.user_factors, dtype=np.float32)
        self.item_factors = np.asarray(model.item_factors, dtype=np.float32)
        return self

    def _fold_in(self, history: History) -> np.ndarray:
        out = np.zeros((len(history), self.item_factors.shape[1]), dtype=np.float32)
        for row, items in enumerate(history.sequences):
            if len(items):
                out[row] = self.item_factors[np.unique(items)].mean(axis=0)
        # implicit's BPR keeps an item bias in the last factor and a constant 1 in the user's
        out[:, -1] = 1.0
        return out
