"""Scorers by name: the one table the CLI, the harness and the hybrid recommender build models from.

A plain dict (no import-by-string): each name maps to a scorer class and the typed config it is
built with, whose defaults were chosen on validation. :func:`make_scorer` takes field overrides as
data (``{"factors": 32}``), so a hybrid's per-component settings are JSON in its saved config and
a search space can name them: each entry carries its ``space`` (:mod:`encoders.search_space`, what
``hyrec tune`` may change, declared beside the config). :func:`load_scorer` reopens any saved
scorer from the ``kind`` in its ``config.json``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from encoders import lightgcn, sasrec
from encoders.base import Scorer
from encoders.collaborative import (
    ALS,
    ALS_SPACE,
    BPR,
    BPR_SPACE,
    ITEMKNN_SPACE,
    ALSConfig,
    BPRConfig,
    ItemKNN,
    ItemKNNConfig,
    MostPopular,
)
from encoders.lightgcn import LightGCN, LightGCNConfig
from encoders.sasrec import SASRec, SASRecConfig
from encoders.search_space import SearchSpace
from encoders.semantic import SemanticConfig, SemanticScorer


@dataclass(frozen=True)
class Entry:
    """A scorer class, the config it is built with (``None``: it has no settings) and the search
    space a tuner may explore (empty: nothing worth tuning)."""

    cls: type
    config: Any = None
    space: SearchSpace = field(default_factory=dict)

    def __call__(self, **params: Any) -> Scorer:
        if self.config is None:
            if params:
                raise ValueError(f"{self.cls.kind!r} has no settings, got {sorted(params)}")
            return self.cls()
        known = {f.name for f in fields(self.config)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ValueError(f"{self.cls.kind!r} has no setting {unknown}; known: {sorted(known)}")
        return self.cls(replace(self.config, **params))


#: id_dropout acts only where an item has both a text and an ID input.
_SASREC_ONE_INPUT = {k: v for k, v in sasrec.SEARCH_SPACE.items() if k != "id_dropout"}

SCORERS: dict[str, Entry] = {
    "pop": Entry(MostPopular),
    "itemknn": Entry(ItemKNN, ItemKNNConfig(), ITEMKNN_SPACE),
    "als": Entry(ALS, ALSConfig(), ALS_SPACE),
    "bpr": Entry(BPR, BPRConfig(), BPR_SPACE),
    "lightgcn": Entry(LightGCN, LightGCNConfig(), lightgcn.SEARCH_SPACE),
    "semantic": Entry(SemanticScorer, SemanticConfig()),
    "sasrec": Entry(SASRec, SASRecConfig(), sasrec.SEARCH_SPACE),  # text + ID item input
    "sasrec-text": Entry(SASRec, SASRecConfig(item_input="text"), _SASREC_ONE_INPUT),
    "sasrec-id": Entry(SASRec, SASRecConfig(item_input="id"), _SASREC_ONE_INPUT),
}

#: Scorers that read FitData.item_embeddings.
TEXT_SCORERS = frozenset({"semantic", "sasrec", "sasrec-text"})

_CLASSES: dict[str, type] = {e.cls.kind: e.cls for e in SCORERS.values()}


def make_scorer(name: str, params: Mapping[str, Any] | None = None) -> Scorer:
    """A new, unfitted scorer by name, with ``params`` overriding fields of its config.

    Raises:
        ValueError: an unknown name or setting (named).
    """
    try:
        entry = SCORERS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(SCORERS)}") from None
    return entry(**dict(params or {}))


def load_scorer(path: Path) -> Scorer:
    """Reopen a scorer saved with ``save(path)``, whatever its kind."""
    file = Path(path) / "config.json"
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no saved scorer here")
    kind = json.loads(file.read_text()).get("kind")
    if kind not in _CLASSES:
        raise ValueError(f"{file}: unknown scorer kind {kind!r}")
    return _CLASSES[kind].load(Path(path))
