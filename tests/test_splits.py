"""Leave-one-out and temporal splits: roles, tie-breaking by file order, history views."""

from __future__ import annotations

import numpy as np
import pytest

from hyrec.data import Dataset, Item, leave_one_out, temporal_split
from hyrec.data.splits import History


def make(events):
    items = [Item(str(i), f"t{i}") for i in range(6)]
    return Dataset.from_records("toy", items, events)


def test_leave_one_out_takes_last_two_by_time_and_breaks_ties_by_file_order():
    # user a: items 0,1,2,3 with 2 and 3 at the same (last) time → 3 comes later in the file → test
    ds = make(
        [
            ("a", "3", 50, 1.0, ""),
            ("a", "0", 10, 1.0, ""),
            ("a", "1", 20, 1.0, ""),
            ("b", "4", 5, 1.0, ""),
            ("a", "2", 50, 1.0, ""),
            ("b", "5", 6, 1.0, ""),
        ]
    )
    split = leave_one_out(ds)
    a, b = ds.user_index["a"], ds.user_index["b"]
    test = dict(zip(split.test.user.tolist(), split.test.item.tolist(), strict=True))
    valid = dict(zip(split.valid.user.tolist(), split.valid.item.tolist(), strict=True))
    # file order among the tied events: "3" (row 0) before "2" (row 4) → 2 is the last event
    assert test[a] == ds.item_index["2"] and valid[a] == ds.item_index["3"]
    assert test[b] == ds.item_index["5"] and b not in valid  # two events: train + test
    assert sorted(split.train.item[split.train.user == a].tolist()) == [0, 1]


def test_tasks_exclude_history_and_test_history_includes_validation():
    ds = make([("a", str(i), i, 1.0, "") for i in range(5)])
    split = leave_one_out(ds)
    valid, test = split.task("valid"), split.task("test")
    assert valid.history.sequences[0].tolist() == [0, 1, 2]
    assert test.history.sequences[0].tolist() == [0, 1, 2, 3]
    assert valid.targets.indices.tolist() == [3] and test.targets.indices.tolist() == [4]
    assert test.history.matrix.toarray()[0].tolist() == [1, 1, 1, 1, 0, 0]


def test_leave_one_out_is_deterministic(board):
    a, b = leave_one_out(board), leave_one_out(board)
    assert np.array_equal(a.test.item, b.test.item) and np.array_equal(a.train.item, b.train.item)


def test_temporal_split_cuts_by_time_and_keeps_new_items_only():
    events = [
        ("a", "0", 0),
        ("a", "1", 1),
        ("b", "0", 2),
        ("b", "1", 3),
        ("a", "2", 4),
        ("b", "3", 5),
        ("a", "4", 6),
        ("b", "1", 7),
        ("a", "5", 8),
        ("b", "2", 9),
    ]
    ds = make([(u, i, t, 1.0, "") for u, i, t in events])
    split = temporal_split(ds, valid_fraction=0.2, test_fraction=0.2)
    assert split.train.timestamp.max() == 5
    # b's validation-period event re-watches item 1, so only a's new item 4 is a validation target
    assert split.valid.timestamp.tolist() == [6] and len(split.valid_observed) == 2
    assert sorted(split.test.timestamp.tolist()) == [8, 9]
    # at test time the whole validation period counts as observed history
    b_row = split.task("test").history.users.tolist().index(ds.user_index["b"])
    assert split.task("test").history.sequences[b_row].tolist() == [0, 1, 3, 1]


def test_history_matrix_is_binary_and_refuses_items_outside_the_catalogue():
    h = History(np.arange(2), (np.array([3, 1, 3]), np.zeros(0, np.int64)), 5)
    assert h.matrix.toarray().tolist() == [[0, 1, 0, 1, 0], [0, 0, 0, 0, 0]]
    for bad in (7, -1):
        with pytest.raises(ValueError, match="out of range"):
            _ = History(np.arange(1), (np.array([bad]),), 5).matrix
