"""Fitting the hybrid: its stages, in order, as functions that
:class:`~retrieval.hybrid.HybridRecommender` delegates to.

This module owns how a hybrid is fitted: the item store sync (:func:`open_store`), the components
(:func:`fit_components`), the ANN indexes of large catalogues (:func:`build_spaces`), the head's
training and validation lists (:func:`candidate_groups`) and the head (:func:`fit`), each stage's
progress records and wall seconds (:func:`stage_seconds`). Stages call one another through the
model's methods, so a method replaced on the model is the one the fit runs.

Training the head never touches validation or test *targets*: each user's last training event is
held out, the components are fitted on the rest, and the head learns to find that held-out item
among the candidates ("inner" split). Validation only early-stops the head and picks LightGBM or
the MLP. The head then serves on those same components: the features are scale-free
(standardised scores and ranks), so refitting the components on the whole training split changed
validation NDCG@10 by less than its noise while doubling the fit time
(``eval/results/ml-100k/hybrid-experiments.md``).
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from encoders.base import FitData, with_seed
from encoders.registry import TEXT_SCORERS, make_scorer
from hyrec.data import EvalTask, interaction_matrix
from hyrec.data.splits import History, inner_split
from hyrec.metrics import evaluate
from retrieval.features import item_facts, sample_rows, sample_task
from retrieval.ranker import RANKERS, Groups, choose_ranker
from retrieval.store import ItemStore, StoreConfig

if TYPE_CHECKING:
    from retrieval.hybrid import HybridRecommender

# the hybrid's logger: fit records keep the name they had when the fit lived in retrieval.hybrid
log = logging.getLogger("retrieval.hybrid")

#: Interest-profile embeddings of a batch of histories: (B, d) unit-norm, zero rows for "none".
ProfileFn = Callable[[History], np.ndarray]


def _progress(stage: str, **info: Any) -> dict[str, Any]:
    """A log record's ``extra`` carrying fit progress (read by ``agent.cli.progress``)."""
    return {"progress": {"stage": stage, **{k: v for k, v in info.items() if v is not None}}}


def fit(
    model: HybridRecommender,
    data: FitData,
    profiles: ProfileFn | None = None,
    fitted: Mapping[str, Any] | None = None,
) -> HybridRecommender:
    """See :meth:`retrieval.hybrid.HybridRecommender.fit`: the stages in order (module doc)."""
    needs_text = TEXT_SCORERS.intersection(model.config.components)
    if needs_text and data.item_embeddings is None:
        raise ValueError(f"components {sorted(needs_text)} need FitData.item_embeddings")
    if profiles is not None and data.item_embeddings is None:
        raise ValueError("profiles need FitData.item_embeddings (profiles are text vectors)")
    model.dataset = data.dataset
    model.uses_profile = profiles is not None
    model._forget_views()
    model._open_store(data.item_embeddings)
    t0 = time.perf_counter()
    inner_train, held = inner_split(data.train)
    seed = model.config.seed
    valid_task = sample_task(data.valid, model.config.valid_users, seed)
    inner = FitData(data.dataset, inner_train, valid_task, data.item_embeddings)
    model.components = model._fit_components(inner, fitted)
    model.facts = item_facts(data.dataset, inner_train, data.item_embeddings)
    model._build_spaces()
    users = sample_rows(held.user.astype(np.int64), model.config.head_users, seed)
    history = History.from_interactions(inner_train, users, data.n_items, n_users=data.n_users)
    targets = interaction_matrix(held, data.n_users, data.n_items)[users]
    x, y = model._groups(EvalTask(history, targets), profiles, "train-lists", "head training lists")
    model.fit_report["head_train_recall"] = float(np.mean([g.any() for g in y]))
    model.facts = item_facts(data.dataset, data.train, data.item_embeddings)
    model._forget_views()
    valid = None
    if valid_task is not None:
        valid = model._groups(valid_task, profiles, "valid-lists", "validation lists")
        model.fit_report["candidate_recall_valid"] = float(np.mean([g.any() for g in valid[1]]))
    heads = ", ".join(RANKERS) if model.config.ranker == "auto" else model.config.ranker
    t_head = time.perf_counter()
    log.info(
        "fitting the ranking head (%s)",
        heads,
        extra=_progress("head", label=f"ranking head ({heads}) on {len(x)} users' lists"),
    )
    model.ranker = choose_ranker(
        model.config.ranker,
        model.config.seed,
        x,
        y,
        valid,
        model.fit_report,
        params=model.config.ranker_params,
    )
    model._stage_seconds("head", t_head)
    head_valid = model.fit_report.get("ranker_valid_ndcg@10", {}).get(model.fit_report["ranker"])
    log.info(
        "ranking head %s fitted (valid ndcg@10 %s)",
        model.fit_report["ranker"],
        head_valid,
        extra=_progress(
            "head",
            label=f"ranking head: {model.fit_report['ranker']} kept",
            valid=head_valid,
            done=True,
            seconds=time.perf_counter() - t_head,
        ),
    )
    model.fit_report["seconds"] = round(time.perf_counter() - t0, 1)
    log.info("hybrid fitted: %s", model.fit_report)
    return model


