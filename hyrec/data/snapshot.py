"""Save a :class:`Dataset` next to a fitted model, as JSON lines + ``.npz`` (no pickle).

A saved model carries the catalogue it was fitted on and the users' histories, so
``hyrec recommend`` needs only the model folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .dataset import Dataset, Interactions, Item


def save_snapshot(ds: Dataset, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "items.jsonl").open("w", encoding="utf-8") as f:
        for it in ds.items:
            row = {
                "item_id": it.item_id,
                "title": it.title,
                "description": it.description,
                "attributes": dict(it.attributes),
            }
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    (folder / "users.json").write_text(json.dumps([str(u) for u in ds.user_ids]))
    inter = ds.interactions
    arrays = {
        "user": inter.user,
        "item": inter.item,
        "timestamp": inter.timestamp,
        "rating": inter.rating,
    }
    if inter.context is not None:
        arrays["context"] = inter.context.astype(str)
    np.savez(folder / "interactions.npz", **arrays)
    (folder / "dataset.json").write_text(json.dumps({"name": ds.name, **ds.fingerprint()}))


def load_snapshot(folder: Path) -> Dataset:
    meta = json.loads((folder / "dataset.json").read_text())
    with (folder / "items.jsonl").open(encoding="utf-8") as f:
        items = tuple(
            Item(r["item_id"], r["title"], r.get("description", ""), r.get("attributes", {}))
            for r in map(json.loads, f)
        )
    users = np.array(json.loads((folder / "users.json").read_text()), dtype=object)
    with np.load(folder / "interactions.npz", allow_pickle=False) as z:
        context = z["context"].astype(object) if "context" in z else None
        inter = Interactions(z["user"], z["item"], z["timestamp"], z["rating"], context)
    return Dataset(meta["name"], items, users, inter)
