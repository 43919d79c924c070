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

The class is the API's surface; what its methods do lives beside it: the model folder
(:mod:`agent.folder`), the LLM stages it is built with (:mod:`agent.llm_stages`), search, similar
items and explain (:mod:`agent.lookups`), feedback and forgetting a user (:mod:`agent.user_data`),
catalogue upserts (:mod:`agent.upserts`) and what a replica follows (:mod:`agent.replica`).
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Self

from agent import folder, lookups, pipeline, replica, upserts, user_data
from agent.config import FeedbackReceipt, Recommendation, Recommendations, RecommenderConfig
from agent.feedback import FeedbackStore, Store
from agent.folder import CONFIG_FILE, FEEDBACK_FILE
from agent.llm import LLM
from agent.llm.guard import GuardedLLM
from agent.llm_stages import llm_stages
from agent.locks import RWLock
from agent.state import Sequences, UnknownItemError, item_index, user_state
from encoders.base import FitData
from encoders.text import TextEncoder, TextEncoderConfig
from hyrec.data import Dataset, Interactions, Item, leave_one_out
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
        profiles, reranker = llm_stages(
            self.llm,
            encoder,
            config.rerank,
            store,
            salt=salt,
            uses_profile=hybrid.uses_profile,
            model_dir=model_dir,
        )
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
            score=_slots(config.scoring),
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
        """Close the feedback store (checkpointing its WAL; stopping the shared follower) and the
        item store (:meth:`retrieval.store.ItemStore.close`)."""
        try:
            self.store.close()
        finally:
            if self.hybrid.store is not None:
                self.hybrid.store.close()

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
        return lookups.search(self, query, k, filters)

    def similar_items(
        self, item_id: str, k: int = 10, filters: Filter | None = None
    ) -> list[Recommendation]:
        """Items like ``item_id`` (text and collaborative neighbours, per the hybrid)."""
        return lookups.similar_items(self, item_id, k, filters)

    def explain(self, user: str, item_id: str) -> str:
        """Why ``item_id`` suits ``user``, grounded in their history (LLM, or deterministic)."""
        return lookups.explain(self, user, item_id)

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
        return user_data.feedback(self, user, item_id, event, value, event_id)

    def forget_user(self, user: str) -> int:
        """Remove every trace of ``user``: stored events, cached profile and its embedding, and
        their rows in the saved snapshot (the id is blanked there, so row numbers stay valid).

        Model parameters fitted on the snapshot (e.g. a collaborative user vector) stay until the
        next fit, unreachable: no id points at them any more.

        Returns:
            Events removed (stored feedback plus snapshot interactions).
        """
        return user_data.forget_user(self, user)

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
        return upserts.upsert_items(self, items)

    def _apply_items(
        self, items: Sequence[Item], *, strict: bool, vectors: dict | None = None
    ) -> list[Item]:
        """Add the items the catalogue does not hold yet (:func:`agent.upserts.apply_items`)."""
        return upserts.apply_items(self, items, strict=strict, vectors=vectors)

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


def _slots(n: int) -> Callable[[], threading.BoundedSemaphore]:
    """``n`` slots as a context-manager factory (``with slots():`` takes one)."""
    semaphore = threading.BoundedSemaphore(n)
    return lambda: semaphore
