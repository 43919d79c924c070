"""The semantic scorer (kind ``"semantic"``): cosine between each item's text vector and a
recency-weighted mean of the vectors of the user's latest items (the vectors come from
:class:`encoders.text.TextEncoder`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Self

import numpy as np

from encoders.base import (
    FitData,
    NotFittedError,
    load_arrays,
    read_config,
    save_arrays,
    unit_rows,
    write_config,
)
from hyrec.data.splits import History


@dataclass(frozen=True)
class SemanticConfig:
    recent: int = 20  # the user's latest items that make the query; older tastes fade out
    decay: float = 0.9  # weight of an item k steps before the latest is decay**k


class SemanticScorer:
    """score(u, i) = cos(q_u, e_i), q_u = Σ_k decay^k e_{h_k} over the user's ``recent`` latest
    items h_0 (latest), h_1, ... (a recency-weighted mean; the scale does not matter to a cosine).

    Needs ``FitData.item_embeddings`` (from :meth:`TextEncoder.encode_items` over the catalogue).
    Works from the history alone, so unknown users need no special path; an empty history scores all
    zeros.
    """

    kind: ClassVar[str] = "semantic"

    def __init__(self, config: SemanticConfig | None = None) -> None:
        self.config = config or SemanticConfig()
        if self.config.recent < 1:
            raise ValueError(f"recent must be at least 1, got {self.config.recent}")
        if not 0 < self.config.decay <= 1:
            raise ValueError(f"decay must be in (0, 1], got {self.config.decay}")
        self.item_embeddings: np.ndarray | None = None  # (n_items, d) unit norm

    def fit(self, data: FitData) -> Self:
        emb = data.item_embeddings
        if emb is None:
            raise ValueError(
                "SemanticScorer needs item embeddings: encode the catalogue first, e.g. "
                "FitData(..., item_embeddings=TextEncoder().encode_items(dataset.items))"
            )
        if emb.ndim != 2 or len(emb) != data.n_items:
            raise ValueError(
                f"item_embeddings has shape {emb.shape}; expected ({data.n_items}, dim), "
                "one row per item"
            )
        self.item_embeddings = unit_rows(emb)
        return self

    def query_vectors(self, history: History) -> np.ndarray:
        """(B, d) unit-norm query vectors (zero rows for empty histories)."""
        if self.item_embeddings is None:
            raise NotFittedError("SemanticScorer.fit() first")
        return unit_rows(self._recent_sum(history))

    def user_vectors(self, history: History) -> np.ndarray:
        """The query vectors (:class:`encoders.base.FactorScorer`: score = these @ items.T)."""
        return self.query_vectors(history)

    def item_vectors(self) -> np.ndarray:
        """(n_items, d) unit-norm item text vectors."""
        if self.item_embeddings is None:
            raise NotFittedError("SemanticScorer.fit() first")
        return self.item_embeddings

    def score(self, history: History) -> np.ndarray:
        """(B, n_items) float32 cosine between each user's query vector and every item."""
        return self.query_vectors(history) @ self.item_embeddings.T

    def _recent_sum(self, history: History) -> np.ndarray:
        """(B, d) recency-weighted sum of each user's recent item vectors; an item seen twice in
        the window counts twice. Row by row: a sparse (B, n_items) weight matrix cost 0.45 ms
        to build for one request on a 10⁵-item catalogue."""
        emb = self.item_embeddings
        out = np.zeros((len(history), emb.shape[1]), np.float32)
        for row, seq in enumerate(history.sequences):
            recent = np.asarray(seq[-self.config.recent :][::-1], dtype=np.int64)  # latest first
            recent = recent[(recent >= 0) & (recent < len(emb))]
            weights = self.config.decay ** np.arange(len(recent), dtype=np.float32)
            out[row] = weights @ emb[recent]
        return out

    def save(self, path: Path) -> None:
        if self.item_embeddings is None:
            raise NotFittedError("SemanticScorer.fit() first")
        write_config(path, self.kind, self.config)
        save_arrays(path, item_embeddings=self.item_embeddings)

    @classmethod
    def load(cls, path: Path) -> Self:
        config, _ = read_config(path, cls.kind, SemanticConfig)
        model = cls(config)
        model.item_embeddings = load_arrays(path)["item_embeddings"]
        return model
