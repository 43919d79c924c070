"""The LLM stages a :class:`~agent.api.Recommender` serves with: the interest-profile service and
the re-ranker, built once when the model is made.

The profile service exists whenever there is an LLM, and also without one when the head was
fitted with the profile feature (it then builds the deterministic, attribute-based profile). Its
cache lives in the model folder (``profiles/``) and, with a shared feedback store, in that store
under a salt every replica derives alike. The re-ranker exists only with an LLM.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.feedback import Store
    from agent.llm.guard import GuardedLLM
    from agent.stages.profiles import ProfileService
    from agent.stages.rerank import LLMReranker, RerankConfig
    from encoders.text import TextEncoder


def llm_stages(
    llm: GuardedLLM | None,
    encoder: TextEncoder,
    rerank: RerankConfig,
    store: Store,
    *,
    salt: str,
    uses_profile: bool,
    model_dir: Path | None,
) -> tuple[ProfileService | None, LLMReranker | None]:
    """The profile service and the re-ranker (each ``None`` where the model has no use for it).

    Args:
        llm: The guarded LLM the stages call (``None``: no LLM).
        encoder: Embeds the profiles.
        rerank: The re-ranker's settings.
        store: The feedback store; a shared one also holds the profile cache.
        salt: The model's pseudonym salt.
        uses_profile: The head was fitted with the profile feature.
        model_dir: The model folder (``None``: the cache stays in memory).
    """
    profiles = reranker = None
    if llm is not None or uses_profile:
        # a head trained with the profile feature needs a profile vector even without an LLM:
        # the service then builds the deterministic, attribute-based profile
        from agent.stages.profiles import ProfileService

        cache = model_dir / "profiles" if model_dir is not None else None
        profiles = ProfileService(llm, encoder, cache_dir=cache)
        if getattr(store, "shared", False):  # entries in the shared store, under a salt
            from agent.stages.privacy import pseudonymize  # every replica derives alike
            from agent.stages.profile_cache import ProfileCache

            derived = pseudonymize("hyrec-profile-cache", salt)
            profiles.cache = ProfileCache(cache, salt=derived, entries=store)
    if llm is not None:
        from agent.stages.rerank import LLMReranker

        reranker = LLMReranker(llm, rerank)
    return profiles, reranker
