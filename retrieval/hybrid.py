"""The hybrid recommender: component scorers → tagged candidates → features → learned ranking head.

Recommendation is plain composition (:meth:`HybridRecommender.recommend_batch`)::

    history → score (every component) → candidates (each source's top-N, text neighbours of the
            recent items and of a request query) → features → ranking head → query blend
            → rerank hook → top-k

Training the head never touches validation or test *targets*: each user's last training event is
held out, the components are fitted on the rest, and the head learns to find that held-out item
among the candidates ("inner" split). Validation only early-stops the head and picks LightGBM or
the MLP. The head then serves on those same components (``HybridConfig.refit=False``): the
features are scale-free (standardised scores and ranks), so refitting the components on the whole
training split changed validation NDCG@10 by less than its noise while doubling the fit time
(``eval/results/ml-100k/hybrid-experiments.md``).

A request may carry a query vector (a text embedding of "funny sci-fi for tonight"): its nearest
items join the candidates as source ``"query"``, and the final score of each candidate is

    z(head score) + query_weight · z(cos(query, item))

with z standardising over the user's candidates, so ``query_weight`` = 1 weighs the query as much
as the whole history. Rows with a zero query vector, and every row when none is given, keep the
head's order. A row with an empty history (cold start) is ranked by popularity, since the head
never learned from such rows; its candidates are the popular items and the query's neighbours, and
the query blend re-orders them.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from encoders.base import FitData, NotFittedError, with_seed
from encoders.registry import SCORERS, TEXT_SCORERS, load_scorer, make_scorer
from encoders.text import SemanticScorer
from hyrec.data import Dataset, EvalTask, Interactions, Item, interaction_matrix
from hyrec.data.snapshot import load_snapshot, save_snapshot
from hyrec.data.splits import History

from .features import ItemFacts, build_features, seen_rows
from .items import ItemList
from .ranker import RANKERS, Groups, Ranker, load_ranker, ndcg_at
from .store import Filter, ItemStore, StoreConfig

log = logging.getLogger(__name__)

#: A re-ranking stage applied to each user's fused list (the LLM layer plugs in here).
Reranker = Callable[[History, list[ItemList]], list[ItemList]]
#: Interest-profile embeddings of a batch of histories: (B, d) unit-norm, zero rows for "none".
ProfileFn = Callable[[History], np.ndarray]


@dataclass(frozen=True)
class HybridConfig:
    # Defaults chosen on ML-100K validation NDCG@10 (eval/results/ml-100k/hybrid-experiments.md).
    components: tuple[str, ...] = ("sasrec", "lightgcn", "als", "itemknn", "semantic", "pop")
    sources: tuple[str, ...] = ("sasrec", "lightgcn", "als", "itemknn", "pop")  # top-N of each
    per_source: int = 50  # candidates per source; 100 raised recall (0.73 → 0.86), not NDCG@10
    neighbours: int = 50  # text neighbours of the user's recent items (source "semantic")
    query_neighbours: int = 50  # text neighbours of a request's query vector (source "query")
    query_weight: float = 1.0  # final = z(head) + query_weight · z(query cosine); see module doc
    # Text neighbours come from chromadb's HNSW index from this catalogue size up; below it, from
    # an exact cosine over the item vectors (1 ms at 10k items, where HNSW took 5-20 ms).
    ann_min_items: int = 200_000
    ranker: str = "auto"  # "lightgbm", "mlp", or "auto": the better validation NDCG@10
    refit: bool = False  # refit the components on all training data for serving (module doc)
    seed: int = 0  # every seeded component and the ranking head train from this seed
    component_overrides: dict[str, Any] = field(default_factory=dict)  # name -> scorer (tests)

    def __post_init__(self) -> None:
        """Fail before any training, naming the bad value."""
        unknown = [
            c for c in self.components if c not in SCORERS and c not in self.component_overrides
        ]
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


def inner_split(train: Interactions) -> tuple[Interactions, Interactions]:
    """Each user's last training event (by time, then file order) apart from the rest."""
    order = train.chronological_order()
    users = train.user[order]
    last = np.ones(len(order), dtype=bool)
    last[:-1] = users[:-1] != users[1:]
    counts = np.bincount(users)
    last &= counts[users] >= 2  # a user needs something left to learn from
    held = np.zeros(len(train), dtype=bool)
    held[order[last]] = True
    return train.take(~held), train.take(held)


