"""A :class:`~hyrec.data.History` batch → (B, d) interest-profile vectors: :class:`HistoryProfiles`,
the ``profiles`` argument of ``HybridRecommender.fit(profiles=...)`` (the head's
``profile_cosine`` feature). Each row's events are rebuilt from the dataset's interactions and
profiled by a :class:`~agent.stages.profiles.ProfileService` (LLM or deterministic), then embedded.
"""

from __future__ import annotations

import hashlib

import numpy as np

from agent.stages.profile_fallback import fallback_profile
from agent.stages.profile_types import InterestProfile, ProfileEvent
from agent.stages.profiles import ProfileService
from hyrec.data import Dataset
from hyrec.data.splits import History


class HistoryProfiles:
    """Maps a :class:`History` batch to (B, d) profile vectors, the ``profiles`` argument of
    :meth:`HybridRecommender.fit`.

    Ratings and times of each (user, item) come from ``dataset.interactions`` (the latest event of
    the pair); a cold-start row (user −1) gets events without rating, keyed by its item sequence.
    Rows with an empty history get a zero vector (no profile, no signal).

    Args:
        service: Produces and embeds the profiles.
        dataset: Catalogue, user ids and interactions.
        llm_users: If given, only these internal user indices are profiled by ``service``; the
            others get :func:`fallback_profile` (e.g. to spend LLM calls on an evaluated sample).
    """

    def __init__(
        self,
        service: ProfileService,
        dataset: Dataset,
        *,
        llm_users: set[int] | None = None,
    ) -> None:
        self.service = service
        self.dataset = dataset
        self.llm_users = llm_users
        self._fallback = (
            ProfileService(None, service.encoder, None, service.config)
            if llm_users is not None
            else None
        )
        inter = dataset.interactions
        order = np.argsort(inter.timestamp, kind="stable")  # later events overwrite earlier ones
        self._facts = {
            (int(u), int(i)): (float(r), int(t))
            for u, i, r, t in zip(
                inter.user[order],
                inter.item[order],
                inter.rating[order],
                inter.timestamp[order],
                strict=True,
            )
        }

    def events(self, user: int, sequence: np.ndarray) -> list[ProfileEvent]:
        out = []
        for pos, i in enumerate(np.asarray(sequence).tolist()):
            item = self.dataset.items[i]
            rating, ts = self._facts.get((user, i), (float("nan"), pos))
            out.append(
                ProfileEvent(item.title, item.attributes, None if np.isnan(rating) else rating, ts)
            )
        return out

    def user_key(self, user: int, sequence: np.ndarray) -> str:
        if user >= 0:
            return str(self.dataset.user_ids[user])
        digest = hashlib.sha256(np.asarray(sequence, np.int64).tobytes()).hexdigest()[:16]
        return f"anonymous:{digest}"

    def profiles(self, history: History) -> list[InterestProfile | None]:
        """One profile per row (``None`` for an empty history)."""
        batches: dict[ProfileService, dict[str, list[ProfileEvent]]] = {}
        keys: list[tuple[ProfileService, str] | None] = []
        for user, seq in zip(history.users.tolist(), history.sequences, strict=True):
            if not len(seq):
                keys.append(None)
                continue
            use_llm = self.llm_users is None or user in self.llm_users
            service = self.service if use_llm else self._fallback
            key = self.user_key(user, seq)
            batches.setdefault(service, {})[key] = self.events(user, seq)
            keys.append((service, key))
        done = {s: s.profile_many(b) for s, b in batches.items()}
        return [None if k is None else done[k[0]][k[1]] for k in keys]

    def __call__(self, history: History) -> np.ndarray:
        """(B, d) unit-norm float32 profile vectors (zero rows for empty histories)."""
        found = self.profiles(history)
        rows = [r for r, p in enumerate(found) if p is not None]
        vecs = self.service.embed([found[r] for r in rows]) if rows else None
        dim = vecs.shape[1] if vecs is not None else self._dim()
        out = np.zeros((len(history), dim), np.float32)
        if vecs is not None:
            out[rows] = vecs
        return out

    def _dim(self) -> int:
        return int(self.service.embed([fallback_profile([])]).shape[1])
