"""Re-ranking the ranking head's top-K for relevance and diversity, and one-line explanations.

* :func:`mmr` — Maximal Marginal Relevance (Carbonell & Goldstein, SIGIR 1998) over item
  embeddings: the deterministic baseline and the fallback of every LLM path.
* :class:`LLMReranker` — one LLM call per list. Preferred: LlamaRec's verbalizer (Yue et al.,
  "LlamaRec: Two-Stage Recommendation using LLMs for Ranking", 2023): the candidates are labelled
  A, B, C, …, the model is asked for the best next item, and the probability of *every* label is
  read from the first generated token's ``top_logprobs``. One forward pass so gives a score per
  candidate, not one pick; blending it with the head's score and running MMR on the blend turns it
  into a full, diversified ordering. Without logprobs (servers that do not return them), the model
  orders the labels as JSON (listwise). Either answer is validated — only candidate labels, no
  duplicates, gaps filled from the head's order — and an answer that names anything else is
  rejected (counted in ``stats["invalid"]``) in favour of plain MMR. The model only ever sees labels
  and quoted titles, never ids, so injected text cannot make it return an item outside the list.
* :func:`explain` — a short reason per recommended item, anchored on one item of the user's own
  history (the LLM picks which; the deterministic fallback takes the most similar history item by
  embedding, then shared genres).
* :class:`RerankStage` — adapts a reranker to ``HybridRecommender.rerank``.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

import prompts
from agent.llm import LLM, Completion, LLMError, LLMTimeout, LLMUnavailable, Message
from agent.privacy import prompt_text
from agent.profiles import ProfileEvent, parse_json_object
from hyrec.data import Dataset, Item, attribute_genres
from hyrec.data.splits import History
from retrieval.items import ItemList

log = logging.getLogger(__name__)

LABELS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


# ---- MMR ----------------------------------------------------------------------------------------
def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def _minmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    finite = np.isfinite(x)
    if not finite.any():
        return np.ones_like(x)
    lo, hi = x[finite].min(), x[finite].max()
    out = np.where(finite, (x - lo) / (hi - lo) if hi > lo else 1.0, 0.0)
    return out


def mmr_order(
    relevance: np.ndarray, embeddings: np.ndarray, k: int, lambda_: float = 0.5
) -> np.ndarray:
    """Row positions picked greedily by λ·relevance − (1 − λ)·max cosine to the rows already picked.

    ``relevance`` is used as given (callers scale it to [0, 1]); ties go to the lower row.
    """
    n = len(relevance)
    k = min(k, n)
    if not 0.0 <= lambda_ <= 1.0:
        raise ValueError(f"lambda_ must be in [0, 1], got {lambda_}")
    if len(embeddings) != n:
        raise ValueError(f"embeddings has {len(embeddings)} rows for {n} candidates")
    e = _unit_rows(embeddings)
    rel = np.asarray(relevance, dtype=np.float64)
    max_sim = np.zeros(n)
    picked: list[int] = []
    free = np.ones(n, dtype=bool)
    for step in range(k):
        value = rel if step == 0 else lambda_ * rel - (1.0 - lambda_) * max_sim
        value = np.where(free, value, -np.inf)
        j = int(np.argmax(value))
        picked.append(j)
        free[j] = False
        max_sim = np.maximum(max_sim, e @ e[j])
    return np.asarray(picked, dtype=np.int64)


def _reordered(candidates: ItemList, rows: np.ndarray, extra: Mapping[str, np.ndarray]) -> ItemList:
    """``candidates`` at ``rows``, in order, scored k, k−1, …, 1 (old score kept as a column)."""
    k = len(rows)
    columns = {name: np.asarray(col)[rows] for name, col in candidates.columns.items()}
    columns["head_score"] = np.asarray(candidates.scores)[rows]
    columns.update({name: np.asarray(col)[rows] for name, col in extra.items()})
    return ItemList(
        candidates.items[rows],
        np.arange(k, 0, -1, dtype=np.float32),
        columns,
        {name: flags[rows] for name, flags in candidates.sources.items()},
    )


def mmr(candidates: ItemList, embeddings: np.ndarray, k: int, lambda_: float = 0.5) -> ItemList:
    """The top ``k`` of ``candidates`` re-ordered by MMR over their head scores and embeddings.

    Args:
        candidates: Scored items (the head's scores are the relevance, min–max scaled to [0, 1]).
        embeddings: (n, d) one row per candidate, in ``candidates.items`` order.
        k: List length.
        lambda_: 1 = pure relevance (the head's order), 0 = pure diversity.

    Returns:
        ``k`` items (fewer if there are fewer candidates) scored k, k−1, …, 1 in MMR order; the
        head's scores are kept in ``columns["head_score"]``.
    """
    rows = mmr_order(_minmax(candidates.scores), embeddings, k, lambda_)
    return _reordered(candidates, rows, {})


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
    down_seconds: float = 30.0  # after "LLM unavailable", skip the LLM this long

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
        self._down_until = 0.0
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

    def rerank(
        self,
        history_titles: Sequence[str],
        candidates: ItemList,
        titles: Sequence[str],
        embeddings: np.ndarray | None,
        k: int,
    ) -> RerankResult:
        """The best ``k`` of ``candidates`` for relevance and diversity.

        Args:
            history_titles: The user's items, oldest first (the latest ``config.history`` are used).
            candidates: The head's scored list.
            titles: One title per candidate, in ``candidates.items`` order.
            embeddings: (n, d) one row per candidate; ``None``: no MMR (head order on fallback).
            k: List length (at most the window; more are filled from the head's order).
        """
        t0 = time.perf_counter()
        self._count("calls")
        if len(titles) != len(candidates):
            raise ValueError(f"{len(titles)} titles for {len(candidates)} candidates")
        head = np.lexsort((candidates.items, -candidates.scores))  # the head's order
        window = head[: self.config.window]
        cand = _reordered(candidates, window, {}).rescored(candidates.scores[window])
        cand_titles = [titles[r] for r in window]
        emb = None if embeddings is None else np.asarray(embeddings)[window]
        llm_rel, error = None, None
        if self.llm is not None and len(cand) >= 2:  # one candidate: nothing to ask
            llm_rel, error = self._ask(history_titles, cand_titles)
        if error is not None:
            self._count("fallbacks")
            log.warning("rerank: %s; using %s", error, "MMR" if emb is not None else "head order")
        head_rel = _minmax(cand.scores)
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
        extra = {"llm_relevance": llm_rel} if llm_rel is not None else {}
        top = _reordered(cand, rows, extra)
        if len(top) < k:  # the window was smaller than k: continue in the head's order
            top = _append_head(top, candidates, head, k)
        return RerankResult(
            top,
            method,
            error,
            time.perf_counter() - t0,
            None if llm_rel is None else llm_rel[rows],
        )

    def _ask(
        self, history_titles: Sequence[str], titles: Sequence[str]
    ) -> tuple[np.ndarray | None, str | None]:
        """(LLM relevance per window row in [0, 1], None) or (None, why not)."""
        if time.monotonic() < self._down_until:
            return None, "LLM unavailable (skipping calls for a while)"
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
            self._down_until = time.monotonic() + self.config.down_seconds
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
    rest = [r for r in head if candidates.items[r] not in taken][: k - len(top)]
    tail = _reordered(candidates, np.asarray(rest, dtype=np.int64), {})
    items = np.concatenate([top.items, tail.items])
    columns = {
        name: np.concatenate([top.columns[name], tail.columns[name]])
        for name in top.columns
        if name in tail.columns
    }
    sources = {
        name: np.concatenate([top.sources[name], tail.sources[name]]) for name in top.sources
    }
    return ItemList(items, np.arange(len(items), 0, -1, dtype=np.float32), columns, sources)


# ---- the HybridRecommender hook -----------------------------------------------------------------
class RerankStage:
    """``HybridRecommender.rerank``: re-ranks each user's fused list with an :class:`LLMReranker`.

    The re-ranked ``k`` go first; the rest of the list follows in the head's order (so
    ``recommend_batch(k=n)`` and the evaluation harness still see a full ranking).

    Args:
        reranker: LLM re-ranker (``LLMReranker(None)`` is plain MMR).
        dataset: Titles of the items.
        embeddings: (n_items, d) item text embeddings (``None``: no MMR).
        k: How many items to re-rank.

    Attributes:
        results: Every :class:`RerankResult`, in call order (latency and fallback bookkeeping).
    """

    def __init__(
        self, reranker: LLMReranker, dataset: Dataset, embeddings: np.ndarray | None, k: int = 10
    ) -> None:
        self.reranker = reranker
        self.dataset = dataset
        self.embeddings = embeddings
        self.k = k
        self.results: list[RerankResult] = []

    def __call__(self, history: History, fused: list[ItemList]) -> list[ItemList]:
        items = self.dataset.items
        out = []
        for seq, lst in zip(history.sequences, fused, strict=True):
            if len(lst) == 0:
                out.append(lst)
                continue
            emb = None if self.embeddings is None else self.embeddings[lst.items]
            result = self.reranker.rerank(
                [items[i].title for i in seq[-self.reranker.config.history :]],
                lst,
                [items[i].title for i in lst.items],
                emb,
                self.k,
            )
            self.results.append(result)
            out.append(_with_rest(result.items, lst))
        return out


def _with_rest(top: ItemList, full: ItemList) -> ItemList:
    """``top`` first (in its order), then the rest of ``full`` by its scores."""
    position = {int(item): row for row, item in enumerate(full.items)}
    rest = np.flatnonzero(~np.isin(full.items, top.items))
    rest = rest[np.lexsort((full.items[rest], -full.scores[rest]))]
    rows = np.concatenate([[position[int(i)] for i in top.items], rest]).astype(np.int64)
    return ItemList(
        full.items[rows],
        np.arange(len(rows), 0, -1, dtype=np.float32),
        {name: col[rows] for name, col in full.columns.items()},
        {name: flags[rows] for name, flags in full.sources.items()},
    )


# ---- explanations -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Explanation:
    """A reason, the history item it rests on, and whether the LLM wrote it."""

    text: str
    anchor: str | None  # title of the history item the reason refers to
    source: Literal["llm", "fallback"]
    error: str | None = None


def _genre_set(attributes: Mapping[str, Any]) -> set[str]:
    return set(attribute_genres(attributes))


def _explain_window(history: Sequence[ProfileEvent], n: int) -> list[ProfileEvent]:
    """The latest ``n`` events the user liked (rating ≥ 4 when rated), else the latest ``n``."""
    ordered = sorted(history, key=lambda e: e.timestamp)
    liked = [e for e in ordered if e.rating is None or not np.isfinite(e.rating) or e.rating >= 4]
    return (liked or ordered)[-n:]


def fallback_explanation(
    history: Sequence[ProfileEvent],
    item: Item,
    *,
    history_vectors: np.ndarray | None = None,
    item_vector: np.ndarray | None = None,
) -> Explanation:
    """ "Because you liked "X", also Comedy and Drama." — X is the history item most similar to
    ``item`` by embedding (when vectors are given, one row per ``history`` event), else by shared
    genres (ties: the most recent)."""
    if not history:
        return Explanation("Popular with other viewers (no history yet).", None, "fallback")
    events = list(history)
    genres = _genre_set(item.attributes)
    shared = np.array([len(genres & _genre_set(e.attributes)) for e in events], dtype=np.float64)
    if history_vectors is not None and item_vector is not None:
        if len(history_vectors) != len(events):
            raise ValueError(f"{len(history_vectors)} history vectors for {len(events)} events")
        sim = _unit_rows(history_vectors) @ _unit_rows(np.asarray(item_vector)[None])[0]
    else:
        sim = shared
    recency = np.array([e.timestamp for e in events], dtype=np.float64)
    best = int(np.lexsort((-recency, -shared, -sim))[0])
    anchor = events[best]
    common = sorted(genres & _genre_set(anchor.attributes))
    text = f'Because you liked "{anchor.title}"'
    text += f", also {_join_words(common[:2])}." if common else "."
    return Explanation(text, anchor.title, "fallback")


def _join_words(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def explanation(
    llm: LLM | None,
    history: Sequence[ProfileEvent],
    item: Item,
    *,
    timeout: float | None = None,
    history_vectors: np.ndarray | None = None,
    item_vector: np.ndarray | None = None,
    window: int = 10,
    domain: str = "movies",
) -> Explanation:
    """One short reason for recommending ``item``, grounded in one item of ``history``.

    The LLM (if any) names the history item that explains the recommendation (by number) and writes
    one sentence; the answer must be JSON with a valid number, and a reason that does not mention
    its anchor is prefixed with it, so every reason points at the user's own history. Any failure
    gives :func:`fallback_explanation` with the error recorded.

    Args:
        history_vectors: Optional (n, d) embeddings, one row per ``history`` event (fallback only).
        item_vector: Optional (d,) embedding of ``item`` (fallback only).
        window: Latest liked history items shown to the LLM.
    """
    fallback = fallback_explanation(
        history, item, history_vectors=history_vectors, item_vector=item_vector
    )
    if llm is None or not history:
        return fallback
    events = _explain_window(history, window)
    template = prompts.load("explain")
    rendered = template.render(
        domain=domain,
        history=[
            {
                "title": prompt_text(e.title, 100),
                "genres": prompt_text(", ".join(sorted(_genre_set(e.attributes))), 60),
            }
            for e in events
        ],
        item={
            "title": prompt_text(item.title, 100),
            "genres": prompt_text(", ".join(sorted(_genre_set(item.attributes))), 60),
        },
    )
    schema = {
        "type": "object",
        "properties": {
            "because": {"type": "integer", "minimum": 1, "maximum": len(events)},
            "reason": {"type": "string", "minLength": 1, "maxLength": 200},
        },
        "required": ["because", "reason"],
    }
    try:
        answer = llm.complete(
            [Message("system", rendered.system), Message("user", rendered.user)],
            max_tokens=80,
            temperature=0.0,
            json_schema=schema,
            timeout=timeout,
        )
        body = parse_json_object(answer.text)
        number, reason = body.get("because"), body.get("reason")
        if isinstance(number, str) and number.strip().isdigit():
            number = int(number.strip())
        if not isinstance(number, int) or not 1 <= number <= len(events):
            raise ValueError(f"'because' must be a history number 1..{len(events)}, got {number!r}")
        if not isinstance(reason, str) or not prompt_text(reason, 200):
            raise ValueError("'reason' must be a non-empty string")
        if not _is_sentence(reason, (item.title, events[number - 1].title)):
            raise ValueError(f"'reason' is not a sentence about the item: {reason[:60]!r}")
    except (LLMError, ValueError) as e:
        log.warning("explain: %s; using the similarity-based reason", e)
        return Explanation(fallback.text, fallback.anchor, "fallback", str(e))
    anchor = events[number - 1].title
    reason = prompt_text(reason, 200)
    core = anchor.split(" (")[0].lower()
    if core not in reason.lower():
        reason = f'Because you liked "{anchor}": {reason}'
    return Explanation(reason, anchor, "llm")


def _is_sentence(reason: str, titles: Sequence[str]) -> bool:
    """At least three words, and not merely one of ``titles`` restated (small models do that)."""

    def norm(text: str) -> str:
        return " ".join(re.findall(r"[a-z0-9]+", re.sub(r"\(\d{4}\)", " ", text.lower())))

    words = re.findall(r"[A-Za-z]{2,}", reason)
    return len(words) >= 3 and norm(reason) not in {norm(t) for t in titles}


def explain(
    llm: LLM | None,
    history: Sequence[ProfileEvent],
    item: Item,
    *,
    timeout: float | None = None,
    history_vectors: np.ndarray | None = None,
    item_vector: np.ndarray | None = None,
) -> str:
    """The text of :func:`explanation` (never raises on an LLM failure)."""
    return explanation(
        llm,
        history,
        item,
        timeout=timeout,
        history_vectors=history_vectors,
        item_vector=item_vector,
    ).text
