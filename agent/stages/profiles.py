"""LLM interest profiles: a user's recent items and long-term taste → a validated JSON profile.

:class:`ProfileService` renders ``prompts/profile.yaml`` from the user's latest items (title,
genres, year, rating) and a summary of their whole history, asks the LLM for a JSON object, and
validates it with :class:`LLMProfile`. Invalid output gets a bounded number of repair retries; after
that — or when the LLM is down, slow or absent — :func:`fallback_profile` builds a deterministic
profile from the items' attributes, so profiling never fails. Profiles are cached by (pseudonymous
user, history fingerprint, prompt id, model): a profile is recomputed only when the history (or the
prompt or the model) changed. The profile text is embedded with the text encoder
(:meth:`ProfileService.embed`); :class:`HistoryProfiles` maps a :class:`~hyrec.data.History` batch
to those vectors, which is what ``HybridRecommender.fit(profiles=...)`` takes (the
``profile_cosine`` feature). The cache is :mod:`agent.stages.profile_cache`.

Related work: LLM-written user profiles as recommender input follow KAR (Xi et al., "Towards
Open-World Recommendation with Knowledge Augmentation from LLMs", 2023) and LLMRec (Wei et al.,
WSDM 2024).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from tqdm.auto import tqdm

import prompts
from agent.llm import LLM, LLMError, LLMTimeout, LLMUnavailable, Message
from agent.llm.jsonparse import parse_json_object
from agent.stages.privacy import prompt_text, scrub
from agent.stages.profile_cache import ProfileCache
from encoders.text import TextEncoder
from hyrec.data import Dataset, attribute_genres, attribute_year
from hyrec.data.splits import History

log = logging.getLogger(__name__)

FALLBACK_VERSION = "fallback@1"  # InterestProfile.prompt_version of deterministic profiles
_MAX_PHRASE = 80  # characters per like/dislike/constraint phrase
_MAX_SENTENCE = 300  # characters of summary / recent_shift


# ---- what the LLM must return, and what callers get ---------------------------------------------
def _phrases(value: Any, limit: int) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise ValueError("must be a list of short phrases")
    out: list[str] = []
    for v in value:
        if not isinstance(v, str | int | float):
            raise ValueError("must be a list of short phrases")
        text = prompt_text(str(v), _MAX_PHRASE)
        if text and text.lower() not in {o.lower() for o in out}:
            out.append(text)
    return out[:limit]


class LLMProfile(BaseModel):
    """The JSON object the profile prompt asks for (validated at the LLM trust boundary).

    Lenient where it costs nothing (a single string for a list, extra keys, too many phrases are
    cut), strict where it matters: ``likes`` and ``summary`` must say something.
    """

    model_config = ConfigDict(extra="ignore")

    likes: list[str] = Field(min_length=1)
    dislikes: list[str] = Field(default_factory=list)
    recent_shift: str = ""
    constraints: list[str] = Field(default_factory=list)
    summary: str = Field(min_length=1)

    @field_validator("likes", mode="before")
    @classmethod
    def _likes(cls, v: Any) -> list[str]:
        return _phrases(v, 5)

    @field_validator("dislikes", "constraints", mode="before")
    @classmethod
    def _short_lists(cls, v: Any) -> list[str]:
        return _phrases(v, 3)

    @field_validator("recent_shift", "summary", mode="before")
    @classmethod
    def _sentence(cls, v: Any) -> str:
        if v is None:
            return ""
        if not isinstance(v, str):
            raise ValueError("must be a string")
        return prompt_text(v, _MAX_SENTENCE)


#: Sent as ``json_schema`` (llama.cpp and vLLM turn it into a grammar; others get a hint).
PROFILE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "likes": {
            "type": "array",
            "items": {"type": "string", "maxLength": 60},
            "minItems": 1,
            "maxItems": 5,
        },
        "dislikes": {"type": "array", "items": {"type": "string", "maxLength": 60}, "maxItems": 3},
        "recent_shift": {"type": "string", "maxLength": 120},
        "constraints": {
            "type": "array",
            "items": {"type": "string", "maxLength": 60},
            "maxItems": 3,
        },
        "summary": {"type": "string", "minLength": 1, "maxLength": 200},
    },
    "required": ["likes", "dislikes", "recent_shift", "constraints", "summary"],
}


class InterestProfile(BaseModel):
    """A user's interest profile, from the LLM or the deterministic fallback.

    Attributes:
        source: ``"llm"`` or ``"fallback"``.
        prompt_version: The prompt id (``name@version+digest``), or ``FALLBACK_VERSION``.
        model: The LLM that wrote it ("none" for a fallback).
        fallback_reason: Why the LLM's profile was not used (``None`` when it was, or when no LLM
            was configured).
    """

    model_config = ConfigDict(frozen=True)

    likes: list[str]
    dislikes: list[str]
    recent_shift: str
    constraints: list[str]
    summary: str
    source: Literal["llm", "fallback"]
    prompt_version: str
    model: str
    fallback_reason: str | None = None

    def text(self) -> str:
        """What gets embedded: likes, dislikes, recent shift, constraints and the summary."""
        parts = []
        if self.likes:
            parts.append("Likes: " + ", ".join(self.likes))
        if self.dislikes:
            parts.append("Dislikes: " + ", ".join(self.dislikes))
        if self.recent_shift:
            parts.append("Recently: " + self.recent_shift)
        if self.constraints:
            parts.append("Constraints: " + ", ".join(self.constraints))
        if self.summary:
            parts.append(self.summary)
        return ". ".join(p.rstrip(".") for p in parts)


@dataclass(frozen=True)
class ProfileEvent:
    """One item in a user's history, as the profile prompt sees it."""

    title: str
    attributes: Mapping[str, Any]
    rating: float | None
    timestamp: int


