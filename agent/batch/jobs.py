"""What each batch job computes, shared by every engine: :class:`BatchWorker` and the row builders.

A :class:`BatchWorker` opens the model folder once (a :class:`~agent.api.Recommender`, with the
LLM client when the job has one) and turns a batch of keys into rows, ``threads`` rows at once,
so the LLM calls of one batch overlap. The local engine calls it in this process; the Ray engine
hands the class itself to ``Dataset.map_batches``, which builds one per actor.

* ``profiles``: the user's interest profile exactly as serving builds it (the same user state,
  pseudonym, latest ``profile_events`` events and :class:`~agent.stages.profiles.ProfileService`
  of the model folder), so it lands in the folder's profile cache under the key serving looks up.
  An LLM failure gives the attribute-based profile, and the row says so (``status="fallback"``,
  ``reason``); such a profile is not cached, as in serving.
* ``recommend``: ``Recommender.recommend(user, k=k, explain=reasons)``, row for row.
* ``embed``: the text vectors of items (through the encoder's on-disk cache, which serving reads
  too) or of each user's profile.

A row that raises is recorded with ``status="error"`` and the reason; it is never dropped.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from agent.batch.config import BatchConfig
from hyrec.data import Item

if TYPE_CHECKING:
    from agent.api import Recommender
    from agent.config import Recommendations
    from agent.llm import LLM
    from agent.stages.profiles import InterestProfile, ProfileService
    from encoders.text import TextEncoder

log = logging.getLogger(__name__)

Row = dict[str, Any]


class BatchWorker:
    """Loads the model (and LLM client) once; turns batches of keys into rows.

    Args:
        config: The job.
        llm: An LLM object to use (the local engine, tests); ``None``: connect from
            ``config.llm`` (``None`` there too: no LLM).
        threads: Rows computed at once within one batch.
        encoder: A text encoder to use instead of the model's configured one (tests).
    """

    def __init__(
        self,
        config: BatchConfig,
        llm: LLM | None = None,
        threads: int = 1,
        encoder: TextEncoder | None = None,
    ) -> None:
        from agent.api import Recommender
        from hyrec.threads import limit_blas

        limit_blas()
        self.config = config
        self.threads = max(1, threads)
        self._handle = None
        if llm is None and config.llm is not None and config.vllm is None:
            from agent.llm.connect import connect

            settings = config.llm.for_batch(max(self.threads, 1))
            self._handle = connect(settings, start_embedded=False, probe=False)
            llm = self._handle.llm
        shared = {"feedback_url": config.feedback_url} if config.feedback_url else {}
        self.model: Recommender = Recommender.load(
            Path(config.model_dir), llm=llm, encoder=encoder, **shared
        )
        self._service: ProfileService | None = None
        self._items: dict[str, Item] | None = None

    # ---- the Ray Data / local entry point --------------------------------------------------------
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``{"key": ids}`` → ``{"key": ids, "row": JSON rows}`` (Ray Data's numpy batches)."""
        keys = [str(k) for k in batch["key"]]
        rows = self.rows(keys)
        return {
            "key": np.asarray(keys, dtype=object),
            "row": np.asarray([json.dumps(r, ensure_ascii=False) for r in rows], dtype=object),
        }

    def rows(self, keys: Sequence[str]) -> list[Row]:
        """One row per key, in order."""
        job = self.config.job
        if job == "embed" and self.config.embed == "items":
            return self._item_vectors(keys)
        one: Callable[[str], Row] = {
            "profiles": self._profile_row,
            "recommend": self._recommend_row,
            "embed": self._profile_vector_row,
        }[job]
        if self.threads == 1 or len(keys) == 1:
            return [self._guarded(one, k) for k in keys]
        with ThreadPoolExecutor(max_workers=min(self.threads, len(keys))) as pool:
            return list(pool.map(lambda k: self._guarded(one, k), keys))

    def close(self) -> None:
        self.model.close()
        if self._handle is not None:
            self._handle.close()

    # ---- jobs -----------------------------------------------------------------------------------
    def _guarded(self, one: Callable[[str], Row], key: str) -> Row:
        try:
            return one(key)
        except Exception as e:  # recorded in the output, never dropped
            log.warning("batch %s: %s failed: %s", self.config.job, key, e)
            return error_row(self.config, key, f"{type(e).__name__}: {e}")

    @property
    def service(self) -> ProfileService:
        """The model folder's profile service (the one serving uses), or a deterministic one."""
        if self._service is None:
            from agent.stages.profiles import ProfileConfig, ProfileService

            self._service = self.model.profiles or ProfileService(
                None,
                self.model.encoder,
                cache_dir=self.model.model_dir / "profiles",
                config=ProfileConfig(show_progress=False),
            )
        return self._service

    def profile(self, user: str) -> tuple[InterestProfile | None, int, str]:
        """(profile, events used, fingerprint) as the serving profile stage computes it."""
        from agent.stages.profiles import history_fingerprint

        state = self.model.parts.users(user, ())
        events = state.events[-self.model.config.profile_events :]
        if not events:
            return None, 0, history_fingerprint(events)
        profile = self.service.profile(self.model.parts.user_key(user), events)
        return profile, len(events), history_fingerprint(events)

    def _profile_row(self, user: str) -> Row:
        profile, n_events, fingerprint = self.profile(user)
        return profile_row(user, profile, n_events, fingerprint)

    def _recommend_row(self, user: str) -> Row:
        recs = self.model.recommend(user, k=self.config.k, explain=self.config.reasons)
        return recommend_row(user, recs)

    def _profile_vector_row(self, user: str) -> Row:
        profile, _, _ = self.profile(user)
        if profile is None:
            return {"user_id": user, "status": "error", "reason": "no history", "vector": None}
        vector = self.service.embed([profile])[0]
        status = "ok" if profile.fallback_reason is None else "fallback"
        return {
            "user_id": user,
            "status": status,
            "reason": profile.fallback_reason,
            "source": profile.source,
            "vector": vector.astype(np.float32).tolist(),
        }

    def _item_vectors(self, keys: Sequence[str]) -> list[Row]:
        items = self.items()
        found = [items[k] for k in keys]
        try:
            vectors = self.model.encoder.encode_items(found)
        except Exception:  # find the rows that fail, one by one
            return [self._guarded(lambda k: self._item_vectors([k])[0], k) for k in keys]
        return [
            {
                "item_id": it.item_id,
                "status": "ok",
                "reason": None,
                "text_sha256": _sha256(self.model.encoder.render(it)),
                "vector": v.astype(np.float32).tolist(),
            }
            for it, v in zip(found, vectors, strict=True)
        ]

    def items(self) -> dict[str, Item]:
        """The catalogue to embed: ``items_file`` when given, else the model's."""
        if self._items is None:
            self._items = {it.item_id: it for it in job_items(self.config, self.model)}
        return self._items


