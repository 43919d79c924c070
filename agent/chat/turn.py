"""What both ways of answering a chat turn share: the agent's limits (:class:`ChatConfig`), the
answer (:class:`ChatReply`), the signed-in user's stored dislikes, which no answer offers again
(:func:`stored_dislikes`), and the one-line error text a fallback names (:func:`short`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent.feedback import is_positive

if TYPE_CHECKING:
    from agent.api import Recommendation, Recommender
    from agent.chat.intent import Intent


@dataclass(frozen=True)
class ChatConfig:
    k: int = 5  # items per answer when the request names no count
    max_tool_rounds: int = 4  # model → tools round trips per turn before answering
    max_tokens: int = 512  # per model call (sent as max_tokens: llama.cpp ignores the newer name)
    reason_chars: int = 160  # a reason line is cut at this length
    candidates: int = 20  # items asked from each recommender call before fusing


@dataclass(frozen=True)
class ChatReply:
    """One assistant turn.

    Attributes:
        text: The answer: a header line, then ``"N. Title — reason"`` lines, then notes.
        items: The recommended items, in the listed order.
        intent: What the rules parser read from the user's message.
        used_llm_tools: True when a tool-calling model chose the items.
        fallbacks: What degraded and how ("llm tools: timeout; used rules").
    """

    text: str
    items: tuple[Recommendation, ...]
    intent: Intent
    used_llm_tools: bool
    fallbacks: tuple[str, ...] = ()


def stored_dislikes(recommender: Recommender, user_id: str | None) -> list[str]:
    """The signed-in user's negative feedback: never offered again by any voice (search and
    similar items do not know the user; the personal list drops these itself)."""
    store = getattr(recommender, "store", None)
    if user_id is None or store is None:
        return []
    cut = recommender.config.positive_rating
    return [e.item_id for e in store.events(user_id) if not is_positive(e.event, e.value, cut)]


def short(e: Exception, limit: int = 160) -> str:
    """The first line of ``e``'s message, cut at ``limit`` characters."""
    text = str(e).splitlines()[0] if str(e) else ""
    return text[:limit]
