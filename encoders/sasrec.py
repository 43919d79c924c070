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
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar, Self

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

from hyrec.data.splits import History
from hyrec.metrics import evaluate

from .base import FitData, NotFittedError, read_config, write_config
from .search_space import Categorical, Float, Int, check_space

log = logging.getLogger(__name__)

ITEM_INPUTS = ("text", "id", "text+id")
LOSSES = ("auto", "full", "sampled")
#: Called after each validated epoch with (epoch, valid NDCG@10); True stops training (the best
#: weights are kept). A tuner prunes a trial by raising from it.
EpochHook = Callable[[int, float], bool]


def _progress(**info: object) -> dict[str, object]:
    """A log record's ``extra`` carrying fit progress (read by ``agent.cli.progress``)."""
    return {"progress": {"stage": SASRec.kind, **info}}


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


class SASRecNet(nn.Module):
    """Item representation + causal transformer. Item index ``n_items`` is padding."""

    def __init__(self, config: SASRecConfig, n_items: int, text: torch.Tensor | None) -> None:
        super().__init__()
        c, d = config, config.hidden
        self.config, self.n_items = c, n_items
        self.use_text, self.use_id = "text" in c.item_input, "id" in c.item_input
        if self.use_text:
            if text is None:
                raise ValueError(f"item_input {c.item_input!r} needs the items' text embeddings")
            self.register_buffer("text", text.float())  # (N, E) frozen, saved with the weights
            self.text_proj = _pca_linear(self.text, d)
        if self.use_id:
            self.item_id = nn.Embedding(n_items, d)  # N(0, 1): the scale of a LayerNorm output
            if self.use_text:  # text+id: the ID starts at 0, a learned correction to the text
                nn.init.zeros_(self.item_id.weight)
        # items with training events: the others get no ID embedding and no softmax mass in training
        self.register_buffer("seen", torch.ones(n_items, dtype=torch.bool))
        self.item_ln = nn.LayerNorm(d)
        self.pos = nn.Embedding(c.max_len, d)
        self.drop = nn.Dropout(c.dropout)
        block = nn.TransformerEncoderLayer(
            d,
            c.heads,
            dim_feedforward=c.ffn,
            dropout=c.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        block.self_attn.dropout = c.attn_dropout  # at 0, attention takes the fused causal kernel
        self.blocks = nn.TransformerEncoder(
            block, c.layers, norm=nn.LayerNorm(d), enable_nested_tensor=False
        )

    def item_matrix(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """(N, d) representation of every catalogue item, or (U, d) of the items ``rows`` only
        (the sampled loss needs just a batch's items, not the whole catalogue)."""
        x = 0.0
        if self.use_text:
            x = self.text_proj(self.text if rows is None else self.text[rows])  # (N, d)
        if self.use_id:
            keep = self.seen if rows is None else self.seen[rows]  # (N,)
            if self.use_text and self.training and self.config.id_dropout > 0:
                # drop whole IDs, without rescaling: both LN(W·t) and LN(W·t + id) occur in training
                keep = keep & (torch.rand(len(keep)) >= self.config.id_dropout)
            weight = self.item_id.weight if rows is None else self.item_id(rows)
            x = x + weight * keep[:, None]  # (N, d)
        return self.item_ln(x)

    def forward(self, seq: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Hidden states (B, T, d) of right-padded ``seq`` (B, T); ``items`` = item_matrix()."""
        T = seq.shape[1]
        # padding (index len(items)) embeds as 0; gathering only the batch's rows, not copying the
        # table with a padding row appended, keeps a request's cost independent of the catalogue
        pad = seq >= len(items)
        x = items[seq.masked_fill(pad, 0)].masked_fill(pad[..., None], 0.0)  # (B, T, d)
        x = x + self.pos(torch.arange(T, device=seq.device))
        mask = nn.Transformer.generate_square_subsequent_mask(T, device=seq.device)
        # right padding + causal mask: a real position never attends to padding, so no padding mask
        return self.blocks(self.drop(x), mask=mask, is_causal=True)  # (B, T, d)


def _pca_linear(text: torch.Tensor, d: int) -> nn.Linear:
    """A Linear(E, d) that starts as the text's top-d principal directions, scaled to unit variance.

    Items then start as far apart as their text allows, at the scale of a random ID embedding. With
    the default (tiny) init, text+id peaked lower on ML-100K validation (NDCG@10 0.114 vs 0.123).
    """
    mean = text.mean(0)  # (E,)
    _, _, v = torch.linalg.svd(text - mean, full_matrices=False)  # rows of v: directions
    proj = torch.zeros(d, text.shape[1])  # (d, E); rows stay 0 if there are fewer directions
    proj[: min(d, len(v))] = v[:d]
    scale = float(((text - mean) @ proj.T).std()) or 1.0
    linear = nn.Linear(text.shape[1], d)
    with torch.no_grad():
        linear.weight.copy_(proj / scale)
        linear.bias.copy_(-(mean @ proj.T) / scale)
    return linear


def _sampled_ce(
    hidden: torch.Tensor, items: torch.Tensor, targets: torch.Tensor, neg: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy of each target against the negatives shared by the batch (drawn uniformly
    with replacement, as in SASRec+, so no popularity correction); a negative that is the row's
    own target is masked out.

    Args:
        hidden: (R, d) hidden states of the real positions.
        items: (U, d) item rows that ``targets`` and ``neg`` index.
        targets: (R,) next items.
        neg: (K,) negatives.
    """
    positive = (hidden * items[targets]).sum(-1, keepdim=True)  # (R, 1)
    others = (hidden @ items[neg].T).masked_fill(neg[None, :] == targets[:, None], -torch.inf)
    logits = torch.cat([positive, others], dim=1)  # (R, 1 + K): the target is class 0
    return F.cross_entropy(logits, torch.zeros(len(hidden), dtype=torch.long))


@contextmanager
def _threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _pad(seqs: list[np.ndarray], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad int sequences into (B, T) with ``pad``; returns (padded, lengths)."""
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    width = max(int(lengths.max()), 1) if len(seqs) else 1
    out = torch.full((len(seqs), width), pad, dtype=torch.long)
    for row, s in enumerate(seqs):
        out[row, : len(s)] = torch.from_numpy(np.asarray(s, dtype=np.int64))
    return out, lengths


def _length_batches(lengths: np.ndarray, size: int, gen: torch.Generator) -> list[list[int]]:
    """Batches of rows of similar length (less padding), shuffled within a length, random order."""
    order = np.lexsort((torch.rand(len(lengths), generator=gen).numpy(), lengths))
    batches = [order[i : i + size].tolist() for i in range(0, len(order), size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]


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
            self._train(rows, data)
        return self

    def _train(self, rows: list[np.ndarray], data: FitData) -> None:
        c, net = self.config, self.net
        assert net is not None
        opt = torch.optim.AdamW(net.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        gen = torch.Generator().manual_seed(c.seed)
        best, best_state, stale = -1.0, None, 0
        self.history_ = []
        for epoch in range(1, c.max_epochs + 1):
            start = time.perf_counter()
            record = {"epoch": epoch, "loss": self._epoch(rows, opt, gen)}
            record["valid_ndcg@10"] = float("nan")
            if data.valid is not None and (epoch % c.eval_every == 0 or epoch == c.max_epochs):
                self._cache()
                record["valid_ndcg@10"] = evaluate(self.score, data.valid, ks=(10,))["ndcg@10"]
                if record["valid_ndcg@10"] > best:
                    best, stale, self.best_epoch_ = record["valid_ndcg@10"], 0, epoch
                    best_state = copy.deepcopy(net.state_dict())
                else:
                    stale += c.eval_every
            record["seconds"] = time.perf_counter() - start
            self.history_.append(record)
            stop = False
            if self.on_epoch is not None and not np.isnan(record["valid_ndcg@10"]):
                stop = self.on_epoch(epoch, record["valid_ndcg@10"])
            log.info(
                "sasrec epoch %d: loss %.4f, valid ndcg@10 %.4f, %.1f s",
                epoch,
                record["loss"],
                record["valid_ndcg@10"],
                record["seconds"],
                extra=_progress(
                    step=epoch,
                    total=c.max_epochs,
                    valid=record["valid_ndcg@10"],
                    best=best if best >= 0 else None,
                ),
            )
            if stale >= c.patience or stop:
                break
        if best_state is not None:
            net.load_state_dict(best_state)
        else:
            self.best_epoch_ = len(self.history_)
        self._cache()
        seconds = sum(r["seconds"] for r in self.history_)
        log.info(
            "sasrec: %d epochs, %.2f s/epoch, kept epoch %s (valid ndcg@10 %.4f)",
            len(self.history_),
            seconds / len(self.history_),
            self.best_epoch_,
            best,
        )

    def _epoch(
        self, rows: list[np.ndarray], opt: torch.optim.Optimizer, gen: torch.Generator
    ) -> float:
        """One pass over all users; returns the mean cross-entropy per predicted position."""
        net, c = self.net, self.config
        assert net is not None
        net.train()
        # the softmax runs over items with training events only: the others are never pushed down
        seen = net.seen.nonzero().squeeze(1)  # (S,)
        remap = torch.full((net.n_items,), -1, dtype=torch.long)
        remap[seen] = torch.arange(len(seen))
        sampled = self.uses_sampled_loss
        total, count = 0.0, 0
        lengths = np.minimum([len(r) for r in rows], c.max_len + 1)
        for batch in _length_batches(lengths, c.batch_size, gen):
            spans = [self._window(rows[i], gen) for i in batch]
            seq, lengths = _pad(spans, net.n_items)  # (B, T + 1)
            inputs, targets = seq[:, :-1], seq[:, 1:]  # (B, T): position t predicts item t + 1
            real = torch.arange(inputs.shape[1])[None, :] < (lengths - 1)[:, None]  # (B, T)
            if sampled:
                loss, hidden = self._sampled_loss(inputs, targets, real, seen, gen)
            else:
                items = net.item_matrix()  # (N, d)
                hidden = net(inputs, items)[real]  # (R, d): real positions only
                logits = hidden @ items[seen].T  # (R, S)
                loss = F.cross_entropy(logits, remap[targets[real]])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, count = total + loss.item() * len(hidden), count + len(hidden)
        return total / count

    def _sampled_loss(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        real: torch.Tensor,
        seen: torch.Tensor,
        gen: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, hidden states of the real positions) of one batch with ``negatives`` trained
        items drawn uniformly for the whole batch. Only the batch's own items and the negatives
        are represented, so a step costs O(batch items + negatives), not O(catalogue)."""
        net = self.net
        assert net is not None
        neg = seen[torch.randint(len(seen), (self.config.negatives,), generator=gen)]  # (K,)
        used = torch.unique(torch.cat([inputs.flatten(), targets.flatten(), neg]))
        used = used[used < net.n_items]  # (U,) without the padding index
        local = torch.full((net.n_items + 1,), len(used), dtype=torch.long)  # padding → U
        local[used] = torch.arange(len(used))
        rows = net.item_matrix(used)  # (U, d)
        hidden = net(local[inputs], rows)[real]  # (R, d)
        return _sampled_ce(hidden, rows, local[targets[real]], local[neg]), hidden

    @property
    def uses_sampled_loss(self) -> bool:
        """Whether training uses the sampled softmax (``loss``, and for "auto" the catalogue)."""
        c = self.config
        if c.loss != "auto":
            return c.loss == "sampled"
        return self.net is not None and int(self.net.seen.sum()) > c.negatives

    def _window(self, seq: np.ndarray, gen: torch.Generator) -> np.ndarray:
        """A user's training row: a random span of max_len + 1 consecutive items gives max_len
        next-item targets (a random span beat the last one on validation, 0.108 vs 0.090)."""
        span = self.config.max_len + 1
        if len(seq) <= span:
            return seq[-span:]
        start = int(torch.randint(len(seq) - span + 1, (1,), generator=gen))
        return seq[start : start + span]

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
                seq, lengths = _pad([seqs[r] for r in idx], net.n_items)  # (b, T)
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
