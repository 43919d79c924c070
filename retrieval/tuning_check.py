"""The tuning search's stage order and its last stage, the final check (docs/tuning.md).

Each component stage of :func:`retrieval.tuning.tune` keeps the setting that scored best *alone*,
and the head stage runs on those choices only; a setting that wins alone can still lower the
hybrid. :class:`FinalCheck` compares the tuned hybrid with hybrids on the default components and
keeps the best on validation, so a tuned config is never below the defaults. :func:`stages` gives
the order a search runs its stages in; :func:`same_settings` says when two overrides build one
component (then one fit serves both).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from encoders.base import with_seed
from encoders.registry import SCORERS, make_scorer
from retrieval.hybrid import HybridConfig, HybridRecommender

log = logging.getLogger("retrieval.tuning")  # the search's records keep one logger name

HEAD = "head"
CHECK = "check"  # the last stage: the best tuned hybrid against the default components (no study)


def stages(config: HybridConfig) -> list[str]:
    """The stages a search over ``config`` runs, in order: cheap components first (their unused
    time flows on), then the neural ones, then the head, then the final check."""
    names = [n for n in config.components if SCORERS[n].space]
    cost = {"itemknn": 0, "als": 1, "bpr": 2, "lightgcn": 3}
    return sorted(names, key=lambda n: cost.get(n, 4)) + [HEAD, CHECK]


def same_settings(
    name: str, a: Mapping[str, Any] | None, b: Mapping[str, Any] | None, seed: int
) -> bool:
    """Whether component ``name`` builds the same config from overrides ``a`` and ``b`` at
    ``seed`` (then one fit serves both)."""
    return getattr(with_seed(make_scorer(name, a), seed), "config", None) == getattr(
        with_seed(make_scorer(name, b), seed), "config", None
    )


class FinalCheck:
    """The best hybrid, at validation NDCG@10, of the tuned one and those on the default
    components (docs/tuning.md, "The final check").

    The component stages chose each setting by the component's own validation NDCG@10, and the
    head stage ran on those choices only; a setting that wins alone may still lower the hybrid.
    Each hybrid here is a head fit on the search's own fits (each stage's default and best trial;
    a component never fitted at its defaults is fitted once, then reused):

    1. always: the tuned hybrid (its value known from the head stage), the defaults (default
       components and head) and the default components under the tuned head;
    2. while the stage's time lasts: from the better default-component hybrid, each changed
       component's tuned setting in stage order (cheapest first), kept if the hybrid does not lose
       (``>=``). A swap starts only if its estimated cost (the mean of this stage's fits) fits in
       the time left, and at most ``TuneConfig.trials`` swaps fit a hybrid; a swap whose hybrid
       was measured already is free.

    The winner is the best hybrid measured (the tuned one on a tie), so never below the defaults.
    Only the search's data (training interactions and the validation task) is read.
    """

    def __init__(self, search: Any, deadline: float | None) -> None:
        self.search, self.deadline, base = search, deadline, search.base
        self.h0 = search._default_head()
        self.hs = {**self.h0, **search.head}
        self.changed = [  # searched components whose tuned setting differs from the default
            n
            for n in stages(base)
            if n in SCORERS
            and not same_settings(n, base.params.get(n), search.params.get(n), base.seed)
        ]
        # values known already: the head trials, all on the tuned components
        self.known = {(frozenset(self.changed), k): v for k, v in search.head_values.items()}
        self.spare = {n: f for n, f in search.fitted.items() if n not in self.changed}
        self.swaps_left = search.config.trials  # None: one per changed component
        self.seconds: list[float] = []  # of this stage's fits
        self.measured: dict[tuple, dict[str, Any]] = {}
        self.params: dict[str, dict[str, Any]] = {}
        self.head: dict[str, Any] = {}

    def run(self) -> dict[str, Any]:
        """Compare and choose (:attr:`params`, :attr:`head`); returns ``best["check"]``."""
        tuned = self.value(self.changed, self.hs, swap=False)
        defaults = self.value([], self.h0, swap=False)
        on_defaults = self.value([], self.hs, swap=False)
        head = self.hs if on_defaults >= defaults else self.h0
        kept: list[str] = []
        current = max(on_defaults, defaults)
        steps, untried = [], []
        for name in self.changed:
            v = self.value([*kept, name], head)
            if v is None:
                untried.append(name)
                continue
            steps.append({"component": name, "valid_ndcg@10": v, "kept": v >= current})
            if v >= current:
                kept, current = [*kept, name], v
        winner = max(self.measured.values(), key=lambda m: m["valid_ndcg@10"])  # first: tuned
        self.params = self.mixed(winner["tuned_components"])
        self.head = self.hs if winner["head"] == "tuned" else self.h0
        log.info(
            "tuning check: %s wins at valid ndcg@10 %.4f (tuned %.4f, defaults %.4f)",
            winner["label"],
            winner["valid_ndcg@10"],
            tuned,
            defaults,
        )
        return {
            "best_valid_ndcg@10": winner["valid_ndcg@10"],
            "default_valid_ndcg@10": defaults,
            "tuned_valid_ndcg@10": tuned,
            "trials": len(self.seconds),
            "winner": winner["label"],
            "kept_tuned": winner["tuned_components"],
            "reverted": [n for n in self.changed if n not in winner["tuned_components"]],
            "head": winner["head"],
            "steps": steps,
            "not_tried": untried,
            "hybrids": list(self.measured.values()),
        }

    def value(self, kept: list[str], head: dict[str, Any], swap: bool = True) -> float | None:
        """The validation NDCG@10 of the hybrid with the tuned settings of ``kept`` (the other
        components at their defaults) and ``head``; None for a swap out of time or trials."""
        key = (frozenset(kept), self.search._head_key(head))
        if key in self.measured:
            return self.measured[key]["valid_ndcg@10"]
        label = _check_label(kept, self.changed, head == self.hs, head == self.h0)
        fitted = key not in self.known
        if fitted and swap:
            cost = sum(self.seconds) / len(self.seconds) if self.seconds else 0.0
            late = self.deadline is not None and time.monotonic() + cost > self.deadline
            if late or self.swaps_left == 0:
                return None
            if self.swaps_left is not None:
                self.swaps_left -= 1
        if fitted:
            self.known[key] = self.fit(kept, head, label)
        self.measured[key] = {
            "label": label,
            "tuned_components": [n for n in self.changed if n in kept],
            "head": "tuned" if head == self.hs else "default",
            "valid_ndcg@10": self.known[key],
            "fitted_here": fitted,
        }
        return self.known[key]

    def mixed(self, kept: list[str]) -> dict[str, dict[str, Any]]:
        """The tuned ``params`` with each changed component not in ``kept`` back at its default."""
        base, params = self.search.base, {k: dict(v) for k, v in self.search.params.items()}
        for name in self.changed:
            if name in kept:
                continue
            if name in base.params:
                params[name] = dict(base.params[name])
            else:
                params.pop(name, None)
        return params

    def fit(self, kept: list[str], head: dict[str, Any], label: str) -> float:
        """Fit one hybrid on the search's fits; record it in the history; its value."""
        search = self.search
        config = replace(search.base, params=self.mixed(kept), **head)
        fits = {
            n: f
            for n in self.changed
            if (f := (search.fitted if n in kept else search.default_fits).get(n)) is not None
        }
        t0 = time.monotonic()
        model = HybridRecommender(config).fit(search.data, fitted={**self.spare, **fits})
        for name, scorer in model.components.items():  # a component fitted here serves again
            if name not in self.changed:
                self.spare[name] = scorer
            elif name not in kept:
                search.default_fits[name] = scorer
        value = hybrid_value(model)
        seconds = time.monotonic() - t0
        search.history.append(
            {
                "stage": CHECK,
                "number": len(self.seconds),
                "state": "COMPLETE",
                "value": value,
                "params": {"tuned_components": [n for n in self.changed if n in kept], **head},
                "seconds": round(seconds, 2),
                "ended_at": round(time.monotonic() - search.start, 2),
                "curve": {},
                "label": label,
                "candidate_recall_valid": model.fit_report.get("candidate_recall_valid"),
            }
        )
        log.info("tuning check %d: %s %.4f", len(self.seconds), label, value)
        self.seconds.append(seconds)
        return value


def hybrid_value(model: HybridRecommender) -> float:
    """A fitted hybrid's validation NDCG@10 (that of the head it kept)."""
    report = model.fit_report
    return float(report["ranker_valid_ndcg@10"][report["ranker"]])


def _check_label(kept: list[str], changed: list[str], tuned_head: bool, default_head: bool) -> str:
    if set(kept) == set(changed) and tuned_head:
        return "tuned"
    if not kept and default_head:
        return "defaults"
    head = "tuned" if tuned_head else "default"
    if not kept:
        return f"default components, {head} head"
    return (
        f"tuned {', '.join(n for n in changed if n in kept)}, other components default, {head} head"
    )
