"""The sequential interest model: SASRec over frozen text embeddings, trained with softmax CE.

SASRec (Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018) reads a user's items
in time order with a causal transformer; the hidden state after the last item is the user's current
interest, and an item's score is its dot product with that state. Changes from the paper:

* Loss: cross-entropy at every position, one row per user (SASRec+, Klenitskiy & Vasilev,
  "Turning Dross Into Gold Loss: is BERT4Rec really better than SASRec?", RecSys 2023; gSASRec,
  Petrov & Macdonald, RecSys 2023) instead of BCE with one negative: over the whole catalogue
  (``loss="full"``), or over the target and ``negatives`` uniformly sampled items shared by the
  batch (``loss="sampled"``; SASRec+ found 3000 negatives match full CE). ``"auto"`` samples only
  where the catalogue has more trained items than ``negatives``, i.e. where full CE's (positions
  × items) logits stop being cheap. A row is a random ``max_len + 1`` span of the user's training
  sequence, drawn afresh each epoch, so long histories are all used at the cost of one short row
  (no prefix augmentation); rows of similar length are batched together (less padding).
* Context length: with ``len_from_data`` (the default) the context is the median training history
  length rounded up to a multiple of 10, at least 10 and at most ``max_len``
  (:func:`context_length`); a tuner searches both ``max_len`` and whether the rule applies.
* Items: what an item looks like to the model is ``LayerNorm(W·text_i + id_i)``, a learned
  projection of its FROZEN text embedding plus, optionally, a learned ID embedding
  (``SASRecConfig.item_input``: "text", "id" or "text+id"). One matrix is both the input
  embedding and the output layer. ``W`` starts as the text's principal directions and the ID at 0,
  so training starts from items placed by their text.

Items without a trained ID: an item with no training event has its ID embedding masked to 0 (it
looks like ``LayerNorm(W·text_i)``) and is left out of the training softmax, so the model never
learns to push it down for lack of data. In "text+id", whole ID embeddings are also dropped at
random during training (``id_dropout``), so the text path alone must be able to place an item —
which is all such an item has. It is then scored from its text in "text" and "text+id" modes; in
"id" mode all such items share one uninformative vector. :meth:`SASRec.add_items` appends
brand-new items the same way.

Real-time interest: :meth:`SASRec.score` reads each user's most recent ``max_len`` items, so a new
event changes the user's interest vector with no retraining; unknown users need only their sequence.

This module owns the scorer: its config and search space, the data-shaped context, fit, scoring,
catalogue growth, saving and loading (with the options earlier versions had). The network is
:mod:`encoders.sasrec_net`; the training epochs, losses and early stopping are
:mod:`encoders.sasrec_train`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar, Self

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from hyrec.data.splits import History

from .base import FitData, NotFittedError, read_config, write_config
from .sasrec_net import SASRecNet, right_pad
from .sasrec_train import train
from .search_space import Categorical, Float, Int, check_space

log = logging.getLogger(__name__)

ITEM_INPUTS = ("text", "id", "text+id")
LOSSES = ("auto", "full", "sampled")
#: Called after each validated epoch with (epoch, valid NDCG@10); True stops training (the best
#: weights are kept). A tuner prunes a trial by raising from it.
EpochHook = Callable[[int, float], bool]


@dataclass(frozen=True)
class SASRecConfig:
    # Defaults chosen on ML-100K validation NDCG@10 (leave-one-out, full ranking); "a > b" below
    # compares best validation NDCG@10, which is noisy (±0.007) and flatters small differences.
    item_input: str = "text+id"  # "text", "id" or "text+id": what an item looks like to the model
    # longest context (items read per user). With len_from_data the context is the median
    # training history length rounded up to 10, in [10, max_len] (70 on ML-100K's inner split,
    # where a fixed 50 had beaten 100 on validation); a tuner searches both
    max_len: int = 200
    len_from_data: bool = True  # False: read exactly max_len items
    hidden: int = 64  # d: width of item vectors and hidden states (128 diverged at lr 5e-3)
    layers: int = 2  # transformer blocks (pre-LN)
    heads: int = 1
    ffn: int = 64  # feed-forward width inside a block (= hidden, as in the paper)
    dropout: float = 0.3  # on the input and every residual branch (0.3 > 0.2 on validation)
    attn_dropout: float = 0.0  # on attention weights; > 0 forces slow (B, T, T) masks on CPU
    id_dropout: float = 0.5  # text+id: share of IDs dropped per step; 0 overfits (0.104 < 0.115)
    lr: float = 5e-3  # AdamW; 5e-3 > 2e-3 and 3e-3; 1e-3 was far slower
    weight_decay: float = 0.0  # 0.05 lowered validation NDCG
    batch_size: int = 32  # users per step (32 > 16 and 64 on validation)
    max_epochs: int = 200  # id-only models were still improving at 150
    patience: int = 40  # epochs without a better validation NDCG@10 (it is noisy: ±0.007)
    # Work cap: epochs × training users. Past max_work / users epochs the epoch cap (and patience
    # with it) shrinks, so a fit stops growing faster than the data (encoders.base.epoch_budget):
    # ML-100K's 943 users keep 200 epochs, 10⁴ users get 20, 10⁵ get 2.
    max_work: int = 200_000
    eval_every: int = 1  # validate every this many epochs (early stopping needs FitData.valid)
    threads: int = 1  # torch CPU threads; 2 ran ~20x slower per epoch on the 2-core CI machine
    # "full" softmax over trained items, "sampled" (negatives shared per batch), or "auto":
    # sampled when there are more trained items than negatives (docs/tuning.md has the measure)
    loss: str = "auto"
    negatives: int = 3000  # sampled softmax: uniform negatives per batch (SASRec+'s 3000)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.item_input not in ITEM_INPUTS:
            raise ValueError(f"item_input must be one of {ITEM_INPUTS}, got {self.item_input!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.max_len < 1 or self.negatives < 1:
            raise ValueError(
                f"max_len ({self.max_len}) and negatives ({self.negatives}) must be positive"
            )


#: What ``hyrec tune`` searches (docs/tuning.md); the first trial is the defaults (data-shaped).
SEARCH_SPACE = check_space(
    {
        # with len_from_data max_len caps the data-shaped context; without, it is the context
        "max_len": Categorical((50, 100, 150, 200, 300)),
        "len_from_data": Categorical((True, False)),
        "hidden": Categorical((32, 64, 128)),
        "layers": Int(1, 3),
        "dropout": Float(0.1, 0.5),
        "id_dropout": Float(0.0, 0.7),
        "lr": Float(1e-3, 1e-2, log=True),
        "batch_size": Categorical((16, 32, 64, 128)),
    },
    SASRecConfig,
    SASRecConfig(),
)


def context_length(lengths: np.ndarray, cap: int) -> int:
    """The data-shaped context: the median history length rounded up to a multiple of 10, at
    least 10, at most ``cap``. Half the users then fit whole; the longer half is read in random
    spans across epochs, and a row's cost grows with its length."""
    median = float(np.median(lengths)) if len(lengths) else 0.0
    return int(min(cap, max(10, 10 * np.ceil(median / 10))))


