"""What :class:`agent.api.Recommender` adds on top of the hybrid's own config, and the typed
results every door returns."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from agent.stages.rerank import RerankConfig
from encoders.text import PACKAGED_MODEL
from retrieval.hybrid import HybridConfig

if TYPE_CHECKING:
    from agent.stages.profiles import InterestProfile


@dataclass(frozen=True)
class RecommenderConfig:
    """Serving options around the hybrid."""

    hybrid: HybridConfig = field(default_factory=HybridConfig)
    text_model: str = PACKAGED_MODEL  # item/query encoder (see encoders.text.TextEncoderConfig)
    # the LLM re-ranker: how many of the head's top list it sees (window; a 135M model handles
    # ~20 titles), how many history titles it is shown, its blend weight and MMR's lambda
    rerank: RerankConfig = field(default_factory=RerankConfig)
    llm_reasons: int = 3  # items whose reason the LLM writes; the rest get the deterministic reason
    # LLM seconds one recommendation may spend over all its stages; calls past it fail fast as
    # timeouts, so those stages fall back (one slow call can no longer stack up 30 s per stage)
    # (30 s: the packaged 135M model needs 6-9 s per profile on 2 cores, ~5 s per re-rank)
    llm_budget: float = 30.0
    profile_share: float = 0.5  # of that budget the profile may use, so re-ranking keeps a turn
    # requests the hybrid scores at once: the scoring is CPU work under the GIL, so more at once
    # add no throughput, and they starve the threads that only need a moment of it (feedback, the
    # server's event loop); the others wait their turn outside the model lock
    scoring: int = 2
    profile_events: int = 50  # latest events an interest profile is built from
    positive_rating: float = 3.5  # a "rating" event at or above this counts as interest
    synchronous: str = "FULL"  # feedback store durability (see agent.feedback.store)
    store_wait: float = 2.0  # seconds a request waits for a locked store before a 503
    # replicas on one PostgreSQL store (agent.feedback.postgres): connections per process, and
    # the longest a catalogue upsert or a deletion made on another replica takes to apply here
    # when its NOTIFY is lost (normally it applies within milliseconds of the commit)
    store_pool: int = 8
    sync_interval: float = 1.0

    def __post_init__(self) -> None:
        """Fail on values that would silently turn every LLM stage (or list) off."""
        checks = {
            "llm_budget": self.llm_budget > 0,
            "profile_share": 0 < self.profile_share <= 1,
            "scoring": self.scoring >= 1,
            "llm_reasons": self.llm_reasons >= 0,
            "profile_events": self.profile_events >= 1,
            "store_pool": self.store_pool >= 1,
            "sync_interval": self.sync_interval > 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            values = ", ".join(f"{name}={getattr(self, name)!r}" for name in bad)
            raise ValueError(
                f"RecommenderConfig: {values} out of range (llm_budget > 0, "
                "0 < profile_share <= 1, scoring >= 1, profile_events >= 1, "
                "llm_reasons >= 0, store_pool >= 1, sync_interval > 0)"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, without the hybrid's config (saved with the hybrid)."""
        return {k: v for k, v in asdict(self).items() if k != "hybrid"}

    @classmethod
    def from_dict(cls, body: Mapping[str, Any], hybrid: HybridConfig) -> RecommenderConfig:
        """The inverse of :meth:`to_dict`; unknown keys are ignored, and the ``rerank_candidates``
        of older model folders becomes the re-ranker's window."""
        body = dict(body)
        rerank = dict(body.pop("rerank", {}) or {})
        if "rerank_candidates" in body:
            rerank.setdefault("window", body.pop("rerank_candidates"))
        known = {f.name for f in fields(cls)} - {"hybrid", "rerank"}
        return cls(
            hybrid=hybrid,
            rerank=RerankConfig(**rerank),
            **{k: v for k, v in body.items() if k in known},
        )


@dataclass(frozen=True)
class Recommendation:
    """One recommended item.

    Attributes:
        item_id: Catalogue id.
        title: Catalogue title.
        score: Final score (head score, or the position score the LLM re-ranker gave).
        sources: Candidate sources that proposed the item ("als", "semantic", "query", …).
        contributions: Each component's score for the item (the head's inputs, by name).
        reason: A short explanation grounded in the user's history, when asked for.
    """

    item_id: str
    title: str
    score: float
    sources: tuple[str, ...]
    contributions: Mapping[str, float]
    reason: str | None = None


