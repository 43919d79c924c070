"""The hybrid recommender: component scorers → tagged candidates → features → learned ranking head.

Ranking is plain composition (:meth:`HybridRecommender.recommend_batch`)::

    history → score (every component) → candidates (retrieval.candidates) → features
            → ranking head → query blend → top-k

Training the head never touches validation or test *targets*: each user's last training event is
held out, the components are fitted on the rest, and the head learns to find that held-out item
among the candidates ("inner" split). Validation only early-stops the head and picks LightGBM or
the MLP. The head then serves on those same components: the features are scale-free
(standardised scores and ranks), so refitting the components on the whole training split changed
validation NDCG@10 by less than its noise while doubling the fit time
(``eval/results/ml-100k/hybrid-experiments.md``).

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

import logging
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from encoders.base import FitData, NotFittedError, factor_vectors, unit_rows, with_seed
from encoders.registry import SCORERS, TEXT_SCORERS, make_scorer
from encoders.search_space import Categorical, Int, check_space
from encoders.semantic import SemanticScorer
from hyrec.data import Dataset, EvalTask, Item, interaction_matrix
from hyrec.data.splits import History, inner_split
from hyrec.metrics import evaluate
from retrieval.candidates import (
    ConstantScores,
    Depth,
    FactorSpace,
    SparseScores,
    candidate_depth,
    candidates,
    candidates_from_views,
    top_unblocked,
)
from retrieval.features import (
    ItemFacts,
    RowScores,
    build_features,
    build_features_from_views,
    item_facts,
    sample_rows,
    sample_task,
)
from retrieval.filters import CatalogueIndex, Filter, item_year
from retrieval.items import Catalogue, ItemList
from retrieval.ranker import RANKERS, Groups, Ranker, choose_ranker, make_ranker
from retrieval.store import ItemStore, StoreConfig

log = logging.getLogger(__name__)

#: Interest-profile embeddings of a batch of histories: (B, d) unit-norm, zero rows for "none".
ProfileFn = Callable[[History], np.ndarray]


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
    query_weight: float = 1.0  # final = z(head) + query_weight · z(query cosine); see module doc
    # From this catalogue size up no (users × items) score matrix is built: dot-product components
    # propose from faiss IVF indexes and every feature is computed on the candidates only
    # (retrieval.candidates, "large catalogues"; docs/scaling.md). Below it exact scoring is
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


def _progress(stage: str, **info: Any) -> dict[str, Any]:
    """A log record's ``extra`` carrying fit progress (read by ``agent.cli.progress``)."""
    return {"progress": {"stage": stage, **{k: v for k, v in info.items() if v is not None}}}


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

    # ---- fitting ------------------------------------------------------------------------------
    def _fit_components(
        self, data: FitData, fitted: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        out = {}
        names = self.config.components
        for n, name in enumerate(names, 1):
            if fitted is not None and name in fitted:  # already fitted on this inner split
                out[name] = fitted[name]
                continue
            t0 = time.perf_counter()
            scorer = with_seed(make_scorer(name, self.config.params.get(name)), self.config.seed)
            stage = getattr(scorer, "kind", name)  # the scorer's own progress records use its kind
            epochs = getattr(getattr(scorer, "config", None), "max_epochs", None)
            log.info(
                "fitting component %s (%d/%d)",
                name,
                n,
                len(names),
                extra=_progress(
                    stage,
                    label=f"component {n}/{len(names)}: {name}"
                    + (f", up to {epochs} epochs" if epochs else ""),
                    total=epochs,
                ),
            )
            out[name] = scorer.fit(data)
            seconds = round(time.perf_counter() - t0, 2)
            self.fit_report.setdefault("component_seconds", {})[name] = seconds
            # progress report only: each component alone on the validation task the fit early-stops
            # on, so the summary can show what the hybrid adds (the model does not use it)
            valid = None
            if data.valid is not None:
                valid = round(evaluate(scorer.score, data.valid, ks=(10,))["ndcg@10"], 4)
                self.fit_report.setdefault("component_valid_ndcg@10", {})[name] = valid
            log.info(
                "component %s fitted in %.1f s (valid ndcg@10 %s)",
                name,
                seconds,
                valid,
                extra=_progress(stage, valid=valid, done=True, seconds=seconds),
            )
        self.native_items = {name: data.n_items for name in out}
        return out

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
        needs_text = TEXT_SCORERS.intersection(self.config.components)
        if needs_text and data.item_embeddings is None:
            raise ValueError(f"components {sorted(needs_text)} need FitData.item_embeddings")
        if profiles is not None and data.item_embeddings is None:
            raise ValueError("profiles need FitData.item_embeddings (profiles are text vectors)")
        self.dataset = data.dataset
        self.uses_profile = profiles is not None
        self._forget_views()
        self._open_store(data.item_embeddings)
        t0 = time.perf_counter()
        inner_train, held = inner_split(data.train)
        seed = self.config.seed
        valid_task = sample_task(data.valid, self.config.valid_users, seed)
        inner = FitData(data.dataset, inner_train, valid_task, data.item_embeddings)
        self.components = self._fit_components(inner, fitted)
        self.facts = item_facts(data.dataset, inner_train, data.item_embeddings)
        self._build_spaces()
        users = sample_rows(held.user.astype(np.int64), self.config.head_users, seed)
        history = History.from_interactions(inner_train, users, data.n_items, n_users=data.n_users)
        targets = interaction_matrix(held, data.n_users, data.n_items)[users]
        x, y = self._groups(
            EvalTask(history, targets), profiles, "train-lists", "head training lists"
        )
        self.fit_report["head_train_recall"] = float(np.mean([g.any() for g in y]))
        self.facts = item_facts(data.dataset, data.train, data.item_embeddings)
        self._forget_views()
        valid = None
        if valid_task is not None:
            valid = self._groups(valid_task, profiles, "valid-lists", "validation lists")
            self.fit_report["candidate_recall_valid"] = float(np.mean([g.any() for g in valid[1]]))
        heads = ", ".join(RANKERS) if self.config.ranker == "auto" else self.config.ranker
        t_head = time.perf_counter()
        log.info(
            "fitting the ranking head (%s)",
            heads,
            extra=_progress("head", label=f"ranking head ({heads}) on {len(x)} users' lists"),
        )
        self.ranker = choose_ranker(
            self.config.ranker,
            self.config.seed,
            x,
            y,
            valid,
            self.fit_report,
            params=self.config.ranker_params,
        )
        self._stage_seconds("head", t_head)
        head_valid = self.fit_report.get("ranker_valid_ndcg@10", {}).get(self.fit_report["ranker"])
        log.info(
            "ranking head %s fitted (valid ndcg@10 %s)",
            self.fit_report["ranker"],
            head_valid,
            extra=_progress(
                "head",
                label=f"ranking head: {self.fit_report['ranker']} kept",
                valid=head_valid,
                done=True,
                seconds=time.perf_counter() - t_head,
            ),
        )
        self.fit_report["seconds"] = round(time.perf_counter() - t0, 1)
        log.info("hybrid fitted: %s", self.fit_report)
        return self

    def _groups(
        self,
        task: EvalTask,
        profile_fn: ProfileFn | None,
        stage: str = "lists",
        label: str = "candidate lists",
    ) -> tuple[Groups, Groups]:
        """Candidate features and 0/1 target labels for every user of ``task`` (``stage`` and
        ``label`` name the work in the progress records)."""
        xs, ys = [], []
        t0 = time.perf_counter()
        log.info(
            "building %s for %d users",
            label,
            len(task),
            extra=_progress(stage, label=f"{label}: candidates + features", total=len(task)),
        )
        for start in range(0, len(task), 256):
            batch = task.subset(np.arange(start, min(start + 256, len(task))))
            profiles = profile_fn(batch.history) if profile_fn is not None else None
            cands, feats = self._candidates_and_features(batch.history, profiles)
            xs += feats
            ys += [
                batch.targets[row].toarray()[0, c.items].astype(np.float32)
                for row, c in enumerate(cands)
            ]
            log.info(
                "%s: %d/%d users", label, len(ys), len(task), extra=_progress(stage, step=len(ys))
            )
        recall = float(np.mean([g.any() for g in ys])) if ys else 0.0
        self._stage_seconds(stage, t0)
        log.info(
            "%s built: target among the candidates for %.0f%% of users",
            label,
            100 * recall,
            extra=_progress(stage, done=True, seconds=time.perf_counter() - t0),
        )
        return xs, ys

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

    def _stage_seconds(self, stage: str, since: float) -> None:
        """Record a fit stage's wall seconds in ``fit_report["stage_seconds"]``."""
        seconds = round(time.perf_counter() - since, 2)
        self.fit_report.setdefault("stage_seconds", {})[stage] = seconds

    @property
    def _large(self) -> bool:
        return self.dataset is not None and self.dataset.n_items >= self.config.ann_min_items

    def _build_spaces(self) -> None:
        """ANN indexes over each dot-product component's item vectors (large catalogues only)."""
        self.__dict__.pop("_spaces", None)
        if self._large:
            t0 = time.perf_counter()
            log.info("indexing item vectors", extra=_progress("ann", label="ANN item indexes"))
            _ = self._spaces
            self._stage_seconds("ann", t0)
            log.info(
                "item vectors indexed",
                extra=_progress("ann", done=True, seconds=time.perf_counter() - t0),
            )

    @cached_property
    def _spaces(self) -> dict[str, FactorSpace]:
        """Component name → its :class:`FactorSpace` (and ``"query"`` for request text when no
        semantic component has one); built once per fit, or on first use after loading."""
        spaces = {}
        for name, scorer in self.components.items():
            pair = factor_vectors(scorer)
            if pair is not None:
                spaces[name] = FactorSpace(pair[1]())
        facts = self.facts
        if "semantic" not in spaces and facts is not None and facts.embeddings is not None:
            spaces["query"] = FactorSpace(facts.embeddings)
        return spaces

    def _views(self, history: History) -> dict[str, RowScores]:
        """Each component's candidate-only view of this batch's scores."""
        out: dict[str, RowScores] = {}
        for name, scorer in self.components.items():
            known = self.native_items.get(name, history.n_items)
            h = history
            if known < history.n_items:
                h = History(history.users, tuple(s[s < known] for s in history.sequences), known)
            if name in self._spaces:
                out[name] = self._spaces[name].view(factor_vectors(scorer)[0](h))
            elif getattr(scorer, "similarity", None) is not None:  # item-kNN: sparse, exact
                out[name] = SparseScores(h.matrix @ scorer.similarity)
            elif getattr(scorer, "counts", None) is not None:  # popularity
                out[name] = self._constant(name, scorer.counts)
            else:
                raise ValueError(
                    f"component {name!r} has no candidate-only scores for a catalogue of "
                    f"{history.n_items} items; raise HybridConfig.ann_min_items above it to "
                    "score it over the whole catalogue"
                )
        return out

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
        n = self.dataset.n_items
        if history.n_items > n:
            raise ValueError(f"history is over {history.n_items} items; the catalogue has {n}")
        return history if history.n_items == n else History(history.users, history.sequences, n)

    def _check_rows(self, vectors: np.ndarray | None, history: History, what: str):
        if vectors is None:
            return None
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        dim = None if self.facts.embeddings is None else self.facts.embeddings.shape[1]
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
        if self.dataset is None:
            raise NotFittedError("HybridRecommender.fit() first")
        n = self.dataset.n_items
        if not 0 <= item_index < n:
            raise IndexError(f"item index {item_index} is outside the catalogue (0..{n - 1})")
        blocked = np.zeros(n, dtype=bool) if filter is None else ~self.index.allowed(filter)
        blocked[item_index] = True
        one = History.of_items([item_index], n)
        signals: dict[str, np.ndarray] = {}
        if self.facts.embeddings is not None:
            signals["text"] = self.facts.embeddings @ self.facts.embeddings[item_index]
        collab = next(
            (c for c in ("itemknn", "als", "lightgcn", "sasrec") if c in self.components), None
        )
        if collab is not None:
            signals["collaborative"] = self._score_with(collab, one)[0]
        if not signals:
            raise ValueError("similar() needs item embeddings or a collaborative component")
        width = max(k, 50)
        proposals = {name: top_unblocked(s, blocked, width) for name, s in signals.items()}
        c = ItemList.union(proposals, self.view)
        ok = ~blocked
        total = sum((s[c.items] - s[ok].mean()) / (s[ok].std() + 1e-6) for s in signals.values())
        columns = {name: s[c.items] for name, s in signals.items()}
        return ItemList(c.items, np.asarray(total, np.float32), columns, c.sources, self.view).top(
            k
        )

    def add_items(self, items: Sequence[Item], embeddings: np.ndarray) -> int:
        """Grow the catalogue with items known only by their text; no retraining.

        Text-based components score them (the semantic scorer from its cosine, SASRec through its
        text projection); the others give them a neutral score. Only the new vectors are written to
        the item store. Returns how many items were added.

        Raises:
            ValueError: an id already in the catalogue or repeated, a vector count or dimension
                that does not match, or a NaN/zero vector; nothing changes then.
        """
        if self.ranker is None:
            raise NotFittedError("HybridRecommender.fit() first")
        items = list(items)
        if self.facts.embeddings is None:
            raise ValueError("add_items needs a model fitted with item text embeddings")
        vectors = np.atleast_2d(np.asarray(embeddings, dtype=np.float32))
        dim = self.facts.embeddings.shape[1]
        if vectors.shape != (len(items), dim):
            raise ValueError(
                f"embeddings have shape {vectors.shape}; expected ({len(items)}, {dim})"
            )
        norms = np.linalg.norm(vectors, axis=1)
        if not (np.isfinite(norms) & (norms > 0)).all():
            raise ValueError("embeddings hold NaN, infinite or all-zero rows")
        if not items:
            return 0
        grown = self.dataset.with_items(items)  # raises on a known or repeated id
        vectors = unit_rows(vectors)
        if self.store is not None:
            self.store.upsert(items, vectors)  # validates before writing
        for name, scorer in self.components.items():
            if isinstance(scorer, SemanticScorer):
                scorer.item_embeddings = np.vstack([scorer.item_embeddings, vectors])
            elif getattr(getattr(scorer, "net", None), "use_text", False):
                scorer.add_items(vectors)
            else:
                continue
            self.native_items[name] = grown.n_items
        self.facts = self.facts.extended(np.array([item_year(it) for it in items]), vectors)
        self.dataset = grown
        self._forget_views()
        self.__dict__.pop("_spaces", None)  # large catalogues: re-index the grown item vectors
        return len(items)

    def _open_store(self, embeddings: np.ndarray | None) -> None:
        if embeddings is None or "semantic" not in self.config.components:
            return
        if not self.config.item_store:
            return
        if self.store_path is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="hyrec-store-")
            path = Path(self._tmp.name)
        else:
            path = self.store_path
        t0 = time.perf_counter()
        label = f"item store: {len(self.dataset.items)} item vectors into chromadb"
        log.info("syncing the item store", extra=_progress("store", label=label))
        self.store = ItemStore(StoreConfig(path=path, show_progress=False))
        self.store.sync(self.dataset.items, embeddings)
        self._stage_seconds("store", t0)
        log.info(
            "item store synced",
            extra=_progress("store", done=True, seconds=time.perf_counter() - t0),
        )

    # ---- persistence (retrieval.saved) ---------------------------------------------------------
    def save(self, path: Path) -> None:
        from retrieval.saved import save_hybrid

        save_hybrid(self, Path(path))

    @classmethod
    def load(cls, path: Path, dataset: Dataset | None = None) -> Self:
        """Reopen a saved hybrid (its catalogue and histories come from the saved snapshot)."""
        from retrieval.saved import load_hybrid

        return load_hybrid(cls, Path(path), dataset)
