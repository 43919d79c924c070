"""LightGCN: the scorer contract (tests/scorer_contract.py: fit, shapes, save/load, the
checkerboard's known answer, unknown users, unfitted use), then what is particular to it: seeded
training, early stopping on validation, empty histories, and the graph convolution itself."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from encoders.base import FitData, epoch_budget
from encoders.lightgcn import LightGCN, LightGCNConfig, _SymmetricSpMM, normalized_adjacency
from hyrec.data import Dataset, History, Item, leave_one_out
from hyrec.metrics import evaluate
from tests.scorer_contract import ScorerContract

N_USERS, BLOCK, PER_USER = 24, 12, 8  # users alternate between two blocks of BLOCK items each
CONFIG = LightGCNConfig(dim=16, lr=0.05, batch_size=64, max_epochs=40, eval_every=5, patience=4)


class TestLightGCNContract(ScorerContract):
    def make(self):
        return LightGCN(
            LightGCNConfig(dim=8, lr=0.05, batch_size=64, max_epochs=20, eval_every=5, patience=4)
        )


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def split():
    rng = np.random.default_rng(0)
    items = [Item(str(i), f"item {i}") for i in range(2 * BLOCK)]
    events = []
    for u in range(N_USERS):
        block = u % 2
        chosen = rng.choice(BLOCK, PER_USER, replace=False) + block * BLOCK
        events += [(f"u{u}", str(i), t, 1.0, "") for t, i in enumerate(chosen)]
    return leave_one_out(Dataset.from_records("checkerboard", items, events))


@pytest.fixture(scope="module")
def data(split):
    return FitData(split.dataset, split.train, split.task("valid"))


@pytest.fixture(scope="module")
def model(data):
    return LightGCN(CONFIG).fit(data)


def test_saves_its_weights_as_safetensors_with_the_kept_epoch(model, tmp_path):
    model.save(tmp_path)
    loaded = LightGCN.load(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert loaded.config == model.config and loaded.best_epoch == model.best_epoch


def test_empty_history_scores_zero(model):
    history = History(np.array([-1]), (np.zeros(0, np.int32),), 2 * BLOCK)
    np.testing.assert_array_equal(model.score(history), np.zeros((1, 2 * BLOCK), np.float32))


def test_same_seed_same_scores(model, data, split):
    history = split.task("test").history
    again = LightGCN(CONFIG).fit(data)
    np.testing.assert_array_equal(again.score(history), model.score(history))
    other = LightGCN(LightGCNConfig(**{**CONFIG.__dict__, "seed": 1})).fit(data)
    assert not np.array_equal(other.score(history), model.score(history))


def test_fits_without_validation(split):
    data = FitData(split.dataset, split.train)
    model = LightGCN(LightGCNConfig(dim=8, max_epochs=3)).fit(data)
    assert model.best_epoch == 3 and model.user_embeddings.shape == (N_USERS, 8)
    assert model.best_valid_ndcg is None


def test_the_work_cap_bounds_epochs_and_patience(split, data):
    pairs = split.train.user.size
    capped = LightGCN(LightGCNConfig(dim=8, max_epochs=50, max_work=3 * pairs)).fit(
        FitData(split.dataset, split.train)
    )
    assert capped.epochs_run == 3 and capped.best_epoch == 3
    assert epoch_budget(200, 40, 10, 200) == (20, 4)
    assert epoch_budget(200, 40, 10, 10_000) == (200, 40)  # under the budget: as configured
    assert epoch_budget(300, 10, 1_000, 10) == (1, 2)  # at least one epoch


def test_keeps_the_validation_score_of_the_kept_epoch(model, data):
    assert model.best_valid_ndcg == pytest.approx(
        evaluate(model.score, data.valid, ks=(10,))["ndcg@10"]
    )


def test_adjacency_and_its_gradient_match_dense_reference():
    r = np.array([[1, 0, 1], [0, 1, 1]], np.float32)  # 2 users × 3 items
    a = np.block([[np.zeros((2, 2)), r], [r.T, np.zeros((3, 3))]]).astype(np.float32)
    d = a.sum(axis=1) ** -0.5
    dense = torch.from_numpy(d[:, None] * a * d[None, :])
    adj = normalized_adjacency(sp.csr_matrix(r))
    torch.testing.assert_close(adj.to_dense(), dense)
    x = torch.randn(5, 4, requires_grad=True)
    weights = torch.randn(5, 4)
    (_SymmetricSpMM.apply(adj, x) * weights).sum().backward()
    expected = torch.autograd.grad((dense @ x * weights).sum(), x)[0]
    torch.testing.assert_close(x.grad, expected)