def item_year(item: Item) -> float:
    """The item's release year as a float feature (NaN when unknown)."""
    return float("nan") if item.year is None else float(item.year)


def item_facts(dataset: Dataset, train: Interactions, embeddings: np.ndarray | None) -> ItemFacts:
    n = dataset.n_items
    popularity = np.asarray(interaction_matrix(train, dataset.n_users, n).sum(axis=0)).ravel()
    last = np.full(n, train.timestamp.min() if len(train) else 0, dtype=np.float64)
    np.maximum.at(last, train.item, train.timestamp)
    days = (train.timestamp.max() - last) / 86400.0 if len(train) else np.zeros(n)
    year = np.array([item_year(it) for it in dataset.items])
    return ItemFacts(popularity.astype(np.float32), days.astype(np.float32), year, embeddings)


class CatalogueIndex:
    """Genre masks and years of the catalogue, so a :class:`Filter` costs a few array operations."""

    def __init__(self, items: Sequence[Item]) -> None:
        self.item_index = {it.item_id: i for i, it in enumerate(items)}
        self.year = np.array([item_year(it) for it in items])
        self.genres: dict[str, np.ndarray] = {}
        for i, it in enumerate(items):
            for g in it.genres:
                self.genres.setdefault(g, np.zeros(len(items), dtype=bool))[i] = True

    def allowed(self, filter: Filter) -> np.ndarray:
        """(n_items,) mask of the items ``filter`` lets through (same rules as the item store)."""
        none = np.zeros(len(self.year), dtype=bool)
        ok = ~none
        if filter.genres_any:
            ok = np.logical_or.reduce([self.genres.get(g, none) for g in filter.genres_any])
        for g in filter.genres_none:
            ok = ok & ~self.genres.get(g, none)
        with np.errstate(invalid="ignore"):  # NaN years fail both bounds, as in the store
            if filter.year_min is not None:
                ok = ok & (self.year >= filter.year_min)
            if filter.year_max is not None:
                ok = ok & (self.year <= filter.year_max)
        gone = [self.item_index[i] for i in filter.exclude_ids if i in self.item_index]
        if gone:
            ok = ok.copy()
            ok[gone] = False
        return ok


