"""What a :class:`~agent.api.Recommender` stores and erases about one user: a feedback event
(:func:`feedback`: checked, committed to the store, then the user's cached profile dropped so the
next request rebuilds it) and every trace of the user (:func:`forget_user`: stored events, cached
profile, and their rows in the served and the saved snapshot, blanked by :mod:`agent.erasure`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from agent.config import FeedbackReceipt
from agent.erasure import replace_snapshot, without_user
from agent.feedback import check_event, is_positive
from agent.state import Sequences
from hyrec.data.snapshot import load_snapshot

if TYPE_CHECKING:
    from agent.api import Recommender

log = logging.getLogger(__name__)


def feedback(
    model: Recommender,
    user: str,
    item_id: str,
    event: str,
    value: float | None,
    event_id: str | None,
) -> FeedbackReceipt:
    """See :meth:`agent.api.Recommender.feedback`."""
    if not isinstance(user, str) or not user.strip():
        raise ValueError("user id must be a non-empty string")
    check_event(event, value)
    # no model lock: the catalogue only grows, so an item that passed the check stays, and
    # feedback never waits behind a catalogue writer or someone else's LLM call
    model._index(item_id)
    stored = model.store.add(user, item_id, event, value, client_id=event_id)
    if model.profiles is not None:
        try:  # after the commit: a failure here must not fail an event that is stored
            model.profiles.drop_stale(model._user_key(user))  # rebuilt on the next request
        except OSError as e:
            log.warning("feedback stored, but the cached profile could not be dropped: %s", e)
    positive = is_positive(event, value, model.config.positive_rating)
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


def forget_user(model: Recommender, user: str) -> int:
    """See :meth:`agent.api.Recommender.forget_user`; runs under the model's write lock."""
    with model._lock.write():
        key = model._user_key(user)
        row = model.catalogue.user_index.get(user)
        removed = model.store.forget(  # a shared store also records it for the replicas
            user,
            user_key=key,
            profile_key=model.profiles.user_pseudonym(key) if model.profiles else None,
            snapshot_row=row,
        )
        if model.profiles is not None:
            model.profiles.forget(key)
        if row is not None:
            removed += drop_snapshot_user(model, row)
    log.info("forgot a user: %d events removed", removed)
    return removed


def drop_snapshot_user(model: Recommender, row: int) -> int:
    """Blank user ``row`` in the saved snapshot and the served catalogue; returns how many
    snapshot interactions were removed."""
    if model.model_dir is not None:  # the saved snapshot, not the live catalogue: items upserted
        folder = model.model_dir / "data"  # since the save are replayed from the store on load
        replace_snapshot(without_user(load_snapshot(folder), row), folder)
    new = without_user(model.catalogue, row)
    removed = len(model.catalogue.interactions) - len(new.interactions)
    model.hybrid.dataset = new
    model._seqs = Sequences(new.interactions, new.n_users)
    return removed