@contextmanager
def _threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class SASRec:
    """Causal-transformer sequential scorer: score = interest vector · item vector.

    After :meth:`fit`, ``history_`` holds the training curve (epoch, loss, valid_ndcg@10, seconds)
    and ``best_epoch_`` the epoch whose weights were kept.
    """

    kind: ClassVar[str] = "sasrec"

    def __init__(self, config: SASRecConfig | None = None) -> None:
        self.config = config or SASRecConfig()
        self.net: SASRecNet | None = None
        self.history_: list[dict[str, float]] = []
        self.best_epoch_: int | None = None
        self._items: torch.Tensor | None = None  # (N, d) item matrix in eval mode, cached
        self.on_epoch: EpochHook | None = None  # not saved: set by a tuner for one fit

    # ---- training ------------------------------------------------------------------------------
    def fit(self, data: FitData) -> Self:
        """Train on ``data.train``; early-stop on ``data.valid`` NDCG@10, keeping the best weights.

        Raises:
            ValueError: a text mode without ``data.item_embeddings``, or no user with two events.
        """
        c = self.config
        text = None
        if "text" in c.item_input:
            if data.item_embeddings is None:
                raise ValueError(
                    f"SASRec(item_input={c.item_input!r}) reads item text, but "
                    "FitData.item_embeddings is None: pass the catalogue's text embeddings "
                    "(encoders.text), or use SASRecConfig(item_input='id')"
                )
            text = torch.from_numpy(np.asarray(data.item_embeddings, dtype=np.float32))
            if len(text) != data.n_items:
                raise ValueError(f"item_embeddings has {len(text)} rows for {data.n_items} items")
        users = np.unique(data.train.user).astype(np.int64)
        seqs = History.from_interactions(data.train, users, data.n_items).sequences
        rows = [s for s in seqs if len(s) >= 2]
        if not rows:
            raise ValueError("SASRec.fit: no user has two training events to learn from")
        if c.len_from_data:  # the saved config records the context actually used
            span = context_length(np.array([len(s) for s in seqs]), c.max_len)
            self.config = c = replace(c, max_len=span, len_from_data=False)
            log.info("sasrec: context of %d items from the history lengths", span)
        with _threads(c.threads), torch.random.fork_rng():
            torch.manual_seed(c.seed)
            self.net = SASRecNet(c, data.n_items, text)
            seen = np.bincount(data.train.item, minlength=data.n_items) > 0
            self.net.seen.copy_(torch.from_numpy(seen))
            train(self, rows, data)
        return self

    @property
    def uses_sampled_loss(self) -> bool:
        """Whether training uses the sampled softmax (``loss``, and for "auto" the catalogue)."""
        c = self.config
        if c.loss != "auto":
            return c.loss == "sampled"
        return self.net is not None and int(self.net.seen.sum()) > c.negatives

    def _cache(self) -> None:
        assert self.net is not None
        self.net.eval()
        with torch.no_grad():
            self._items = self.net.item_matrix()

    # ---- scoring -------------------------------------------------------------------------------
    def _require(self) -> tuple[SASRecNet, torch.Tensor]:
        if self.net is None or self._items is None:
            raise NotFittedError("SASRec.fit() first")
        return self.net, self._items

    @property
    def epochs_run(self) -> int:
        """Epochs trained in the last fit (the harness reports seconds per epoch from it)."""
        return len(self.history_)

    @property
    def best_epoch(self) -> int | None:
        return self.best_epoch_

    @property
    def best_valid_ndcg(self) -> float | None:
        """Validation NDCG@10 of the kept weights (None: fitted without validation)."""
        scores = [r["valid_ndcg@10"] for r in self.history_]
        scores = [s for s in scores if not np.isnan(s)]  # NaN: an epoch without a validation
        return max(scores) if scores else None

    def item_vectors(self) -> np.ndarray:
        """(n_items, d) float32 item representation that interest vectors are scored against."""
        return self._require()[1].numpy().copy()

    def interest_vectors(self, history: History) -> np.ndarray:
        """(B, d) float32 interest of each history: the hidden state after its last event.

        Only the most recent ``max_len`` items are read. An empty history gives a zero vector (no
        sequential signal: every item scores 0).
        """
        net, items = self._require()
        c = self.config
        out = torch.zeros(len(history), c.hidden)
        seqs = [np.asarray(s[-c.max_len :]) for s in history.sequences]
        rows = sorted((r for r, s in enumerate(seqs) if len(s)), key=lambda r: len(seqs[r]))
        with _threads(c.threads), torch.no_grad():
            for chunk in range(0, len(rows), 256):
                idx = rows[chunk : chunk + 256]
                seq, lengths = right_pad([seqs[r] for r in idx], net.n_items)  # (b, T)
                hidden = net(seq, items)  # (b, T, d)
                out[idx] = hidden[torch.arange(len(idx)), lengths - 1]  # (b, d)
        return out.numpy()

    def score(self, history: History) -> np.ndarray:
        """(B, n_items) float32: interest vector · item vector, over the whole catalogue."""
        items = self._require()[1].numpy()
        return self.interest_vectors(history) @ items.T

    def add_items(self, item_embeddings: np.ndarray) -> range:
        """Append new catalogue items known only by their (k, E) text embeddings; no retraining.

        Like items without training events, they have no ID embedding and are scored from their
        text. Returns their item indices. Needs a "text" or "text+id" model.
        """
        net = self._require()[0]
        if not net.use_text:
            raise ValueError(
                "SASRec.add_items needs item_input 'text' or 'text+id': an id model "
                "cannot represent items it was not trained on"
            )
        new = torch.from_numpy(np.asarray(item_embeddings, dtype=np.float32))
        old, k = net.n_items, len(new)
        net.text = torch.cat([net.text, new])
        net.seen = torch.cat([net.seen, torch.zeros(k, dtype=torch.bool)])
        if net.use_id:
            weight = torch.cat([net.item_id.weight.detach(), torch.zeros(k, self.config.hidden)])
            net.item_id = nn.Embedding.from_pretrained(weight, freeze=False)
        net.n_items = old + k
        self._cache()
        return range(old, old + k)

    # ---- persistence ---------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """``config.json`` + ``model.safetensors`` (weights and the frozen text embeddings)."""
        net = self._require()[0]
        path = Path(path)
        text_dim = int(net.text.shape[1]) if net.use_text else None
        write_config(
            path,
            self.kind,
            self.config,
            n_items=net.n_items,
            text_dim=text_dim,
            best_epoch=self.best_epoch_,
        )
        state = {k: v.contiguous() for k, v in net.state_dict().items()}
        save_file(state, path / "model.safetensors")

    @classmethod
    def load(cls, path: Path) -> Self:
        path = Path(path)
        config, body = read_config(path, cls.kind, SASRecConfig)
        _check_removed_options(path, body.get("config", {}))
        config = replace(config, len_from_data=False)  # a fitted context is fixed (older files)
        model = cls(config)
        state = load_file(path / "model.safetensors")
        model.net = SASRecNet(config, int(body["n_items"]), state.get("text"))
        model.net.load_state_dict(state)
        model.best_epoch_ = body.get("best_epoch")
        model._cache()
        return model


#: Options earlier versions had, and the value the current code always behaves as.
_REMOVED_OPTIONS = {"window": "random", "cosine_decay": False}


def _check_removed_options(path: Path, saved: dict) -> None:
    """A model saved with a removed option at its old default loads as before; one that used
    another value cannot be served the same way, so it fails naming the option."""
    changed = {k: saved[k] for k, v in _REMOVED_OPTIONS.items() if k in saved and saved[k] != v}
    if changed:
        raise ValueError(
            f"{path}: this SASRec was fitted with {changed}, options this version removed (they "
            "lost on validation); fit the model again (hyrec fit)"
        )