def zscore(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / (x.std() + 1e-6) if len(x) else x


def top_unblocked(scores: np.ndarray, blocked: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` best scores of one row among the items not ``blocked`` (any order)."""
    s = np.where(blocked, -np.inf, scores)
    n = min(n, int((~blocked).sum()))
    if n <= 0:
        return np.zeros(0, np.int64)
    return np.argpartition(-s, n - 1)[:n]


class HybridRecommender:
    """Fuses every component's score with a learned head; also a Scorer, so ``hyrec eval`` can rank
    it.

    Attributes:
        profile_fn: Set before :meth:`fit` to add the ``profile_cosine`` feature: it maps histories
            to (B, d) interest-profile embeddings in the item-text space. Head-training profiles
            are computed from the inner histories, which never contain the item the head learns
            to find.
        rerank: Optional stage applied to each fused list before the top-k cut.
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
        self.rerank: Reranker | None = None
        self.profile_fn: ProfileFn | None = None
        self.uses_profile = False
        self._tmp: tempfile.TemporaryDirectory | None = None

    # ---- fitting ------------------------------------------------------------------------------
    def _fit_components(self, data: FitData) -> dict[str, Any]:
        out = {}
        for name in self.config.components:
            t0 = time.perf_counter()
            scorer = self.config.component_overrides.get(name) or with_seed(
                make_scorer(name), self.config.seed
            )
            out[name] = scorer.fit(data)
            self.fit_report.setdefault("component_seconds", {})[name] = round(
                time.perf_counter() - t0, 2
            )
        self.native_items = {name: data.n_items for name in out}
        return out

    def fit(self, data: FitData) -> Self:
        needs_text = TEXT_SCORERS.intersection(self.config.components)
        if needs_text and data.item_embeddings is None:
            raise ValueError(f"components {sorted(needs_text)} need FitData.item_embeddings")
        if self.profile_fn is not None and data.item_embeddings is None:
            raise ValueError("profile_fn needs FitData.item_embeddings (profiles are text vectors)")
        self.dataset = data.dataset
        self.uses_profile = self.profile_fn is not None
        self.__dict__.pop("catalogue", None)
        self._open_store(data.item_embeddings)
        t0 = time.perf_counter()
        inner_train, held = inner_split(data.train)
        inner = FitData(data.dataset, inner_train, data.valid, data.item_embeddings)
        self.components = self._fit_components(inner)
        self.facts = item_facts(data.dataset, inner_train, data.item_embeddings)
        users = held.user.astype(np.int64)
        history = History.from_interactions(inner_train, users, data.n_items, n_users=data.n_users)
        targets = interaction_matrix(held, data.n_users, data.n_items)[users]
        x, y = self._groups(EvalTask(history, targets))
        self.fit_report["head_train_recall"] = float(np.mean([g.any() for g in y]))
        if self.config.refit:
            self.components = self._fit_components(data)
        self.facts = item_facts(data.dataset, data.train, data.item_embeddings)
        valid = self._groups(data.valid) if data.valid is not None else None
        if valid is not None:
            self.fit_report["candidate_recall_valid"] = float(np.mean([g.any() for g in valid[1]]))
        self.ranker = self._fit_ranker(x, y, valid)
        self.fit_report["seconds"] = round(time.perf_counter() - t0, 1)
        log.info("hybrid fitted: %s", self.fit_report)
        return self

    def _fit_ranker(self, x: Groups, y: Groups, valid: tuple[Groups, Groups] | None) -> Ranker:
        kinds = list(RANKERS) if self.config.ranker == "auto" else [self.config.ranker]
        if valid is None and len(kinds) > 1:
            kinds = ["lightgbm"]
        best, chosen = -1.0, None
        for kind in kinds:
            ranker = with_seed(RANKERS[kind](), self.config.seed).fit(x, y, valid)
            score = 0.0  # no validation task: a single head, nothing to choose between
            if valid is not None:
                score = ndcg_at([ranker.predict(g) for g in valid[0]], valid[1])
                self.fit_report.setdefault("ranker_valid_ndcg@10", {})[kind] = round(score, 4)
            if score > best:
                best, chosen = score, ranker
        self.fit_report["ranker"] = chosen.kind
        return chosen

    def _groups(self, task: EvalTask) -> tuple[Groups, Groups]:
        """Candidate features and 0/1 target labels for every user of ``task``."""
        xs, ys = [], []
        for start in range(0, len(task), 256):
            batch = task.subset(np.arange(start, min(start + 256, len(task))))
            profiles = self.profile_fn(batch.history) if self.uses_profile else None
            scores = self._component_scores(batch.history)
            cands = self.candidates(batch.history, scores)
            xs += build_features(batch.history, cands, scores, self.facts, self._sources, profiles)
            ys += [
                batch.targets[row].toarray()[0, c.items].astype(np.float32)
                for row, c in enumerate(cands)
            ]
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
        """Top-k per row: score → candidates → features → head → query blend → rerank → top-k.

        Args:
            history: The users (-1 for cold start) and their time-ordered item indices.
            k: List length.
            filter: Genre/year constraints and ids never to return.
            query_vectors: (B, d) unit-norm text vectors of each row's request; zero rows = none.
            profile_vectors: (B, d) interest-profile embeddings; when the model uses profiles and
                none are given, ``profile_fn`` computes them (zero vectors if it is unset).
        """
        if self.ranker is None:
            raise NotFittedError("HybridRecommender.fit() first")
        history = self._widened(history)
        queries = self._check_rows(query_vectors, history, "query_vectors")
        profiles = self._profiles(history, profile_vectors)
        allowed = None if filter is None else self.catalogue.allowed(filter)
        scores = self._component_scores(history)
        cands = self.candidates(history, scores, allowed, filter, queries)
        feats = build_features(history, cands, scores, self.facts, self._sources, profiles)
        fused = [
            c.rescored(self._head_scores(c, f, seq)) if len(c) else c
            for c, f, seq in zip(cands, feats, history.sequences, strict=True)
        ]
        if queries is not None:
            fused = [self._blend_query(c, q) for c, q in zip(fused, queries, strict=True)]
        if self.rerank is not None:
            fused = self.rerank(history, fused)
        return [f.top(k) for f in fused]

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
        """Per row, the union of each source's top-N unseen, allowed items, the text neighbours of
        the recent items ("semantic") and of the query ("query"); every component's score of each
        candidate travels with it as a column (plus the query cosine)."""
        seen = seen_rows(history)
        n_text, n_query = self.config.neighbours, self.config.query_neighbours
        ann = self.store is not None and self.dataset.n_items >= self.config.ann_min_items
        semantic = self.components.get("semantic")
        recent = semantic.query_vectors(history) if ann and "semantic" in scores else None
        out = []
        for row in range(len(history)):
            blocked = np.zeros(history.n_items, dtype=bool) if allowed is None else ~allowed
            blocked[seen[row]] = True
            proposals = {
                name: top_unblocked(scores[name][row], blocked, self.config.per_source)
                for name in self.config.sources
                if np.ptp(scores[name][row]) > 0
            }  # a source with no signal for this row (e.g. SASRec on an empty history) proposes
            if "semantic" in scores and n_text > 0 and scores["semantic"][row].any():
                proposals["semantic"] = (  # the text neighbours of the user's recent items
                    self._ann(recent[row], n_text, filter, history.sequences[row])
                    if ann
                    else top_unblocked(scores["semantic"][row], blocked, n_text)
                )
            query = None if queries is None or not queries[row].any() else queries[row]
            if query is not None:
                cosine = self.facts.embeddings @ query  # (n_items,)
                proposals["query"] = (
                    self._ann(query, n_query, filter, history.sequences[row])
                    if ann
                    else top_unblocked(cosine, blocked, n_query)
                )
            if not proposals:  # nothing informative (e.g. an untrained catalogue): most popular
                proposals["pop"] = top_unblocked(self.facts.popularity, blocked, 50)
            c = ItemList.union(proposals)
            columns = {name: s[row, c.items] for name, s in scores.items()}
            if query is not None:
                columns["query"] = cosine[c.items]
            out.append(ItemList(c.items, c.scores, columns, c.sources))
        return out

    def _ann(
        self, vector: np.ndarray, n: int, filter: Filter | None, seen: np.ndarray
    ) -> np.ndarray:
        """The ``n`` nearest allowed, unseen items in the chromadb HNSW index (large catalogues;
        below ``ann_min_items`` an exact cosine is faster)."""
        ids, index = self.dataset.item_ids, self.dataset.item_index
        exclude = [ids[i] for i in np.unique(seen)]
        hits = self.store.query(vector[None], n, where=filter, exclude_ids=exclude)[0]
        return np.array([index[i] for i, _ in hits if i in index], dtype=np.int64)

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
        if given is None and self.profile_fn is not None:
            given = self.profile_fn(history)
        if given is None:
            log.debug("model uses profiles but none were given and profile_fn is unset: zeros")
            return np.zeros((len(history), self.facts.embeddings.shape[1]), np.float32)
        return self._check_rows(given, history, "profile_vectors")

    def score(self, history: History) -> np.ndarray:
        """(B, n_items): head scores on each user's candidates, −inf elsewhere (for the harness)."""
        out = np.full((len(history), self.dataset.n_items), -np.inf, dtype=np.float32)
        for row, lst in enumerate(self.recommend_batch(history, k=self.dataset.n_items)):
            out[row, lst.items] = lst.scores
        return out

    @cached_property
    def catalogue(self) -> CatalogueIndex:
        """Genre masks and years for filters (rebuilt when the catalogue grows)."""
        return CatalogueIndex(self.dataset.items)

    def allowed_mask(self, filter: Filter | None) -> np.ndarray | None:
        """Catalogue mask of the items a :class:`Filter` lets through (``None``: everything)."""
        return None if filter is None else self.catalogue.allowed(filter)

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
        blocked = np.zeros(n, dtype=bool) if filter is None else ~self.catalogue.allowed(filter)
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
        c = ItemList.union({name: top_unblocked(s, blocked, width) for name, s in signals.items()})
        ok = ~blocked
        total = sum((s[c.items] - s[ok].mean()) / (s[ok].std() + 1e-6) for s in signals.values())
        columns = {name: s[c.items] for name, s in signals.items()}
        return ItemList(c.items, np.asarray(total, np.float32), columns, c.sources).top(k)

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
        vectors = vectors / norms[:, None]
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
        self.__dict__.pop("catalogue", None)
        return len(items)

    # ---- persistence ---------------------------------------------------------------------------
    def _open_store(self, embeddings: np.ndarray | None) -> None:
        if embeddings is None or "semantic" not in self.config.components:
            return
        if self.store_path is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="hyrec-store-")
            path = Path(self._tmp.name)
        else:
            path = self.store_path
        self.store = ItemStore(StoreConfig(path=path, show_progress=False))
        self.store.sync(self.dataset.items, embeddings)

    def save(self, path: Path) -> None:
        if self.ranker is None:
            raise NotFittedError("HybridRecommender.fit() first")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        for name, scorer in self.components.items():
            scorer.save(path / "components" / name)
        self.ranker.save(path / "ranker")
        f = self.facts
        arrays = {"popularity": f.popularity, "days_since_last": f.days_since_last, "year": f.year}
        if f.embeddings is not None:
            arrays["embeddings"] = f.embeddings
        np.savez(path / "facts.npz", **arrays)
        save_snapshot(self.dataset, path / "data")
        config = {
            f.name: getattr(self.config, f.name)
            for f in fields(self.config)
            if f.name != "component_overrides"
        }
        body = {
            "kind": self.kind,
            "config": config,
            "native_items": self.native_items,
            "uses_profile": self.uses_profile,
            "fit_report": self.fit_report,
        }
        (path / "hybrid.json").write_text(json.dumps(body, indent=2))
        if self.store is not None and Path(self.store.config.path) != path / "chroma":
            if (path / "chroma").exists():
                shutil.rmtree(path / "chroma")
            store = ItemStore(StoreConfig(path=path / "chroma", show_progress=False))
            store.sync(self.dataset.items, f.embeddings)

    @classmethod
    def load(cls, path: Path, dataset: Dataset | None = None) -> Self:
        """Reopen a saved hybrid (its catalogue and histories come from the saved snapshot)."""
        path = Path(path)
        if not (path / "hybrid.json").is_file():
            raise FileNotFoundError(f"{path}: no saved hybrid model (hybrid.json missing)")
        dataset = dataset or load_snapshot(path / "data")
        body = json.loads((path / "hybrid.json").read_text())
        known = {f.name for f in fields(HybridConfig)}
        config = HybridConfig(
            **{
                k: tuple(v) if isinstance(v, list) else v
                for k, v in body["config"].items()
                if k in known
            }
        )
        model = cls(config, store_path=path / "chroma")
        model.dataset = dataset
        model.fit_report = body.get("fit_report", {})
        model.components = {n: load_scorer(path / "components" / n) for n in config.components}
        model.native_items = {
            n: int(body.get("native_items", {}).get(n, dataset.n_items)) for n in model.components
        }
        model.uses_profile = bool(body.get("uses_profile", False))
        model.ranker = load_ranker(path / "ranker")
        with np.load(path / "facts.npz", allow_pickle=False) as z:
            model.facts = ItemFacts(
                z["popularity"],
                z["days_since_last"],
                z["year"],
                z["embeddings"] if "embeddings" in z.files else None,
            )
        if (path / "chroma").exists():
            model.store = ItemStore(StoreConfig(path=path / "chroma", show_progress=False))
        return model
