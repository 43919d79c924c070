"""LightGCN behind the scorer protocol: ID embeddings smoothed over the user–item graph.

He et al., "LightGCN: Simplifying and Powering Graph Convolution Network for Recommendation",
SIGIR 2020. Users and items get free ID embeddings E⁽⁰⁾; each layer multiplies by the
symmetric-normalised bipartite adjacency  Â = D^-½ A D^-½  with  A = [[0, R], [Rᵀ, 0]]  (no feature
transform, no non-linearity, no self-loop), and the final embedding is the mean of E⁽⁰⁾ … E⁽ᴷ⁾.
Training is BPR (Rendle et al. 2009) with one uniformly sampled negative per training pair and L2 on
the batch's layer-0 ("ego") embeddings; model selection is early stopping on validation NDCG@10 over
the full catalogue.

After ``fit`` the propagated embeddings are cached, so :meth:`LightGCN.score` is one matmul. Users
the graph never saw are folded in as the mean of the propagated embeddings of their history items
(a known user's propagated vector is, up to normalisation, an aggregate of exactly those items, so
the mean is a cheap stand-in for re-running the graph); an empty history scores every item 0.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Self

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from safetensors.numpy import load_file, save_file
from torch import nn

from hyrec.data.splits import History
from hyrec.metrics import evaluate

from .base import (
    FitData,
    NotFittedError,
    epoch_budget,
    known_users,
    read_config,
    write_config,
)
from .search_space import Categorical, Float, Int, check_space

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LightGCNConfig:
    # Defaults chosen on ML-100K leave-one-out *validation* NDCG@10 (mean of seeds 0-2 where noted;
    # seed-to-seed spread is ~0.008, larger than any gap between the settings below).
    dim: int = 64  # the paper's size; 128 scored 0.0754 vs 0.0774 (seed 0) at twice the cost
    layers: int = 2  # propagation depth K; 3 scored 0.0759 vs 0.0774 (seed 0) and costs more
    lr: float = 0.005  # Adam; 3-seed valid 0.0756 vs 0.0747 at 0.01; the paper's 1e-3 is too slow
    reg: float = 1e-4  # L2 on the batch's ego embeddings; 1e-3: 0.0749 (3 seeds), 3e-3: 0.0704
    batch_size: int = 2048  # (user, pos, neg) triples per step; an epoch = every training pair once
    # Each step propagates over the whole graph (O(edges)), so an epoch of edges / batch_size steps
    # costs O(edges²). Past this many steps per epoch the batch grows instead (edges / max_steps),
    # which keeps an epoch O(edges); ML-100K's ~48 steps of 2048 stay as they were.
    max_steps: int = 64
    init_std: float = 0.1  # N(0, std²) initial embeddings, as in the paper's code
    max_epochs: int = 300  # upper bound; with validation, early stopping ends ML-100K near 100
    # Work cap: epochs × training pairs. An epoch propagates over the whole graph up to max_steps
    # times, so past max_work / pairs epochs the epoch cap (and patience with it) shrinks and the
    # fit stops growing faster than the edges (encoders.base.epoch_budget): ML-100K's ~98k pairs
    # keep 300 epochs, 10⁶ pairs get 30, 10⁷ get 3.
    max_work: int = 30_000_000
    eval_every: int = 2  # epochs between validation NDCG@10 checks (when FitData.valid is given)
    patience: int = 10  # checks without improvement before stopping; the best state is kept
    seed: int = 0  # initialisation, shuffling and negative sampling
    # torch intra-op threads while fitting (0: keep torch's). The graph is too small to gain from
    # more, and on a busy shared CPU two threads oversubscribe and ran 10x slower.
    threads: int = 1


#: What ``hyrec tune`` searches (docs/tuning.md).
SEARCH_SPACE = check_space(
    {
        "dim": Categorical((32, 64, 128)),
        "layers": Int(1, 3),
        "lr": Float(1e-3, 2e-2, log=True),
        "reg": Float(1e-5, 1e-2, log=True),
    },
    LightGCNConfig,
    LightGCNConfig(),
)


def normalized_adjacency(matrix: sp.csr_matrix) -> torch.Tensor:
    """D^-½ A D^-½ of the bipartite graph of a binary (n_users, n_items) matrix, as a torch sparse
    CSR tensor over n_users + n_items nodes (users first). Isolated nodes get zero rows."""
    r = (matrix > 0).astype(np.float32).tocsr()
    adj = sp.bmat([[None, r], [r.T, None]], format="csr", dtype=np.float32)  # (N, N)
    deg = np.asarray(adj.sum(axis=1)).ravel()
    inv_sqrt = np.zeros_like(deg)
    inv_sqrt[deg > 0] = deg[deg > 0] ** -0.5
    d = sp.diags(inv_sqrt)
    norm = (d @ adj @ d).tocsr().astype(np.float32)
    norm.sort_indices()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(
            torch.from_numpy(norm.indptr.astype(np.int64)),
            torch.from_numpy(norm.indices.astype(np.int64)),
            torch.from_numpy(norm.data),
            size=norm.shape,
            check_invariants=True,
        )


class _SymmetricSpMM(torch.autograd.Function):
    """Â @ x with Â symmetric, so the gradient is Â @ grad: ~10x faster on CPU than autograd's
    sparse backward, which transposes Â on every call."""

    @staticmethod
    def forward(ctx, adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.adj = adj
        return adj @ x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[None, torch.Tensor]:
        return None, ctx.adj @ grad


class _Graph(nn.Module):
    """Ego embeddings and K-layer light propagation."""

    def __init__(
        self, n_users: int, n_items: int, config: LightGCNConfig, adj: torch.Tensor
    ) -> None:
        super().__init__()
        self.n_users, self.layers, self.adj = n_users, config.layers, adj
        self.user = nn.Embedding(n_users, config.dim)
        self.item = nn.Embedding(n_items, config.dim)
        nn.init.normal_(self.user.weight, std=config.init_std)
        nn.init.normal_(self.item.weight, std=config.init_std)

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Propagated (n_users, D) and (n_items, D) embeddings: mean of layers 0..K."""
        x = torch.cat([self.user.weight, self.item.weight])  # (N, D)
        total = x
        for _ in range(self.layers):
            x = _SymmetricSpMM.apply(self.adj, x)  # (N, D)
            total = total + x
        out = total / (self.layers + 1)
        return out[: self.n_users], out[self.n_users :]