@dataclass(frozen=True)
class Recommendations:
    user_id: str | None
    items: tuple[Recommendation, ...]
    fallbacks: tuple[str, ...] = ()  # e.g. "rerank: LLM timeout, used mmr"
    profile: InterestProfile | None = None


@dataclass(frozen=True)
class FeedbackReceipt:
    """An acknowledged (committed) feedback event."""

    event_id: int
    user_id: str
    item_id: str
    event: str
    value: float | None
    timestamp: float
    positive: bool  # whether it counts as interest (joins the user's sequence)
    client_event_id: str | None = None  # the client's idempotency key, when it sent one
    duplicate: bool = False  # True when that key was already stored: nothing new was written


# ---- fit profiles --------------------------------------------------------------------------------

#: The named fit profiles: ``hyrec fit --profile`` (default ``full``), ``hyrec demo --profile``
#: (default ``quick``).
FIT_PROFILES: tuple[str, ...] = ("quick", "full")


@dataclass(frozen=True)
class FitProfile:
    """A named set of hybrid settings: what ``hyrec fit/demo --profile NAME`` fits.

    Attributes:
        name: ``quick`` or ``full``.
        hybrid: The hybrid's config (components, head, per-component ``params``).
        about: One line for a person: what it trades and what it takes on 2 cores.
    """

    name: str
    hybrid: HybridConfig
    about: str


def _quick() -> HybridConfig:
    # Chosen on ML-100K *validation* NDCG@10 (the harness's leave-one-out split; test never read),
    # docs/first-run.md "The quick profile": a first fit in 101 s on 2 idle cores with the head's
    # three nets (the target was 90 s; one net saves ~30 s), still above every component alone
    # (sasrec, the best, 0.1231 at its full defaults; this profile's hybrid 0.1343 with three
    # nets, the full profile's 0.1334).
    return HybridConfig(
        # LightGCN left out: 15 s of fitting for -0.0007 validation NDCG@10 here (0.1336 with it)
        components=("sasrec", "als", "itemknn", "semantic", "pop"),
        sources=("sasrec", "als", "itemknn", "pop"),
        params={
            "sasrec": {
                # the fit's long pole. A 30-item context instead of 50: each epoch is cheaper and
                # the best standalone validation NDCG@10 within 50 epochs was higher (0.1173 vs
                # 0.1078 at the default lr)
                "max_len": 30,
                # with the short budget a higher rate climbs faster: standalone validation
                # NDCG@10 0.1120 by epoch 40 (0.1219 by 50) at 8e-3, against 0.0999 (0.1173) at
                # 5e-3 and 0.1140 (0.1166) at 1.2e-2
                "lr": 8e-3,
                # the full profile's best epochs were 68-142 of up to 200; here the kept epoch
                # was within the first 40 of a 50-epoch fit (40 and 50 gave the same hybrid,
                # validation NDCG@10 0.1343), so 40 saves ~10 s for nothing
                "max_epochs": 40,
                "patience": 40,  # no early stop inside 40 epochs: the curve still climbs
            },
        },
        # the MLP head won on validation in every full fit (0.128-0.139 vs LightGBM 0.115-0.127);
        # "auto" would fit both
        ranker="mlp",
        # one net instead of the average of three: two thirds of the head's time (~30 s on 2
        # cores) for validation NDCG@10 0.1316/0.1311 against 0.1319/0.1320 (seeds 0/1, both
        # measured side by side in one run)
        ranker_params={"mlp": {"members": 1}},
    )


def fit_profile(name: str) -> FitProfile:
    """The fit profile called ``name`` (``quick`` or ``full``).

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    if name == "full":
        return FitProfile(
            "full",
            HybridConfig(),  # every default, chosen on validation (hybrid-experiments.md)
            "every component trained to early stopping, both heads tried (~5 min on 2 cores)",
        )
    if name == "quick":
        return FitProfile(
            "quick",
            _quick(),
            "SASRec for 40 epochs over 30 items, no LightGCN, one MLP as the head (~1.2 min on "
            "2 cores)",
        )
    raise ValueError(f"unknown fit profile {name!r}; choose from {', '.join(FIT_PROFILES)}")


def profile_of(config: HybridConfig) -> str | None:
    """The name of the profile whose settings ``config`` has (``None``: custom settings)."""
    key = _comparable(config)
    return next((n for n in FIT_PROFILES if _comparable(fit_profile(n).hybrid) == key), None)


def _comparable(config: HybridConfig) -> str:
    import json

    return json.dumps(asdict(config), sort_keys=True, default=list)
