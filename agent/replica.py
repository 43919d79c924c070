"""What a replica follows from a shared feedback store: catalogue upserts and forgotten users
written by the other replicas (:func:`sync`, called by the store's follower, woken by ``NOTIFY``
and at least every ``sync_interval`` seconds), and the shared chromadb item store brought up to
the catalogue at load (:func:`sync_item_store`). See docs/deployment.md for the freshness bound.

These functions work on a :class:`~agent.api.Recommender`'s own state (its locks, catalogue and
sequences): they are the part of it that exists only when several processes share one store.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from agent.catalogue import new_items
from agent.erasure import without_user
from agent.state import Sequences

if TYPE_CHECKING:
    from agent.api import Recommender
    from agent.feedback import Deletion
    from retrieval.hybrid import HybridRecommender
    from retrieval.store import StoreConfig

log = logging.getLogger(__name__)


def sync(model: Recommender) -> int:
    """Apply what other replicas changed since the last call: catalogue upserts (their text
    vectors computed here, outside the model lock) and forgotten users (snapshot row blanked
    in memory, cached profile dropped). Called by the store's follower; a no-op on a store
    that is not shared. Returns how many changes were applied.

    Raises:
        agent.feedback.StoreUnavailable: the shared store could not be read (the follower
            tries again at its next wake-up).
    """
    if not getattr(model.store, "shared", False):
        return 0
    with model._sync_lock:
        changes = model.store.changes(model._synced)
        if changes.items:
            fresh = new_items(model.catalogue, changes.items, strict=False)
            encoded = model.encoder.encode_items(fresh) if fresh else []
            vectors = dict(zip([it.item_id for it in fresh], encoded, strict=True))
            with model._lock.write():
                added = model._apply_items(list(changes.items), strict=False, vectors=vectors)
            if added:
                log.info("applied %d catalogue upserts from other replicas", len(added))
        for deletion in changes.deletions:
            apply_deletion(model, deletion)
        model._synced = changes.version
        return len(changes.items) + len(changes.deletions)


def apply_deletion(model: Recommender, deletion: Deletion) -> None:
    """A user forgotten elsewhere: drop their cached profile and, when this replica's
    snapshot still holds them at the recorded row (the pseudonym must match), blank it."""
    if model.profiles is not None:
        model.profiles.forget(deletion.user_key)  # also bumps the generation: no write-back
    row = deletion.snapshot_row
    ids = model.catalogue.user_ids
    if row is None or not 0 <= row < len(ids) or not ids[row]:
        return
    if model._user_key(str(ids[row])) != deletion.user_key:
        return
    with model._lock.write():
        new = without_user(model.catalogue, row)  # memory only: the replica that forgot
        model.hybrid.dataset = new  # the user rewrote the saved snapshot
        model._seqs = Sequences(new.interactions, new.n_users)
    log.info("applied a deletion from another replica")


def sync_item_store(hybrid: HybridRecommender, config: StoreConfig, attempts: int = 5) -> None:
    """Bring a shared item store up to the catalogue. Replicas starting at once against a new
    chromadb collection can read it before another replica's first write reached its index
    (chromadb answers InternalError "Nothing found on disk"): the sync is idempotent, so it is
    tried again."""

    for attempt in range(1, attempts + 1):
        try:
            report = hybrid.store.sync(hybrid.dataset.items, hybrid.facts.embeddings)
        except Exception as e:  # chromadb's errors have no common base worth naming here
            if attempt == attempts:
                raise
            log.warning("item store sync failed (%s); trying again", e)
            time.sleep(attempt)
        else:
            log.info("item store %s: %s", config.host or config.path, report)
            return
