"""A tuned config on disk: ``tuned.json`` (the winning :class:`HybridConfig`) and
``tuning_history.json`` (every trial), written by ``hyrec tune`` into a model folder.

``tuned.json`` is what ``hyrec fit --config`` and ``hyrec eval --config`` read back::

    {"kind": "hyrec-tuned", "version": 2,
     "hybrid": {...HybridConfig fields, params included: the final check's winner...},
     "best": {stage: {"best_valid_ndcg@10", "default_valid_ndcg@10", "trials"},
              "check": {"best_valid_ndcg@10" (the winner's), "default_valid_ndcg@10",
                        "tuned_valid_ndcg@10", "trials" (hybrid fits), "winner", "kept_tuned",
                        "reverted", "head", "steps", "not_tried", "hybrids": [every one compared]}},
     "search": {"budget_seconds", "trials", "seconds", "split", "dataset", ...}}

Version 2 adds ``best["check"]`` (:class:`retrieval.tuning_check.FinalCheck`); version 1 files,
written before the check, have no such entry and load the same (only ``"hybrid"`` is read back).
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

from retrieval.hybrid import HybridConfig
from retrieval.tuning import TuneResult

KIND = "hyrec-tuned"
TUNED_FILE = "tuned.json"
HISTORY_FILE = "tuning_history.json"
VERSION = 2  # 2: best["check"], the final check (1: before it; both load)


def config_to_dict(config: HybridConfig) -> dict[str, Any]:
    """JSON data of a config (tuples as lists, mappings as plain dicts)."""
    out: dict[str, Any] = {}
    for f in fields(config):
        value = getattr(config, f.name)
        if isinstance(value, tuple):
            value = list(value)
        elif f.name in ("params", "ranker_params"):
            value = {k: dict(v) for k, v in value.items()}
        out[f.name] = value
    return out


def config_from_dict(body: dict[str, Any]) -> HybridConfig:
    """The config of :func:`config_to_dict`'s data (unknown keys are an error: a typo or a file
    from a newer hyrec)."""
    known = {f.name for f in fields(HybridConfig)}
    unknown = sorted(set(body) - known)
    if unknown:
        raise ValueError(f"tuned config has fields {unknown} that HybridConfig does not know")
    return HybridConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in body.items()})


def save_tuned(result: TuneResult, folder: Path, search: dict[str, Any]) -> dict[str, Path]:
    """Write ``tuned.json`` and ``tuning_history.json`` into ``folder``; returns their paths.

    Args:
        result: What :func:`retrieval.tuning.tune` returned.
        folder: The model folder (created if missing).
        search: How the search was run (budget, dataset, split), recorded in ``tuned.json``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tuned = {
        "kind": KIND,
        "version": VERSION,
        "hybrid": config_to_dict(result.config),
        "best": result.best,
        "search": {**search, "seconds": round(result.seconds, 1)},
    }
    paths = {"tuned": folder / TUNED_FILE, "history": folder / HISTORY_FILE}
    paths["tuned"].write_text(json.dumps(tuned, indent=2) + "\n")
    body = {"search": tuned["search"], "best": result.best, "trials": result.history}
    paths["history"].write_text(json.dumps(body, indent=2) + "\n")
    return paths


def load_tuned(path: Path) -> HybridConfig:
    """The hybrid config saved in a ``tuned.json`` (or in the folder holding one).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a file that is not a tuned config (the message says what it holds).
    """
    path = Path(path)
    if path.is_dir():
        path = path / TUNED_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no tuned config here (write one with `hyrec tune`)")
    try:
        body = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not JSON ({e})") from None
    if not isinstance(body, dict) or body.get("kind") != KIND:
        kind = body.get("kind") if isinstance(body, dict) else type(body).__name__
        raise ValueError(f"{path}: holds {kind!r}, not a tuned config from `hyrec tune`")
    return config_from_dict(body["hybrid"])