@dataclass(frozen=True)
class ProfileConfig:
    recent: int = 12  # latest items in the prompt (~15 tokens each; SmolLM2 prefill ~160 tokens/s)
    max_tokens: int = 160  # the five keys need ~60; a rambling model is cut and retried
    max_retries: int = 1  # repair attempts after invalid output (bounded: each costs a full call)
    timeout: float | None = None  # seconds per call; None: the backend's default
    # profile_many's parallel calls: match the server's slots. llama.cpp's server runs one request
    # at a time and keeps running requests the client gave up on, so more only queues into timeouts
    # (measured: 56 of 60 timed out at 2 with a 30 s timeout on a loaded machine); vLLM: 8-32.
    concurrency: int = 1
    domain: str = "movies"  # what the items are, for the prompt
    prompt: str = "profile"  # template in prompts/
    salt: str | None = None  # pseudonym salt; None: a random secret kept in cache_dir/.salt
    show_progress: bool = True


# ---- deterministic profile ----------------------------------------------------------------------
def _genres(attributes: Mapping[str, Any]) -> list[str]:
    return list(attribute_genres(attributes))


def _weight(event: ProfileEvent) -> float:
    """How much an event says the user liked it: rating − 2.5 (ratings on a 1–5 scale), or 1."""
    if event.rating is None or not np.isfinite(event.rating):
        return 1.0
    return float(event.rating) - 2.5


def genre_shares(events: Sequence[ProfileEvent]) -> dict[str, float]:
    """Share of each genre among the events' genre mentions, largest first."""
    counts = Counter(g for e in events for g in _genres(e.attributes))
    total = sum(counts.values())
    return {g: c / total for g, c in counts.most_common()} if total else {}


def long_term_summary(events: Sequence[ProfileEvent]) -> str:
    """``"Drama 30%, Comedy 22%, Thriller 10%; mostly 1990s; mean rating 3.7"`` (or "none")."""
    parts = []
    shares = genre_shares(events)
    if shares:
        parts.append(", ".join(f"{g} {round(100 * s)}%" for g, s in list(shares.items())[:5]))
    decade = _main_decade(events)
    if decade:
        parts.append(f"mostly {decade}s")
    ratings = [e.rating for e in events if e.rating is not None and np.isfinite(e.rating)]
    if ratings:
        parts.append(f"mean rating {np.mean(ratings):.1f}")
    return "; ".join(parts) or "none"


def _main_decade(events: Sequence[ProfileEvent], share: float = 0.5) -> int | None:
    decades = Counter(
        y // 10 * 10 for e in events if (y := attribute_year(e.attributes)) is not None
    )
    if not decades:
        return None
    decade, n = decades.most_common(1)[0]
    return decade if n / sum(decades.values()) >= share else None