class _NegativeSampler:
    """Uniform negatives, redrawn a few times where they hit the user's training items (on ML-100K
    12% of draws hit; after three redraws 0.14% remain, all from heavy users, and are kept)."""

    def __init__(self, matrix: sp.csr_matrix, rng: np.random.Generator, rounds: int = 3) -> None:
        self.n_items, self.rng, self.rounds = matrix.shape[1], rng, rounds
        coo = matrix.tocoo()
        self.keys = np.sort(coo.row.astype(np.int64) * self.n_items + coo.col)

    def _seen(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        keys = users.astype(np.int64) * self.n_items + items
        pos = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        return self.keys[pos] == keys

    def __call__(self, users: np.ndarray) -> np.ndarray:
        neg = self.rng.integers(0, self.n_items, len(users))
        for _ in range(self.rounds):
            hit = np.flatnonzero(self._seen(users, neg))
            if not len(hit):
                break
            neg[hit] = self.rng.integers(0, self.n_items, len(hit))
        return neg


class LightGCN:
    """LightGCN (He et al. 2020): score(u, i) = e_u · e_i, e the mean over K propagation layers."""

    kind: ClassVar[str] = "lightgcn"

    def __init__(self, config: LightGCNConfig | None = None) -> None:
        self.config = config or LightGCNConfig()
        self.user_embeddings: np.ndarray | None = None  # (n_users, D) propagated
        self.item_embeddings: np.ndarray | None = None  # (n_items, D) propagated
        self.best_epoch: int | None = None
        self.best_valid_ndcg: float | None = None  # validation NDCG@10 of the kept epoch
        self.epochs_run = 0  # epochs trained in the last fit (early stopping may end sooner)
        # not saved: called with (epoch, valid ndcg@10) after each check; True stops (a tuner
        # prunes by raising from it)
        self.on_epoch = None

    def fit(self, data: FitData) -> Self:
        c = self.config
        threads = torch.get_num_threads()
        if c.threads:
            torch.set_num_threads(c.threads)
        try:
            self._train(data)
        finally:
            torch.set_num_threads(threads)
        return self

    def _train(self, data: FitData) -> None:
        c = self.config
        torch.manual_seed(c.seed)
        rng = np.random.default_rng(c.seed)
        matrix = data.matrix
        graph = _Graph(data.n_users, data.n_items, c, normalized_adjacency(matrix))
        optimizer = torch.optim.Adam(graph.parameters(), lr=c.lr)
        pairs = matrix.tocoo()
        users_all, items_all = pairs.row.astype(np.int64), pairs.col.astype(np.int64)
        sample_negatives = _NegativeSampler(matrix, rng)

        best, best_state, checks_since_best = -1.0, None, 0
        max_epochs, patience = epoch_budget(c.max_epochs, c.patience, len(users_all), c.max_work)
        if max_epochs < c.max_epochs:
            log.info(
                "lightgcn: %d training pairs, so at most %d epochs (patience %d checks) within "
                "max_work %d",
                len(users_all),
                max_epochs,
                patience,
                c.max_work,
            )
        t0 = time.perf_counter()
        for epoch in range(1, max_epochs + 1):
            loss = self._epoch(graph, optimizer, users_all, items_all, sample_negatives, rng)
            self.epochs_run = epoch
            if data.valid is None or epoch % c.eval_every:
                continue
            self._cache(graph)
            ndcg = evaluate(self.score, data.valid, ks=(10,))["ndcg@10"]
            log.info(
                "lightgcn epoch %d: loss %.4f, valid ndcg@10 %.4f (%.1fs)",
                epoch,
                loss,
                ndcg,
                time.perf_counter() - t0,
                extra={  # fit progress, read by agent.cli.progress
                    "progress": {
                        "stage": self.kind,
                        "step": epoch,
                        "total": max_epochs,
                        "valid": ndcg,
                        "best": max(best, ndcg),
                    }
                },
            )
            if ndcg > best:
                best, self.best_epoch, checks_since_best = ndcg, epoch, 0
                best_state = {k: v.detach().clone() for k, v in graph.state_dict().items()}
            else:
                checks_since_best += 1
                if checks_since_best >= patience:
                    break
            if self.on_epoch is not None and self.on_epoch(epoch, ndcg):
                break
        if best_state is not None:
            graph.load_state_dict(best_state)
            self.best_valid_ndcg = best
        else:
            self.best_epoch, self.best_valid_ndcg = max_epochs, None
        self._cache(graph)
        log.info(
            "lightgcn: kept epoch %d (valid ndcg@10 %.4f), fit %.1fs",
            self.best_epoch,
            best,
            time.perf_counter() - t0,
        )

    def _epoch(
        self,
        graph: _Graph,
        optimizer: torch.optim.Optimizer,
        users: np.ndarray,
        items: np.ndarray,
        sample_negatives: _NegativeSampler,
        rng: np.random.Generator,
    ) -> float:
        """One pass over every training pair in shuffled batches; returns the mean loss."""
        order = rng.permutation(len(users))
        total = 0.0
        size = max(self.config.batch_size, -(-len(order) // max(self.config.max_steps, 1)))
        for start in range(0, len(order), size):
            idx = order[start : start + size]
            u, pos = users[idx], items[idx]
            neg = sample_negatives(u)
            loss = self._loss(graph, *(torch.from_numpy(a) for a in (u, pos, neg)))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        return total / len(order)

    def _loss(
        self, graph: _Graph, u: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor
    ) -> torch.Tensor:
        """BPR loss of (user, positive, negative) triples plus L2 on their ego embeddings."""
        users, items = graph()  # (n_users, D), (n_items, D)
        eu, ep, en = users[u], items[pos], items[neg]  # (B, D) each
        bpr = F.softplus((eu * en).sum(-1) - (eu * ep).sum(-1)).mean()  # = -log σ(pos - neg)
        ego = sum(e.pow(2).sum() for e in (graph.user(u), graph.item(pos), graph.item(neg)))
        return bpr + self.config.reg * 0.5 * ego / len(u)

    @torch.no_grad()
    def _cache(self, graph: _Graph) -> None:
        users, items = graph()
        self.user_embeddings = users.numpy().astype(np.float32, copy=True)
        self.item_embeddings = items.numpy().astype(np.float32, copy=True)

    def _fold_in(self, history: History) -> np.ndarray:
        """(B, D) mean propagated embedding of each history's distinct items; 0 for empty ones."""
        out = np.zeros((len(history), self.item_embeddings.shape[1]), dtype=np.float32)
        for row, items in enumerate(history.sequences):
            if len(items):
                out[row] = self.item_embeddings[np.unique(items)].mean(axis=0)
        return out

    def user_vectors(self, history: History) -> np.ndarray:
        """(B, D) propagated user embeddings (folded in for unknown users): score =
        user_vectors @ item_vectors.T (:class:`encoders.base.FactorScorer`)."""
        if self.user_embeddings is None or self.item_embeddings is None:
            raise NotFittedError("LightGCN.fit() first")
        known = known_users(history, len(self.user_embeddings))
        users = np.empty((len(history), self.item_embeddings.shape[1]), dtype=np.float32)  # (B, D)
        users[known] = self.user_embeddings[history.users[known]]
        if not known.all():
            users[~known] = self._fold_in(history[~known])
        return users

    def item_vectors(self) -> np.ndarray:
        """(n_items, D) propagated item embeddings."""
        if self.item_embeddings is None:
            raise NotFittedError("LightGCN.fit() first")
        return self.item_embeddings

    def score(self, history: History) -> np.ndarray:
        return self.user_vectors(history) @ self.item_embeddings.T  # (B, n_items)

    def save(self, path: Path) -> None:
        if self.user_embeddings is None or self.item_embeddings is None:
            raise NotFittedError("LightGCN.fit() first")
        write_config(path, self.kind, self.config, best_epoch=self.best_epoch)
        save_file(
            {"user_embeddings": self.user_embeddings, "item_embeddings": self.item_embeddings},
            str(path / "model.safetensors"),
        )

    @classmethod
    def load(cls, path: Path) -> Self:
        config, body = read_config(path, cls.kind, LightGCNConfig)
        model = cls(config)
        arrays = load_file(str(path / "model.safetensors"))
        model.user_embeddings = arrays["user_embeddings"]
        model.item_embeddings = arrays["item_embeddings"]
        model.best_epoch = body.get("best_epoch")
        return model
