"""LLM interest profiles: a user's recent items and long-term taste → a validated JSON profile.

:class:`ProfileService` renders ``prompts/profile.yaml`` from the user's latest items (title,
genres, year, rating) and a summary of their whole history, asks the LLM for a JSON object, and
validates it with :class:`LLMProfile`. Invalid output gets a bounded number of repair retries; after
that — or when the LLM is down, slow or absent — :func:`fallback_profile` builds a deterministic
profile from the items' attributes, so profiling never fails. Profiles are cached by (pseudonymous
user, history fingerprint, prompt id, model): a profile is recomputed only when the history (or the
prompt or the model) changed. The profile text is embedded with the text encoder
(:meth:`ProfileService.embed`); :class:`~agent.stages.history_profiles.HistoryProfiles` maps a
:class:`~hyrec.data.History` batch to those vectors, which is what
``HybridRecommender.fit(profiles=...)`` takes (the ``profile_cosine`` feature). The cache is
:mod:`agent.stages.profile_cache`.

Related work: LLM-written user profiles as recommender input follow KAR (Xi et al., "Towards
Open-World Recommendation with Knowledge Augmentation from LLMs", 2023) and LLMRec (Wei et al.,
WSDM 2024).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError
from tqdm.auto import tqdm

import prompts
from agent.llm import LLM, LLMError, LLMTimeout, LLMUnavailable, Message
from agent.llm.jsonparse import parse_json_object
from agent.stages.privacy import prompt_text, scrub
from agent.stages.profile_cache import ProfileCache
from agent.stages.profile_fallback import (
    _genres,
    fallback_profile,
    genre_shares,
    history_fingerprint,
    long_term_summary,
)
from agent.stages.profile_types import (
    FALLBACK_VERSION,
    PROFILE_SCHEMA,
    InterestProfile,
    LLMProfile,
    ProfileEvent,
)
from encoders.text import TextEncoder
from hyrec.data import attribute_year

log = logging.getLogger(__name__)


__all__ = [
    "FALLBACK_VERSION",
    "InterestProfile",
    "LLMProfile",
    "ProfileConfig",
    "ProfileEvent",
    "ProfileService",
    "fallback_profile",
    "genre_shares",
    "history_fingerprint",
    "long_term_summary",
]


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

    def _key(self, pseudonym: str, variant: str, fingerprint: str) -> tuple[str, ...]:
        prompt_id = self.template.id if self.llm is not None else FALLBACK_VERSION
        return (pseudonym, variant, fingerprint, prompt_id, self.model)

    def forget(self, user_key: str) -> int:
        """Drop every cached profile variant of ``user_key`` (memory and disk); a profile being
        computed meanwhile is not cached. Returns how many entries were dropped."""
        return self.cache.forget(self.user_pseudonym(user_key))

    def drop_stale(self, user_key: str) -> None:
        """The user's history changed: drop what this process caches of the user
        (:meth:`agent.stages.profile_cache.ProfileCache.drop_stale`)."""
        self.cache.drop_stale(self.user_pseudonym(user_key))

    # -- profiling ------------------------------------------------------------------------------
    def profile(
        self, user_key: str, events: Sequence[ProfileEvent], variant: str = ""
    ) -> InterestProfile:
        """The profile of ``user_key`` given ``events`` (any order); cached; never raises on an LLM
        failure (the fallback profile says why in ``fallback_reason``).

        Args:
            user_key: Whose profile (pseudonymised before it is stored).
            events: The history to profile.
            variant: Another profile of the same user (e.g. with items a request named); every
                variant is erased with the user.
        """
        pseudonym = self.user_pseudonym(user_key)
        generation = self.cache.generation(pseudonym)
        key = self._key(pseudonym, variant, history_fingerprint(events))
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
            self.cache.put(key, profile, generation)  # not if the user was forgotten meanwhile
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
