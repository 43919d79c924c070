"""The hybrid recommender: component scorers → tagged candidates → features → learned ranking head.

Recommendation is plain composition (:meth:`HybridRecommender.recommend_batch`)::

    history → candidates (each source's top-N + chromadb neighbours) → score (every component)
            → fuse (features → ranking head) → rerank hook → top-n

Training the head never touches validation or test *targets*: each user's last training event is
held
out, the components are fitted on the rest, and the head learns to find that held-out item among the
candidates ("inner" split). Validation only early-stops the head and picks LightGBM or the MLP. The
components are then refitted on the whole training split for serving.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from encoders.base import FitData, NotFittedError
from encoders.registry import TEXT_SCORERS, load_scorer, make_scorer
from encoders.text import SemanticScorer
from hyrec.data import Dataset, EvalTask, Interactions, interaction_matrix
from hyrec.data.snapshot import load_snapshot, save_snapshot
from hyrec.data.splits import History

from .features import ItemFacts, build_features
from .items import ItemList
from .ranker import RANKERS, Groups, Ranker, load_ranker, ndcg_at
from .store import Filter, ItemStore, StoreConfig

log = logging.getLogger(__name__)

#: A re-ranking stage applied to each user's fused list (the LLM layer plugs in here).
Reranker = Callable[[History, list[ItemList]], list[ItemList]]


@dataclass(frozen=True)
class HybridConfig:
    components: tuple[str, ...] = ("sasrec", "lightgcn", "als", "itemknn", "semantic", "pop")
    sources: tuple[str, ...] = ("sasrec", "lightgcn", "als", "itemknn", "pop")  # top-N of each
    per_source: int = 50  # candidates from each source; their union is what the head ranks
    neighbours: int = 50  # chromadb neighbours of the user's recent-items text vector
    ranker: str = (
        "auto"  # "lightgbm", "mlp", or "auto": whichever has the better validation NDCG@10
    )
    refit: bool = True  # refit the components on the whole training split after training the head
    component_overrides: dict[str, Any] = field(default_factory=dict)  # name -> scorer (tests)


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


def item_facts(dataset: Dataset, train: Interactions, embeddings: np.ndarray | None) -> ItemFacts:
    n = dataset.n_items
    popularity = np.asarray(interaction_matrix(train, dataset.n_users, n).sum(axis=0)).ravel()
    last = np.full(n, train.timestamp.min() if len(train) else 0, dtype=np.float64)
    np.maximum.at(last, train.item, train.timestamp)
    days = (train.timestamp.max() - last) / 86400.0 if len(train) else np.zeros(n)
    year = np.array([float(it.attributes.get("year", np.nan) or np.nan) for it in dataset.items])
    return ItemFacts(popularity.astype(np.float32), days.astype(np.float32), year, embeddings)


class HybridRecommender:
    """Fuses every component's score with a learned head; also a Scorer, so ``hyrec eval`` can rank
    it."""

    kind: ClassVar[str] = "hybrid"

    def __init__(self, config: HybridConfig | None = None, store_path: Path | None = None) -> None:
        self.config = config or HybridConfig()
        self.store_path = store_path
        self.components: dict[str, Any] = {}
        self.ranker: Ranker | None = None
        self.store: ItemStore | None = None
        self.facts: ItemFacts | None = None
        self.dataset: Dataset | None = None
        self.fit_report: dict[str, Any] = {}
        self.rerank: Reranker | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None

    # ---- fitting ------------------------------------------------------------------------------
    def _fit_components(self, data: FitData) -> dict[str, Any]:
        out = {}
        for name in self.config.components:
            t0 = time.perf_counter()
            scorer = self.config.component_overrides.get(name) or make_scorer(name)
            out[name] = scorer.fit(data)
            self.fit_report.setdefault("component_seconds", {})[name] = round(
                time.perf_counter() - t0, 2
            )
        return out

    def fit(self, data: FitData) -> Self:
        needs_text = TEXT_SCORERS.intersection(self.config.components)
        if needs_text and data.item_embeddings is None:
            raise ValueError(f"components {sorted(needs_text)} need FitData.item_embeddings")
        self.dataset = data.dataset
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
            ranker = RANKERS[kind]().fit(x, y, valid)
            score = ndcg_at([ranker.predict(g) for g in valid[0]], valid[1]) if valid else 0.0
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
            cands, feats = self._candidates_and_features(batch.history)
            xs += feats
            ys += [
                batch.targets[row].toarray()[0, c.items].astype(np.float32)
                for row, c in enumerate(cands)
            ]
        return xs, ys

    # ---- the recommendation path --------------------------------------------------------------
    def _component_scores(self, history: History) -> dict[str, np.ndarray]:
        return {
            name: np.asarray(s.score(history), dtype=np.float32)
            for name, s in self.components.items()
        }

    def candidates(
        self,
        history: History,
        scores: dict[str, np.ndarray],
        allowed: np.ndarray | None = None,
        filter: Filter | None = None,
    ) -> list[ItemList]:
        """Union of each source's top-N unseen (and allowed) items plus chromadb text neighbours."""
        seen = history.matrix.toarray().astype(bool)
        blocked = seen if allowed is None else seen | ~allowed[None, :]
        n = self.config.per_source
        tops = {}
        for name in self.config.sources:
            s = np.where(blocked, -np.inf, scores[name])
            k = min(n, s.shape[1] - 1)
            tops[name] = np.argpartition(-s, k, axis=1)[:, :n]
        semantic = self._neighbours(history, filter)
        out = []
        for row in range(len(history)):
            proposals = {name: top[row][~blocked[row, top[row]]] for name, top in tops.items()}
            if semantic is not None:
                proposals["semantic"] = semantic[row]
            out.append(ItemList.union(proposals))
        return out

    def _neighbours(self, history: History, filter: Filter | None) -> list[np.ndarray] | None:
        semantic = self.components.get("semantic")
        if (
            self.store is None
            or not isinstance(semantic, SemanticScorer)
            or self.config.neighbours <= 0
        ):
            return None
        vectors = semantic.query_vectors(history)
        index, ids = self.dataset.item_index, self.dataset.item_ids
        out = []
        for row, vec in enumerate(vectors):
            if not np.any(vec):
                out.append(np.zeros(0, np.int64))
                continue
            exclude = [ids[i] for i in np.unique(history.sequences[row])]
            hits = self.store.query(
                vec[None], self.config.neighbours, where=filter, exclude_ids=exclude
            )
            out.append(np.array([index[i] for i, _ in hits[0] if i in index], dtype=np.int64))
        return out

    @property
    def _sources(self) -> list[str]:
        has_store = self.store is not None and "semantic" in self.components
        return list(self.config.sources) + (["semantic"] if has_store else [])

    def _candidates_and_features(
        self, history: History, allowed: np.ndarray | None = None, filter: Filter | None = None
    ) -> tuple[list[ItemList], list[np.ndarray]]:
        scores = self._component_scores(history)
        cands = self.candidates(history, scores, allowed, filter)
        for row, c in enumerate(cands):  # every component's score travels with the candidate
            cands[row] = ItemList(
                c.items, c.scores, {k: v[row, c.items] for k, v in scores.items()}, c.sources
            )
        feats = build_features(history, cands, scores, self.facts, self._sources)
        return cands, feats

    def recommend_batch(
        self, history: History, k: int = 10, filter: Filter | None = None
    ) -> list[ItemList]:
        """Top-k per user: candidates → features → head → (rerank hook) → top-k."""
        if self.ranker is None:
            raise NotFittedError("HybridRecommender.fit() first")
        allowed = self.allowed_mask(filter)
        cands, feats = self._candidates_and_features(history, allowed, filter)
        fused = [
            c.rescored(self.ranker.predict(f)) if len(c) else c
            for c, f in zip(cands, feats, strict=True)
        ]
        if self.rerank is not None:
            fused = self.rerank(history, fused)
        return [f.top(k) for f in fused]

    def score(self, history: History) -> np.ndarray:
        """(B, n_items): head scores on each user's candidates, −inf elsewhere (for the harness)."""
        out = np.full((len(history), self.dataset.n_items), -np.inf, dtype=np.float32)
        for row, lst in enumerate(self.recommend_batch(history, k=self.dataset.n_items)):
            out[row, lst.items] = lst.scores
        return out

    def allowed_mask(self, filter: Filter | None) -> np.ndarray | None:
        """Catalogue mask of the items a :class:`Filter` lets through (``None``: everything)."""
        if filter is None:
            return None
        items = self.dataset.items
        ok = np.ones(len(items), dtype=bool)
        for i, it in enumerate(items):
            genres = set(it.attributes.get("genres") or ())
            year = it.attributes.get("year")
            if (
                filter.genres_any
                and not genres.intersection(filter.genres_any)
                or genres.intersection(filter.genres_none)
                or (filter.year_min is not None or filter.year_max is not None)
                and not isinstance(year, int)
                or filter.year_min is not None
                and year < filter.year_min
                or filter.year_max is not None
                and year > filter.year_max
            ):
                ok[i] = False
        if filter.exclude_ids:
            index = self.dataset.item_index
            ok[[index[i] for i in filter.exclude_ids if i in index]] = False
        return ok

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
        body = {"kind": self.kind, "config": config, "fit_report": self.fit_report}
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
        config = HybridConfig(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in body["config"].items()}
        )
        model = cls(config, store_path=path / "chroma")
        model.dataset = dataset
        model.fit_report = body.get("fit_report", {})
        model.components = {n: load_scorer(path / "components" / n) for n in config.components}
        model.ranker = load_ranker(path / "ranker")
        with np.load(path / "facts.npz", allow_pickle=False) as z:
            model.facts = ItemFacts(
                z["popularity"],
                z["days_since_last"],
                z["year"],
                z.get("embeddings"),
            )
        if (path / "chroma").exists():
            model.store = ItemStore(StoreConfig(path=path / "chroma", show_progress=False))
        return model
