"""A fitted hybrid on disk: JSON config + each component's own folder + ``.npz`` arrays, never
pickle.

Layout of a model folder::

    hybrid.json            kind, HybridConfig, per-component item counts, fit report (with
                           ``fitted_at``: the UTC time of the first save after the fit)
    components/<name>/     each scorer's config.json + arrays (encoders.*.save)
    ranker/                the ranking head (retrieval.ranker)
    facts.npz              popularity, days since last event, year, text vectors
    data/                  the catalogue and histories snapshot (hyrec.data.snapshot)
    chroma/                the chromadb item store
"""

from __future__ import annotations

import json
import shutil
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from encoders.base import NotFittedError
from encoders.registry import load_scorer
from hyrec.data import Dataset
from hyrec.data.snapshot import load_snapshot, save_snapshot
from retrieval.features import ItemFacts
from retrieval.ranker import load_ranker
from retrieval.store import ItemStore, StoreConfig

if TYPE_CHECKING:
    from retrieval.hybrid import HybridRecommender


def save_hybrid(model: HybridRecommender, path: Path) -> None:
    if model.ranker is None:
        raise NotFittedError("HybridRecommender.fit() first")
    path.mkdir(parents=True, exist_ok=True)
    for name, scorer in model.components.items():
        scorer.save(path / "components" / name)
    model.ranker.save(path / "ranker")
    f = model.facts
    arrays = {"popularity": f.popularity, "days_since_last": f.days_since_last, "year": f.year}
    if f.embeddings is not None:
        arrays["embeddings"] = f.embeddings
    np.savez(path / "facts.npz", **arrays)
    save_snapshot(model.dataset, path / "data")
    config = {f.name: getattr(model.config, f.name) for f in fields(model.config)}
    config["params"] = {k: dict(v) for k, v in model.config.params.items()}
    if "fitted_at" not in model.fit_report:  # a loaded model saved again keeps its fit date
        model.fit_report = {
            **model.fit_report,
            "fitted_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
    body = {
        "kind": model.kind,
        "config": config,
        "native_items": model.native_items,
        "uses_profile": model.uses_profile,
        "fit_report": model.fit_report,
    }
    (path / "hybrid.json").write_text(json.dumps(body, indent=2))
    if model.store is not None and Path(model.store.config.path) != path / "chroma":
        if (path / "chroma").exists():
            shutil.rmtree(path / "chroma")
        with ItemStore(StoreConfig(path=path / "chroma", show_progress=False)) as store:
            store.sync(model.dataset.items, f.embeddings)


def load_hybrid(
    cls: type[HybridRecommender], path: Path, dataset: Dataset | None = None
) -> HybridRecommender:
    from retrieval.hybrid import HybridConfig

    if not (path / "hybrid.json").is_file():
        raise FileNotFoundError(f"{path}: no saved hybrid model (hybrid.json missing)")
    dataset = dataset or load_snapshot(path / "data")
    body = json.loads((path / "hybrid.json").read_text())
    known = {f.name for f in fields(HybridConfig)}  # dropped settings (e.g. "refit") are ignored
    config = HybridConfig(
        **{
            k: tuple(v) if isinstance(v, list) else v
            for k, v in body["config"].items()
            if k in known
        }
    )
    model = cls(config, store_path=path / "chroma")
    model.dataset = dataset
    model.fit_report = body.get("fit_report", {})
    model.components = {n: load_scorer(path / "components" / n) for n in config.components}
    model.native_items = {
        n: int(body.get("native_items", {}).get(n, dataset.n_items)) for n in model.components
    }
    model.uses_profile = bool(body.get("uses_profile", False))
    model.ranker = load_ranker(path / "ranker")
    with np.load(path / "facts.npz", allow_pickle=False) as z:
        model.facts = ItemFacts(
            z["popularity"],
            z["days_since_last"],
            z["year"],
            z["embeddings"] if "embeddings" in z.files else None,
        )
    if (path / "chroma").exists():
        model.store = ItemStore(StoreConfig(path=path / "chroma", show_progress=False))
    return model