def fallback_profile(events: Sequence[ProfileEvent], recent: int = 5) -> InterestProfile:
    """A deterministic profile from the items' attributes and ratings.

    Likes: genres with the highest rating-weighted count (rating − 2.5; unrated events count 1).
    Dislikes: genres seen at least twice whose mean weight is negative. Recent shift: the genre
    whose share grew most among the last ``recent`` items (if by 15 points or more). Constraints:
    the dominant release decade.
    """
    score: Counter[str] = Counter()
    seen: Counter[str] = Counter()
    for e in events:
        for g in _genres(e.attributes):
            score[g] += _weight(e)
            seen[g] += 1
    likes = [g for g, s in sorted(score.items(), key=lambda kv: (-kv[1], kv[0])) if s > 0][:5]
    dislikes = sorted(
        (g for g, s in score.items() if s < 0 and seen[g] >= 2), key=lambda g: (score[g], g)
    )[:3]
    ordered = sorted(events, key=lambda e: e.timestamp)
    shift = ""
    if len(ordered) > recent:
        before, now = genre_shares(ordered), genre_shares(ordered[-recent:])
        growth = {g: now[g] - before.get(g, 0.0) for g in now}
        g, delta = max(sorted(growth.items()), key=lambda kv: kv[1], default=("", 0.0))
        if delta >= 0.15:
            shift = f"more {g} lately"
    decade = _main_decade(events, share=0.7)
    constraints = [f"mostly {decade}s releases"] if decade else []
    if likes:
        summary = "Enjoys " + _and(likes[:3])
        summary += f"; recently {shift}." if shift else "."
    else:
        summary = "No clear preferences yet."
    return InterestProfile(
        likes=likes,
        dislikes=dislikes,
        recent_shift=shift,
        constraints=constraints,
        summary=summary,
        source="fallback",
        prompt_version=FALLBACK_VERSION,
        model="none",
    )


