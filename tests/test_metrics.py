"""Every accuracy metric against a brute-force reference on random score matrices, plus
invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from hyrec.data.splits import EvalTask, History
from hyrec.metrics import coverage, evaluate, gini, intra_list_diversity, novelty, top_k


def reference(scores, exclude, truth, k):
    """Loop-per-user reference: rank by score (ties by index), skip excluded, score the list."""
    out = {"ndcg": [], "hr": [], "recall": [], "mrr": []}
    for u in range(scores.shape[0]):
        ranked = sorted(
            (i for i in range(scores.shape[1]) if i not in exclude[u]),
            key=lambda i: (-scores[u, i], i),
        )[:k]
        targets = truth[u]
        dcg = sum(1 / math.log2(r + 2) for r, i in enumerate(ranked) if i in targets)
        idcg = sum(1 / math.log2(r + 2) for r in range(min(k, len(targets))))
        hits = [i in targets for i in ranked]
        out["ndcg"].append(dcg / idcg if idcg else 0.0)
        out["hr"].append(float(any(hits)))
        out["recall"].append(sum(hits) / max(len(targets), 1))
        out["mrr"].append(1 / (hits.index(True) + 1) if any(hits) else 0.0)
    return {m: float(np.mean(v)) for m, v in out.items()}


def random_task(rng, n_users, n_items, n_hist, n_targets):
    seqs, truth = [], []
    for _ in range(n_users):
        items = rng.permutation(n_items)
        seqs.append(items[:n_hist].astype(np.int32))
        truth.append(set(items[n_hist : n_hist + n_targets].tolist()))
    rows = [u for u, t in enumerate(truth) for _ in t]
    cols = [i for t in truth for i in t]
    targets = sp.csr_matrix((np.ones(len(cols)), (rows, cols)), shape=(n_users, n_items))
    history = History(np.arange(n_users), tuple(seqs), n_items)
    return EvalTask(history, targets), [set(s.tolist()) for s in seqs], truth


@pytest.mark.parametrize("n_targets", [1, 3])
@pytest.mark.parametrize("k", [1, 5, 10])
def test_accuracy_metrics_match_brute_force(rng, k, n_targets):
    task, exclude, truth = random_task(rng, n_users=37, n_items=50, n_hist=8, n_targets=n_targets)
    scores = rng.normal(size=(37, 50)).astype(np.float32)
    got = evaluate(lambda h: scores[h.users], task, ks=(k,), batch_size=8)
    want = reference(scores, exclude, truth, k)
    for metric in ("ndcg", "hr", "recall", "mrr"):
        assert got[f"{metric}@{k}"] == pytest.approx(want[metric], abs=1e-9), metric


def test_ties_and_integer_scores_match_brute_force(rng):
    task, exclude, truth = random_task(rng, n_users=25, n_items=30, n_hist=5, n_targets=1)
    scores = rng.integers(0, 4, size=(25, 30)).astype(np.float32)  # many ties
    got = evaluate(lambda h: scores[h.users], task, ks=(10,))
    want = reference(scores, exclude, truth, 10)
    assert got["ndcg@10"] == pytest.approx(want["ndcg"], abs=1e-9)
    assert got["mrr@10"] == pytest.approx(want["mrr"], abs=1e-9)


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 12), st.integers(0, 2**31 - 1))
def test_top_k_never_returns_excluded_or_duplicate_items(k, seed):
    rng = np.random.default_rng(seed)
    scores = rng.integers(-3, 3, size=(6, 15)).astype(np.float32)
    exclude = sp.random(6, 15, density=0.3, format="csr", random_state=seed)
    exclude.data[:] = 1
    recs = top_k(scores, k, exclude)
    for u in range(6):
        assert len(set(recs[u])) == len(recs[u])
        allowed = 15 - exclude[u].nnz
        assert not set(recs[u][: min(k, allowed)]) & set(exclude[u].indices)
        vals = scores[u, recs[u][: min(k, allowed)]]
        assert np.all(np.diff(vals) <= 0)


def test_beyond_accuracy_metrics_on_known_lists():
    recs = np.array([[0, 1], [0, 2]])
    assert coverage(recs, n_items=4, k=2) == 0.75
    # each item recommended [2, 1, 1, 0] times
    counts = np.sort(np.array([2, 1, 1, 0], float))
    i = np.arange(1, 5)
    assert gini(recs, 4, 2) == pytest.approx(((2 * i - 5) * counts).sum() / (4 * counts.sum()))
    vectors = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], float)
    # list 1 = identical vectors (diversity 0), list 2 = orthogonal (diversity 1)
    assert intra_list_diversity(recs, vectors, 2) == pytest.approx(0.5)
    pop = np.array([9, 0, 4, 0])
    want = np.mean([-np.log2(10 / 11), -np.log2(1 / 11), -np.log2(10 / 11), -np.log2(5 / 11)])
    assert novelty(recs, pop, n_users=10, k=2) == pytest.approx(want)


def test_per_user_metrics_are_each_users_own_and_average_to_the_means(rng):
    task, exclude, truth = random_task(rng, n_users=23, n_items=40, n_hist=6, n_targets=2)
    scores = rng.normal(size=(23, 40)).astype(np.float32)
    means = evaluate(lambda h: scores[h.users], task, ks=(5, 10), batch_size=7)
    got, per_user = evaluate(
        lambda h: scores[h.users], task, ks=(5, 10), batch_size=7, per_user=True
    )
    assert got == means  # the same numbers as without per_user
    assert set(per_user) == {f"{m}@{k}" for m in ("ndcg", "hr", "recall", "mrr") for k in (5, 10)}
    for key, values in per_user.items():
        assert values.shape == (23,) and float(values.mean()) == pytest.approx(got[key], abs=1e-12)
    for u in (0, 11, 22):  # each row is that user's own list, in the task's order
        one = reference(scores[[u]], [exclude[u]], [truth[u]], 10)
        assert per_user["ndcg@10"][u] == pytest.approx(one["ndcg"], abs=1e-9)