def fit_components(
    model: HybridRecommender, data: FitData, fitted: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Each configured component fitted on ``data`` (or taken from ``fitted``), with its seconds
    and lone validation NDCG@10 in the fit report."""
    out = {}
    names = model.config.components
    for n, name in enumerate(names, 1):
        if fitted is not None and name in fitted:  # already fitted on this inner split
            out[name] = fitted[name]
            continue
        t0 = time.perf_counter()
        scorer = with_seed(make_scorer(name, model.config.params.get(name)), model.config.seed)
        stage = getattr(scorer, "kind", name)  # the scorer's own progress records use its kind
        epochs = getattr(getattr(scorer, "config", None), "max_epochs", None)
        log.info(
            "fitting component %s (%d/%d)",
            name,
            n,
            len(names),
            extra=_progress(
                stage,
                label=f"component {n}/{len(names)}: {name}"
                + (f", up to {epochs} epochs" if epochs else ""),
                total=epochs,
            ),
        )
        out[name] = scorer.fit(data)
        seconds = round(time.perf_counter() - t0, 2)
        model.fit_report.setdefault("component_seconds", {})[name] = seconds
        # progress report only: each component alone on the validation task the fit early-stops
        # on, so the summary can show what the hybrid adds (the model does not use it)
        valid = None
        if data.valid is not None:
            valid = round(evaluate(scorer.score, data.valid, ks=(10,))["ndcg@10"], 4)
            model.fit_report.setdefault("component_valid_ndcg@10", {})[name] = valid
        log.info(
            "component %s fitted in %.1f s (valid ndcg@10 %s)",
            name,
            seconds,
            valid,
            extra=_progress(stage, valid=valid, done=True, seconds=seconds),
        )
    model.native_items = {name: data.n_items for name in out}
    return out


def candidate_groups(
    model: HybridRecommender, task: EvalTask, profile_fn: ProfileFn | None, stage: str, label: str
) -> tuple[Groups, Groups]:
    """Candidate features and 0/1 target labels for every user of ``task`` (``stage`` and
    ``label`` name the work in the progress records)."""
    xs, ys = [], []
    t0 = time.perf_counter()
    log.info(
        "building %s for %d users",
        label,
        len(task),
        extra=_progress(stage, label=f"{label}: candidates + features", total=len(task)),
    )
    for start in range(0, len(task), 256):
        batch = task.subset(np.arange(start, min(start + 256, len(task))))
        profiles = profile_fn(batch.history) if profile_fn is not None else None
        cands, feats = model._candidates_and_features(batch.history, profiles)
        xs += feats
        ys += [
            batch.targets[row].toarray()[0, c.items].astype(np.float32)
            for row, c in enumerate(cands)
        ]
        log.info("%s: %d/%d users", label, len(ys), len(task), extra=_progress(stage, step=len(ys)))
    recall = float(np.mean([g.any() for g in ys])) if ys else 0.0
    model._stage_seconds(stage, t0)
    log.info(
        "%s built: target among the candidates for %.0f%% of users",
        label,
        100 * recall,
        extra=_progress(stage, done=True, seconds=time.perf_counter() - t0),
    )
    return xs, ys


def build_spaces(model: HybridRecommender) -> None:
    """ANN indexes over each dot-product component's item vectors (large catalogues only)."""
    model.__dict__.pop("_spaces", None)
    if model._large:
        t0 = time.perf_counter()
        log.info("indexing item vectors", extra=_progress("ann", label="ANN item indexes"))
        _ = model._spaces
        model._stage_seconds("ann", t0)
        log.info(
            "item vectors indexed",
            extra=_progress("ann", done=True, seconds=time.perf_counter() - t0),
        )


def open_store(model: HybridRecommender, embeddings: np.ndarray | None) -> None:
    """The chromadb item store, synced with the catalogue's text vectors where the config keeps one
    (``HybridConfig.item_store``): in ``store_path``, else in a temporary folder."""
    if embeddings is None or "semantic" not in model.config.components:
        return
    if not model.config.item_store:
        return
    if model.store_path is None:
        model._tmp = tempfile.TemporaryDirectory(prefix="hyrec-store-")
        path = Path(model._tmp.name)
    else:
        path = model.store_path
    t0 = time.perf_counter()
    label = f"item store: {len(model.dataset.items)} item vectors into chromadb"
    log.info("syncing the item store", extra=_progress("store", label=label))
    model.store = ItemStore(StoreConfig(path=path, show_progress=False))
    model.store.sync(model.dataset.items, embeddings)
    model._stage_seconds("store", t0)
    log.info(
        "item store synced",
        extra=_progress("store", done=True, seconds=time.perf_counter() - t0),
    )


def stage_seconds(model: HybridRecommender, stage: str, since: float) -> None:
    """Record a fit stage's wall seconds in ``fit_report["stage_seconds"]``."""
    seconds = round(time.perf_counter() - since, 2)
    model.fit_report.setdefault("stage_seconds", {})[stage] = seconds
