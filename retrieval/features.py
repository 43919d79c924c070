"""Per (user, candidate) features for the ranking head.

For every component scorer: its raw score, the score standardised over the user's unseen items, and
log(1 + rank) in that scorer's full-catalogue ranking — so the head can mix scores on different
scales.
Then item facts (log popularity, days since the item was last consumed, release year), the user's
history
length, the cosine to the user's most recent item, which candidate sources proposed the item, and —
when
LLM interest profiles are available — the cosine between the profile embedding and the item.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from hyrec.data.splits import History

from .items import ItemList


@dataclass(frozen=True, eq=False)
class ItemFacts:
    """Catalogue-side inputs to the features, computed once at fit time."""

    popularity: np.ndarray  # (n_items,) training users per item
    days_since_last: (
        np.ndarray
    )  # (n_items,) days between the item's last training event and the end
    year: np.ndarray  # (n_items,) release year, NaN when unknown
    embeddings: np.ndarray | None  # (n_items, d) unit-norm text embeddings


def feature_names(
    components: Sequence[str], sources: Sequence[str], *, with_text: bool, with_profile: bool
) -> list[str]:
    names = []
    for c in components:
        names += [f"{c}:score", f"{c}:z", f"{c}:log_rank"]
    names += ["log_popularity", "log_days_since_last", "year", "log_history_len"]
    if with_text:
        names.append("last_item_cosine")
    if with_profile:
        names.append("profile_cosine")
    names += [f"from:{s}" for s in sources]
    return names


def ranks_of(scores: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """(B, n) 0-based rank of every item in each row's descending order, seen items ranked last."""
    s = np.where(seen, -np.inf, scores)
    order = np.argsort(-s, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(s.shape[1])[None, :], axis=1)
    return ranks


def build_features(
    history: History,
    candidates: Sequence[ItemList],
    scores: Mapping[str, np.ndarray],
    facts: ItemFacts,
    sources: Sequence[str],
    profile_vectors: np.ndarray | None = None,
) -> list[np.ndarray]:
    """One (n_candidates, n_features) float32 matrix per user, columns in :func:`feature_names`
    order."""
    seen = history.matrix.toarray().astype(bool)
    per_component = []
    for s in scores.values():
        masked = np.where(seen, np.nan, s)
        mean = np.nanmean(masked, axis=1, keepdims=True)
        std = np.nanstd(masked, axis=1, keepdims=True) + 1e-6
        per_component.append((s, (s - mean) / std, np.log1p(ranks_of(s, seen))))
    item_cols = np.stack(
        [np.log1p(facts.popularity), np.log1p(facts.days_since_last), facts.year], axis=1
    ).astype(np.float32)
    out = []
    for row, cand in enumerate(candidates):
        idx = cand.items
        cols = []
        for raw, z, log_rank in per_component:
            cols += [raw[row, idx], z[row, idx], log_rank[row, idx]]
        cols += list(item_cols[idx].T)
        cols.append(np.full(len(idx), np.log1p(len(history.sequences[row]))))
        if facts.embeddings is not None:
            seq = history.sequences[row]
            last = facts.embeddings[seq[-1]] if len(seq) else np.zeros(facts.embeddings.shape[1])
            cols.append(facts.embeddings[idx] @ last)
        if profile_vectors is not None:
            cols.append(facts.embeddings[idx] @ profile_vectors[row])
        cols += [cand.sources[s].astype(np.float32) for s in sources]
        out.append(np.stack(cols, axis=1).astype(np.float32))
    return out