def _and(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def history_fingerprint(events: Sequence[ProfileEvent]) -> str:
    """sha256 (16 hex digits) over every event's title, attributes, rating and time."""
    h = hashlib.sha256()
    for e in events:
        row = [e.title, dict(e.attributes), e.rating, int(e.timestamp)]
        h.update(json.dumps(row, sort_keys=True, default=str).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()[:16]


# ---- the service --------------------------------------------------------------------------------
class ProfileService:
    """Profiles users with an LLM (or deterministically), caches them and embeds them.

    Args:
        llm: The model; ``None`` gives deterministic profiles only.
        encoder: Text encoder for :meth:`embed`.
        cache_dir: Folder for one JSON file per (pseudonymous) user; ``None``: memory only.
        config: Prompt, retries, timeouts, concurrency.

    Attributes:
        stats: ``calls`` (profiles asked for), ``cache_hits``, ``llm_calls``, ``llm_ok``,
            ``invalid`` (answers that failed validation), ``retries``, ``fallbacks``, ``errors``
            (reason → count), ``seconds`` (time spent producing uncached profiles).
    """

    def __init__(
        self,
        llm: LLM | None,
        encoder: TextEncoder | None = None,
        cache_dir: Path | None = None,
        config: ProfileConfig | None = None,
    ) -> None:
        self.llm = llm
        self.encoder = encoder
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.config = config or ProfileConfig()
        self.template = prompts.load(self.config.prompt)
        self.model = getattr(llm, "name", "llm") if llm is not None else "none"
        self.cache = ProfileCache(self.cache_dir, salt=self.config.salt)
        self._lock = threading.Lock()  # guards stats
        self.stats: dict[str, Any] = {
            "calls": 0,
            "cache_hits": 0,
            "llm_calls": 0,
            "llm_ok": 0,
            "invalid": 0,
            "retries": 0,
            "fallbacks": 0,
            "errors": Counter(),
            "seconds": 0.0,
        }

    def user_pseudonym(self, user_key: str) -> str:
        return self.cache.pseudonym(user_key)

    def _key(self, pseudonym: str, fingerprint: str) -> tuple[str, ...]:
        prompt_id = self.template.id if self.llm is not None else FALLBACK_VERSION
        return (pseudonym, fingerprint, prompt_id, self.model)

    def forget(self, user_key: str) -> None:
        """Drop every cached profile of ``user_key`` (memory and disk)."""
        self.cache.forget(self.user_pseudonym(user_key))

    # -- profiling ------------------------------------------------------------------------------
    def profile(self, user_key: str, events: Sequence[ProfileEvent]) -> InterestProfile:
        """The profile of ``user_key`` given ``events`` (any order); cached; never raises on an LLM
        failure (the fallback profile says why in ``fallback_reason``)."""
        key = self._key(self.user_pseudonym(user_key), history_fingerprint(events))
        with self._lock:
            self.stats["calls"] += 1
        cached = self.cache.get(key)
        if cached is not None:
            with self._lock:
                self.stats["cache_hits"] += 1
            return cached
        t0 = time.perf_counter()
        profile = self._make(events)
        with self._lock:
            self.stats["seconds"] += time.perf_counter() - t0
            if profile.source == "fallback":
                self.stats["fallbacks"] += 1
        if profile.fallback_reason is None:  # a failure is not cached: the next request retries
            self.cache.put(key, profile)
        return profile

    def profile_many(
        self, batch: Mapping[str, Sequence[ProfileEvent]]
    ) -> dict[str, InterestProfile]:
        """Profiles of many users, ``config.concurrency`` at a time, with a progress bar."""
        keys = list(batch)
        out: dict[str, InterestProfile] = {}
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=max(1, self.config.concurrency)) as pool:
            results = pool.map(lambda k: self.profile(k, batch[k]), keys)
            bar = tqdm(
                results,
                total=len(keys),
                desc="profiles",
                unit="user",
                disable=not self.config.show_progress,
                leave=False,
            )
            for key, profile in zip(keys, bar, strict=True):
                out[key] = profile
        seconds = time.perf_counter() - t0
        self.stats["last_batch"] = {
            "users": len(keys),
            "seconds": round(seconds, 3),
            "profiles_per_s": round(len(keys) / seconds, 3) if seconds > 0 else None,
        }
        return out

    def _make(self, events: Sequence[ProfileEvent]) -> InterestProfile:
        if self.llm is None:
            return fallback_profile(events)
        if not events:
            return fallback_profile(events)  # nothing to summarise: no call
        parsed, error = self._ask(events)
        if parsed is None:
            return self._fallback(events, error)
        return InterestProfile(
            **parsed.model_dump(),
            source="llm",
            prompt_version=self.template.id,
            model=self.model,
        )

    def _fallback(self, events: Sequence[ProfileEvent], reason: str) -> InterestProfile:
        log.warning("profile: %s; using the attribute-based fallback profile", reason)
        with self._lock:
            self.stats["errors"][reason.split(":")[0]] += 1
        return fallback_profile(events).model_copy(update={"fallback_reason": reason})

    def messages(self, events: Sequence[ProfileEvent]) -> list[Message]:
        """The rendered prompt for ``events`` (titles scrubbed, quoted as data)."""
        ordered = sorted(events, key=lambda e: e.timestamp)
        recent = [
            {
                "title": prompt_text(e.title, 120),
                "genres": prompt_text(", ".join(_genres(e.attributes)), 80),
                "year": attribute_year(e.attributes),
                "rating": None
                if e.rating is None or not np.isfinite(e.rating)
                else f"{float(e.rating):g}",
            }
            for e in ordered[-self.config.recent :]
        ]
        rendered = self.template.render(
            domain=self.config.domain,
            n_events=len(ordered),
            long_term=scrub(long_term_summary(ordered)),
            recent=recent,
        )
        return [Message("system", rendered.system), Message("user", rendered.user)]

    def _ask(self, events: Sequence[ProfileEvent]) -> tuple[LLMProfile | None, str]:
        """(validated profile, "") or (None, why not), after at most ``max_retries`` repairs."""
        messages = self.messages(events)
        error = ""
        for attempt in range(1 + max(0, self.config.max_retries)):
            if attempt:
                with self._lock:
                    self.stats["retries"] += 1
            with self._lock:
                self.stats["llm_calls"] += 1
            try:
                answer = self.llm.complete(
                    messages,
                    max_tokens=self.config.max_tokens,
                    temperature=0.0,
                    json_schema=PROFILE_SCHEMA,
                    timeout=self.config.timeout,
                )
            except LLMUnavailable as e:
                return None, f"LLM unavailable: {e}"
            except LLMTimeout as e:
                return None, f"LLM timeout: {e}"
            except LLMError as e:
                return None, f"LLM error: {e}"
            try:
                parsed = LLMProfile.model_validate(parse_json_object(answer.text))
            except (ValueError, ValidationError) as e:
                with self._lock:
                    self.stats["invalid"] += 1
                error = f"invalid profile JSON: {_short(e)}"
                messages = [
                    *messages,
                    Message("assistant", answer.text[:1000]),
                    Message(
                        "user",
                        f"That answer was not valid ({_short(e)}). Reply with only the JSON "
                        "object with the keys likes, dislikes, recent_shift, constraints, summary.",
                    ),
                ]
                continue
            with self._lock:
                self.stats["llm_ok"] += 1
            return parsed, ""
        return None, error

    # -- embedding ------------------------------------------------------------------------------
    def embed(self, profiles: Sequence[InterestProfile]) -> np.ndarray:
        """(n, d) unit-norm float32 embeddings of the profiles' :meth:`InterestProfile.text`.

        Raises:
            ValueError: the service has no text encoder.
        """
        if self.encoder is None:
            raise ValueError("ProfileService.embed needs a TextEncoder: pass encoder=...")
        if not profiles:
            return np.zeros((0, 0), np.float32)
        return self.encoder.encode_texts([p.text() for p in profiles])


def _short(error: Exception) -> str:
    if isinstance(error, ValidationError):
        first = error.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "answer"
        return f"{where}: {first['msg']}"
    return str(error)[:120]


# ---- History → profile vectors (HybridRecommender.fit(profiles=...)) ----------------------------
class HistoryProfiles:
    """Maps a :class:`History` batch to (B, d) profile vectors, the ``profiles`` argument of
    :meth:`HybridRecommender.fit`.

    Ratings and times of each (user, item) come from ``dataset.interactions`` (the latest event of
    the pair); a cold-start row (user −1) gets events without rating, keyed by its item sequence.
    Rows with an empty history get a zero vector (no profile, no signal).

    Args:
        service: Produces and embeds the profiles.
        dataset: Catalogue, user ids and interactions.
        llm_users: If given, only these internal user indices are profiled by ``service``; the
            others get :func:`fallback_profile` (e.g. to spend LLM calls on an evaluated sample).
    """

    def __init__(
        self,
        service: ProfileService,
        dataset: Dataset,
        *,
        llm_users: set[int] | None = None,
    ) -> None:
        self.service = service
        self.dataset = dataset
        self.llm_users = llm_users
        self._fallback = (
            ProfileService(None, service.encoder, None, service.config)
            if llm_users is not None
            else None
        )
        inter = dataset.interactions
        order = np.argsort(inter.timestamp, kind="stable")  # later events overwrite earlier ones
        self._facts = {
            (int(u), int(i)): (float(r), int(t))
            for u, i, r, t in zip(
                inter.user[order],
                inter.item[order],
                inter.rating[order],
                inter.timestamp[order],
                strict=True,
            )
        }

    def events(self, user: int, sequence: np.ndarray) -> list[ProfileEvent]:
        out = []
        for pos, i in enumerate(np.asarray(sequence).tolist()):
            item = self.dataset.items[i]
            rating, ts = self._facts.get((user, i), (float("nan"), pos))
            out.append(
                ProfileEvent(item.title, item.attributes, None if np.isnan(rating) else rating, ts)
            )
        return out

    def user_key(self, user: int, sequence: np.ndarray) -> str:
        if user >= 0:
            return str(self.dataset.user_ids[user])
        digest = hashlib.sha256(np.asarray(sequence, np.int64).tobytes()).hexdigest()[:16]
        return f"anonymous:{digest}"

    def profiles(self, history: History) -> list[InterestProfile | None]:
        """One profile per row (``None`` for an empty history)."""
        batches: dict[ProfileService, dict[str, list[ProfileEvent]]] = {}
        keys: list[tuple[ProfileService, str] | None] = []
        for user, seq in zip(history.users.tolist(), history.sequences, strict=True):
            if not len(seq):
                keys.append(None)
                continue
            use_llm = self.llm_users is None or user in self.llm_users
            service = self.service if use_llm else self._fallback
            key = self.user_key(user, seq)
            batches.setdefault(service, {})[key] = self.events(user, seq)
            keys.append((service, key))
        done = {s: s.profile_many(b) for s, b in batches.items()}
        return [None if k is None else done[k[0]][k[1]] for k in keys]

    def __call__(self, history: History) -> np.ndarray:
        """(B, d) unit-norm float32 profile vectors (zero rows for empty histories)."""
        found = self.profiles(history)
        rows = [r for r, p in enumerate(found) if p is not None]
        vecs = self.service.embed([found[r] for r in rows]) if rows else None
        dim = vecs.shape[1] if vecs is not None else self._dim()
        out = np.zeros((len(history), dim), np.float32)
        if vecs is not None:
            out[rows] = vecs
        return out

    def _dim(self) -> int:
        return int(self.service.embed([fallback_profile([])]).shape[1])
