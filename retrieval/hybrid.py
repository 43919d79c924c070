"""The hybrid recommender: component scorers → tagged candidates → features → learned ranking head.

Ranking is plain composition (:meth:`HybridRecommender.recommend_batch`)::

    history → score (every component) → candidates (retrieval.candidates) → features
            → ranking head → query blend → top-k

This module owns the recommender object and its request path: every component's scores, the
candidates and features (exact below ``HybridConfig.ann_min_items``, candidate-only views above
it), the head, the cold-start fallback and the query blend. The rest is one hop away: the settings
are :mod:`retrieval.hybrid_config` (re-exported here); fitting, with the head's training split, is
:mod:`retrieval.hybrid_fit`; the checks on a request's inputs are :mod:`retrieval.request_checks`;
items like one item are :mod:`retrieval.similar_items`; growing the catalogue is
:mod:`retrieval.catalogue_growth`; the folder on disk is :mod:`retrieval.saved`.

A request may carry a query vector (a text embedding of "funny sci-fi for tonight"): its nearest
items join the candidates as source ``"query"``, and the final score of each candidate is

    z(head score) + query_weight · z(cos(query, item))

with z standardising over the user's candidates, so ``query_weight`` = 1 weighs the query as much
as the whole history. Rows with a zero query vector, and every row when none is given, keep the
head's order. A row with an empty history (cold start) is ranked by popularity, since the head
never learned from such rows; its candidates are the popular items and the query's neighbours, and
the query blend re-orders them.

A head fitted with interest profiles (``fit(..., profiles=fn)``) has a ``profile_cosine`` feature;
at serving time the caller passes each row's profile vector (``profile_vectors``). Re-ranking and
everything else that needs an LLM happens above this module (:mod:`agent.pipeline`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from encoders.base import FitData, NotFittedError
from hyrec.data import Dataset, EvalTask, Item
from hyrec.data.splits import History, inner_split  # noqa: F401 (re-exported)
from retrieval import catalogue_growth, hybrid_fit, similar_items
from retrieval.candidates import candidates, candidates_from_views
from retrieval.features import ItemFacts, RowScores, build_features, build_features_from_views
from retrieval.filters import CatalogueIndex, Filter
from retrieval.hybrid_config import HEAD_SEARCH_SPACE, HybridConfig  # noqa: F401 (re-exported)
from retrieval.hybrid_fit import ProfileFn
from retrieval.items import Catalogue, ItemList
from retrieval.ranker import Groups, Ranker
from retrieval.request_checks import over_catalogue, text_rows
from retrieval.store import ItemStore
from retrieval.views import ConstantScores, FactorSpace, component_views, factor_spaces


def zscore(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / (x.std() + 1e-6) if len(x) else x


class HybridRecommender:
    """Fuses every component's score with a learned head; also a Scorer, so ``hyrec eval`` can rank
    it.

    Attributes:
        uses_profile: Whether the head has the ``profile_cosine`` feature (fitted with
            ``profiles=``); then :meth:`recommend_batch` takes ``profile_vectors``.
    """

    kind: ClassVar[str] = "hybrid"

    def __init__(self, config: HybridConfig | None = None, store_path: Path | None = None) -> None:
        self.config = config or HybridConfig()
        self.store_path = store_path
        self.components: dict[str, Any] = {}
        self.native_items: dict[str, int] = {}  # items each component knows (add_items pads)
        self.ranker: Ranker | None = None
        self.store: ItemStore | None = None
        self.facts: ItemFacts | None = None
        self.dataset: Dataset | None = None
        self.fit_report: dict[str, Any] = {}
        self.uses_profile = False
        self._tmp: tempfile.TemporaryDirectory | None = None

    # ---- fitting (retrieval.hybrid_fit) --------------------------------------------------------
    def _fit_components(
        self, data: FitData, fitted: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        return hybrid_fit.fit_components(self, data, fitted)

    def fit(
        self,
        data: FitData,
        profiles: ProfileFn | None = None,
        fitted: Mapping[str, Any] | None = None,
    ) -> Self:
        """Fit the components on the inner split, then the head (module doc).

        Args:
            data: Catalogue, training interactions, validation task, item text vectors.
            profiles: Optional: (B, d) interest-profile vectors of a batch of histories; the head
                then gets the ``profile_cosine`` feature. Head-training profiles are computed
                from the inner histories, which never contain the item the head learns to find.
            fitted: Optional: components already fitted on ``data``'s inner split with this
                config's settings (a tuner's head trials reuse them); the others are fitted.
        """
        return hybrid_fit.fit(self, data, profiles, fitted)

    def _groups(
        self,
        task: EvalTask,
        profile_fn: ProfileFn | None,
        stage: str = "lists",
        label: str = "candidate lists",
    ) -> tuple[Groups, Groups]:
        """The head's lists of ``task`` (:func:`retrieval.hybrid_fit.candidate_groups`)."""
        return hybrid_fit.candidate_groups(self, task, profile_fn, stage, label)

    def _stage_seconds(self, stage: str, since: float) -> None:
        """Record a fit stage's wall seconds in ``fit_report["stage_seconds"]``."""
        hybrid_fit.stage_seconds(self, stage, since)

    def _build_spaces(self) -> None:
        """ANN indexes over each dot-product component's item vectors (large catalogues only)."""
        hybrid_fit.build_spaces(self)

    def _open_store(self, embeddings: np.ndarray | None) -> None:
        hybrid_fit.open_store(self, embeddings)

    # ---- the recommendation path --------------------------------------------------------------
    def recommend_batch(
        self,
        history: History,
        k: int = 10,
        filter: Filter | None = None,
        *,
        query_vectors: np.ndarray | None = None,
        profile_vectors: np.ndarray | None = None,
    ) -> list[ItemList]:
        """Top-k per row: score → candidates → features → head → query blend → top-k.

        Args:
            history: The users (-1 for cold start) and their time-ordered item indices.
            k: List length.
            filter: Genre/year constraints and ids never to return.
            query_vectors: (B, d) unit-norm text vectors of each row's request; zero rows = none.
            profile_vectors: (B, d) interest-profile embeddings, for a head fitted with profiles
                (zero vectors when none are given: no profile signal).
        """
        if self.ranker is None:
            raise NotFittedError("HybridRecommender.fit() first")
        history = self._widened(history)
        queries = self._check_rows(query_vectors, history, "query_vectors")
        profiles = self._profiles(history, profile_vectors)
        allowed = None if filter is None else self.index.allowed(filter)
        cands, feats = self._candidates_and_features(history, profiles, allowed, filter, queries)
        fused = [
            c.rescored(self._head_scores(c, f, seq)) if len(c) else c
            for c, f, seq in zip(cands, feats, history.sequences, strict=True)
        ]
        if queries is not None:
            fused = [self._blend_query(c, q) for c, q in zip(fused, queries, strict=True)]
        return [f.top(k) for f in fused]

    def _candidates_and_features(
        self,
        history: History,
        profiles: np.ndarray | None,
        allowed: np.ndarray | None = None,
        filter: Filter | None = None,
        queries: np.ndarray | None = None,
    ) -> tuple[list[ItemList], list[np.ndarray]]:
        """Each row's candidates and their feature matrix: from (B, n_items) scores below
        ``ann_min_items``, from candidate-only views above it (:mod:`retrieval.candidates`)."""
        if not self._large:
            scores = self._component_scores(history)
            cands = self.candidates(history, scores, allowed, filter, queries)
            return cands, build_features(
                history, cands, scores, self.facts, self._sources, profiles
            )
        views = self._views(history)
        semantic = self._spaces.get("semantic") or self._spaces.get("query")
        cands = candidates_from_views(
            history,
            views,
            config=self.config,
            facts=self.facts,
            catalogue=self.view,
            popular=self._popular,
            query_index=None if semantic is None else semantic.index,
            allowed=allowed,
            queries=queries,
        )
        return cands, build_features_from_views(
            history, cands, views, self.facts, self._sources, profiles
        )

    @property
    def _large(self) -> bool:
        return self.dataset is not None and self.dataset.n_items >= self.config.ann_min_items

    @cached_property
    def _spaces(self) -> dict[str, FactorSpace]:
        """Component name → its :class:`FactorSpace` (and ``"query"`` for request text when no
        semantic component has one); built once per fit, or on first use after loading."""
        return factor_spaces(self.components, None if self.facts is None else self.facts.embeddings)

    def _views(self, history: History) -> dict[str, RowScores]:
        """Each component's candidate-only view of this batch's scores."""
        return component_views(
            history, self.components, self.native_items, self._spaces, self._constant
        )

    def _constant(self, key: str, scores: np.ndarray) -> ConstantScores:
        """A cached :class:`ConstantScores` of ``scores`` (rebuilt when the array changes)."""
        cache = self.__dict__.setdefault("_constants", {})
        if key not in cache or cache[key][0] is not scores:
            cache[key] = (scores, ConstantScores(scores))
        return cache[key][1]

    @property
    def _popular(self) -> ConstantScores:
        return self._constant("facts:popularity", self.facts.popularity)

    def _head_scores(self, cands: ItemList, features: np.ndarray, sequence: np.ndarray):
        """The head's scores; a row with no history (cold start) is outside what the head learned
        from, so its candidates are ordered by popularity instead (a query still re-orders them)."""
        if len(sequence):
            return self.ranker.predict(features)
        return np.log1p(self.facts.popularity[cands.items]).astype(np.float32)

    def _component_scores(self, history: History) -> dict[str, np.ndarray]:
        """(B, n_items) float32 per component (see :meth:`_score_with`)."""
        return {name: self._score_with(name, history) for name in self.components}

    def _score_with(self, name: str, history: History) -> np.ndarray:
        """(B, n_items) float32 scores of one component; items it does not know get the row mean
        of its scores (a neutral value: z = 0, a middling rank)."""
        scorer = self.components[name]
        known = self.native_items.get(name, history.n_items)
        if known >= history.n_items:
            return np.asarray(scorer.score(history), dtype=np.float32)
        seqs = tuple(s[s < known] for s in history.sequences)
        s = np.asarray(scorer.score(History(history.users, seqs, known)), dtype=np.float32)
        pad = np.repeat(s.mean(axis=1, keepdims=True), history.n_items - known, axis=1)
        return np.hstack([s, pad])

    def candidates(
        self,
        history: History,
        scores: dict[str, np.ndarray],
        allowed: np.ndarray | None = None,
        filter: Filter | None = None,
        queries: np.ndarray | None = None,
    ) -> list[ItemList]:
        """Per row, the tagged union of every source's proposals (:mod:`retrieval.candidates`)."""
        ann = self.store is not None and self.dataset.n_items >= self.config.ann_min_items
        recent = None
        if ann and "semantic" in scores:
            recent = self.components["semantic"].query_vectors(history)
        return candidates(
            history,
            scores,
            config=self.config,
            facts=self.facts,
            catalogue=self.view,
            store=self.store,
            item_ids=self.dataset.item_ids,
            item_index=self.dataset.item_index,
            ann=ann,
            recent=recent,
            allowed=allowed,
            filter=filter,
            queries=queries,
        )

    def _blend_query(self, lst: ItemList, query: np.ndarray) -> ItemList:
        if not query.any() or not len(lst):
            return lst
        blended = zscore(lst.scores) + self.config.query_weight * zscore(lst.columns["query"])
        return lst.rescored(blended)

    @property
    def _sources(self) -> list[str]:
        """Candidate sources the head sees as ``from:`` features ("query" is not one of them)."""
        return list(self.config.sources) + (["semantic"] if "semantic" in self.components else [])

    def _widened(self, history: History) -> History:
        """``history`` over the whole current catalogue (it may predate :meth:`add_items`)."""
        return over_catalogue(history, self.dataset.n_items)

    def _check_rows(self, vectors: np.ndarray | None, history: History, what: str):
        if vectors is None:
            return None
        return text_rows(vectors, history, self.facts.embeddings, what)

    def _profiles(self, history: History, given: np.ndarray | None) -> np.ndarray | None:
        if not self.uses_profile:
            return None
        if given is None:
            return np.zeros((len(history), self.facts.embeddings.shape[1]), np.float32)
        return self._check_rows(given, history, "profile_vectors")

    def score(self, history: History) -> np.ndarray:
        """(B, n_items): head scores on each user's candidates, −inf elsewhere (for the harness)."""
        if self.ranker is None:
            raise NotFittedError("HybridRecommender.fit() first")
        out = np.full((len(history), self.dataset.n_items), -np.inf, dtype=np.float32)
        for row, lst in enumerate(self.recommend_batch(history, k=self.dataset.n_items)):
            out[row, lst.items] = lst.scores
        return out

    @cached_property
    def index(self) -> CatalogueIndex:
        """Genre masks and years for filters (rebuilt when the catalogue grows)."""
        return CatalogueIndex(self.dataset.items)

    @cached_property
    def view(self) -> Catalogue:
        """The catalogue every returned :class:`ItemList` points into."""
        return Catalogue(self.dataset.items, None if self.facts is None else self.facts.embeddings)

    def _forget_views(self) -> None:
        self.__dict__.pop("index", None)
        self.__dict__.pop("view", None)

    # ---- item-to-item and catalogue growth -----------------------------------------------------
    def similar(self, item_index: int, k: int = 10, filter: Filter | None = None) -> ItemList:
        """Items like one item: z(text cosine) + z(collaborative score), each over the allowed
        catalogue. The collaborative score is the first of itemknn, als, lightgcn, sasrec given a
        one-item history; items it does not know score neutral, so new items rank by text."""
        return similar_items.similar(self, item_index, k, filter)

    def add_items(self, items: Sequence[Item], embeddings: np.ndarray) -> int:
        """Grow the catalogue with items known only by their text; no retraining.

        Text-based components score them (the semantic scorer from its cosine, SASRec through its
        text projection); the others give them a neutral score. Only the new vectors are written to
        the item store. Returns how many items were added.

        Raises:
            ValueError: an id already in the catalogue or repeated, a vector count or dimension
                that does not match, or a NaN/zero vector; nothing changes then.
        """
        return catalogue_growth.add_items(self, items, embeddings)

    # ---- persistence (retrieval.saved) ---------------------------------------------------------
    def save(self, path: Path) -> None:
        from retrieval.saved import save_hybrid

        save_hybrid(self, Path(path))

    @classmethod
    def load(cls, path: Path, dataset: Dataset | None = None) -> Self:
        """Reopen a saved hybrid (its catalogue and histories come from the saved snapshot)."""
        from retrieval.saved import load_hybrid

        return load_hybrid(cls, Path(path), dataset)
