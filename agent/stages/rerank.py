"""The LLM re-ranker: the ranking head's top-K re-ordered for relevance and diversity.

:class:`LLMReranker` makes one LLM call per list. Preferred: LlamaRec's verbalizer (Yue et al.,
"LlamaRec: Two-Stage Recommendation using LLMs for Ranking", 2023): the candidates are labelled
A, B, C, …, the model is asked for the best next item, and the probability of *every* label is
read from the first generated token's ``top_logprobs``. One forward pass so gives a score per
candidate, not one pick; blending it with the head's score and running MMR
(:mod:`retrieval.mmr`) on the blend turns it into a full, diversified ordering. Without logprobs
(servers that do not return them), the model orders the labels as JSON (listwise). Either answer
is validated — only candidate labels, no duplicates, gaps filled from the head's order — and an
answer that names anything else is rejected (counted in ``stats["invalid"]``) in favour of plain
MMR. The model only ever sees labels and quoted titles, never ids, so injected text cannot make it
return an item outside the list.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

import prompts
from agent.llm import LLM, Completion, LLMError, LLMTimeout, LLMUnavailable, Message
from agent.llm.jsonparse import parse_json_object
from agent.stages.privacy import prompt_text
from retrieval.items import ItemList
from retrieval.mmr import minmax, mmr_order

log = logging.getLogger(__name__)

LABELS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


# ---- LLM re-ranking -----------------------------------------------------------------------------
@dataclass(frozen=True)
class RerankConfig:
    window: int = 20  # the head's top-K the LLM sees (at most 26 labels)
    mode: Literal["auto", "logprobs", "listwise"] = "auto"  # auto: logprobs, else listwise JSON
    llm_weight: float = 0.5  # relevance = (1 − w)·head + w·LLM, both scaled to [0, 1]
    lambda_: float = 0.5  # MMR relevance vs. diversity; on ML-100K validation 0.3–1 tie on NDCG
    history: int = 10  # latest history titles shown to the LLM
    top_logprobs: int = 20  # alternatives asked for at the first token (enough for 20 labels)
    listwise_tokens: int = 160  # max_tokens of a listwise JSON answer
    timeout: float | None = None  # seconds per call; None: the backend's default
    domain: str = "movies"

    def __post_init__(self) -> None:
        if not 2 <= self.window <= len(LABELS):
            raise ValueError(f"window must be in [2, {len(LABELS)}], got {self.window}")
        if not 0.0 <= self.llm_weight <= 1.0:
            raise ValueError(f"llm_weight must be in [0, 1], got {self.llm_weight}")


@dataclass(frozen=True)
class RerankResult:
    """A re-ranked list and how it was made.

    Attributes:
        items: The ``k`` items, best first (scores k, k−1, …).
        method: ``"llm"`` (the LLM's answer was used), ``"mmr"`` (fallback or no LLM), ``"head"``
            (no embeddings: the head's order).
        error: Why the LLM's answer was not used (``None`` when it was, or no LLM was given).
        seconds: Wall time of the whole call.
        llm_scores: Per item of ``items``, the LLM's relevance in [0, 1] (``None`` without LLM).
    """

    items: ItemList
    method: Literal["llm", "mmr", "head"]
    error: str | None
    seconds: float
    llm_scores: np.ndarray | None = field(default=None, repr=False)


class InvalidAnswer(ValueError):
    """The LLM's re-ranking answer named something that is not a candidate label."""


def label_probabilities(completion: Completion, labels: Sequence[str]) -> np.ndarray | None:
    """P(label) per label from the first generated token's top alternatives, or ``None``.

    Token variants (" A", "A.", "A)") count for their label (log-sum-exp); labels missing from the
    alternatives get 0; the result is normalised over the labels. ``None`` when the backend
    returned no logprobs.

    Raises:
        InvalidAnswer: logprobs came back but no alternative is a label.
    """
    if not completion.top_logprobs:
        return None
    index = {label: i for i, label in enumerate(labels)}
    mass = np.zeros(len(labels))
    for token, logprob in completion.top_logprobs[0].items():
        label = token.strip().rstrip(".):,")
        if label in index and math.isfinite(logprob):
            mass[index[label]] += math.exp(logprob)
    if mass.sum() <= 0:
        raise InvalidAnswer(
            f"no candidate label among the top alternatives {list(completion.top_logprobs[0])[:5]}"
        )
    return mass / mass.sum()


def listwise_order(text: str, labels: Sequence[str]) -> tuple[list[int], int]:
    """(rows in the answer's order, duplicates dropped) from a ``{"ranking": [...]}`` answer.

    Raises:
        InvalidAnswer: not JSON, no ``ranking`` list, an empty list, or any entry that is not one
            of ``labels`` (a hallucinated or injected id rejects the whole answer).
    """
    try:
        body = parse_json_object(text)
    except ValueError as e:
        raise InvalidAnswer(str(e)) from e
    ranking = body.get("ranking")
    if not isinstance(ranking, list) or not ranking:
        raise InvalidAnswer("the answer has no non-empty 'ranking' list")
    index = {label: i for i, label in enumerate(labels)}
    unknown = [str(x) for x in ranking if not isinstance(x, str) or x.strip() not in index]
    if unknown:
        raise InvalidAnswer(f"not candidate labels: {unknown[:5]}")
    rows, duplicates = [], 0
    for x in ranking:
        row = index[x.strip()]
        if row in rows:
            duplicates += 1
        else:
            rows.append(row)
    return rows, duplicates


class LLMReranker:
    """Re-ranks the head's top-K with one LLM call; falls back to MMR, never raises.

    Args:
        llm: The model; ``None``: MMR only.
        config: Window, mode, blend weight, MMR λ, timeouts.

    Attributes:
        stats: ``calls``, ``llm_calls``, ``valid`` / ``invalid`` (answers the validator accepted /
            rejected: the validity error rate is ``invalid / (valid + invalid)``), ``repaired``
            (answers with duplicates dropped), ``fallbacks`` (lists not ordered by the LLM for any
            reason), ``errors`` (reason → count), ``modes`` (logprobs / listwise answers).
    """

    def __init__(self, llm: LLM | None, config: RerankConfig | None = None) -> None:
        self.llm = llm
        self.config = config or RerankConfig()
        self._verbalizer = prompts.load("rerank")
        self._listwise = prompts.load("rerank_list")
        self._lock = threading.Lock()
        self._no_logprobs = False  # set once the backend answers without logprobs ("auto" mode)
        self.stats: dict[str, Any] = {
            "calls": 0,
            "llm_calls": 0,
            "valid": 0,
            "invalid": 0,
            "repaired": 0,
            "fallbacks": 0,
            "errors": Counter(),
            "modes": Counter(),
            "methods": Counter(),  # how each list was ordered: llm / mmr / head
            "seconds": [],  # wall time of each rerank() call
        }

    @property
    def validity_error_rate(self) -> float | None:
        answered = self.stats["valid"] + self.stats["invalid"]
        return self.stats["invalid"] / answered if answered else None

    def _count(self, key: str, sub: str | None = None) -> None:
        with self._lock:
            if sub is None:
                self.stats[key] += 1
            else:
                self.stats[key][sub] += 1

    def rerank(self, history_titles: Sequence[str], candidates: ItemList, k: int) -> RerankResult:
        """The best ``k`` of ``candidates`` for relevance and diversity.

        Args:
            history_titles: The user's items, oldest first (the latest ``config.history`` are used).
            candidates: The head's scored list; its catalogue gives the titles the LLM sees and the
                text vectors MMR uses (without vectors, the fallback is the head's order).
            k: List length (at most the window; more are filled from the head's order).
        """
        t0 = time.perf_counter()
        self._count("calls")
        head = candidates.order()  # the head's order
        window = head[: self.config.window]
        cand = candidates.take(window).with_columns(head_score=candidates.scores[window])
        emb = cand.vectors
        llm_rel, error = None, None
        if self.llm is not None and len(cand) >= 2:  # one candidate: nothing to ask
            llm_rel, error = self._ask(history_titles, cand.titles)
        if error is not None:
            self._count("fallbacks")
            log.warning("rerank: %s; using %s", error, "MMR" if emb is not None else "head order")
        head_rel = minmax(cand.scores)
        if llm_rel is not None:
            w = self.config.llm_weight
            relevance = (1.0 - w) * head_rel + w * llm_rel
            method = "llm"
        else:
            relevance, method = head_rel, "mmr"
        if emb is None:
            rows = np.argsort(-relevance, kind="stable")[:k]
            method = "llm" if llm_rel is not None else "head"
        else:
            rows = mmr_order(relevance, emb, k, self.config.lambda_)
        top = cand.ranked(rows)
        if llm_rel is not None:
            top = top.with_columns(llm_relevance=llm_rel[rows])
        if len(top) < k:  # the window was smaller than k: continue in the head's order
            top = _append_head(top, candidates, head, k)
        seconds = time.perf_counter() - t0
        with self._lock:
            self.stats["methods"][method] += 1
            self.stats["seconds"].append(seconds)
        return RerankResult(top, method, error, seconds, None if llm_rel is None else llm_rel[rows])

    def _ask(
        self, history_titles: Sequence[str], titles: Sequence[str]
    ) -> tuple[np.ndarray | None, str | None]:
        """(LLM relevance per window row in [0, 1], None) or (None, why not)."""
        labels = list(LABELS[: len(titles)])
        variables = {
            "domain": self.config.domain,
            "history": [prompt_text(t, 100) for t in list(history_titles)[-self.config.history :]],
            "candidates": [
                {"label": label, "title": prompt_text(t, 100)}
                for label, t in zip(labels, titles, strict=True)
            ],
            "labels": labels,
        }
        mode = self.config.mode
        try:
            if mode == "logprobs" or (mode == "auto" and not self._no_logprobs):
                answer = self._call(self._verbalizer, variables, max_tokens=1, logprobs=True)
                probs = label_probabilities(answer, labels)
                if probs is not None:
                    self._count("valid")
                    self._count("modes", "logprobs")
                    return probs / probs.max(), None
                if answer.top_logprobs is None:  # this backend has none: go listwise from now on
                    self._no_logprobs = True
                if mode == "logprobs":
                    return None, "the backend returned no logprobs"
            answer = self._call(
                self._listwise,
                variables,
                max_tokens=self.config.listwise_tokens,
                json_schema=_listwise_schema(labels),
            )
            rows, duplicates = listwise_order(answer.text, labels)
        except InvalidAnswer as e:
            self._count("invalid")
            self._count("errors", "invalid answer")
            return None, f"invalid answer: {e}"
        except LLMUnavailable as e:
            self._count("errors", "unavailable")
            return None, f"LLM unavailable: {e}"
        except LLMTimeout as e:
            self._count("errors", "timeout")
            return None, f"LLM timeout: {e}"
        except LLMError as e:
            self._count("errors", "error")
            return None, f"LLM error: {e}"
        self._count("valid")
        self._count("modes", "listwise")
        if duplicates:
            self._count("repaired")
        order = rows + [r for r in range(len(labels)) if r not in rows]  # gaps: head order
        relevance = np.empty(len(labels))
        relevance[order] = 1.0 - np.arange(len(order)) / len(order)
        return relevance, None

    def _call(
        self,
        template: prompts.PromptTemplate,
        variables: dict[str, Any],
        *,
        max_tokens: int,
        logprobs: bool = False,
        json_schema: Mapping[str, Any] | None = None,
    ) -> Completion:
        rendered = template.render(**variables)
        self._count("llm_calls")
        return self.llm.complete(
            [Message("system", rendered.system), Message("user", rendered.user)],
            max_tokens=max_tokens,
            temperature=0.0,
            json_schema=json_schema,
            logprobs=self.config.top_logprobs if logprobs else 0,
            timeout=self.config.timeout,
        )


def _listwise_schema(labels: Sequence[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "ranking": {
                "type": "array",
                "items": {"type": "string", "enum": list(labels)},
                "minItems": 1,
                "maxItems": len(labels),
            }
        },
        "required": ["ranking"],
    }


def _append_head(top: ItemList, candidates: ItemList, head: np.ndarray, k: int) -> ItemList:
    taken = set(top.items.tolist())
    rest = np.asarray([r for r in head if candidates.items[r] not in taken][: k - len(top)])
    tail = candidates.ranked(rest.astype(np.int64))
    items = np.concatenate([top.items, tail.items])
    columns = {
        name: np.concatenate([top.columns[name], tail.columns[name]])
        for name in top.columns
        if name in tail.columns
    }
    sources = {
        name: np.concatenate([top.sources[name], tail.sources[name]]) for name in top.sources
    }
    scores = np.arange(len(items), 0, -1, dtype=np.float32)
    return ItemList(items, scores, columns, sources, candidates.catalogue)