# ---- rows ----------------------------------------------------------------------------------
def profile_row(user: str, profile: InterestProfile | None, n_events: int, fingerprint: str) -> Row:
    """A ``profiles`` row; ``profile=None``: the user has no history (an error row)."""
    if profile is None:
        return {
            "user_id": user,
            "status": "error",
            "reason": "no history to profile",
            "n_events": 0,
            "fingerprint": fingerprint,
        }
    return {
        "user_id": user,
        "status": "ok" if profile.fallback_reason is None else "fallback",
        "reason": profile.fallback_reason,
        "source": profile.source,
        "likes": list(profile.likes),
        "dislikes": list(profile.dislikes),
        "recent_shift": profile.recent_shift,
        "constraints": list(profile.constraints),
        "summary": profile.summary,
        "prompt_version": profile.prompt_version,
        "model": profile.model,
        "n_events": n_events,
        "fingerprint": fingerprint,
        "cached": profile.fallback_reason is None,  # in the model folder's cache for serving
    }


def recommend_row(user: str, recs: Recommendations) -> Row:
    """A ``recommend`` row: the list ``Recommender.recommend`` returned, column by column."""
    return {
        "user_id": user,
        "status": "ok" if not recs.fallbacks else "fallback",
        "reason": "; ".join(recs.fallbacks) or None,
        "item_ids": [r.item_id for r in recs.items],
        "titles": [r.title for r in recs.items],
        "scores": [float(r.score) for r in recs.items],
        "sources": [",".join(r.sources) for r in recs.items],
        "reasons": [r.reason for r in recs.items] if any(r.reason for r in recs.items) else None,
        "fallbacks": list(recs.fallbacks),
    }


def error_row(config: BatchConfig, key: str, reason: str) -> Row:
    return {config.key_field: key, "status": "error", "reason": reason}


def job_items(config: BatchConfig, model: Recommender | None = None) -> list[Item]:
    """``config.items_file`` read as items, else the model's catalogue."""
    if config.items_file is None:
        if model is None:
            from hyrec.data.snapshot import load_snapshot

            return list(load_snapshot(Path(config.model_dir) / "data").items)
        return list(model.catalogue.items)
    out = []
    with Path(config.items_file).open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
                out.append(
                    Item(
                        str(r["item_id"]),
                        str(r["title"]),
                        str(r.get("description", "")),
                        r.get("attributes", {}),
                    )
                )
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(
                    f"{config.items_file} line {n}: not an item ({e}); each line needs item_id "
                    "and title (description, attributes optional)"
                ) from None
    return out


def _sha256(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode("utf-8")).hexdigest()
