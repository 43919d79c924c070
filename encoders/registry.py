"""Scorers by name: the one table the CLI, the harness and the hybrid recommender build models from.

A plain dict of constructors (no import-by-string): each entry is a scorer with the defaults chosen
on
validation. ``load_scorer`` reopens any saved scorer from the ``kind`` in its ``config.json``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from .base import Scorer
from .collaborative import ALS, BPR, ItemKNN, MostPopular
from .lightgcn import LightGCN
from .sasrec import SASRec, SASRecConfig
from .text import SemanticScorer

SCORERS: dict[str, Callable[[], Scorer]] = {
    "pop": MostPopular,
    "itemknn": ItemKNN,
    "als": ALS,
    "bpr": BPR,
    "lightgcn": LightGCN,
    "semantic": SemanticScorer,
    "sasrec": SASRec,  # text + ID item input
    "sasrec-text": lambda: SASRec(SASRecConfig(item_input="text")),
    "sasrec-id": lambda: SASRec(SASRecConfig(item_input="id")),
}

#: Scorers that read FitData.item_embeddings.
TEXT_SCORERS = frozenset({"semantic", "sasrec", "sasrec-text"})

_CLASSES: dict[str, type] = {
    cls.kind: cls for cls in (MostPopular, ItemKNN, ALS, BPR, LightGCN, SemanticScorer, SASRec)
}


def make_scorer(name: str) -> Scorer:
    """A new, unfitted scorer by name."""
    try:
        return SCORERS[name]()
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(SCORERS)}") from None


def load_scorer(path: Path) -> Scorer:
    """Reopen a scorer saved with ``save(path)``, whatever its kind."""
    file = Path(path) / "config.json"
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no saved scorer here")
    kind = json.loads(file.read_text()).get("kind")
    if kind not in _CLASSES:
        raise ValueError(f"{file}: unknown scorer kind {kind!r}")
    return _CLASSES[kind].load(Path(path))
