"""The Python API: :class:`Recommender` wraps the hybrid, the LLM stages and the feedback store.

One request, in order::

    user → history (saved snapshot + stored feedback) → [LLM profile → profile vector]
         → context/query text → query vector + filters → hybrid head top-N
         → [LLM re-rank of the top 20] → top-k → reasons

Everything in brackets needs an LLM. Without one (``llm=None``) the hybrid answers alone; with one,
every LLM failure degrades that stage to its deterministic fallback and is named in
:attr:`Recommendations.fallbacks`. A user the model has never seen gets the cold-start path
(popularity, plus the context/query text), never an exception. Feedback is committed to the
:class:`~agent.feedback.FeedbackStore` before it is acknowledged, and the next recommendation for
that user folds it in: a user with stored events is scored from their whole sequence (every
collaborative component folds the sequence in, as for a new user), so the new events move every
signal, not only the sequential ones. Raw user ids never reach a prompt: profiles are keyed by a
salted pseudonym (:func:`agent.privacy.pseudonymize`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import numpy as np

from encoders.base import FitData
from encoders.text import PACKAGED_MODEL, TextEncoder, TextEncoderConfig
from hyrec.data import Dataset, History, Interactions, Item, leave_one_out
from hyrec.data.snapshot import load_snapshot, save_snapshot
from retrieval.hybrid import HybridConfig, HybridRecommender
from retrieval.items import ItemList
from retrieval.store import Filter

from .feedback import FeedbackStore, check_event, is_positive
from .llm import LLM, Completion, LLMTimeout, Message

if TYPE_CHECKING:
    from .profiles import InterestProfile, ProfileEvent

log = logging.getLogger(__name__)

CONFIG_FILE = "recommender.json"
FEEDBACK_FILE = "feedback.sqlite3"


class UnknownItemError(KeyError):
    """An item id that is not in the catalogue (the message names it)."""

    def __str__(self) -> str:  # KeyError would print the repr of its argument
        return str(self.args[0]) if self.args else "unknown item"


@dataclass(frozen=True)
class RecommenderConfig:
    """Everything :class:`Recommender` adds on top of the hybrid's own config."""

    hybrid: HybridConfig = field(default_factory=HybridConfig)
    text_model: str = PACKAGED_MODEL  # item/query encoder (see encoders.text.TextEncoderConfig)
    rerank_candidates: int = 20  # head top-N the LLM re-ranks (a 135M model handles ~20 titles)
    llm_reasons: int = 3  # items whose reason the LLM writes; the rest get the deterministic reason
    # LLM seconds one recommendation may spend over all its stages; calls past it fail fast as
    # timeouts, so those stages fall back (one slow call can no longer stack up 30 s per stage)
    # (30 s: the packaged 135M model needs 6-9 s per profile on 2 cores, ~5 s per re-rank)
    llm_budget: float = 30.0
    profile_share: float = 0.5  # of that budget the profile may use, so re-ranking keeps a turn
    profile_events: int = 50  # latest events an interest profile is built from
    prompt_history: int = 20  # latest titles shown to the re-ranker
    positive_rating: float = 3.5  # a "rating" event at or above this counts as interest
    synchronous: str = "FULL"  # feedback store durability (see agent.feedback)

    def __post_init__(self) -> None:
        """Fail on values that would silently turn every LLM stage (or list) off."""
        checks = {
            "llm_budget": self.llm_budget > 0,
            "profile_share": 0 < self.profile_share <= 1,
            "rerank_candidates": self.rerank_candidates >= 1,
            "llm_reasons": self.llm_reasons >= 0,
            "profile_events": self.profile_events >= 1,
            "prompt_history": self.prompt_history >= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            values = ", ".join(f"{name}={getattr(self, name)!r}" for name in bad)
            raise ValueError(
                f"RecommenderConfig: {values} out of range (llm_budget > 0, "
                "0 < profile_share <= 1, rerank_candidates, profile_events and prompt_history "
                ">= 1, llm_reasons >= 0)"
            )


@dataclass(frozen=True)
class Recommendation:
    """One recommended item.

    Attributes:
        item_id: Catalogue id.
        title: Catalogue title.
        score: Final score (head score, or the position score the LLM re-ranker gave).
        sources: Candidate sources that proposed the item ("als", "semantic", "query", …).
        contributions: Each component's score for the item (the head's inputs, by name).
        reason: A short explanation grounded in the user's history, when asked for.
    """

    item_id: str
    title: str
    score: float
    sources: tuple[str, ...]
    contributions: Mapping[str, float]
    reason: str | None = None


@dataclass(frozen=True)
class Recommendations:
    user_id: str | None
    items: tuple[Recommendation, ...]
    fallbacks: tuple[str, ...] = ()  # e.g. "rerank: LLM timeout, used mmr"
    profile: InterestProfile | None = None


@dataclass(frozen=True)
class FeedbackReceipt:
    """An acknowledged (committed) feedback event."""

    event_id: int
    user_id: str
    item_id: str
    event: str
    value: float | None
    timestamp: float
    positive: bool  # whether it counts as interest (joins the user's sequence)


@dataclass(frozen=True)
class _UserState:
    """What is known about one user at request time."""

    row: int  # index the components were trained with; -1 when scored from the sequence alone
    sequence: np.ndarray  # item indices, oldest first (snapshot, then positive feedback)
    disliked: tuple[str, ...]  # item ids with negative feedback: never recommended again
    events: tuple[ProfileEvent, ...]  # for profiles and reasons, oldest first
    event_items: np.ndarray  # the item index of each event


class _RWLock:
    """Many readers (recommendations) or one writer (catalogue and user deletion); a waiting
    writer holds back new readers, so a steady stream of requests cannot starve it."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


class _Budgeted:
    """An LLM that caps each call at what is left of the calling thread's time budget.

    The stages run in the request's thread, so a thread-local deadline bounds one request's LLM
    time without the stages knowing about it; a call made after the deadline raises
    :class:`LLMTimeout` at once (and the stage falls back).
    """

    def __init__(self, llm: LLM) -> None:
        self.inner = llm
        self.name = getattr(llm, "name", "llm")
        self._local = threading.local()

    @contextmanager
    def budget(self, seconds: float) -> Iterator[None]:
        outer = getattr(self._local, "deadline", None)
        deadline = time.monotonic() + seconds
        self._local.deadline = deadline if outer is None else min(outer, deadline)
        try:
            yield
        finally:
            self._local.deadline = outer

    def complete(
        self, messages: Sequence[Message], *, timeout: float | None = None, **kwargs: Any
    ) -> Completion:
        deadline = getattr(self._local, "deadline", None)
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0.05:
                raise LLMTimeout("this request's LLM time budget is spent")
            timeout = left if timeout is None else min(timeout, left)
        return self.inner.complete(messages, timeout=timeout, **kwargs)

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()


class _Sequences:
    """Each snapshot user's items in time order, indexed once (CSR-like)."""

    def __init__(self, inter: Interactions, n_users: int) -> None:
        order = inter.chronological_order()
        users = inter.user[order]
        self.items = inter.item[order].astype(np.int64)
        self.ratings = inter.rating[order]
        self.timestamps = inter.timestamp[order]
        self.starts = np.searchsorted(users, np.arange(n_users + 1))

    def of(self, row: int) -> slice:
        return slice(int(self.starts[row]), int(self.starts[row + 1]))


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
        store: FeedbackStore,
        *,
        salt: str,
        llm: LLM | None = None,
        model_dir: Path | None = None,
    ) -> None:
        self.hybrid = hybrid
        self.encoder = encoder
        self.config = config
        self.store = store
        self.llm = _Budgeted(llm) if llm is not None else None
        self.model_dir = model_dir
        self._salt = salt
        self._lock = _RWLock()
        self._seqs = _Sequences(self.catalogue.interactions, self.catalogue.n_users)
        self.profiles = None
        self.reranker = None
        if llm is not None or getattr(hybrid, "uses_profile", False):
            # a head trained with the profile feature needs a profile vector even without an LLM:
            # the service then builds the deterministic, attribute-based profile
            from .profiles import ProfileService

            cache = model_dir / "profiles" if model_dir is not None else None
            self.profiles = ProfileService(self.llm, encoder, cache_dir=cache)
        if llm is not None:
            from .rerank import LLMReranker, RerankConfig

            self.reranker = LLMReranker(self.llm, RerankConfig(window=config.rerank_candidates))

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
        path = Path(path)
        target = path / FEEDBACK_FILE
        with self._lock.write():
            # A folder that was served already holds feedback: a refit into it keeps those events
            # (and the salt their pseudonyms were made with) instead of failing half-way through.
            adopt = target.exists() and (
                self.store.path is None or target.resolve() != self.store.path.resolve()
            )
            if adopt and (self.store.count() or self.store.items()):
                raise FileExistsError(
                    f"{target}: the folder already holds feedback and so does this model; save "
                    "to another folder (nothing was written)"
                )
            if adopt and (path / CONFIG_FILE).is_file():
                self._salt = json.loads((path / CONFIG_FILE).read_text()).get("salt", self._salt)
            self.hybrid.save(path)
            body = {"config": _config_dict(self.config), "salt": self._salt}
            (path / CONFIG_FILE).write_text(json.dumps(body, indent=2))
            if adopt:
                self.store.close()
                self.store = FeedbackStore(target, synchronous=self.config.synchronous)
            else:
                self.store.backup_to(target)
            self.model_dir = path

    @classmethod
    def load(
        cls,
        path: Path,
        llm: LLM | None = None,
        *,
        encoder: TextEncoder | None = None,
        feedback_path: Path | None = None,
    ) -> Self:
        """Open a model folder written by :meth:`save` or ``hyrec fit``.

        Args:
            path: The model folder.
            llm: Optional LLM (``None``: the non-LLM path).
            encoder: Text encoder override (tests inject a fake model here).
            feedback_path: Feedback database (default: ``<path>/feedback.sqlite3``).

        Raises:
            FileNotFoundError: ``path`` holds no saved model.
            ValueError: its recommender.json holds an out-of-range setting (named).
        """
        path = Path(path)
        hybrid = HybridRecommender.load(path)
        file = path / CONFIG_FILE
        if file.is_file():
            body = json.loads(file.read_text())
            try:
                config = _config_from(body.get("config", {}), hybrid.config)
            except (TypeError, ValueError) as e:
                raise ValueError(f"{file}: {e}") from None
            salt = body["salt"]
        else:  # a folder from `hyrec fit`: keep a salt so pseudonyms stay stable across restarts
            config, salt = RecommenderConfig(hybrid=hybrid.config), secrets.token_hex(16)
            file.write_text(json.dumps({"config": _config_dict(config), "salt": salt}, indent=2))
        encoder = encoder or TextEncoder(
            TextEncoderConfig(model=config.text_model, show_progress=False)
        )
        store = FeedbackStore(feedback_path or path / FEEDBACK_FILE, synchronous=config.synchronous)
        model = cls(hybrid, encoder, config, store, salt=salt, llm=llm, model_dir=path)
        stored = store.items()
        if stored:
            added = model._apply_items(stored, strict=False)
            log.info("replayed %d catalogue upserts from %s", len(added), store.path)
        return model

    def close(self) -> None:
        """Close the feedback store (checkpointing its WAL)."""
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
                and query text by :func:`agent.intent.parse_request`.
            query: Free text the list should match (embedded as is).
            filters: Genre/year constraints and ids to leave out.
            exclude: More item ids to leave out.
            explain: Attach a reason to every item.

        Raises:
            ValueError: ``k`` < 1.
            UnknownItemError: ``history`` names an item that is not in the catalogue.
        """
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        fallbacks: list[str] = []
        with self._lock.read(), self._budget():
            state = self._state(user, history)
            texts = [query] if query else []
            flt = _merge(filters, Filter(exclude_ids=tuple(exclude) + state.disliked))
            if context:
                from .intent import parse_request

                intent = parse_request(context, self.catalogue)
                flt = _merge(flt, intent.filters)
                texts.append(intent.query_text)
            profile, profile_vec = self._profile(user, history, state, fallbacks)
            kwargs: dict[str, Any] = {}
            text = " ".join(t for t in texts if t and t.strip())
            if text:
                kwargs["query_vectors"] = self.encoder.encode_queries([text])
            if profile_vec is not None:
                kwargs["profile_vectors"] = profile_vec
            n = max(k, self.config.rerank_candidates) if self.reranker is not None else k
            hist = History(np.array([state.row], np.int64), (state.sequence,), self.n_items)
            ranked = self.hybrid.recommend_batch(hist, n, flt, **kwargs)[0]
            ranked = self._rerank(ranked, state, k, fallbacks)
            items = [self._item(ranked, r) for r in range(len(ranked))]
            if explain:
                items = self._with_reasons(items, state, fallbacks)
        return Recommendations(user, tuple(items), tuple(fallbacks), profile)

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
            out = []
            for item_id, cos in hits:
                item = self.catalogue.items[self._index(item_id)]
                out.append(
                    Recommendation(item_id, item.title, cos, ("query",), {"query": cos}, None)
                )
        return out

    def similar_items(
        self, item_id: str, k: int = 10, filters: Filter | None = None
    ) -> list[Recommendation]:
        """Items like ``item_id`` (text and collaborative neighbours, per the hybrid)."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        with self._lock.read():
            lst = self.hybrid.similar(self._index(item_id), k, filters)
            return [self._item(lst, r) for r in range(len(lst))]

    def explain(self, user: str, item_id: str) -> str:
        """Why ``item_id`` suits ``user``, grounded in their history (LLM, or deterministic)."""
        from .rerank import explain as explain_item

        n = self.config.profile_events
        with self._lock.read():
            index = self._index(item_id)
            state = self._state(user, None)
            other = state.event_items != index  # an item does not explain itself
            events = [e for e, keep in zip(state.events, other, strict=True) if keep][-n:]
            embeddings = self.hybrid.facts.embeddings
            vectors = embeddings[state.event_items[other][-n:]] if embeddings is not None else None
            item_vector = embeddings[index] if embeddings is not None else None
            item = self.catalogue.items[index]
        with self._budget():
            return explain_item(
                self.llm, events, item, history_vectors=vectors, item_vector=item_vector
            )

    # ---- feedback and deletion -----------------------------------------------------------------
    def feedback(
        self, user: str, item_id: str, event: str, value: float | None = None
    ) -> FeedbackReceipt:
        """Store one event durably (committed before this returns); the user's next
        recommendation reflects it.

        Raises:
            ValueError: empty user id, unknown event kind, or a rating without a value.
            UnknownItemError: ``item_id`` is not in the catalogue.
        """
        if not isinstance(user, str) or not user.strip():
            raise ValueError("user id must be a non-empty string")
        check_event(event, value)
        with self._lock.read():  # the item must not vanish between the check and the write
            self._index(item_id)
            stored = self.store.add(user, item_id, event, value)
        if self.profiles is not None:
            self.profiles.forget(self._user_key(user))  # stale: rebuilt on the next request
        positive = is_positive(event, value, self.config.positive_rating)
        return FeedbackReceipt(stored.id, user, item_id, event, value, stored.timestamp, positive)

    def forget_user(self, user: str) -> int:
        """Remove every trace of ``user``: stored events, cached profile and its embedding, and
        their rows in the saved snapshot (the id is blanked there, so row numbers stay valid).

        Model parameters fitted on the snapshot (e.g. a collaborative user vector) stay until the
        next fit, unreachable: no id points at them any more.

        Returns:
            Events removed (stored feedback plus snapshot interactions).
        """
        with self._lock.write():
            removed = self.store.forget(user)
            if self.profiles is not None:
                self.profiles.forget(self._user_key(user))
            row = self.catalogue.user_index.get(user)
            if row is not None:
                removed += self._drop_snapshot_user(row)
        log.info("forgot a user: %d events removed", removed)
        return removed

    def _drop_snapshot_user(self, row: int) -> int:
        if self.model_dir is not None:  # the saved snapshot, not the live catalogue: items upserted
            folder = self.model_dir / "data"  # since the save are replayed from the store on load
            _replace_snapshot(_without_user(load_snapshot(folder), row), folder)
        new = _without_user(self.catalogue, row)
        removed = len(self.catalogue.interactions) - len(new.interactions)
        self.hybrid.dataset = new
        self._seqs = _Sequences(new.interactions, new.n_users)
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
        ids = [it.item_id for it in items]
        if len(set(ids)) != len(ids):
            raise ValueError("the same item id appears twice in one upsert")
        for it in items:
            if not it.item_id.strip() or not it.title.strip():
                raise ValueError(f"item {it.item_id!r} needs a non-empty item_id and title")
        with self._lock.write():
            added = self._apply_items(items, strict=True)
            # served first, stored second: a crash in between loses an item nobody was told
            # about, never one that was acknowledged (and a failed add stores nothing). The whole
            # request is stored, not only the new items, so a retry after a failed store write
            # still stores items the first attempt already served.
            self.store.upsert_items(items)
        return len(added)

    def _apply_items(self, items: Sequence[Item], *, strict: bool) -> list[Item]:
        """Add the items the catalogue does not hold yet; returns them."""
        ds = self.catalogue
        fresh = []
        for it in items:
            index = ds.item_index.get(it.item_id)
            if index is None:
                fresh.append(it)
            elif _content(ds.items[index]) != _content(it):
                message = (
                    f"item {it.item_id!r} is already in the catalogue with different content; "
                    "changing an existing item needs a refit (hyrec fit)"
                )
                if strict:
                    raise ValueError(message)
                log.warning("skipping a stored upsert: %s", message)
        if fresh:
            self.hybrid.add_items(fresh, self.encoder.encode_items(fresh))
        return fresh

    # ---- internals ------------------------------------------------------------------------------
    @contextmanager
    def _budget(self, seconds: float | None = None) -> Iterator[None]:
        """LLM calls inside share ``seconds`` (default: the whole ``llm_budget``)."""
        if self.llm is None:
            yield
            return
        with self.llm.budget(self.config.llm_budget if seconds is None else seconds):
            yield

    @property
    def n_items(self) -> int:
        return self.catalogue.n_items

    def _index(self, item_id: str) -> int:
        index = self.catalogue.item_index.get(item_id)
        if index is None:
            raise UnknownItemError(f"unknown item id {item_id!r}: it is not in the catalogue")
        return index

    def _user_key(self, user: str) -> str:
        from .privacy import pseudonymize

        return pseudonymize(user, self._salt)

    def _state(self, user: str | None, history: Sequence[str] | None) -> _UserState:

        ds = self.catalogue
        seq: list[np.ndarray] = []
        events: list[ProfileEvent] = []
        event_items: list[int] = []
        row = ds.user_index.get(user, -1) if user else -1
        if row >= 0:
            s = self._seqs.of(row)
            seq.append(self._seqs.items[s])
            event_items += self._seqs.items[s].tolist()
            for i, r, t in zip(
                self._seqs.items[s], self._seqs.ratings[s], self._seqs.timestamps[s], strict=True
            ):
                events.append(_event(ds.items[i], None if np.isnan(r) else float(r), int(t)))
        disliked: list[str] = []
        stored = self.store.events(user) if user else []
        positive = []
        for e in stored:
            index = ds.item_index.get(e.item_id)
            if index is None:  # an item removed since; the event stays stored
                continue
            rating = e.value if e.event == "rating" else _EVENT_RATING.get(e.event)
            events.append(_event(ds.items[index], rating, int(e.timestamp)))
            event_items.append(index)
            if is_positive(e.event, e.value, self.config.positive_rating):
                positive.append(index)
            else:
                disliked.append(e.item_id)
        if history:
            extra = [self._index(i) for i in history]
            positive += extra
            events += [_event(ds.items[i], None, 0) for i in extra]
            event_items += extra
        if positive:
            seq.append(np.asarray(positive, np.int64))
            row = -1  # fold the whole sequence in, so every component sees the new events
        sequence = np.concatenate(seq) if seq else np.zeros(0, np.int64)
        return _UserState(
            row,
            sequence,
            tuple(dict.fromkeys(disliked)),
            tuple(events),
            np.asarray(event_items, np.int64),
        )

    def _profile(
        self,
        user: str | None,
        history: Sequence[str] | None,
        state: _UserState,
        fallbacks: list[str],
    ) -> tuple[InterestProfile | None, np.ndarray | None]:
        if self.profiles is None or not state.events:
            return None, None
        if user:
            key = self._user_key(user)
            if history:
                key += "-" + _digest(history)
        else:
            key = "anon-" + _digest(history or ())
        events = state.events[-self.config.profile_events :]
        with self._budget(self.config.llm_budget * self.config.profile_share):
            profile = self.profiles.profile(key, events)
        if self.llm is not None and profile.source != "llm":
            why = getattr(profile, "fallback_reason", None) or "LLM failed"
            fallbacks.append(f"profile: {why}; used the attribute-based profile")
        vector = None
        if getattr(self.hybrid, "uses_profile", False):
            vector = self.profiles.embed([profile])
        return profile, vector

    def _rerank(
        self, ranked: ItemList, state: _UserState, k: int, fallbacks: list[str]
    ) -> ItemList:
        if self.reranker is None or len(ranked) <= 1:
            return ranked.top(k)
        items = self.catalogue.items
        titles = [items[i].title for i in ranked.items]
        recent = [e.title for e in state.events[-self.config.prompt_history :]]
        embeddings = self.hybrid.facts.embeddings
        if embeddings is None:
            embeddings = self.encoder.encode_items([items[i] for i in ranked.items])
        else:
            embeddings = embeddings[ranked.items]
        result = self.reranker.rerank(recent, ranked, titles, embeddings, k)
        if result.method != "llm":
            fallbacks.append(f"rerank: {result.error or 'LLM unavailable'}; used {result.method}")
        return result.items.top(k) if len(result.items) > k else result.items

    def _item(self, lst: ItemList, r: int) -> Recommendation:
        item = self.catalogue.items[int(lst.items[r])]
        contributions = {name: float(col[r]) for name, col in lst.columns.items()}
        return Recommendation(
            item.item_id,
            item.title,
            float(lst.scores[r]),
            tuple(lst.source_names(r)),
            contributions,
        )

    def _with_reasons(
        self, items: list[Recommendation], state: _UserState, fallbacks: list[str]
    ) -> list[Recommendation]:
        from .rerank import explanation

        n = self.config.profile_events
        history = state.events[-n:]
        embeddings = self.hybrid.facts.embeddings
        vectors = embeddings[state.event_items[-n:]] if embeddings is not None else None
        out, failed = [], []
        for rank, rec in enumerate(items):
            llm = self.llm if rank < self.config.llm_reasons else None
            index = self._index(rec.item_id)
            got = explanation(
                llm,
                history,
                self.catalogue.items[index],
                history_vectors=vectors,
                item_vector=embeddings[index] if embeddings is not None else None,
            )
            if llm is not None and got.source != "llm":
                failed.append(got.error or "LLM failed")
            out.append(Recommendation(**{**_fields(rec), "reason": got.text}))
        if failed:
            fallbacks.append(
                f"reasons: {len(failed)} LLM reason(s) failed ({failed[0]}); "
                "used similarity-based reasons"
            )
        return out


