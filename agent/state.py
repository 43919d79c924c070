"""What is known about one user at request time: the first stage of :mod:`agent.pipeline`.

A user's state is their saved snapshot history (the interactions the model was fitted on) followed
by their stored feedback: positive events join the item sequence, negative ones are remembered as
items never to recommend again. A user with stored positive events is scored from the whole
sequence (every component folds it in, as for a new user), so new events move every signal, not
only the sequential ones. Events also carry what the profile and reason stages show an LLM.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from agent.feedback import FeedbackStore, is_positive
from agent.stages.profiles import ProfileEvent
from hyrec.data import Dataset, History, Interactions, Item

#: Ratings shown to the profile stage for events without a value.
EVENT_RATING = {"like": 5.0, "purchase": 5.0, "dislike": 1.0, "skip": 2.0}


class UnknownItemError(KeyError):
    """An item id that is not in the catalogue (the message names it)."""

    def __str__(self) -> str:  # KeyError would print the repr of its argument
        return str(self.args[0]) if self.args else "unknown item"


@dataclass(frozen=True)
class UserState:
    """What is known about one user at request time."""

    row: int  # index the components were trained with; -1 when scored from the sequence alone
    sequence: np.ndarray  # item indices, oldest first (snapshot, then positive feedback)
    disliked: tuple[str, ...]  # item ids with negative feedback: never recommended again
    events: tuple[ProfileEvent, ...]  # for profiles and reasons, oldest first
    event_items: np.ndarray  # the item index of each event

    def history(self, n_items: int) -> History:
        """This user as a one-row :class:`History` for the hybrid."""
        return History(np.array([self.row], np.int64), (self.sequence,), n_items)

    def latest(
        self, n: int, *, without: int | None = None
    ) -> tuple[list[ProfileEvent], np.ndarray]:
        """The latest ``n`` events and their item indices (``without``: leave that item out)."""
        keep = np.ones(len(self.events), dtype=bool)
        if without is not None:
            keep = self.event_items != without
        events = [e for e, k in zip(self.events, keep, strict=True) if k][-n:]
        return events, self.event_items[keep][-n:]


class Sequences:
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


def event(item: Item, rating: float | None, timestamp: int) -> ProfileEvent:
    return ProfileEvent(item.title, item.attributes, rating, timestamp)


def item_index(catalogue: Dataset, item_id: str) -> int:
    index = catalogue.item_index.get(item_id)
    if index is None:
        raise UnknownItemError(f"unknown item id {item_id!r}: it is not in the catalogue")
    return index


def user_state(
    catalogue: Dataset,
    sequences: Sequences,
    store: FeedbackStore,
    user: str | None,
    history: Sequence[str] | None,
    positive_rating: float,
) -> UserState:
    """The user's snapshot history, then their stored feedback, then ``history`` (module doc).

    Raises:
        UnknownItemError: ``history`` names an item that is not in the catalogue.
    """
    seq: list[np.ndarray] = []
    events: list[ProfileEvent] = []
    event_items: list[int] = []
    row = catalogue.user_index.get(user, -1) if user else -1
    if row >= 0:
        s = sequences.of(row)
        seq.append(sequences.items[s])
        event_items += sequences.items[s].tolist()
        for i, r, t in zip(
            sequences.items[s], sequences.ratings[s], sequences.timestamps[s], strict=True
        ):
            events.append(event(catalogue.items[i], None if np.isnan(r) else float(r), int(t)))
    disliked: list[str] = []
    positive = []
    for e in store.events(user) if user else []:
        index = catalogue.item_index.get(e.item_id)
        if index is None:  # an item removed since; the event stays stored
            continue
        rating = e.value if e.event == "rating" else EVENT_RATING.get(e.event)
        events.append(event(catalogue.items[index], rating, int(e.timestamp)))
        event_items.append(index)
        if is_positive(e.event, e.value, positive_rating):
            positive.append(index)
        else:
            disliked.append(e.item_id)
    if history:
        extra = [item_index(catalogue, i) for i in history]
        positive += extra
        events += [event(catalogue.items[i], None, 0) for i in extra]
        event_items += extra
    if positive:
        seq.append(np.asarray(positive, np.int64))
        row = -1  # fold the whole sequence in, so every component sees the new events
    sequence = np.concatenate(seq) if seq else np.zeros(0, np.int64)
    return UserState(
        row,
        sequence,
        tuple(dict.fromkeys(disliked)),
        tuple(events),
        np.asarray(event_items, np.int64),
    )
