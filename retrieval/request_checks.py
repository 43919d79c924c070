"""What a request may hand the hybrid, checked before any scoring.

This module owns the checks on a request's inputs to
:meth:`retrieval.hybrid.HybridRecommender.recommend_batch`: a history over at most the current
catalogue, widened to all of it when it predates items added since (:func:`over_catalogue`), and
per-row text vectors (query or interest profile) of the catalogue's text dimension with finite
values (:func:`text_rows`). Each failure is a ``ValueError`` naming what was wrong.
"""

from __future__ import annotations

import numpy as np

from hyrec.data.splits import History


def over_catalogue(history: History, n_items: int) -> History:
    """``history`` over the whole current catalogue of ``n_items`` (it may predate added items)."""
    if history.n_items > n_items:
        raise ValueError(f"history is over {history.n_items} items; the catalogue has {n_items}")
    if history.n_items == n_items:
        return history
    return History(history.users, history.sequences, n_items)


def text_rows(
    vectors: np.ndarray, history: History, embeddings: np.ndarray | None, what: str
) -> np.ndarray:
    """``vectors`` as float32 (B, d) rows, one per history row, in the space of the item text
    ``embeddings``."""
    vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
    dim = None if embeddings is None else embeddings.shape[1]
    if dim is None:
        raise ValueError(f"{what} need a model fitted with item text embeddings")
    if vectors.shape != (len(history), dim):
        raise ValueError(
            f"{what} has shape {vectors.shape}; expected ({len(history)}, {dim}): one text "
            "vector per history row (a zero row for none)"
        )
    if not np.isfinite(vectors).all():
        raise ValueError(f"{what} holds NaN or infinite values")
    return vectors
