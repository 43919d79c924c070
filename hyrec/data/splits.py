"""Evaluation splits and the history/target views every scorer and metric consumes.

* :func:`leave_one_out` — per user, by time: last event = test, second-last = validation, the rest
= train.
  Ties in time are broken by file order (a stable sort), as RecBole's ``order: TO`` does.
* :func:`temporal_split` — one global cut in time: the latest events are test, the ones before them
  validation, the rest train (users may appear only in the later parts: cold-start users).

A :class:`History` is "these users, and what each did so far" (a binary matrix and time-ordered
sequences);
an :class:`EvalTask` pairs a history with the held-out targets to rank, over the full catalogue.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import scipy.sparse as sp

from .dataset import Dataset, Interactions, interaction_matrix


@dataclass(frozen=True, eq=False)
class History:
    """Users to score and what each has done, oldest event first.

    Attributes:
        users: (B,) internal user index, or -1 for a user the models never saw (cold start).
        sequences: B time-ordered int arrays of item indices (repeats allowed).
        n_items: Catalogue size (the width of :attr:`matrix`).
    """

    users: np.ndarray
    sequences: tuple[np.ndarray, ...]
    n_items: int

    def __len__(self) -> int:
        return len(self.users)

    @cached_property
    def matrix(self) -> sp.csr_matrix:
        """(B, n_items) binary CSR of the items in each history."""
        # built as CSR directly: through COO and sum_duplicates it was 0.45 ms for one row
        rows = [np.unique(s) for s in self.sequences]
        indptr = np.zeros(len(rows) + 1, np.int64)
        np.cumsum([len(r) for r in rows], out=indptr[1:])
        cols = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        if len(cols) and (cols.min() < 0 or cols.max() >= self.n_items):
            raise ValueError(f"history item index out of range for {self.n_items} items")
        return sp.csr_matrix(
            (np.ones(len(cols), np.float32), cols, indptr), shape=(len(self), self.n_items)
        )

    def __getitem__(self, index: slice | np.ndarray) -> History:
        """The rows at ``index`` (a slice, integer positions or a boolean mask)."""
        rows = np.arange(len(self))[index]
        return History(self.users[rows], tuple(self.sequences[i] for i in rows), self.n_items)

    @classmethod
    def from_interactions(
        cls, inter: Interactions, users: np.ndarray, n_items: int, *, n_users: int | None = None
    ) -> History:
        """Histories of ``users`` (internal indices) from ``inter``, ordered by time then file
        order."""
        order = inter.chronological_order()
        u_sorted = inter.user[order]
        i_sorted = inter.item[order]
        bound = int(max(users.max(initial=-1), u_sorted.max(initial=-1))) + 1
        if n_users is not None:
            bound = max(bound, n_users)
        starts = np.searchsorted(u_sorted, np.arange(bound + 1))
        seqs = tuple(
            i_sorted[starts[u] : starts[u + 1]] if u >= 0 else np.zeros(0, np.int32) for u in users
        )
        return cls(np.asarray(users, dtype=np.int64), seqs, n_items)

    @classmethod
    def of_items(cls, items: list[int] | np.ndarray, n_items: int, user: int = -1) -> History:
        """A single history from an item-index sequence (for cold-start or ad-hoc queries)."""
        return cls(np.array([user], np.int64), (np.asarray(items, np.int32),), n_items)


@dataclass(frozen=True, eq=False)
class EvalTask:
    """Rank the full catalogue for ``history.users``; ``targets`` are the held-out items.

    The items in each history are excluded from ranking (a user is never recommended what they
    already
    interacted with in the observed past).
    """

    history: History
    targets: sp.csr_matrix  # (B, n_items) binary

    def __len__(self) -> int:
        return len(self.history)

    def subset(self, rows: np.ndarray) -> EvalTask:
        return EvalTask(self.history[rows], self.targets[rows])


@dataclass(frozen=True, eq=False)
class Split:
    """Train / validation / test interactions of one dataset, plus how they were made."""

    dataset: Dataset
    train: Interactions
    valid: Interactions
    test: Interactions
    protocol: dict[str, Any]
    #: Everything observed in the validation period (for a temporal split more than the targets);
    #: ``None`` means the validation targets themselves.
    valid_observed: Interactions | None = None

    @cached_property
    def train_matrix(self) -> sp.csr_matrix:
        return interaction_matrix(self.train, self.dataset.n_users, self.dataset.n_items)

    def task(self, stage: str) -> EvalTask:
        """The evaluation task for ``stage`` ("valid" or "test").

        Validation ranks against the training history; test ranks against training + validation
        history,
        so a sequential model sees the validation event as the most recent one, as at serving time.
        """
        if stage == "valid":
            observed, held = self.train, self.valid
        elif stage == "test":
            seen_in_valid = self.valid if self.valid_observed is None else self.valid_observed
            observed, held = Interactions.concat([self.train, seen_in_valid]), self.test
        else:
            raise ValueError(f"stage must be 'valid' or 'test', got {stage!r}")
        n_users, n_items = self.dataset.n_users, self.dataset.n_items
        users = np.unique(held.user).astype(np.int64)
        history = History.from_interactions(observed, users, n_items, n_users=n_users)
        truth = interaction_matrix(held, n_users, n_items)[users]
        return EvalTask(history, truth)


def leave_one_out(ds: Dataset) -> Split:
    """Per user by time: last event → test, second-last → validation, rest → train.

    A user with two events gives one to train and one to test; a user with one event stays in train.
    """
    inter = ds.interactions
    order = inter.chronological_order()
    users = inter.user[order]
    counts = np.bincount(users, minlength=ds.n_users)
    ends = np.cumsum(counts)  # one past each user's last sorted position
    pos_from_end = ends[users] - np.arange(len(order))  # 1 = last event of that user
    n = counts[users]
    is_test = (pos_from_end == 1) & (n >= 2)
    is_valid = (pos_from_end == 2) & (n >= 3)
    role = np.zeros(len(inter), np.int8)
    role[order[is_test]] = 2
    role[order[is_valid]] = 1
    return Split(
        ds,
        train=inter.take(role == 0),
        valid=inter.take(role == 1),
        test=inter.take(role == 2),
        protocol={"split": "leave-one-out", "order": "time, ties by file order"},
    )


def temporal_split(ds: Dataset, valid_fraction: float = 0.1, test_fraction: float = 0.1) -> Split:
    """One global cut by time: the last ``test_fraction`` of events (by time, then file order) are
    test,
    the ``valid_fraction`` before them validation. Validation and test keep only the first event of
    each
    user in that period that the user had not interacted with before (the next-item task)."""
    if not (
        0 < valid_fraction < 1 and 0 < test_fraction < 1 and valid_fraction + test_fraction < 1
    ):
        raise ValueError("fractions must be in (0, 1) and sum to less than 1")
    inter = ds.interactions
    order = np.lexsort((np.arange(len(inter)), inter.timestamp))
    n = len(order)
    n_test, n_valid = int(round(n * test_fraction)), int(round(n * valid_fraction))
    role = np.zeros(n, np.int8)
    role[order[n - n_test :]] = 2
    role[order[n - n_test - n_valid : n - n_test]] = 1
    train = inter.take(role == 0)
    seen = set(zip(train.user.tolist(), train.item.tolist(), strict=True))
    parts = []
    for r in (1, 2):
        idx = order[role[order] == r]
        keep, first = [], set()
        for i in idx:
            u, it = int(inter.user[i]), int(inter.item[i])
            if u not in first and (u, it) not in seen:
                keep.append(i)
                first.add(u)
            seen.add((u, it))
        parts.append(inter.take(np.sort(np.asarray(keep, dtype=np.int64))))
    return Split(
        ds,
        train,
        parts[0],
        parts[1],
        valid_observed=inter.take(role == 1),
        protocol={
            "split": "temporal",
            "valid_fraction": valid_fraction,
            "test_fraction": test_fraction,
            "targets": "first new item per user in each period",
        },
    )


def inner_split(train: Interactions) -> tuple[Interactions, Interactions]:
    """Each user's last training event (by time, then file order) apart from the rest: the
    "inner" split a ranking head learns from without touching validation or test."""
    order = train.chronological_order()
    users = train.user[order]
    last = np.ones(len(order), dtype=bool)
    last[:-1] = users[:-1] != users[1:]
    counts = np.bincount(users)
    last &= counts[users] >= 2  # a user needs something left to learn from
    held = np.zeros(len(train), dtype=bool)
    held[order[last]] = True
    return train.take(~held), train.take(held)
