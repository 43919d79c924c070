"""The Python API: :class:`Recommender` holds the fitted hybrid, the LLM stages and the feedback
store, and answers through :func:`agent.pipeline.recommend` (the one request path).

Without an LLM (``llm=None``) the hybrid answers alone; with one, every LLM failure degrades that
stage to its deterministic fallback and is named in :attr:`Recommendations.fallbacks`. A user the
model has never seen gets the cold-start path (popularity, plus the context/query text), never an
exception. Feedback is committed to the feedback store (:class:`~agent.feedback.Store`: a SQLite
file by default, or PostgreSQL) before it is acknowledged, and the next recommendation for that
user folds it in (:mod:`agent.state`).

Replicas: several processes loaded with the same model folder and ``feedback_url=
"postgresql://..."`` (and a chromadb server, ``item_store=StoreConfig(host=...)``) behave as one
service. Feedback is read from the shared database on every request. Catalogue upserts and
forgotten users go through the store's change log; each replica follows it
(:meth:`Recommender.sync_shared`, woken by ``NOTIFY`` and at least every ``sync_interval``
seconds), so an item upserted on one replica is recommendable on the others, and a user forgotten
on one is forgotten on all (snapshot row, profile cache), within that bound.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Self

import numpy as np

from agent import folder, pipeline, replica
from agent.catalogue import check_upsert, new_items
from agent.config import FeedbackReceipt, Recommendation, Recommendations, RecommenderConfig
from agent.erasure import replace_snapshot, without_user
from agent.feedback import FeedbackStore, Store, check_event, is_positive
from agent.folder import CONFIG_FILE, FEEDBACK_FILE
from agent.llm import LLM
from agent.llm.guard import GuardedLLM
from agent.locks import RWLock
from agent.state import Sequences, UnknownItemError, item_index, user_state
from encoders.base import FitData
from encoders.text import TextEncoder, TextEncoderConfig
from hyrec.data import Dataset, Interactions, Item, leave_one_out
from hyrec.data.snapshot import load_snapshot
from retrieval.filters import Filter
from retrieval.hybrid import HybridRecommender
from retrieval.store import StoreConfig

if TYPE_CHECKING:
    from agent.state import UserState

__all__ = [
    "CONFIG_FILE",
    "FEEDBACK_FILE",
    "FeedbackReceipt",
    "Recommendation",
    "Recommendations",
    "Recommender",
    "RecommenderConfig",
    "UnknownItemError",
]

log = logging.getLogger(__name__)


class Recommender:
    """Hybrid recommendations with optional LLM stages and durable, immediate feedback.

    Build one with :meth:`fit` or :meth:`load`; do not call the constructor directly.

    Thread-safe: recommendations run concurrently; catalogue upserts and user deletion take an
    exclusive lock; feedback is serialised by the store.
    """

    def __init__(
        self,
        hybrid: HybridRecommender,
        encoder: TextEncoder,
        config: RecommenderConfig,
        store: Store,
        *,
        salt: str,
        llm: LLM | None = None,
        model_dir: Path | None = None,
    ) -> None:
        self.hybrid = hybrid
        self.encoder = encoder
        self.store = store
        self.llm = GuardedLLM(llm) if llm is not None else None
        self.model_dir = model_dir
        self._salt = salt
        self._lock = RWLock()
        self._sync_lock = threading.Lock()  # one sync_shared at a time
        self._synced = 0  # the newest shared change applied here
        self._seqs = Sequences(self.catalogue.interactions, self.catalogue.n_users)
        profiles = reranker = None
        if llm is not None or hybrid.uses_profile:
            # a head trained with the profile feature needs a profile vector even without an LLM:
            # the service then builds the deterministic, attribute-based profile
            from agent.stages.profiles import ProfileService

            cache = model_dir / "profiles" if model_dir is not None else None
            profiles = ProfileService(self.llm, encoder, cache_dir=cache)
            if getattr(store, "shared", False):  # entries in the shared store, under a salt
                from agent.stages.privacy import pseudonymize  # every replica derives alike
                from agent.stages.profile_cache import ProfileCache

                derived = pseudonymize("hyrec-profile-cache", salt)
                profiles.cache = ProfileCache(cache, salt=derived, entries=store)
        if llm is not None:
            from agent.stages.rerank import LLMReranker

            reranker = LLMReranker(self.llm, config.rerank)
        self.parts = pipeline.Parts(
            hybrid=hybrid,
            encoder=encoder,
            config=config,
            users=self._state,
            user_key=self._user_key,
            llm=self.llm,
            profiles=profiles,
            reranker=reranker,
            read=self._lock.read,
        )

    @property
    def config(self) -> RecommenderConfig:
        return self.parts.config

    @config.setter
    def config(self, config: RecommenderConfig) -> None:
        self.parts.config = config

    @property
    def profiles(self):  # agent.stages.profiles.ProfileService | None
        return self.parts.profiles

    @property
    def reranker(self):  # agent.stages.rerank.LLMReranker | None
        return self.parts.reranker

    # ---- building ----------------------------------------------------------------------------
    @property
    def catalogue(self) -> Dataset:
        """The catalogue and the snapshot histories the model serves."""
        return self.hybrid.dataset

    @classmethod
    def fit(
        cls,
        dataset: Dataset,
        config: RecommenderConfig | None = None,
        *,
        encoder: TextEncoder | None = None,
        llm: LLM | None = None,
    ) -> Self:
        """Fit the hybrid on ``dataset`` (each user's last event held out for early stopping).

        Args:
            dataset: Catalogue and interactions.
            config: Components and serving options.
            encoder: Item/query text encoder (default: ``config.text_model``).
            llm: Optional LLM for the serving stages.
        """
        config = config or RecommenderConfig()
        encoder = encoder or TextEncoder(TextEncoderConfig(model=config.text_model))
        split = leave_one_out(dataset)
        train = Interactions.concat([split.train, split.valid])
        vectors = encoder.encode_items(dataset.items)
        data = FitData(dataset, train, split.task("test"), vectors)
        hybrid = HybridRecommender(config.hybrid).fit(data)
        return cls(hybrid, encoder, config, FeedbackStore(), salt=secrets.token_hex(16), llm=llm)

    def save(self, path: Path) -> None:
        """Write the model folder (hybrid, snapshot, config) and move the feedback store into it."""
        folder.save(self, path)

    @classmethod
    def load(
        cls,
        path: Path,
        llm: LLM | None = None,
        *,
        encoder: TextEncoder | None = None,
        feedback_path: Path | None = None,
        feedback_url: str | None = None,
        item_store: StoreConfig | None = None,
    ) -> Self:
        """Open a model folder written by :meth:`save` or ``hyrec fit``.

        Args:
            path: The model folder.
            llm: Optional LLM (``None``: the non-LLM path).
            encoder: Text encoder override (tests inject a fake model here).
            feedback_path: SQLite feedback file (default: ``<path>/feedback.sqlite3``).
            feedback_url: A ``postgresql://`` URL (replicas share it) or a SQLite path; wins over
                ``feedback_path``.
            item_store: Where the item vectors live instead of ``<path>/chroma``, e.g. a chromadb
                server (``StoreConfig(host=..., port=...)``) the replicas share; synced with the
                catalogue at load (only what changed is written).

        Raises:
            FileNotFoundError: ``path`` holds no saved model.
            ValueError: its recommender.json holds an out-of-range setting (named).
            ImportError: a PostgreSQL URL without the ``hyrec[postgres]`` extra (named).
            agent.feedback.StoreUnavailable: the feedback database cannot be reached.
        """
        return folder.load(
            cls,
            path,
            llm,
            encoder=encoder,
            feedback_path=feedback_path,
            feedback_url=feedback_url,
            item_store=item_store,
        )

    def sync_shared(self) -> int:
        """Apply what other replicas changed since the last call (see :func:`agent.replica.sync`);
        a no-op on a store that is not shared. Returns how many changes were applied."""
        return replica.sync(self)

    def close(self) -> None:
        """Close the feedback store (checkpointing its WAL; stopping the shared follower)."""
        self.store.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- recommendations -----------------------------------------------------------------------
    def recommend(
        self,
        user: str | None = None,
        *,
        history: Sequence[str] | None = None,
        k: int = 10,
        context: str | None = None,
        query: str | None = None,
        filters: Filter | None = None,
        exclude: Sequence[str] = (),
        explain: bool = True,
    ) -> Recommendations:
        """Top-k for a user (known, new or anonymous).

        Args:
            user: User id; unknown ids get the cold-start path.
            history: Item ids the user consumed (after their stored history, oldest first).
            k: List length.
            context: Scenario text ("for tonight with the kids, no horror"), parsed into filters
                and query text by :func:`agent.chat.intent.parse_request`.
            query: Free text the list should match (embedded as is).
            filters: Genre/year constraints and ids to leave out.
            exclude: More item ids to leave out.
            explain: Attach a reason to every item.

        Raises:
            ValueError: ``k`` < 1.
            UnknownItemError: ``history`` names an item that is not in the catalogue.
        """
        request = pipeline.Request(
            user, tuple(history or ()), k, context, query, filters, tuple(exclude), explain
        )
        return pipeline.recommend(self.parts, request)

    def search(
        self, query: str, k: int = 10, filters: Filter | None = None
    ) -> list[Recommendation]:
        """Catalogue items whose text is nearest to ``query`` (the chromadb store, cosine)."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if not query.strip():
            raise ValueError("query must not be empty")
        with self._lock.read():
            store = self.hybrid.store
            if store is None:
                raise ValueError(
                    "this model has no text store (fit it with the semantic component)"
                )
            vec = self.encoder.encode_queries([query])
            hits = store.query(vec, k, where=filters)[0]
            found = hits.indexed(self.catalogue.item_index, self.hybrid.view)
            return [
                Recommendation(
                    it.item_id, it.title, float(cos), ("query",), {"query": float(cos)}, None
                )
                for it, cos in ((found.item(r), found.scores[r]) for r in range(len(found)))
            ]

    def similar_items(
        self, item_id: str, k: int = 10, filters: Filter | None = None
    ) -> list[Recommendation]:
        """Items like ``item_id`` (text and collaborative neighbours, per the hybrid)."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        with self._lock.read():
            lst = self.hybrid.similar(self._index(item_id), k, filters)
            return [pipeline.as_recommendation(lst, r) for r in range(len(lst))]

    def explain(self, user: str, item_id: str) -> str:
        """Why ``item_id`` suits ``user``, grounded in their history (LLM, or deterministic)."""
        from agent.stages.reasons import explain as explain_item

        with self._lock.read():
            index = self._index(item_id)
            state = self._state(user, None)
            events, items = state.latest(self.config.profile_events, without=index)
            embeddings = self.hybrid.facts.embeddings
            vectors = embeddings[items] if embeddings is not None else None
            item_vector = embeddings[index] if embeddings is not None else None
            item = self.catalogue.items[index]
        with pipeline.budget(self.parts):
            return explain_item(
                self.llm, events, item, history_vectors=vectors, item_vector=item_vector
            )

    # ---- feedback and deletion -----------------------------------------------------------------
    def feedback(
        self,
        user: str,
        item_id: str,
        event: str,
        value: float | None = None,
        *,
        event_id: str | None = None,
    ) -> FeedbackReceipt:
        """Store one event durably (committed before this returns); the user's next
        recommendation reflects it.

        Args:
            event_id: The client's idempotency key: a retry with the same key returns the first
                receipt (``duplicate=True``) and stores nothing new.

        Raises:
            ValueError: empty user id, unknown event kind, or a rating without a value.
            UnknownItemError: ``item_id`` is not in the catalogue.
            agent.feedback.EventConflict: ``event_id`` was used for a different event.
            agent.feedback.StoreUnavailable: the store could not commit in time (retry later).
        """
        if not isinstance(user, str) or not user.strip():
            raise ValueError("user id must be a non-empty string")
        check_event(event, value)
        # no model lock: the catalogue only grows, so an item that passed the check stays, and
        # feedback never waits behind a catalogue writer or someone else's LLM call
        self._index(item_id)
        stored = self.store.add(user, item_id, event, value, client_id=event_id)
        if self.profiles is not None:
            try:  # after the commit: a failure here must not fail an event that is stored
                self.profiles.forget(self._user_key(user))  # stale: rebuilt on the next request
            except OSError as e:
                log.warning("feedback stored, but the cached profile could not be dropped: %s", e)
        positive = is_positive(event, value, self.config.positive_rating)
        return FeedbackReceipt(
            stored.id,
            user,
            item_id,
            event,
            value,
            stored.timestamp,
            positive,
            stored.client_id,
            stored.duplicate,
        )

    def forget_user(self, user: str) -> int:
        """Remove every trace of ``user``: stored events, cached profile and its embedding, and
        their rows in the saved snapshot (the id is blanked there, so row numbers stay valid).

        Model parameters fitted on the snapshot (e.g. a collaborative user vector) stay until the
        next fit, unreachable: no id points at them any more.

        Returns:
            Events removed (stored feedback plus snapshot interactions).
        """
        with self._lock.write():
            key = self._user_key(user)
            row = self.catalogue.user_index.get(user)
            removed = self.store.forget(  # a shared store also records it for the replicas
                user,
                user_key=key,
                profile_key=self.profiles.user_pseudonym(key) if self.profiles else None,
                snapshot_row=row,
            )
            if self.profiles is not None:
                self.profiles.forget(key)
            if row is not None:
                removed += self._drop_snapshot_user(row)
        log.info("forgot a user: %d events removed", removed)
        return removed

    def _drop_snapshot_user(self, row: int) -> int:
        if self.model_dir is not None:  # the saved snapshot, not the live catalogue: items upserted
            folder = self.model_dir / "data"  # since the save are replayed from the store on load
            replace_snapshot(without_user(load_snapshot(folder), row), folder)
        new = without_user(self.catalogue, row)
        removed = len(self.catalogue.interactions) - len(new.interactions)
        self.hybrid.dataset = new
        self._seqs = Sequences(new.interactions, new.n_users)
        return removed

    # ---- catalogue ----------------------------------------------------------------------------
    def upsert_items(self, items: Sequence[Item]) -> int:
        """Add new items to the served catalogue, durably (an item sent again unchanged is a
        no-op). The new items are scored by their text until the next fit.

        Returns:
            How many items were added.

        Raises:
            ValueError: an empty id or title, the same id twice, or an id already in the
                catalogue with different content (changing an item needs a refit); nothing
                changes then.
        """
        check_upsert(items)
        # the text vectors are computed before the write lock, which is held only to apply them
        fresh = new_items(self.catalogue, items, strict=True)
        encoded = self.encoder.encode_items(fresh) if fresh else []
        vectors = dict(zip([it.item_id for it in fresh], encoded, strict=True))
        with self._lock.write():
            added = self._apply_items(items, strict=True, vectors=vectors)
            # served first, stored second: a crash in between loses an item nobody was told
            # about, never one that was acknowledged (and a failed add stores nothing). The whole
            # request is stored, not only the new items, so a retry after a failed store write
            # still stores items the first attempt already served.
            self.store.upsert_items(items)
        return len(added)

    def _apply_items(
        self, items: Sequence[Item], *, strict: bool, vectors: dict | None = None
    ) -> list[Item]:
        """Add the items the catalogue does not hold yet; returns them. ``vectors``: text vectors
        computed beforehand, by id (the others are encoded here)."""
        fresh = new_items(self.catalogue, items, strict=strict)  # again: a concurrent upsert
        if fresh:  # may have added some since the vectors were computed
            known = dict(vectors or {})
            missing = [it for it in fresh if it.item_id not in known]
            if missing:
                encoded = self.encoder.encode_items(missing)
                known.update(zip([it.item_id for it in missing], encoded, strict=True))
            self.hybrid.add_items(fresh, np.stack([known[it.item_id] for it in fresh]))
        return fresh

    # ---- internals ------------------------------------------------------------------------------
    @property
    def n_items(self) -> int:
        return self.catalogue.n_items

    def _index(self, item_id: str) -> int:
        return item_index(self.catalogue, item_id)

    def _user_key(self, user: str) -> str:
        from agent.stages.privacy import pseudonymize

        return pseudonymize(user, self._salt)

    def _state(self, user: str | None, history: Sequence[str] | None) -> UserState:
        return user_state(
            self.catalogue, self._seqs, self.store, user, history, self.config.positive_rating
        )
