"""The scorer protocol every signal implements, and the artifact format they share.

A scorer is fitted on a :class:`FitData` (catalogue + training interactions, plus a validation task
for
early stopping) and then scores a batch of user histories over the *whole* catalogue. Saving writes
a
folder with ``config.json`` (the scorer's kind and typed config) and its arrays as ``.npz`` (never
pickle)
or ``.safetensors``; :func:`load_scorer` reads any of them back.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, is_dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self, TypeVar, runtime_checkable

import numpy as np
import scipy.sparse as sp

from hyrec.data import Dataset, EvalTask, Interactions, interaction_matrix
from hyrec.data.splits import History


@dataclass(frozen=True, eq=False)
class FitData:
    """What a scorer is fitted on.

    Attributes:
        dataset: Catalogue and id maps (its interactions are *not* all training data).
        train: The training interactions.
        valid: Optional validation task, for early stopping and model selection only.
        item_embeddings: Optional (n_items, d) L2-normalised text embeddings of the catalogue, for
            scorers that read item text (see :mod:`encoders.text`).
    """

    dataset: Dataset
    train: Interactions
    valid: EvalTask | None = None
    item_embeddings: np.ndarray | None = None

    @property
    def n_items(self) -> int:
        return self.dataset.n_items

    @property
    def n_users(self) -> int:
        return self.dataset.n_users

    @cached_property
    def matrix(self) -> sp.csr_matrix:
        """Binary (n_users, n_items) training matrix."""
        return interaction_matrix(self.train, self.n_users, self.n_items)

    @cached_property
    def item_popularity(self) -> np.ndarray:
        """Number of training users per item."""
        return np.asarray(self.matrix.sum(axis=0)).ravel()


@runtime_checkable
class Scorer(Protocol):
    """Scores whole-catalogue relevance for batches of users."""

    kind: ClassVar[str]

    def fit(self, data: FitData) -> Self: ...

    def score(self, history: History) -> np.ndarray:
        """(B, n_items) float32 scores, higher = more relevant; unknown users (index -1) must
        work."""
        ...

    def save(self, path: Path) -> None: ...

    @classmethod
    def load(cls, path: Path) -> Self: ...


@runtime_checkable
class FactorScorer(Protocol):
    """A scorer whose score is a dot product: ``score(h) == user_vectors(h) @ item_vectors().T``.

    Large catalogues never build its (B, n_items) scores: an ANN index over ``item_vectors()``
    proposes candidates and only those are scored (:mod:`retrieval.candidates`). SASRec has the
    same pair as ``interest_vectors`` / ``item_vectors`` (:func:`factor_vectors`)."""

    def user_vectors(self, history: History) -> np.ndarray: ...

    def item_vectors(self) -> np.ndarray: ...


def factor_vectors(scorer: Any):
    """``(user_vectors function, item_vectors function)`` of a dot-product scorer, or ``None``."""
    users = getattr(scorer, "user_vectors", None) or getattr(scorer, "interest_vectors", None)
    items = getattr(scorer, "item_vectors", None)
    return None if users is None or items is None else (users, items)


class NotFittedError(RuntimeError):
    """A scorer was asked to score or save before ``fit``."""


_M = TypeVar("_M")


def is_seeded(model: Any) -> bool:
    """Whether ``model.config`` has a ``seed`` (pop and ItemKNN fit without one)."""
    config = getattr(model, "config", None)
    return is_dataclass(config) and any(f.name == "seed" for f in fields(config))


def with_seed(model: _M, seed: int) -> _M:
    """``model`` with ``config.seed`` set to ``seed``; a model without a seed is returned as is."""
    if is_seeded(model):
        model.config = replace(model.config, seed=seed)  # type: ignore[attr-defined]
    return model


def write_config(path: Path, kind: str, config: Any, **extra: Any) -> None:
    """Write ``config.json`` for a scorer of ``kind`` with its dataclass config."""
    path.mkdir(parents=True, exist_ok=True)
    body = {"kind": kind, "config": asdict(config) if is_dataclass(config) else config, **extra}
    (path / "config.json").write_text(json.dumps(body, indent=2, sort_keys=True))


def read_config(
    path: Path, kind: str, config_cls: type | None = None
) -> tuple[Any, dict[str, Any]]:
    """Read ``config.json`` written for ``kind``; returns (typed config, the whole body)."""
    file = path / "config.json"
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no saved scorer here")
    body = json.loads(file.read_text())
    if body.get("kind") != kind:
        raise ValueError(f"{file}: holds a {body.get('kind')!r} scorer, not {kind!r}")
    cfg = body.get("config", {})
    if config_cls is not None:
        known = {f.name for f in fields(config_cls)}
        cfg = config_cls(
            **{k: (tuple(v) if isinstance(v, list) else v) for k, v in cfg.items() if k in known}
        )
    return cfg, body


def save_arrays(path: Path, **arrays: np.ndarray) -> None:
    np.savez(path / "arrays.npz", **arrays)


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path / "arrays.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def save_csr(prefix: str, m: sp.csr_matrix) -> dict[str, np.ndarray]:
    """A CSR matrix as plain arrays under ``prefix`` (for :func:`save_arrays`)."""
    m = m.tocsr()
    return {
        f"{prefix}_data": m.data,
        f"{prefix}_indices": m.indices,
        f"{prefix}_indptr": m.indptr,
        f"{prefix}_shape": np.asarray(m.shape, dtype=np.int64),
    }


def load_csr(prefix: str, arrays: dict[str, np.ndarray]) -> sp.csr_matrix:
    shape = tuple(int(x) for x in arrays[f"{prefix}_shape"])
    return sp.csr_matrix(
        (arrays[f"{prefix}_data"], arrays[f"{prefix}_indices"], arrays[f"{prefix}_indptr"]),
        shape=shape,
    )


def known_users(history: History, n_users: int) -> np.ndarray:
    """Mask of the batch rows whose user the model was fitted on."""
    return (history.users >= 0) & (history.users < n_users)


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), as float32: the one normalisation of
    text vectors, queries and profiles."""
    v = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return np.divide(v, norms, out=np.zeros_like(v), where=norms > 0)


def epoch_budget(max_epochs: int, patience: int, per_epoch: int, budget: int) -> tuple[int, int]:
    """(epochs, patience) for a neural fit whose epoch costs ``per_epoch`` units of work (steps,
    or training pairs), within ``budget`` units in all: at most ``max_epochs``, at least one, and
    the patience shrunk in the same proportion (at least 2 checks). Data small enough to fit
    ``max_epochs`` in the budget keeps both as configured; past it the fit's cost stops growing
    with the data (docs/scaling.md)."""
    epochs = int(min(max_epochs, max(1, budget // max(per_epoch, 1))))
    if epochs == max_epochs:
        return epochs, patience
    return epochs, int(min(patience, max(2, -(-patience * epochs // max_epochs))))
