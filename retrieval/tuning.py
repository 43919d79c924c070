"""Hyper-parameter search for the hybrid under a budget, on the validation split only (Optuna).

One Optuna study per *stage*: first each component of the hybrid that has a search space
(``encoders.registry.SCORERS[name].space``, declared beside its config), then the ranking head
(``retrieval.hybrid.HEAD_SEARCH_SPACE``) on the components the earlier stages chose. Every study
uses the TPE sampler and starts from the current defaults (the first trial is enqueued with them, so
a tuned config is never worse on validation than the untuned one); neural components report their
validation NDCG@10 after every checked epoch (``trial.report``) and a :class:`optuna.pruners.
MedianPruner` stops the trials whose curve falls below the median of earlier trials at that epoch.

What a trial sees is what :meth:`HybridRecommender.fit` gives its parts: a component is fitted on
the *inner* training split (each user's last training event held out) and early-stopped on
``data.valid``; its value is its own validation NDCG@10. A head trial fits the head on those
components and scores the hybrid's validation NDCG@10. Nothing here is handed a test split: the
caller builds ``FitData(train, valid)`` and keeps the test task to itself
(``tests/test_tune.py`` checks that scrambling the test targets changes nothing).

The last stage, the **check** (:mod:`retrieval.tuning_check`), is no study: each component stage
kept the setting that scored best *alone*, and such a setting can still lower the hybrid's
validation NDCG@10 (it did on ML-100K, docs/tuning.md). So the check fits the hybrid on the
*default* components too, with the default head and with the tuned head, reusing every fit the
search already made (the default trial's and the best trial's of each stage); then, while its time
lasts, it adds the tuned components back one at a time, cheapest first, keeping each only if the
hybrid does not lose. The config written is the best hybrid it measured, so it is never below the
defaults on validation.

Budget: a wall time (``budget_seconds``, Optuna's ``timeout`` per study) and/or a trial count per
stage (``trials``). The time is split by :attr:`TuneConfig.shares`; each stage gets its share of
what is *left* when it starts, so time a stage does not use flows to the later ones. A neural
trial still running at its stage's deadline stops training (keeping its best epoch), so the budget
overruns by at most one epoch or one head trial per stage, plus the check's two hybrid fits on
the default components, which always run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import optuna

from encoders.base import FitData, with_seed
from encoders.registry import SCORERS, make_scorer
from encoders.search_space import Categorical, Fixed, Float, Int, SearchSpace
from hyrec.data import Dataset, leave_one_out
from hyrec.data.splits import inner_split
from hyrec.metrics import evaluate
from retrieval.hybrid import HEAD_SEARCH_SPACE, HybridConfig, HybridRecommender
from retrieval.tuning_check import CHECK, HEAD, FinalCheck, hybrid_value, same_settings, stages

__all__ = ["CHECK", "HEAD", "TuneConfig", "TuneResult", "same_settings", "stages", "tune"]

log = logging.getLogger(__name__)

_DEPTHS = ("per_source", "neighbours")  # head fields a catalogue resolves when left None


@dataclass(frozen=True)
class TuneConfig:
    budget_seconds: float | None = None  # wall time of the whole search (None: trials only)
    trials: int | None = None  # at most this many trials per stage (None: until the budget)
    # share of the budget per stage, renormalised over the stages the hybrid has. SASRec is the
    # costliest component (~70% of a default ML-100K fit) and the strongest; the head is cheap
    # per trial but sees every component; the matrix models fit in about a second per trial
    shares: Mapping[str, float] = field(
        default_factory=lambda: {
            "sasrec": 0.45,
            "sasrec-text": 0.45,
            "sasrec-id": 0.45,
            "lightgcn": 0.15,
            "als": 0.03,
            "bpr": 0.03,
            "itemknn": 0.02,
            HEAD: 0.32,
            # the final check: its fits on the default components always run (each costs about
            # one head trial); this share is the time to swap tuned components in one by one
            # (0: no swaps under a wall-time budget)
            CHECK: 0.08,
        }
    )
    seed: int = 0  # the TPE sampler's seed (the models train from HybridConfig.seed)
    startup_trials: int = 4  # random trials before TPE models a space (Optuna's default is 10)
    prune_after: int = 3  # MedianPruner: trials to complete before any is pruned
    warmup_epochs: int = 10  # MedianPruner: epochs a trial always gets before it may be pruned

    def __post_init__(self) -> None:
        if self.budget_seconds is None and self.trials is None:
            raise ValueError("give a budget: budget_seconds (wall time) and/or trials per stage")
        if self.budget_seconds is not None and self.budget_seconds <= 0:
            raise ValueError(f"budget_seconds must be positive, got {self.budget_seconds}")
        if self.trials is not None and self.trials < 1:
            raise ValueError(f"trials must be at least 1, got {self.trials}")
        if any(v < 0 for v in self.shares.values()):
            raise ValueError(f"shares must not be negative: {dict(self.shares)}")


@dataclass(frozen=True)
class TuneResult:
    """The winning config and how the search got there.

    Attributes:
        config: The base config with the chosen ``params`` and head settings.
        best: Per stage, the best validation NDCG@10 and the default's (the first trial); under
            ``"check"``, the hybrids the final check compared and which one won
            (:meth:`_Search._check`).
        history: One record per trial (stage, number, state, value, params, seconds, start time
            since the search began, the epoch curve of neural trials).
        seconds: Wall time of the whole search.
    """

    config: HybridConfig
    best: dict[str, dict[str, Any]]
    history: list[dict[str, Any]]
    seconds: float


def suggest(trial: optuna.Trial, space: SearchSpace) -> dict[str, Any]:
    """One value per entry of ``space``, drawn through Optuna's ``suggest_*`` API."""
    out: dict[str, Any] = {}
    for name, p in space.items():
        if isinstance(p, Float):
            out[name] = trial.suggest_float(name, p.low, p.high, log=p.log)
        elif isinstance(p, Int):
            step = 1 if p.log else p.step
            out[name] = trial.suggest_int(name, p.low, p.high, step=step, log=p.log)
        elif isinstance(p, Categorical):
            out[name] = trial.suggest_categorical(name, list(p.choices))
        elif isinstance(p, Fixed):
            out[name] = p.value
        else:
            raise TypeError(f"search space entry {name!r}: unknown kind {type(p).__name__}")
    return out


