"""Learned ranking heads over candidate features: LightGBM LambdaRank and a small listwise torch
MLP.

Both learn from groups (one per user): a feature matrix of that user's candidates and a 0/1 label
saying
which candidate is the held-out target. LambdaRank (Burges 2010, via LightGBM) optimises NDCG
directly;
the MLP is trained with a listwise softmax cross-entropy over each user's candidates
(ListNet-style, Cao
et al. 2007). Both save as plain files (LightGBM's text model format; safetensors + JSON for the
MLP).
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self

import lightgbm as lgb
import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from encoders.base import epoch_budget, with_seed

log = logging.getLogger(__name__)

Groups = list[np.ndarray]  # one (n_candidates, n_features) matrix or (n_candidates,) label per user


class Ranker(Protocol):
    kind: ClassVar[str]

    def fit(self, x: Groups, y: Groups, valid: tuple[Groups, Groups] | None = None) -> Self: ...

    def predict(self, x: np.ndarray) -> np.ndarray: ...

    def save(self, path: Path) -> None: ...

    @classmethod
    def load(cls, path: Path) -> Self: ...


def ndcg_at(scores: Groups, labels: Groups, k: int = 10) -> float:
    """Mean NDCG@k of ranking each group by score (one relevant item per group; 0 if it is
    absent)."""
    total = 0.0
    for s, y in zip(scores, labels, strict=True):
        order = np.argsort(-s, kind="stable")[:k]
        hit = np.flatnonzero(y[order] > 0)
        total += 1.0 / np.log2(hit[0] + 2) if len(hit) else 0.0
    return total / max(len(scores), 1)


@dataclass(frozen=True)
class LightGBMConfig:
    n_estimators: int = 400  # upper bound; early stopping on validation NDCG@10 picks the count
    learning_rate: float = 0.05
    num_leaves: int = 31
    min_child_samples: int = 50
    subsample: float = 0.8
    colsample_bytree: float = 0.8
    early_stopping: int = 30
    seed: int = 0
    threads: int = 2


class LightGBMRanker:
    """LambdaRank gradient-boosted trees."""

    kind: ClassVar[str] = "lightgbm"

    def __init__(self, config: LightGBMConfig | None = None) -> None:
        self.config = config or LightGBMConfig()
        self.booster: lgb.Booster | None = None

    def fit(self, x: Groups, y: Groups, valid: tuple[Groups, Groups] | None = None) -> Self:
        c = self.config
        model = lgb.LGBMRanker(
            objective="lambdarank",
            n_estimators=c.n_estimators,
            learning_rate=c.learning_rate,
            num_leaves=c.num_leaves,
            min_child_samples=c.min_child_samples,
            subsample=c.subsample,
            subsample_freq=1,
            colsample_bytree=c.colsample_bytree,
            random_state=c.seed,
            n_jobs=c.threads,
            verbose=-1,
        )
        kwargs = {}
        if valid is not None:
            kwargs = {
                "eval_X": (np.concatenate(valid[0]),),
                "eval_y": (np.concatenate(valid[1]),),
                "eval_group": [[len(g) for g in valid[1]]],
                "eval_at": [10],
                "callbacks": [lgb.early_stopping(c.early_stopping, verbose=False)],
            }
        model.fit(np.concatenate(x), np.concatenate(y), group=[len(g) for g in y], **kwargs)
        self.booster = model.booster_
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        assert self.booster is not None, "fit() first"
        # one thread: a request scores a few hundred rows, where OpenMP start-up costs more
        best = self.booster.best_iteration or None
        return self.booster.predict(x, num_iteration=best, num_threads=1).astype(np.float32)

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        (path / "ranker.json").write_text(
            json.dumps({"kind": self.kind, "config": asdict(self.config)})
        )
        self.booster.save_model(str(path / "lightgbm.txt"))

    @classmethod
    def load(cls, path: Path) -> Self:
        ranker = cls(LightGBMConfig(**json.loads((path / "ranker.json").read_text())["config"]))
        ranker.booster = lgb.Booster(model_file=str(path / "lightgbm.txt"))
        return ranker


@dataclass(frozen=True)
class MLPConfig:
    hidden: int = 64  # 128 was no better on ML-100K validation
    epochs: int = 60  # upper bound; the epoch with the best validation NDCG@10 is kept
    # Work cap: epochs × training lists. Past max_work / lists epochs the bound shrinks, so the
    # head's cost stops growing with its users (encoders.base.epoch_budget): ML-100K's 943 lists
    # keep 60 epochs; head_users = 5,000 lists get 24
    max_work: int = 120_000
    lr: float = 3e-3
    weight_decay: float = 1e-4
    groups_per_batch: int = 64
    # nets trained from seeds seed·members, seed·members + 1, ... (heads of different seeds share no
    # net); their scores are averaged. One net's validation
    # NDCG@10 on ML-100K ranged 0.131-0.137 over five seeds; averages of 3-5 nets, 0.134-0.135.
    members: int = 3
    threads: int = 1  # torch CPU threads while training (2 ran far slower on the 2-core machine)
    seed: int = 0


class MLPRanker:
    """Two-layer MLPs scored per candidate, trained with softmax cross-entropy over each user's
    list; an average of ``members`` nets trained from different seeds."""

    kind: ClassVar[str] = "mlp"

    def __init__(self, config: MLPConfig | None = None) -> None:
        self.config = config or MLPConfig()
        self.nets: list[nn.Sequential] = []
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None
        self._layers: list[list[tuple[np.ndarray, np.ndarray]]] = []  # per net: (W, b) per Linear

    def _build(self, n_features: int) -> nn.Sequential:
        h = self.config.hidden
        return nn.Sequential(
            nn.Linear(n_features, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 1)
        )

    def fit(self, x: Groups, y: Groups, valid: tuple[Groups, Groups] | None = None) -> Self:
        flat = np.concatenate(x)
        # features may be NaN (an item's unknown year): statistics skip them, _norm maps them to 0;
        # a feature NaN everywhere in training (no item has a year) gets std inf, so it is always 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # "mean of empty slice"
            mean, std = np.nanmean(flat, axis=0), np.nanstd(flat, axis=0)
        self.mean, self.std = np.nan_to_num(mean), np.nan_to_num(std, nan=np.inf) + 1e-6
        keep = [i for i, g in enumerate(y) if g.sum() > 0]  # a list with no target teaches nothing
        train = (
            *self._padded([x[i] for i in keep]),
            torch.tensor([int(np.argmax(y[i])) for i in keep]),
        )
        held = None if valid is None else (*self._padded(valid[0]), valid[1])
        before = torch.get_num_threads()
        torch.set_num_threads(self.config.threads)
        try:
            self.nets = [
                self._fit_one(
                    self.config.seed * self.config.members + m, flat.shape[1], train, held
                )
                for m in range(self.config.members)
            ]
        finally:
            torch.set_num_threads(before)
        self._cache_weights()
        return self

    def _fit_one(
        self, seed: int, n_features: int, train: tuple, held: tuple | None
    ) -> nn.Sequential:
        """One net; with validation groups, the weights of its best epoch (NDCG@10)."""
        c = self.config
        feats, pad, targets = train
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        net = self._build(n_features)
        opt = torch.optim.Adam(net.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        best, best_state = -1.0, None
        epochs = epoch_budget(c.epochs, c.epochs, len(targets), c.max_work)[0]
        for epoch in range(epochs):
            net.train()
            order = torch.from_numpy(rng.permutation(len(targets)))
            for batch in order.split(c.groups_per_batch):
                logits = net(feats[batch]).squeeze(2).masked_fill(pad[batch], -1e9)  # (b, L)
                loss = nn.functional.cross_entropy(logits, targets[batch])
                opt.zero_grad()
                loss.backward()
                opt.step()
            if held is not None:
                net.eval()
                with torch.no_grad():
                    logits = net(held[0]).squeeze(2).numpy()  # (G, L)
                score = ndcg_at([logits[g, : len(v)] for g, v in enumerate(held[2])], held[2])
                if score > best:
                    best, best_state = score, {k: v.clone() for k, v in net.state_dict().items()}
                log.debug("mlp ranker seed %d epoch %d: valid ndcg@10 %.4f", seed, epoch, score)
        if best_state is not None:
            net.load_state_dict(best_state)
        return net

    def _cache_weights(self) -> None:
        """NumPy copies of the layers, so predict() runs without torch's per-call overhead."""
        self._layers = [
            [
                (m.weight.detach().numpy().T.copy(), m.bias.detach().numpy().copy())
                for m in net
                if isinstance(m, nn.Linear)
            ]
            for net in self.nets
        ]

    def _padded(self, groups: Groups) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised groups stacked as (G, L, F) with a (G, L) padding mask."""
        width = max(len(g) for g in groups)
        feats = torch.zeros(len(groups), width, groups[0].shape[1])
        pad = torch.ones(len(groups), width, dtype=torch.bool)
        for row, g in enumerate(groups):
            feats[row, : len(g)] = torch.from_numpy(self._norm(g))
            pad[row, : len(g)] = False
        return feats, pad

    def _norm(self, x: np.ndarray) -> np.ndarray:
        return np.nan_to_num((x - self.mean) / self.std, nan=0.0).astype(np.float32)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """(n,) scores of one group's (n, F) features: the nets' mean forward pass, in NumPy."""
        assert self.nets, "fit() first"
        x = self._norm(x)
        total = np.zeros(len(x), np.float32)
        for layers in self._layers:
            h = x
            for i, (w, b) in enumerate(layers):
                h = h @ w + b
                if i < len(layers) - 1:
                    h = np.maximum(h, 0.0)  # ReLU between the linear layers, as in _build
            total += h[:, 0]
        return total / len(self._layers)

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        meta = {
            "kind": self.kind,
            "config": asdict(self.config),
            "n_features": len(self.mean),
            "n_nets": len(self.nets),
        }
        (path / "ranker.json").write_text(json.dumps(meta))
        tensors = {
            f"net{m}.{k}": v for m, net in enumerate(self.nets) for k, v in net.state_dict().items()
        }
        tensors |= {"mean": torch.from_numpy(self.mean), "std": torch.from_numpy(self.std)}
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(path / "mlp.safetensors"))

    @classmethod
    def load(cls, path: Path) -> Self:
        meta = json.loads((path / "ranker.json").read_text())
        known = {f.name for f in fields(MLPConfig)}
        ranker = cls(MLPConfig(**{k: v for k, v in meta["config"].items() if k in known}))
        tensors = load_file(str(path / "mlp.safetensors"))
        prefixes = [f"net{m}." for m in range(meta.get("n_nets", 0))] or ["net."]  # older: one net
        for prefix in prefixes:
            net = ranker._build(meta["n_features"])
            net.load_state_dict(
                {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            )
            ranker.nets.append(net)
        ranker.mean, ranker.std = tensors["mean"].numpy(), tensors["std"].numpy()
        ranker._cache_weights()
        return ranker


RANKERS: dict[str, type] = {"lightgbm": LightGBMRanker, "mlp": MLPRanker}


def load_ranker(path: Path) -> Ranker:
    kind = json.loads((path / "ranker.json").read_text())["kind"]
    return RANKERS[kind].load(path)


def make_ranker(kind: str, params: Mapping[str, Any] | None = None) -> Ranker:
    """An unfitted head of ``kind`` with ``params`` (fields of its config) changed.

    Raises:
        ValueError: an unknown kind or config field (the message names it).
    """
    if kind not in RANKERS:
        raise ValueError(f"unknown ranking head {kind!r}; known: {list(RANKERS)}")
    cls = RANKERS[kind]
    default = cls().config
    try:
        return cls(replace(default, **dict(params or {})))
    except TypeError as e:
        names = [f.name for f in fields(default)]
        raise ValueError(f"{kind} head: {e}; its config fields are {names}") from None


def choose_ranker(
    kind: str,
    seed: int,
    x: Groups,
    y: Groups,
    valid: tuple[Groups, Groups] | None,
    report: dict[str, Any],
    params: Mapping[str, Mapping[str, Any]] | None = None,
) -> Ranker:
    """Fit the head ``kind`` ("auto": every kind, keeping the best validation NDCG@10; without a
    validation task, LightGBM); records each kind's validation score and the choice in
    ``report``. ``params`` maps a head kind to fields of its config to change."""
    kinds = list(RANKERS) if kind == "auto" else [kind]
    if valid is None and len(kinds) > 1:
        kinds = ["lightgbm"]
    best, chosen = -1.0, None
    for name in kinds:
        ranker = with_seed(make_ranker(name, (params or {}).get(name)), seed).fit(x, y, valid)
        score = 0.0  # no validation task: a single head, nothing to choose between
        if valid is not None:
            score = ndcg_at([ranker.predict(g) for g in valid[0]], valid[1])
            report.setdefault("ranker_valid_ndcg@10", {})[name] = round(score, 4)
        if score > best:
            best, chosen = score, ranker
    report["ranker"] = chosen.kind
    return chosen
