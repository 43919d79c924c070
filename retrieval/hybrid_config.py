"""The hybrid's settings: which components it fuses, how deep each candidate source goes, when the
large-catalogue path takes over, how the head is chosen, and what ``hyrec tune`` searches.

This module owns :class:`HybridConfig` (checked when built, before any training) and
:data:`HEAD_SEARCH_SPACE`. The recommender they configure is :mod:`retrieval.hybrid`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from encoders.registry import SCORERS, make_scorer
from encoders.search_space import Categorical, Int, check_space
from retrieval.candidates import Depth, candidate_depth
from retrieval.ranker import RANKERS, make_ranker


@dataclass(frozen=True)
class HybridConfig:
    # Defaults chosen on ML-100K validation NDCG@10 (eval/results/ml-100k/hybrid-experiments.md).
    components: tuple[str, ...] = ("sasrec", "lightgcn", "als", "itemknn", "semantic", "pop")
    sources: tuple[str, ...] = ("sasrec", "lightgcn", "als", "itemknn", "pop")  # top-N of each
    # Candidate depth: None follows the catalogue size, ⌈√n_items⌉ clipped to [50, 150] (50 up to
    # 2,500 items, so ML-100K keeps 50; 100 at 10⁴; 150 from 22,500 up; candidate_depth in
    # retrieval.candidates, docs/scaling.md). On ML-100K 100 per source raised recall, not NDCG@10.
    per_source: int | None = None  # candidates per source
    neighbours: int | None = None  # text neighbours of the user's recent items (source "semantic")
    query_neighbours: int | None = None  # text neighbours of a query vector (source "query")
    query_weight: float = 1.0  # final = z(head) + query_weight · z(query cosine); retrieval.hybrid
    # From this catalogue size up no (users × items) score matrix is built: dot-product components
    # propose from faiss IVF indexes and every feature is computed on the candidates only
    # (retrieval.candidates, retrieval.views; docs/scaling.md). Below it exact scoring is
    # cheaper: 10k items served at p99 ~12 ms exactly (eval/results/serving.md).
    ann_min_items: int = 50_000
    # Users whose lists train the head, and validation users the components early-stop on and the
    # head is chosen on: a seeded sample of at most this many each (ML-100K's 943 are all kept).
    # Both costs grow with users × catalogue, so past this the fit stops growing with users.
    head_users: int = 5_000
    valid_users: int = 2_000
    # Sync the chromadb item store at fit (Recommender.search and the saved model read it). Its
    # HNSW inserts run at ~800 items/s on 2 cores, the fit's largest cost past ~10⁵ items; no
    # candidate path reads it (they use exact scores or the faiss indexes).
    item_store: bool = True
    ranker: str = "auto"  # "lightgbm", "mlp", or "auto": the better validation NDCG@10
    # per head kind, fields of its config to change, e.g. {"mlp": {"members": 1}}
    ranker_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    seed: int = 0  # every seeded component and the ranking head train from this seed
    # per component, fields of its config to change, e.g. {"als": {"factors": 32}} (JSON data, so
    # it is saved with the model and a tuner can write it)
    params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Fail before any training, naming the bad value."""
        unknown = [c for c in self.components if c not in SCORERS]
        if unknown:
            raise ValueError(
                f"HybridConfig.components: unknown {unknown}; known: {sorted(SCORERS)}"
            )
        stray = [s for s in self.sources if s not in self.components or s in ("semantic", "query")]
        if stray:
            raise ValueError(
                f"HybridConfig.sources {stray} must be components other than 'semantic' (its "
                "neighbours are added by `neighbours`) and 'query'"
            )
        if self.ranker != "auto" and self.ranker not in RANKERS:
            raise ValueError(
                f"HybridConfig.ranker {self.ranker!r}: use 'auto' or one of {list(RANKERS)}"
            )
        stray = sorted(set(self.params) - set(self.components))
        if stray:
            raise ValueError(f"HybridConfig.params names {stray}, which are not components")
        for name, params in self.params.items():
            try:
                make_scorer(name, params)
            except (TypeError, ValueError) as e:
                raise ValueError(f"HybridConfig.params[{name!r}]: {e}") from None
        for kind, params in self.ranker_params.items():
            try:
                make_ranker(kind, params)
            except ValueError as e:
                raise ValueError(f"HybridConfig.ranker_params[{kind!r}]: {e}") from None

    def depth(self, n_items: int) -> Depth:
        """Candidates per source, semantic and query neighbours for a catalogue of ``n_items``."""
        return candidate_depth(n_items, self.per_source, self.neighbours, self.query_neighbours)


#: What ``hyrec tune`` searches for the head (docs/tuning.md); components have their own spaces.
HEAD_SEARCH_SPACE = check_space(
    {
        "per_source": Int(20, 150, step=10),
        "neighbours": Int(10, 100, step=10),
        "ranker": Categorical(("lightgbm", "mlp")),  # "auto" would fit both per trial
    },
    HybridConfig,
)