def _defaults(space: SearchSpace, values: Mapping[str, Any]) -> dict[str, Any]:
    """The current values of the searched fields that lie in their range (the first trial)."""
    return {
        k: values[k]
        for k, p in space.items()
        if not isinstance(p, Fixed) and k in values and p.contains(values[k])
    }


class _Search:
    """The state of one search: the clock, the chosen settings so far and the trial records."""

    def __init__(self, data: FitData, base: HybridConfig, config: TuneConfig) -> None:
        if data.valid is None:
            raise ValueError("tuning needs FitData.valid: the validation task it chooses on")
        self.data, self.base, self.config = data, base, config
        inner_train, _ = inner_split(data.train)
        self.inner = FitData(data.dataset, inner_train, data.valid, data.item_embeddings)
        self.start = time.monotonic()
        self.params = {k: dict(v) for k, v in base.params.items()}
        self.head: dict[str, Any] = {}
        self.fitted: dict[str, Any] = {}  # per component, the fit of its best trial
        self.default_fits: dict[str, Any] = {}  # per component, its default trial's fit
        self.head_values: dict[tuple, float] = {}  # head trial values (tuned components)
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, dict[str, Any]] = {}

    def left(self) -> float | None:
        if self.config.budget_seconds is None:
            return None
        return max(0.0, self.config.budget_seconds - (time.monotonic() - self.start))

    def run(self) -> TuneResult:
        order = stages(self.base)
        shares = {s: self.config.shares.get(s, 0.05) for s in order}
        for n, stage in enumerate(order):
            left = self.left()
            timeout = None
            if left is not None:
                rest = sum(shares[s] for s in order[n:]) or 1.0
                timeout = left * shares[stage] / rest
            self._stage(stage, timeout)
        config = replace(self.base, params=self.params, **self.head)
        return TuneResult(config, self.best, self.history, time.monotonic() - self.start)

    def _stage(self, stage: str, timeout: float | None) -> None:
        c = self.config
        if stage == CHECK:
            self._check(timeout)
            return
        if stage == HEAD:
            # depths left None follow the catalogue: enqueue the values a fit resolves them to
            depth = self.base.depth(self.data.n_items)
            space, objective = HEAD_SEARCH_SPACE, self._head_trial
            current = {**vars(self.base), "per_source": depth.per_source}
            current["neighbours"] = depth.neighbours
        else:
            space = SCORERS[stage].space
            current = vars(make_scorer(stage, self.params.get(stage)).config)
            objective = self._component_trial(stage, space)
        study = optuna.create_study(
            direction="maximize",
            study_name=stage,
            sampler=optuna.samplers.TPESampler(seed=c.seed, n_startup_trials=c.startup_trials),
            pruner=optuna.pruners.MedianPruner(
                n_startup_trials=c.prune_after, n_warmup_steps=c.warmup_epochs
            ),
        )
        study.enqueue_trial(_defaults(space, current))
        deadline = None if timeout is None else time.monotonic() + timeout
        log.info("tuning %s: up to %s trials, %s s", stage, c.trials, timeout and round(timeout))
        study.optimize(
            lambda trial: objective(trial, space, deadline),
            n_trials=c.trials,
            timeout=timeout,
            callbacks=[self._record(stage)],
        )
        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        first = study.trials[0] if study.trials else None
        self.best[stage] = {
            "best_valid_ndcg@10": study.best_value if done else None,
            "default_valid_ndcg@10": first.value if first is not None else None,
            "trials": len(study.trials),
        }
        if not done:
            log.warning("tuning %s: no trial finished in its time; kept the defaults", stage)
            return
        chosen = {**study.best_trial.params, **{k: p.value for k, p in _fixed(space).items()}}
        if stage == HEAD:
            self.head = chosen
        else:
            self.params[stage] = {**self.params.get(stage, {}), **chosen}
        log.info("tuning %s: best valid ndcg@10 %.4f with %s", stage, study.best_value, chosen)

    def _component_trial(self, name: str, space: SearchSpace) -> Callable[..., float]:
        best = [-1.0]

        def objective(trial: optuna.Trial, space: SearchSpace, deadline: float | None) -> float:
            params = {**self.params.get(name, {}), **suggest(trial, space)}
            scorer = with_seed(make_scorer(name, params), self.base.seed)
            if hasattr(scorer, "on_epoch"):  # neural: feed the pruner the epoch curve
                scorer.on_epoch = _epoch_hook(trial, deadline)
            scorer.fit(self.inner)
            value = evaluate(scorer.score, self.data.valid, ks=(10,))["ndcg@10"]
            if value > best[0]:  # the head stage reuses the best fit instead of refitting it
                best[0], self.fitted[name] = value, scorer
            if trial.number == 0 and same_settings(
                name, params, self.base.params.get(name), self.base.seed
            ):  # the final check reuses the default fit
                self.default_fits[name] = scorer
            return value

        return objective

    def _head_trial(self, trial: optuna.Trial, space: SearchSpace, deadline: float | None) -> float:
        head = suggest(trial, space)
        config = replace(self.base, params=self.params, **head)
        model = HybridRecommender(config).fit(self.data, fitted=self.fitted)
        trial.set_user_attr(
            "candidate_recall_valid", model.fit_report.get("candidate_recall_valid")
        )
        value = hybrid_value(model)
        self.head_values[self._head_key(head)] = value
        return value

    def _default_head(self) -> dict[str, Any]:
        return {k: getattr(self.base, k) for k in HEAD_SEARCH_SPACE}

    def _head_key(self, head: Mapping[str, Any]) -> tuple:
        """What a head setting fits: depths left None resolved for this catalogue, so the default
        head and the same depths written out are one hybrid (measured once)."""
        config = replace(self.base, **head)
        depth = config.depth(self.data.n_items)
        rest = tuple((k, getattr(config, k)) for k in HEAD_SEARCH_SPACE if k not in _DEPTHS)
        return depth.per_source, depth.neighbours, rest

    def _check(self, timeout: float | None) -> None:
        """The last stage (:class:`retrieval.tuning_check.FinalCheck`): the written config
        becomes the best hybrid it measured on validation, tuned or on the default components."""
        check = FinalCheck(self, None if timeout is None else time.monotonic() + timeout)
        self.best[CHECK] = check.run()
        self.params, self.head = check.params, check.head

    def _record(self, stage: str) -> Callable[[optuna.Study, optuna.trial.FrozenTrial], None]:
        def record(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            seconds = (trial.datetime_complete - trial.datetime_start).total_seconds()
            self.history.append(
                {
                    "stage": stage,
                    "number": trial.number,
                    "state": trial.state.name,
                    "value": trial.value,
                    "params": trial.params,
                    "seconds": round(seconds, 2),
                    "ended_at": round(time.monotonic() - self.start, 2),
                    "curve": {str(k): v for k, v in sorted(trial.intermediate_values.items())},
                    **trial.user_attrs,
                }
            )
            log.info(
                "tuning %s trial %d: %s %s in %.0f s",
                stage,
                trial.number,
                trial.state.name.lower(),
                "" if trial.value is None else f"{trial.value:.4f}",
                seconds,
            )

        return record


def _fixed(space: SearchSpace) -> dict[str, Fixed]:
    return {k: p for k, p in space.items() if isinstance(p, Fixed)}


def _epoch_hook(trial: optuna.Trial, deadline: float | None) -> Callable[[int, float], bool]:
    """Report each checked epoch to the pruner; prune, or stop training once past the deadline."""

    def hook(epoch: int, value: float) -> bool:
        trial.report(value, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"epoch {epoch}: {value:.4f} below the median")
        return deadline is not None and time.monotonic() > deadline

    return hook


def tuning_data(dataset: Dataset, item_embeddings: Any = None) -> FitData:
    """What a search on ``dataset`` may read: its leave-one-out training interactions and the
    validation task (each user's second-last event). The test task is never built."""
    split = leave_one_out(dataset)
    return FitData(dataset, split.train, split.task("valid"), item_embeddings)


def tune(data: FitData, base: HybridConfig | None = None, config: TuneConfig | None = None):
    """Search the components' and the head's settings of ``base`` on ``data.valid``.

    Args:
        data: Training interactions, the validation task, item text vectors. Never a test task.
        base: The config to start from (its ``params`` are kept where a space does not search).
        config: Budget and search settings.

    Returns:
        The :class:`TuneResult`: winning config (the final check's winner), per-stage best and
        default values, history.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one log line per trial, ours
    return _Search(data, base or HybridConfig(), config or TuneConfig(trials=10)).run()