#: Ratings shown to the profile stage for events without a value.
_EVENT_RATING = {"like": 5.0, "purchase": 5.0, "dislike": 1.0, "skip": 2.0}


def _event(item: Item, rating: float | None, timestamp: int) -> ProfileEvent:
    from .profiles import ProfileEvent

    return ProfileEvent(item.title, item.attributes, rating, timestamp)


def _content(item: Item) -> str:
    body = [item.title, item.description, dict(item.attributes)]
    return json.dumps(body, sort_keys=True, ensure_ascii=False, default=str)


def _fields(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


def _digest(ids: Sequence[str]) -> str:
    return hashlib.sha256("\x00".join(ids).encode()).hexdigest()[:16]


def _merge(a: Filter | None, b: Filter | None) -> Filter | None:
    """Both filters at once (genres_any: ``a``'s when it has one, else ``b``'s); None if empty."""
    a, b = (None if f == Filter() else f for f in (a, b))
    if a is None or b is None:
        return a or b
    low = [y for y in (a.year_min, b.year_min) if y is not None]
    high = [y for y in (a.year_max, b.year_max) if y is not None]
    year_min, year_max = (max(low) if low else None), (min(high) if high else None)
    if year_min is not None and year_max is not None and year_min > year_max:
        year_min, year_max = a.year_min, a.year_max  # contradictory: the explicit filter wins
    merged = Filter(
        genres_any=a.genres_any or b.genres_any,
        genres_none=tuple(dict.fromkeys(a.genres_none + b.genres_none)),
        year_min=year_min,
        year_max=year_max,
        exclude_ids=tuple(dict.fromkeys(a.exclude_ids + b.exclude_ids)),
    )
    return None if merged == Filter() else merged


def _config_dict(config: RecommenderConfig) -> dict[str, Any]:
    return {k: v for k, v in asdict(config).items() if k != "hybrid"}


def _config_from(body: Mapping[str, Any], hybrid: HybridConfig) -> RecommenderConfig:
    known = {f.name for f in fields(RecommenderConfig)} - {"hybrid"}
    return RecommenderConfig(hybrid=hybrid, **{k: v for k, v in body.items() if k in known})


def _without_user(ds: Dataset, row: int) -> Dataset:
    """``ds`` without the interactions of user ``row``, whose id is blanked ("" is rejected
    everywhere, so no request can name it) so that row numbers stay valid."""
    user_ids = ds.user_ids.copy()
    user_ids[row] = ""
    keep = ds.interactions.user != row
    return Dataset(ds.name, ds.items, user_ids, ds.interactions.take(keep), ds.skipped)


def _replace_snapshot(ds: Dataset, folder: Path) -> None:
    """Rewrite a snapshot folder: write it beside the old one, then move each file over (each
    replacement is atomic)."""
    tmp = folder.with_name(folder.name + ".new")
    save_snapshot(ds, tmp)
    for name in os.listdir(tmp):
        os.replace(tmp / name, folder / name)
    tmp.rmdir()
